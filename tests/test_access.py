"""Who may pass where: every route of the app x every kind of visitor has an expected answer.

The table is checked against the app's own route table, so a new route without an entry
here fails the test until someone decides who may use it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select
from starlette.routing import Mount

from app.accounts import service
from app.accounts.models import User
from app.catalog.models import Asset, Lesson
from tests.conftest import COURSES, csrf_token, make_user, sign_in

ROLES = ("anonymous", "buyer", "other_buyer", "author", "admin")
EMAILS = {
    "buyer": "buyer@example.com",
    "other_buyer": "other@example.com",
    "author": "author@example.com",
    "admin": "admin@example.com",
}


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route, with included routers flattened."""
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, Mount):
            found.add(("MOUNT", route.path))
            continue
        contexts = (
            route.effective_route_contexts()  # type: ignore[attr-defined]
            if type(route).__name__ == "_IncludedRouter"
            else [route]
        )
        for ctx in contexts:
            for method in sorted(getattr(ctx, "methods", None) or {"GET"}):
                if method != "HEAD":
                    found.add((method, str(getattr(ctx, "path", ""))))
    return found


@dataclass
class World:
    """Users and their resources, made once per test."""

    ids: dict[str, int] = field(default_factory=dict)
    author_token_id: int = 0
    media_url: str = ""
    buyer_order_id: int = 0
    buyer_order_number: str = ""
    pdf_lesson_id: int = 0
    pdf_lesson_key: str = ""
    product_id: int = 0  # the published linkedin-playbook, and the module of its PDF lesson
    module_id: int = 0
    asset_id: int = 0  # a ready asset (the e-book's)


@dataclass
class Case:
    url: Callable[[World], str]
    expect: dict[str, int]
    data: dict[str, str] | None = None  # a POST form (the CSRF token is added)
    headers: dict[str, str] = field(default_factory=dict)
    json: dict[str, object] | None = None  # a JSON body (the CSRF token goes in a header)


def same(code: int) -> dict[str, int]:
    return dict.fromkeys(ROLES, code)


def signed_in(anon: int, others: int) -> dict[str, int]:
    return {"anonymous": anon, **dict.fromkeys(ROLES[1:], others)}


def staff(anon: int, buyers: int, author: int, admin: int) -> dict[str, int]:
    return {
        "anonymous": anon,
        "buyer": buyers,
        "other_buyer": buyers,
        "author": author,
        "admin": admin,
    }


