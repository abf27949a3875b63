"""Buying in test mode: order -> test payment -> entitlement, account and email; bad input."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from app.accounts.models import Company, User
from app.catalog.service import publish_folder
from app.checkout.models import Entitlement, Order, OrderStatus
from tests.conftest import COURSES, csrf_token, make_user, sign_in


def publish(app: FastAPI, engine: Engine, *slugs: str) -> None:
    with Session(engine) as s:
        for slug in slugs:
            publish_folder(session=s, storage=app.state.storage, folder=COURSES / slug)
        s.commit()


def buy(client: TestClient, slug: str = "linkedin-playbook", **form: str) -> object:
    page = client.get(f"/checkout/{slug}")
    key = re.search(r'name="checkout_key" value="([0-9a-f]{32})"', page.text)
    assert key, page.text[:500]
    data = {
        "checkout_key": key.group(1),
        "currency": "EUR",
        "csrftoken": csrf_token(client),
        **form,
    }
    return client.post(f"/checkout/{slug}", data=data, follow_redirects=False)


def pay(client: TestClient, redirect: str) -> object:
    assert redirect.startswith("/checkout/test/")
    page = client.get(redirect)
    assert page.status_code == 200 and "TEST MODE" in page.text
    return client.post(
        redirect,
        data={"action": "pay", "name": "Lena K.", "csrftoken": csrf_token(client)},
        follow_redirects=False,
    )


def test_a_visitor_buys_and_lands_in_the_library(
    client: TestClient, app: FastAPI, engine: Engine, outbox: Path
) -> None:
    publish(app, engine, "linkedin-playbook")
    client.get(
        "/?utm_source=newsletter&utm_campaign=november",
        headers={"Referer": "https://www.linkedin.com/feed/"},
    )
    started = buy(client, email="Lena@Example.com", consent="true")
    assert started.status_code == 303  # type: ignore[attr-defined]
    paid = pay(client, started.headers["location"])  # type: ignore[attr-defined]
    assert paid.status_code == 303  # type: ignore[attr-defined]
    success = client.get(paid.headers["location"])  # type: ignore[attr-defined]
    assert success.status_code == 200 and "Thank you for your purchase" in success.text
    # The browser that paid is not signed in: the address is not proven yet.
    assert client.get("/library", follow_redirects=False).status_code == 303
    with Session(engine) as s:
        order = s.exec(select(Order)).one()
        user = s.exec(select(User)).one()
        assert (
            order.status == OrderStatus.paid and order.user_id == user.id and order.account_created
        )
        assert user.email == "lena@example.com" and user.name == "Lena K."
        assert order.consent_text and "14" in order.consent_text and order.consent_at
        assert (
            order.attribution["utm_source"] == "newsletter"
            and "linkedin.com" in order.attribution["referrer"]
        )
        assert s.exec(select(Entitlement)).one().product_id == order.product_id
    app.state.jobs.drain()  # the purchase email is written by a job
    mails = list(outbox.glob("*.eml"))
    assert len(mails) == 1 and "Thank you" in mails[0].read_text()
    # The link in the purchase email proves the address and leads to the library.
    follow_mail_link(client, mails[0])
    library = client.get("/library")
    assert library.status_code == 200 and "LinkedIn Playbook" in library.text
    orders = client.get("/orders")
    assert order.number in orders.text


def follow_mail_link(client: TestClient, mail: Path) -> None:
    """Open a mailed sign-in link and press its button, as the buyer does."""
    import quopri
    import re

    text = quopri.decodestring(mail.read_bytes()).decode("utf-8", "replace")
    token = re.search(r"/auth/magic\?token=([\w-]+)", text)
    assert token, text
    assert client.get(f"/auth/magic?token={token.group(1)}").status_code == 200
    signed = client.post(
        "/auth/magic",
        data={"token": token.group(1), "csrftoken": csrf_token(client)},
        follow_redirects=False,
    )
    assert signed.status_code == 303 and signed.headers["location"] == "/library"


def test_checkout_is_no_way_into_someone_elses_account(
    client: TestClient, app: FastAPI, engine: Engine, outbox: Path
) -> None:
    """An attacker who checks out with a prospect's address used to be signed in to the new
    account, set a password, and later read the real owner's library."""
    publish(app, engine, "linkedin-playbook")
    started = buy(client, email="prospect@company.example", consent="true")
    paid = pay(client, started.headers["location"])  # type: ignore[attr-defined]
    assert "Thank you" in client.get(paid.headers["location"]).text  # type: ignore[attr-defined]
    # Not signed in: no password, no profile, no orders for the attacker's browser.
    for method, path, data in (
        ("POST", "/account/password", {"password": "attacker chosen 123"}),
        ("POST", "/account/profile", {"name": "Mallory"}),
        ("GET", "/orders", {}),
        ("GET", "/account", {}),
    ):
        if method == "POST":
            r = client.post(
                path, data={**data, "csrftoken": csrf_token(client)}, follow_redirects=False
            )
        else:
            r = client.get(path, follow_redirects=False)
        assert r.status_code in (303, 401), (path, r.status_code)
        assert "/auth/login" in r.headers.get("location", "/auth/login"), path
    with Session(engine) as s:
        prospect = s.exec(select(User)).one()
        assert prospect.password_hash is None and prospect.name != "Mallory"


