"""Stripe mode: the official library against the local fake API; webhooks signed as Stripe does."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from app.catalog.service import publish_folder
from app.checkout.models import Entitlement, Order, OrderStatus, WebhookEvent
from tests.conftest import COURSES, csrf_token, make_user, post_event, sign_in
from tests.fakes.stripe_api import FakeStripe


@pytest.fixture(autouse=True)
def _catalog(stripe_client: TestClient, engine: Engine) -> None:
    with Session(engine) as s:
        storage = stripe_client.app.state.storage  # type: ignore[attr-defined]
        publish_folder(session=s, storage=storage, folder=COURSES / "linkedin-playbook")
        s.commit()


def start(client: TestClient, key: str | None = None, **form: str) -> Any:
    data = {
        "checkout_key": key or uuid.uuid4().hex,
        "currency": "EUR",
        "email": "lena@example.com",
        "consent": "true",
        "csrftoken": csrf_token(client),
        **form,
    }
    return client.post("/checkout/linkedin-playbook", data=data, follow_redirects=False)


def session_id_of(response: Any) -> str:
    return str(response.headers["location"].rsplit("/", 1)[-1])


def entitled(engine: Engine) -> list[Entitlement]:
    with Session(engine) as s:
        return [e for e in s.exec(select(Entitlement)) if e.revoked_at is None]


def order(engine: Engine) -> Order:
    with Session(engine) as s:
        return s.exec(select(Order)).one()


def test_checkout_session_is_created_as_stripe_expects(
    stripe_client: TestClient, fake_stripe: FakeStripe
) -> None:
    key = uuid.uuid4().hex
    r = start(stripe_client, key)
    assert r.status_code == 303 and r.headers["location"].startswith(
        fake_stripe.url + "/pay/cs_test_"
    )
    sid = session_id_of(r)
    created = fake_stripe.sessions[sid]
    assert (
        created["mode"] == "payment"
        and created["amount_total"] == 2900
        and created["currency"] == "eur"
    )
    assert (
        created["client_reference_id"].startswith("R-")
        and created["customer_email"] == "lena@example.com"
    )
    assert created["success_url"] == f"http://testserver/checkout/success?session_id={sid}"
    post = next(q for q in fake_stripe.requests if q.method == "POST")
    assert post.headers["idempotency-key"].startswith("checkout-")
    assert post.form["adaptive_pricing[enabled]"] == "false"
    assert (
        post.form["invoice_creation[enabled]"] == "true"
        and post.form["allow_promotion_codes"] == "true"
    )
    assert post.form["tax_id_collection[enabled]"] == "true"
    # The same form again (double click, back button): the same order and Checkout Session.
    again = start(stripe_client, key)
    assert again.headers["location"] == r.headers["location"] and fake_stripe.created_count == 1


def test_webhook_fulfils_once_and_success_page_races_safely(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine, outbox: Any
) -> None:
    sid = session_id_of(start(stripe_client))
    session = fake_stripe.complete(
        sid, email="lena@example.com", name="Lena", business_name="Lena Consulting", tax_id="DE123"
    )
    completed = fake_stripe.event("checkout.session.completed", session)
    # The success page confirms first (by retrieving the session), then the webhook arrives twice.
    success = stripe_client.get(f"/checkout/success?session_id={sid}")
    assert success.status_code == 200 and "Thank you for your purchase" in success.text
    assert post_event(stripe_client, completed).json()["result"] == "handled"
    assert post_event(stripe_client, completed).json()["result"] == "duplicate"
    assert len(entitled(engine)) == 1
    o = order(engine)
    assert o.status == OrderStatus.paid and o.payment_intent == session["payment_intent"]
    stripe_client.app.state.jobs.drain()  # type: ignore[attr-defined]
    assert len(list(outbox.glob("*.eml"))) == 1  # one purchase email, not one per confirmation
    # The browser that paid is not signed in until the address is proven.
    assert stripe_client.get("/library", follow_redirects=False).status_code == 303


def test_refund_and_dispute_revoke_for_good(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    make_user(engine, "admin@example.com", "admin")
    sid = session_id_of(start(stripe_client))
    session = fake_stripe.complete(sid, email="lena@example.com")
    completed = fake_stripe.event("checkout.session.completed", session)
    post_event(stripe_client, completed)
    assert len(entitled(engine)) == 1
    # The admin refunds: Stripe is called, access ends when its event arrives.
    with TestClient(stripe_client.app) as admin:
        sign_in(admin, engine, "admin@example.com")
        r = admin.post(
            f"/admin/orders/{order(engine).id}/refund",
            data={"csrftoken": csrf_token(admin)},
            follow_redirects=False,
        )
        assert r.status_code == 303
    assert (
        fake_stripe.refunds
        and fake_stripe.refunds[0]["payment_intent"] == session["payment_intent"]
    )
    assert len(entitled(engine)) == 1
    refunded = fake_stripe.event("charge.refunded", fake_stripe.charge_for(sid))
    assert post_event(stripe_client, refunded).json()["result"] == "handled"
    assert entitled(engine) == [] and order(engine).status == OrderStatus.refunded
    # A late duplicate of the completion, or the same completion under a new event id: no access.
    post_event(stripe_client, completed)
    post_event(stripe_client, fake_stripe.event("checkout.session.completed", session))
    stripe_client.get(f"/checkout/success?session_id={sid}")
    assert entitled(engine) == [] and order(engine).status == OrderStatus.refunded


def test_dispute_revokes_and_flags(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    sid = session_id_of(start(stripe_client))
    session = fake_stripe.complete(sid, email="lena@example.com")
    post_event(stripe_client, fake_stripe.event("checkout.session.completed", session))
    post_event(
        stripe_client, fake_stripe.event("charge.dispute.created", fake_stripe.dispute_for(sid))
    )
    o = order(engine)
    assert o.status == OrderStatus.disputed and o.flagged and entitled(engine) == []
    post_event(stripe_client, fake_stripe.event("checkout.session.completed", session))
    assert entitled(engine) == []


def test_refund_before_completion_is_replayed(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    sid = session_id_of(start(stripe_client))
    session = fake_stripe.complete(sid, email="lena@example.com")
    fake_stripe_refund = fake_stripe.charge_for(sid) | {"refunded": True, "amount_refunded": 2900}
    assert (
        post_event(stripe_client, fake_stripe.event("charge.refunded", fake_stripe_refund)).json()[
            "result"
        ]
        == "unmatched"
    )
    assert (
        post_event(stripe_client, fake_stripe.event("checkout.session.completed", session)).json()[
            "result"
        ]
        == "handled"
    )
    assert entitled(engine) == [] and order(engine).status == OrderStatus.refunded
    with Session(engine) as s:
        assert all(e.handled_at for e in s.exec(select(WebhookEvent)))


def test_delayed_payment_methods(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    sid = session_id_of(start(stripe_client))
    session = fake_stripe.complete(sid, payment_status="unpaid", email="lena@example.com")
    post_event(stripe_client, fake_stripe.event("checkout.session.completed", session))
    assert order(engine).status == OrderStatus.processing and entitled(engine) == []
    settled = fake_stripe.settle(sid, succeeded=True)
    post_event(
        stripe_client, fake_stripe.event("checkout.session.async_payment_succeeded", settled)
    )
    assert order(engine).status == OrderStatus.paid and len(entitled(engine)) == 1

    sid2 = session_id_of(start(stripe_client, email="other@example.com"))
    s2 = fake_stripe.complete(sid2, payment_status="unpaid", email="other@example.com")
    post_event(stripe_client, fake_stripe.event("checkout.session.completed", s2))
    failed = fake_stripe.settle(sid2, succeeded=False)
    post_event(stripe_client, fake_stripe.event("checkout.session.async_payment_failed", failed))
    with Session(engine) as s:
        statuses = sorted(o.status for o in s.exec(select(Order)))
    assert statuses == [OrderStatus.failed, OrderStatus.paid]


def test_expired_session(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    sid = session_id_of(start(stripe_client))
    post_event(
        stripe_client, fake_stripe.event("checkout.session.expired", fake_stripe.expire(sid))
    )
    assert order(engine).status == OrderStatus.expired and entitled(engine) == []


def test_bad_signatures_store_nothing(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    event = fake_stripe.event("customer.created", {"id": "cus_1", "object": "customer"})
    assert post_event(stripe_client, event, secret="whsec_wrong").status_code == 400
    assert post_event(stripe_client, event, timestamp=int(time.time()) - 3600).status_code == 400
    assert (
        post_event(stripe_client, event, timestamp=int(time.time()) + 3600).status_code == 400
    )  # future
    assert stripe_client.post("/webhooks/stripe", content=b"{}").status_code == 400  # no signature
    bad_json = stripe_client.post(
        "/webhooks/stripe", content=b"not json", headers={"Stripe-Signature": "t=1,v1=00"}
    )
    assert bad_json.status_code == 400
    with Session(engine) as s:
        assert s.exec(select(WebhookEvent)).first() is None
    ignored = post_event(stripe_client, event)
    assert ignored.status_code == 200 and ignored.json()["result"] == "ignored"


def test_a_session_we_did_not_create_is_stored_and_grants_nothing(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    foreign = {
        "id": "cs_test_elsewhere",
        "object": "checkout.session",
        "status": "complete",
        "payment_status": "paid",
        "payment_intent": "pi_elsewhere",
        "client_reference_id": "R-9999-99999",
    }
    r = post_event(stripe_client, fake_stripe.event("checkout.session.completed", foreign))
    assert r.status_code == 200 and r.json()["result"] == "foreign"
    with Session(engine) as s:
        stored = s.exec(select(WebhookEvent)).one()
        assert stored.outcome == "foreign" and stored.handled_at is not None
        assert stored.note and "did not create" in stored.note


def test_stripe_down_keeps_the_order_pending_and_retry_works(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    key = uuid.uuid4().hex
    fake_stripe.down = True
    r = start(stripe_client, key)
    assert r.status_code == 503 and "Try again" in r.text and r.headers["retry-after"]
    assert order(engine).status == OrderStatus.pending and fake_stripe.created_count == 0
    fake_stripe.down = False
    retry = start(stripe_client, key)
    assert retry.status_code == 303 and fake_stripe.created_count == 1
    with Session(engine) as s:
        assert len(s.exec(select(Order)).all()) == 1


def test_slow_stripe_does_not_make_a_second_session(
    stripe_client: TestClient, fake_stripe: FakeStripe
) -> None:
    key = uuid.uuid4().hex
    fake_stripe.delay = 2.5  # longer than the 2 s timeout: the app gives up, Stripe carries on
    assert start(stripe_client, key).status_code == 503
    fake_stripe.delay = 0
    time.sleep(0.7)
    assert start(stripe_client, key).status_code == 303
    assert fake_stripe.created_count == 1  # the idempotency key found the first session


def test_test_mode_is_refused_when_stripe_is_configured(stripe_client: TestClient) -> None:
    assert stripe_client.get("/checkout/test/test_cs_anything").status_code == 404


def test_receipt_link_from_the_charge(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    sid = session_id_of(start(stripe_client))
    session = fake_stripe.complete(sid, email="lena@example.com")
    charge = fake_stripe.charge_for(sid) | {"receipt_url": "https://pay.example/receipts/r1"}
    assert (
        post_event(stripe_client, fake_stripe.event("charge.succeeded", charge)).json()["result"]
        == "unmatched"
    )
    post_event(stripe_client, fake_stripe.event("checkout.session.completed", session))
    assert order(engine).receipt_url == "https://pay.example/receipts/r1"
    stripe_client.get(f"/checkout/success?session_id={sid}")
    sign_in(stripe_client, engine, "lena@example.com")  # the checkout alone signs no one in
    assert "https://pay.example/receipts/r1" in stripe_client.get("/orders").text