LOGIN = 303  # pages send anonymous visitors to the sign-in page
MATRIX: dict[tuple[str, str], Case] = {
    ("GET", "/"): Case(lambda w: "/", same(200)),
    ("GET", "/products/{slug}"): Case(lambda w: "/products/linkedin-playbook", same(200)),
    ("GET", "/healthz"): Case(lambda w: "/healthz", same(200)),
    ("GET", "/readyz"): Case(lambda w: "/readyz", same(200)),
    ("GET", "/openapi.json"): Case(lambda w: "/openapi.json", same(200)),
    ("GET", "/lang/{code}"): Case(lambda w: "/lang/de?next=/", same(303)),
    ("MOUNT", "/static"): Case(lambda w: "/static/css/app.css", same(200)),
    ("GET", "/media/{key:path}"): Case(lambda w: w.media_url, same(200)),
    ("GET", "/learn/{slug}"): Case(lambda w: "/learn/linkedin-playbook", same(303)),
    ("GET", "/learn/{slug}/{key}"): Case(
        lambda w: f"/learn/linkedin-playbook/{w.pdf_lesson_key}",
        {"anonymous": LOGIN, "buyer": 200, "other_buyer": 404, "author": 200, "admin": 200},
    ),
    ("GET", "/learn/{slug}/{key}/hls.m3u8"): Case(
        lambda w: f"/learn/linkedin-playbook/{w.pdf_lesson_key}/hls.m3u8",
        {"anonymous": LOGIN, "buyer": 404, "other_buyer": 404, "author": 404, "admin": 404},
    ),
    ("GET", "/learn/{slug}/{key}/download"): Case(
        lambda w: f"/learn/linkedin-playbook/{w.pdf_lesson_key}/download",
        {"anonymous": LOGIN, "buyer": 202, "other_buyer": 404, "author": 202, "admin": 202},
    ),
    ("GET", "/api/v1/lessons/{lesson_id}/stream"): Case(
        lambda w: f"/api/v1/lessons/{w.pdf_lesson_id}/stream",
        {"anonymous": 401, "buyer": 200, "other_buyer": 404, "author": 200, "admin": 200},
    ),
    ("GET", "/auth/login"): Case(lambda w: "/auth/login", signed_in(200, 303)),
    ("POST", "/auth/magic-link"): Case(
        lambda w: "/auth/magic-link", same(303), {"email": "x@example.com"}
    ),
    ("GET", "/auth/check-email"): Case(lambda w: "/auth/check-email", same(200)),
    ("GET", "/auth/magic"): Case(lambda w: "/auth/magic?token=unknown", same(400)),
    ("POST", "/auth/magic"): Case(lambda w: "/auth/magic", same(400), {"token": "unknown"}),
    ("POST", "/auth/login"): Case(
        lambda w: "/auth/login", same(400), {"email": "x@example.com", "password": "wrong password"}
    ),
    ("POST", "/auth/logout"): Case(lambda w: "/auth/logout", same(303), {}),
    ("GET", "/account"): Case(lambda w: "/account", signed_in(LOGIN, 200)),
    ("POST", "/account/profile"): Case(
        lambda w: "/account/profile", signed_in(LOGIN, 303), {"name": "N"}
    ),
    ("POST", "/account/password"): Case(
        lambda w: "/account/password", signed_in(LOGIN, 400), {"password": "short"}
    ),
    ("POST", "/account/sign-out-everywhere"): Case(
        lambda w: "/account/sign-out-everywhere", signed_in(LOGIN, 303), {}
    ),
    ("POST", "/account/tokens"): Case(
        lambda w: "/account/tokens", staff(LOGIN, 403, 201, 201), {"name": "ci"}
    ),
    # The author's own token: nobody else may revoke it, and an admin's attempt finds nothing.
    ("POST", "/account/tokens/{token_id}/revoke"): Case(
        lambda w: f"/account/tokens/{w.author_token_id}/revoke", staff(LOGIN, 403, 303, 404), {}
    ),
    ("GET", "/account/export"): Case(lambda w: "/account/export", signed_in(LOGIN, 200)),
    ("GET", "/account/delete"): Case(lambda w: "/account/delete", signed_in(LOGIN, 200)),
    ("POST", "/account/delete"): Case(
        lambda w: "/account/delete", signed_in(LOGIN, 400), {"confirm_email": "not-me@example.com"}
    ),
    ("GET", "/api/v1/me"): Case(lambda w: "/api/v1/me", signed_in(401, 200)),
    ("GET", "/api/v1/me/export"): Case(lambda w: "/api/v1/me/export", signed_in(401, 200)),
    ("GET", "/checkout/{slug}"): Case(lambda w: "/checkout/linkedin-playbook", same(200)),
    ("POST", "/checkout/{slug}"): Case(
        lambda w: "/checkout/linkedin-playbook",
        same(303),
        {
            "checkout_key": "{fresh}",
            "currency": "EUR",
            "email": "new@example.com",
            "consent": "true",
        },
    ),
    # Only the buyer (or the browser that checked out) sees an order's confirmation.
    ("GET", "/checkout/success"): Case(
        lambda w: f"/checkout/success?order={w.buyer_order_number}",
        {"anonymous": 404, "buyer": 200, "other_buyer": 404, "author": 404, "admin": 404},
    ),
    ("GET", "/checkout/cancel"): Case(lambda w: "/checkout/cancel?order=R-0", same(200)),
    ("GET", "/checkout/test/{session_id}"): Case(lambda w: "/checkout/test/test_cs_x", same(404)),
    ("POST", "/checkout/test/{session_id}"): Case(
        lambda w: "/checkout/test/test_cs_x", same(404), {"action": "pay"}
    ),
    ("GET", "/library"): Case(lambda w: "/library", signed_in(LOGIN, 200)),
    ("GET", "/orders"): Case(lambda w: "/orders", signed_in(LOGIN, 200)),
    ("GET", "/admin/orders"): Case(lambda w: "/admin/orders", staff(LOGIN, 403, 403, 200)),
    ("POST", "/admin/orders/{order_id}/refund"): Case(
        lambda w: f"/admin/orders/{w.buyer_order_id}/refund", staff(LOGIN, 403, 403, 303), {}
    ),
    # Authoring. Buyers get 403, visitors the sign-in page (401 from the API). Author and admin
    # calls send refused input (422), or meet a rule (409), so that nothing changes; the few
    # that succeed are idempotent.
    ("GET", "/author"): Case(lambda w: "/author", staff(LOGIN, 403, 200, 200)),
    ("POST", "/author/products"): Case(
        lambda w: "/author/products", staff(LOGIN, 403, 422, 422), {"slug": "", "kind": "course"}
    ),
    ("GET", "/author/products/{product_id}"): Case(
        lambda w: f"/author/products/{w.product_id}", staff(LOGIN, 403, 200, 200)
    ),
    ("POST", "/author/products/{product_id}"): Case(
        lambda w: f"/author/products/{w.product_id}",
        staff(LOGIN, 403, 422, 422),
        {"slug": "Not A Slug"},
    ),
    ("POST", "/author/products/{product_id}/prices"): Case(
        lambda w: f"/author/products/{w.product_id}/prices",
        staff(LOGIN, 403, 422, 422),
        {"prices_EUR": "-5"},
    ),
    ("POST", "/author/products/{product_id}/status"): Case(
        lambda w: f"/author/products/{w.product_id}/status",
        staff(LOGIN, 403, 303, 303),
        {"status": "published"},
    ),
    ("GET", "/author/products/{product_id}/preview"): Case(
        lambda w: f"/author/products/{w.product_id}/preview", staff(LOGIN, 403, 200, 200)
    ),
    ("POST", "/author/products/{product_id}/modules"): Case(
        lambda w: f"/author/products/{w.product_id}/modules",
        staff(LOGIN, 403, 422, 422),
        {"title_en": ""},
    ),
    ("GET", "/author/modules/{module_id}"): Case(
        lambda w: f"/author/modules/{w.module_id}", staff(LOGIN, 403, 200, 200)
    ),
    ("POST", "/author/modules/{module_id}"): Case(
        lambda w: f"/author/modules/{w.module_id}", staff(LOGIN, 403, 422, 422), {"key": "BAD"}
    ),
    ("POST", "/author/modules/{module_id}/status"): Case(
        lambda w: f"/author/modules/{w.module_id}/status",
        staff(LOGIN, 403, 409, 409),
        {"status": "published"},
    ),
    ("POST", "/author/modules/{module_id}/delete"): Case(
        lambda w: f"/author/modules/{w.module_id}/delete", staff(LOGIN, 403, 409, 409), {}
    ),
    ("POST", "/author/modules/{module_id}/lessons"): Case(
        lambda w: f"/author/modules/{w.module_id}/lessons",
        staff(LOGIN, 403, 422, 422),
        {"kind": "nope", "title_en": "T"},
    ),
    ("GET", "/author/lessons/{lesson_id}"): Case(
        lambda w: f"/author/lessons/{w.pdf_lesson_id}", staff(LOGIN, 403, 200, 200)
    ),
    ("POST", "/author/lessons/{lesson_id}"): Case(
        lambda w: f"/author/lessons/{w.pdf_lesson_id}", staff(LOGIN, 403, 422, 422), {"key": "BAD"}
    ),
    ("POST", "/author/lessons/{lesson_id}/delete"): Case(
        lambda w: f"/author/lessons/{w.pdf_lesson_id}/delete", staff(LOGIN, 403, 409, 409), {}
    ),
    ("POST", "/account/release-emails"): Case(
        lambda w: "/account/release-emails", signed_in(LOGIN, 303), {"release_emails": "1"}
    ),
    # The unsubscribe link works without signing in; a forged token gets nowhere.
    ("GET", "/release-emails/unsubscribe"): Case(
        lambda w: "/release-emails/unsubscribe?token=forged", same(400)
    ),
    ("POST", "/release-emails/unsubscribe"): Case(
        lambda w: "/release-emails/unsubscribe", same(400), {"token": "forged"}
    ),
    ("GET", "/api/v1/author/products"): Case(
        lambda w: "/api/v1/author/products", staff(401, 403, 200, 200)
    ),
    ("POST", "/api/v1/author/products"): Case(
        lambda w: "/api/v1/author/products", staff(401, 403, 422, 422), json={}
    ),
    ("GET", "/api/v1/author/products/{product_id}"): Case(
        lambda w: f"/api/v1/author/products/{w.product_id}", staff(401, 403, 200, 200)
    ),
    ("PATCH", "/api/v1/author/products/{product_id}"): Case(
        lambda w: f"/api/v1/author/products/{w.product_id}",
        staff(401, 403, 422, 422),
        json={"slug": "BAD"},
    ),
    ("PUT", "/api/v1/author/products/{product_id}/prices"): Case(
        lambda w: f"/api/v1/author/products/{w.product_id}/prices",
        staff(401, 403, 422, 422),
        json={"prices": {"GBP": 100}},
    ),
    ("POST", "/api/v1/author/products/{product_id}/publish"): Case(
        lambda w: f"/api/v1/author/products/{w.product_id}/publish",
        staff(401, 403, 200, 200),
        json={},
    ),
    ("POST", "/api/v1/author/products/{product_id}/unpublish"): Case(
        lambda w: f"/api/v1/author/products/{w.product_id}/unpublish",
        staff(401, 403, 200, 200),
        json={},
    ),
    ("POST", "/api/v1/author/products/{product_id}/modules"): Case(
        lambda w: f"/api/v1/author/products/{w.product_id}/modules",
        staff(401, 403, 422, 422),
        json={"title": {}},
    ),
    ("PUT", "/api/v1/author/products/{product_id}/modules/order"): Case(
        lambda w: f"/api/v1/author/products/{w.product_id}/modules/order",
        staff(401, 403, 422, 422),
        json={"ids": [999999]},
    ),
    ("PATCH", "/api/v1/author/modules/{module_id}"): Case(
        lambda w: f"/api/v1/author/modules/{w.module_id}",
        staff(401, 403, 422, 422),
        json={"key": "BAD"},
    ),
    ("DELETE", "/api/v1/author/modules/{module_id}"): Case(
        lambda w: f"/api/v1/author/modules/{w.module_id}", staff(401, 403, 409, 409)
    ),
    ("POST", "/api/v1/author/modules/{module_id}/publish"): Case(
        lambda w: f"/api/v1/author/modules/{w.module_id}/publish",
        staff(401, 403, 409, 409),
        json={},
    ),
    ("POST", "/api/v1/author/modules/{module_id}/unpublish"): Case(
        lambda w: f"/api/v1/author/modules/{w.module_id}/unpublish",
        staff(401, 403, 200, 200),
        json={},
    ),
    ("POST", "/api/v1/author/modules/{module_id}/lessons"): Case(
        lambda w: f"/api/v1/author/modules/{w.module_id}/lessons",
        staff(401, 403, 422, 422),
        json={"kind": "nope", "title": {"en": "T"}},
    ),
    ("PUT", "/api/v1/author/modules/{module_id}/lessons/order"): Case(
        lambda w: f"/api/v1/author/modules/{w.module_id}/lessons/order",
        staff(401, 403, 422, 422),
        json={"ids": []},
    ),
    ("PATCH", "/api/v1/author/lessons/{lesson_id}"): Case(
        lambda w: f"/api/v1/author/lessons/{w.pdf_lesson_id}",
        staff(401, 403, 422, 422),
        json={"asset_id": 999999},
    ),
    ("DELETE", "/api/v1/author/lessons/{lesson_id}"): Case(
        lambda w: f"/api/v1/author/lessons/{w.pdf_lesson_id}", staff(401, 403, 409, 409)
    ),
    # Signed by Stripe, not by a session: without a valid signature nobody gets further.
    ("POST", "/webhooks/stripe"): Case(lambda w: "/webhooks/stripe", same(400), {}),
    ("GET", "/admin/users"): Case(lambda w: "/admin/users", staff(LOGIN, 403, 403, 200)),
    ("GET", "/admin"): Case(lambda w: "/admin", staff(LOGIN, 403, 403, 200)),
    ("GET", "/admin/leads"): Case(lambda w: "/admin/leads", staff(LOGIN, 403, 403, 200)),
    ("GET", "/admin/buyers/{user_id}"): Case(
        lambda w: f"/admin/buyers/{w.ids['buyer']}", staff(LOGIN, 403, 403, 200)
    ),
    ("GET", "/admin/exports/{name}.csv"): Case(
        lambda w: "/admin/exports/orders.csv?from=2026-01-01&to=2026-12-31",
        staff(LOGIN, 403, 403, 200),
    ),
    ("GET", "/admin/exports/{name}.xlsx"): Case(
        lambda w: "/admin/exports/orders.xlsx?from=2026-01-01&to=2026-12-31",
        staff(LOGIN, 403, 403, 200),
    ),
    ("POST", "/api/v1/events"): Case(
        lambda w: "/api/v1/events", signed_in(401, 400), {"events": "not JSON"}
    ),
    ("GET", "/inquiry"): Case(lambda w: "/inquiry", same(200)),
    ("POST", "/inquiry"): Case(
        lambda w: "/inquiry",
        same(303),
        {"name": "Kim", "email": "kim@example.com", "message": "Let us talk about trust."},
    ),
    ("GET", "/inquiry/thanks"): Case(lambda w: "/inquiry/thanks", same(200)),
    ("GET", "/admin/inquiries"): Case(lambda w: "/admin/inquiries", staff(LOGIN, 403, 403, 200)),
    ("GET", "/admin/inquiries/{inquiry_id}"): Case(
        lambda w: "/admin/inquiries/999999", staff(LOGIN, 403, 403, 404)
    ),
    ("POST", "/admin/inquiries/{inquiry_id}"): Case(
        lambda w: "/admin/inquiries/999999", staff(LOGIN, 403, 403, 404), {"status": "won"}
    ),
    ("POST", "/admin/users/{user_id}/role"): Case(
        lambda w: f"/admin/users/{w.ids['other_buyer']}/role",
        staff(LOGIN, 403, 403, 303),
        {"role": "buyer"},
    ),
    # Uploads (app/authoring/upload_routes.py), local storage here: an executable's first
    # bytes are refused (415); a ready asset has nothing left to upload (409), and completing
    # it again is harmless (200). tests/authoring/test_uploads.py covers the rest.
    ("POST", "/api/v1/author/uploads"): Case(
        lambda w: "/api/v1/author/uploads",
        staff(401, 403, 415, 415),
        json={"kind": "video", "filename": "x.mp4", "size": 8, "head": "f0VMRgIBAQA="},
    ),
    ("GET", "/api/v1/author/uploads/{asset_id}"): Case(
        lambda w: f"/api/v1/author/uploads/{w.asset_id}", staff(401, 403, 200, 200)
    ),
    ("GET", "/api/v1/author/uploads/{asset_id}/parts"): Case(
        lambda w: f"/api/v1/author/uploads/{w.asset_id}/parts", staff(401, 403, 409, 409)
    ),
    ("POST", "/api/v1/author/uploads/{asset_id}/parts"): Case(
        lambda w: f"/api/v1/author/uploads/{w.asset_id}/parts",
        staff(401, 403, 409, 409),
        json={"part_numbers": [1]},
    ),
    ("PUT", "/api/v1/author/uploads/{asset_id}/chunk"): Case(
        lambda w: f"/api/v1/author/uploads/{w.asset_id}/chunk?offset=0", staff(401, 403, 409, 409)
    ),
    ("POST", "/api/v1/author/uploads/{asset_id}/complete"): Case(
        lambda w: f"/api/v1/author/uploads/{w.asset_id}/complete",
        staff(401, 403, 200, 200),
        json={},
    ),
    ("DELETE", "/api/v1/author/uploads/{asset_id}"): Case(
        lambda w: f"/api/v1/author/uploads/{w.asset_id}", staff(401, 403, 409, 409)
    ),
    ("GET", "/api/v1/author/lessons/{lesson_id}/media"): Case(
        lambda w: f"/api/v1/author/lessons/{w.pdf_lesson_id}/media", staff(401, 403, 200, 200)
    ),
    ("PUT", "/api/v1/author/manifests/{slug}"): Case(
        lambda w: "/api/v1/author/manifests/linkedin-playbook",
        staff(401, 403, 422, 422),
        json={"manifest": {"slug": "linkedin-playbook"}},
    ),
}