def test_a_checkout_naming_an_existing_account_changes_nothing_of_it(
    client: TestClient, app: FastAPI, engine: Engine
) -> None:
    publish(app, engine, "linkedin-playbook")
    make_user(engine, "owner@company.example", name="Owner", locale="de")
    started = buy(
        client,
        email="owner@company.example",
        business="true",
        company_name="Evil Corp",
        vat_id="DE999999999",
    )
    pay(client, started.headers["location"])  # type: ignore[attr-defined]
    with Session(engine) as s:
        owner = s.exec(select(User)).one()
        order = s.exec(select(Order)).one()
    assert (owner.name, owner.locale, owner.company_id) == ("Owner", "de", None)
    assert order.company_name == "Evil Corp" and order.vat_id == "DE999999999"
    assert not order.account_created


def test_business_buyer_skips_consent_and_gets_a_company(
    client: TestClient, app: FastAPI, engine: Engine
) -> None:
    publish(app, engine, "linkedin-playbook")
    started = buy(
        client,
        email="cmo@acme.example",
        business="true",
        company_name="Acme GmbH",
        vat_id="de 999 999 999",
    )
    pay(client, started.headers["location"])  # type: ignore[attr-defined]
    with Session(engine) as s:
        order = s.exec(select(Order)).one()
        assert order.business and order.consent_text is None and order.vat_id == "DE999999999"
        user = s.exec(select(User)).one()
        company = s.get(Company, user.company_id)
        assert company and company.name == "Acme GmbH"


def test_consumers_must_consent(client: TestClient, app: FastAPI, engine: Engine) -> None:
    publish(app, engine, "linkedin-playbook")
    r = buy(client, email="x@example.com")
    assert r.status_code == 422 and "immediate access" in r.text  # type: ignore[attr-defined]
    with Session(engine) as s:
        assert s.exec(select(Order)).first() is None


def test_bad_purchase_input(client: TestClient, app: FastAPI, engine: Engine) -> None:
    publish(app, engine, "linkedin-playbook")
    token = csrf_token(client)
    base = {
        "checkout_key": uuid.uuid4().hex,
        "email": "x@example.com",
        "consent": "true",
        "csrftoken": token,
    }
    assert (
        client.post("/checkout/no-such-product", data={**base, "currency": "EUR"}).status_code
        == 422
    )
    assert (
        client.post("/checkout/linkedin-playbook", data={**base, "currency": "JPY"}).status_code
        == 422
    )
    assert (
        client.post(
            "/checkout/linkedin-playbook", data={**base, "currency": "EUR", "checkout_key": "../x"}
        ).status_code
        == 422
    )
    assert (
        client.post(
            "/checkout/linkedin-playbook", data={**base, "currency": "EUR", "email": "nope"}
        ).status_code
        == 422
    )
    assert client.get("/checkout/no-such-product").status_code == 404
    with Session(engine) as s:
        assert s.exec(select(Order)).first() is None


def test_double_submit_makes_one_order(client: TestClient, app: FastAPI, engine: Engine) -> None:
    publish(app, engine, "linkedin-playbook")
    key = uuid.uuid4().hex
    data = {
        "checkout_key": key,
        "currency": "EUR",
        "email": "x@example.com",
        "consent": "true",
        "csrftoken": csrf_token(client),
    }
    first = client.post("/checkout/linkedin-playbook", data=data, follow_redirects=False)
    second = client.post("/checkout/linkedin-playbook", data=data, follow_redirects=False)
    assert first.headers["location"] == second.headers["location"]
    with Session(engine) as s:
        assert len(s.exec(select(Order)).all()) == 1


def test_existing_account_is_not_signed_in_by_a_purchase(
    client: TestClient, app: FastAPI, engine: Engine
) -> None:
    """Typing someone else's email at checkout must not open their account."""
    publish(app, engine, "linkedin-playbook")
    make_user(engine, "victim@example.com")
    started = buy(client, email="victim@example.com", consent="true")
    paid = pay(client, started.headers["location"])  # type: ignore[attr-defined]
    success = client.get(paid.headers["location"])  # type: ignore[attr-defined]
    assert success.status_code == 200 and "emailed you a link" in success.text
    assert client.get("/library", follow_redirects=False).status_code == 303


def test_bundle_grants_its_products(
    client: TestClient, app: FastAPI, engine: Engine, tmp_path: Path
) -> None:
    import shutil

    publish(app, engine, "linkedin-playbook", "trust-at-a-distance")
    bundle = tmp_path / "complete-bundle"
    bundle.mkdir()
    (bundle / "course.toml").write_text(
        'slug = "complete-bundle"\nkind = "bundle"\ntitle = { en = "Everything" }\n'
        'includes = ["linkedin-playbook", "trust-at-a-distance"]\n'
        '[[prices]]\ncurrency = "EUR"\namount = 15900\n'
    )
    with Session(engine) as s:
        publish_folder(session=s, storage=app.state.storage, folder=bundle)
        s.commit()
    make_user(engine, "lena@example.com")
    sign_in(client, engine, "lena@example.com")
    started = buy(client, "complete-bundle", consent="true")
    pay(client, started.headers["location"])  # type: ignore[attr-defined]
    library = client.get("/library").text
    assert "LinkedIn Playbook" in library and "Trust at a Distance" in library
    shutil.rmtree(bundle)


def test_export_has_orders_and_deletion_keeps_them_anonymous(
    client: TestClient, app: FastAPI, engine: Engine
) -> None:
    from tests.accounts.test_account import assert_nowhere_in_database

    publish(app, engine, "linkedin-playbook")
    started = buy(client, email="lena@example.com", business="true", company_name="Lena Consulting")
    pay(client, started.headers["location"])  # type: ignore[attr-defined]
    client.get("/checkout/success", params={"order": "R-x"})
    sign_in(client, engine, "lena@example.com")
    data = client.get("/api/v1/me/export").json()
    assert (
        data["orders"][0]["product"] == "linkedin-playbook"
        and data["orders"][0]["status"] == "paid"
    )
    assert data["entitlements"][0]["product"] == "linkedin-playbook"
    client.post(
        "/account/delete",
        data={"confirm_email": "lena@example.com", "csrftoken": csrf_token(client)},
    )
    assert_nowhere_in_database(engine, "lena@example.com")
    assert_nowhere_in_database(engine, "Lena Consulting")
    with Session(engine) as s:
        order = s.exec(select(Order)).one()  # kept for the books
        assert order.user_id is None and order.amount > 0 and order.status == OrderStatus.paid


def test_the_cancel_page_reveals_nothing_about_other_peoples_orders(
    client: TestClient, app: FastAPI, engine: Engine
) -> None:
    publish(app, engine, "linkedin-playbook")
    started = buy(client, email="lena@example.com", consent="true")
    with Session(engine) as s:
        number = s.exec(select(Order)).one().number
    mine = client.get(f"/checkout/cancel?order={number}")
    assert mine.status_code == 200 and "/products/linkedin-playbook" in mine.text
    with TestClient(app) as stranger:  # order numbers are sequential and easy to walk
        theirs = stranger.get(f"/checkout/cancel?order={number}")
    assert theirs.status_code == 200 and "linkedin-playbook" not in theirs.text
    assert started.status_code == 303  # type: ignore[attr-defined]