def test_every_route_has_an_entry(app: FastAPI) -> None:
    routes = app_routes(app)
    missing = sorted(routes - set(MATRIX))
    stale = sorted(set(MATRIX) - routes)
    assert not missing, f"routes without an access rule in tests/test_access.py: {missing}"
    assert not stale, f"access rules for routes that no longer exist: {stale}"


@pytest.fixture
def world(app: FastAPI, engine: Engine) -> World:
    from app.catalog.service import publish_folder

    w = World()
    for role, email in EMAILS.items():
        w.ids[role] = make_user(engine, email, "buyer" if role == "other_buyer" else role)
    with Session(engine) as s:
        author = s.get(User, w.ids["author"])
        assert author is not None
        token, _plain = service.create_api_token(session=s, user=author, name="existing")
        w.author_token_id = token.id or 0
        publish_folder(session=s, storage=app.state.storage, folder=COURSES / "linkedin-playbook")
        s.commit()
        asset = s.exec(select(Asset)).first()
        assert asset is not None
        w.asset_id = asset.id or 0
        w.buyer_order_id, w.buyer_order_number = paid_test_order(s, w.ids["buyer"])
        pdf = s.exec(select(Lesson).where(Lesson.kind == "pdf")).one()
        w.pdf_lesson_id, w.pdf_lesson_key = pdf.id or 0, pdf.key
        w.product_id, w.module_id = pdf.product_id, pdf.module_id
        s.commit()
        w.media_url = app.state.storage.download_url(
            asset.storage_key, ttl=60, content_type=asset.content_type
        )
    return w


@pytest.mark.parametrize("route", sorted(MATRIX, key=str), ids=lambda r: f"{r[0]} {r[1]}")
def test_access(route: tuple[str, str], app: FastAPI, engine: Engine, world: World) -> None:
    case = MATRIX[route]
    method = "GET" if route[0] == "MOUNT" else route[0]
    outcomes: dict[str, int] = {}
    for role in ROLES:
        with TestClient(app) as client:
            if role != "anonymous":
                sign_in(client, engine, EMAILS[role])
            url = case.url(world)
            if case.json is not None or method in ("PUT", "PATCH", "DELETE"):
                headers = {**case.headers, "X-CSRFToken": csrf_token(client)}
                r = client.request(
                    method, url, json=case.json, headers=headers, follow_redirects=False
                )
            elif method == "POST":
                data = {**(case.data or {}), "csrftoken": csrf_token(client)}
                data = {k: uuid.uuid4().hex if v == "{fresh}" else v for k, v in data.items()}
                r = client.post(url, data=data, headers=case.headers, follow_redirects=False)
            else:
                r = client.get(url, headers=case.headers, follow_redirects=False)
            outcomes[role] = r.status_code
            if r.status_code == LOGIN and role == "anonymous" and case.expect["anonymous"] == LOGIN:
                assert r.headers["location"].startswith(("/auth/login", "/")), r.headers["location"]
        app.state.limiter.reset()
    assert outcomes == case.expect


def paid_test_order(session: Session, user_id: int) -> tuple[int, str]:
    """A paid test-mode order of the linkedin-playbook for the user."""
    from app.checkout import service as checkout
    from app.checkout.providers import CheckoutDetails

    user = session.get(User, user_id)
    order, _product = checkout.start_order(
        session=session,
        product_slug="linkedin-playbook",
        currency="EUR",
        checkout_key=uuid.uuid4().hex,
        provider="test",
        user=user,
        email=None,
        business=True,
        company_name="Acme",
        vat_id="",
        consent_locale=None,
        attribution={},
    )
    checkout.attach_session(
        session=session, order=order, session_id=f"test_cs_{order.checkout_key}"
    )
    session.flush()
    details = CheckoutDetails(
        session_id=f"test_cs_{order.checkout_key}",
        status="complete",
        payment_status="paid",
        payment_intent=f"test_pi_{order.checkout_key}",
        order_number=order.number,
    )
    outcome = checkout.apply_checkout(
        session=session, provider="test", details=details, event="completed"
    )
    assert outcome.granted and order.id is not None
    return order.id, order.number
