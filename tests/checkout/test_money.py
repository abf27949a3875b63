"""Money true to Stripe: orders are paid only by their own session, access is the union of the
grants of paid order lines, amounts are what Stripe charged, and disputes and refunds follow
their outcome. Everything goes through the official library, the strict fake and signed
webhooks, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from app.admin import service as admin
from app.catalog.changes import catalog_changed
from app.catalog.models import BundleItem, Price, Product, ProductKind, ProductStatus
from app.catalog.service import publish_folder
from app.checkout.models import Entitlement, Grant, Order, OrderStatus, WebhookEvent
from tests.conftest import COURSES, csrf_token, make_user, post_event, sign_in
from tests.fakes.stripe_api import FakeStripe

EBOOK = "linkedin-playbook"  # 29.00 EUR
BUNDLE = "playbook-bundle"  # the e-book and the course, 99.00 EUR


@pytest.fixture(autouse=True)
def _catalog(stripe_client: TestClient, engine: Engine) -> None:
    storage = stripe_client.app.state.storage  # type: ignore[attr-defined]
    with Session(engine) as s:
        for slug in (EBOOK, "trust-at-a-distance"):
            publish_folder(session=s, storage=storage, folder=COURSES / slug)
        s.commit()
        ebook = s.exec(select(Product).where(Product.slug == EBOOK)).one()
        course = s.exec(select(Product).where(Product.slug == "trust-at-a-distance")).one()
        bundle = Product(
            slug=BUNDLE,
            kind=ProductKind.bundle,
            status=ProductStatus.published,
            title={"en": "Playbook bundle"},
            description={"en": "Both"},
        )
        s.add(bundle)
        s.flush()
        s.add(Price(product_id=bundle.id or 0, currency="EUR", amount=9900))
        for item in (ebook, course):
            s.add(BundleItem(bundle_id=bundle.id or 0, product_id=item.id or 0))
        catalog_changed(s)
        s.commit()


def checkout(client: TestClient, slug: str = EBOOK, *, key: str | None = None, **form: str) -> Any:
    data = {
        "checkout_key": key or uuid.uuid4().hex,
        "currency": "EUR",
        "email": "lena@example.com",
        "consent": "true",
        "csrftoken": csrf_token(client),
        **form,
    }
    return client.post(f"/checkout/{slug}", data=data, follow_redirects=False)


def session_id_of(response: Any) -> str:
    assert response.status_code == 303, response.text
    return str(response.headers["location"].rsplit("/", 1)[-1])


def buy(
    client: TestClient, fake: FakeStripe, slug: str = EBOOK, **complete: Any
) -> tuple[str, dict[str, Any]]:
    """Check out, pay on Stripe's page and deliver the completion; (session id, session)."""
    sid = session_id_of(checkout(client, slug))
    session = fake.complete(sid, email="lena@example.com", **complete)
    answer = post_event(client, fake.event("checkout.session.completed", session))
    assert answer.status_code == 200, answer.text
    return sid, session


def refund(client: TestClient, fake: FakeStripe, sid: str, amount: int | None = None) -> str:
    """Refund through the API as the admin's button does, deliver charge.refunded; refund id."""
    api = stripe.StripeClient(fake.api_key, base_addresses={"api": fake.url})
    params: dict[str, Any] = {"payment_intent": fake.sessions[sid]["payment_intent"]}
    if amount is not None:
        params["amount"] = amount
    created = api.v1.refunds.create(params=params)  # type: ignore[arg-type]
    post_event(client, fake.event("charge.refunded", fake.charge_for(sid)))
    return str(created.id)


def can_open(engine: Engine, slug: str, email: str = "lena@example.com") -> bool:
    with Session(engine) as s:
        row = s.exec(
            select(Entitlement)
            .join(Product, Product.id == Entitlement.product_id)  # type: ignore[arg-type]
            .where(Product.slug == slug)
        ).first()
        return row is not None and row.revoked_at is None


def orders(engine: Engine) -> list[Order]:
    with Session(engine) as s:
        return list(s.exec(select(Order).order_by(Order.id)))  # type: ignore[arg-type]


def order_of(engine: Engine, sid: str) -> Order:
    with Session(engine) as s:
        return s.exec(select(Order).where(Order.provider_session_id == sid)).one()


# An order is paid only by the session the app created for it ------------------------------


def test_a_payment_link_with_a_copied_order_number_buys_nothing(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    ours = session_id_of(checkout(stripe_client))
    number = order_of(engine, ours).number
    # Someone pays 1 EUR through a Payment Link of the same account, with our order number in
    # the URL (`?client_reference_id=`), which Stripe copies onto the session.
    api = stripe.StripeClient(fake_stripe.api_key, base_addresses={"api": fake_stripe.url})
    link_session = api.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "client_reference_id": number,
            "success_url": "https://example.com/thanks",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": "eur",
                        "unit_amount": 100,
                        "product_data": {"name": "Tip"},
                    },
                }
            ],
        }
    )
    paid = fake_stripe.complete(str(link_session.id), email="mallory@example.com")
    answer = post_event(stripe_client, fake_stripe.event("checkout.session.completed", paid))
    assert answer.json()["result"] == "foreign"
    success = stripe_client.get(f"/checkout/success?session_id={link_session.id}")
    assert success.status_code == 404
    (order,) = orders(engine)
    assert order.status == OrderStatus.pending and order.user_id is None
    assert not can_open(engine, EBOOK)
    with Session(engine) as s:
        assert s.exec(select(Grant)).first() is None
        stored = s.exec(select(WebhookEvent)).one()
        assert stored.outcome == "foreign"
    # The admin sees it as a payment we did not create.
    make_user(engine, "admin@example.com", "admin")
    with TestClient(stripe_client.app) as admin:
        sign_in(admin, engine, "admin@example.com")
        page = admin.get("/admin/orders").text
    assert "A payment we did not create" in page and str(stored.event_id) in page


def test_a_session_for_another_amount_grants_nothing(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    sid = session_id_of(checkout(stripe_client))
    session = fake_stripe.complete(sid, email="lena@example.com")
    # The same session id, but reported for another currency and amount than the order asked.
    forged = session | {"currency": "usd", "amount_subtotal": 100, "amount_total": 100}
    answer = post_event(stripe_client, fake_stripe.event("checkout.session.completed", forged))
    assert answer.json()["result"] == "mismatch"
    (order,) = orders(engine)
    assert order.status == OrderStatus.pending and order.flagged
    assert not can_open(engine, EBOOK)


def test_an_earlier_session_of_the_same_order_pays_it_by_its_metadata(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    key = uuid.uuid4().hex
    first = session_id_of(checkout(stripe_client, key=key))
    # The buyer switches the language and submits the same form again: a new session.
    stripe_client.cookies.set("lang", "de")
    second = session_id_of(checkout(stripe_client, key=key))
    assert first != second and len(orders(engine)) == 1
    # The first tab is still open and paid; its expiry later must not expire the order.
    paid = fake_stripe.complete(first, email="lena@example.com")
    post_event(stripe_client, fake_stripe.event("checkout.session.completed", paid))
    assert orders(engine)[0].status == OrderStatus.paid and can_open(engine, EBOOK)
    expired = fake_stripe.expire(second)
    post_event(stripe_client, fake_stripe.event("checkout.session.expired", expired))
    assert orders(engine)[0].status == OrderStatus.paid and can_open(engine, EBOOK)


# Access is the union of what paid orders grant ---------------------------------------------


@pytest.mark.parametrize("refunded", ["single", "bundle"])
def test_owning_a_product_twice_survives_refunding_either_order(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine, refunded: str
) -> None:
    single, _ = buy(stripe_client, fake_stripe, EBOOK)
    bundle, _ = buy(stripe_client, fake_stripe, BUNDLE)
    assert can_open(engine, EBOOK) and can_open(engine, "trust-at-a-distance")
    refund(stripe_client, fake_stripe, single if refunded == "single" else bundle)
    assert can_open(engine, EBOOK)  # the other order still grants it
    assert can_open(engine, "trust-at-a-distance") == (refunded == "single")
    # Refund the other one as well: now nothing grants the e-book.
    refund(stripe_client, fake_stripe, bundle if refunded == "single" else single)
    assert not can_open(engine, EBOOK) and not can_open(engine, "trust-at-a-distance")
    statuses = [o.status for o in orders(engine)]
    assert statuses == [OrderStatus.refunded, OrderStatus.refunded]


def test_buying_again_after_a_refund_gives_access_again(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    first, _ = buy(stripe_client, fake_stripe)
    refund(stripe_client, fake_stripe, first)
    assert not can_open(engine, EBOOK)
    second, _ = buy(stripe_client, fake_stripe)
    assert can_open(engine, EBOOK)
    with Session(engine) as s:
        entitlement = s.exec(select(Entitlement)).one()
        assert entitlement.order_id == order_of(engine, second).id
        grants = {(g.order_id, g.end_reason) for g in s.exec(select(Grant))}
    assert grants == {(order_of(engine, first).id, "refunded"), (order_of(engine, second).id, None)}


def test_a_partial_refund_keeps_access_and_records_the_amount(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    sid, _ = buy(stripe_client, fake_stripe)
    refund(stripe_client, fake_stripe, sid, amount=900)
    order = order_of(engine, sid)
    assert order.status == OrderStatus.paid and order.amount_refunded == 900
    assert can_open(engine, EBOOK)


# Amounts are what Stripe charged -----------------------------------------------------------


def test_a_promotion_code_is_recorded_as_charged(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    sid, session = buy(stripe_client, fake_stripe, discount_percent=50, promotion_code="HALF")
    assert session["amount_total"] == 1450
    order = order_of(engine, sid)
    assert (order.amount, order.amount_subtotal, order.amount_discount) == (2900, 2900, 1450)
    assert order.amount_total == 1450 and order.amount_tax == 0
    assert order.promotion_code and order.status == OrderStatus.paid
    assert can_open(engine, EBOOK)


def test_a_full_discount_grants_with_no_payment(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    sid, session = buy(stripe_client, fake_stripe, discount_percent=100, promotion_code="FREE")
    assert session["payment_status"] == "no_payment_required"
    assert session["payment_intent"] is None
    order = order_of(engine, sid)
    assert order.status == OrderStatus.paid and order.amount_total == 0
    assert order.amount_discount == 2900 and order.payment_intent is None
    assert can_open(engine, EBOOK)


# Disputes and refunds follow their outcome -------------------------------------------------


def test_a_won_dispute_restores_access_and_a_lost_one_keeps_it_ended(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    won, _ = buy(stripe_client, fake_stripe)
    dispute = fake_stripe.dispute_for(won)
    post_event(stripe_client, fake_stripe.event("charge.dispute.created", dispute))
    assert order_of(engine, won).status == OrderStatus.disputed and not can_open(engine, EBOOK)
    closed = fake_stripe.close_dispute(dispute["id"], won=True)
    post_event(stripe_client, fake_stripe.event("charge.dispute.closed", closed))
    order = order_of(engine, won)
    assert order.status == OrderStatus.paid and order.dispute_status == "won"
    assert can_open(engine, EBOOK)

    stripe_client.cookies.clear()
    lost, _ = buy(stripe_client, fake_stripe, "trust-at-a-distance")
    dispute = fake_stripe.dispute_for(lost)
    post_event(stripe_client, fake_stripe.event("charge.dispute.created", dispute))
    closed = fake_stripe.close_dispute(dispute["id"], won=False)
    post_event(stripe_client, fake_stripe.event("charge.dispute.closed", closed))
    order = order_of(engine, lost)
    assert order.status == OrderStatus.disputed and order.dispute_status == "lost"
    assert not can_open(engine, "trust-at-a-distance") and can_open(engine, EBOOK)


def test_an_inquiry_keeps_access_and_tells_the_admin(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    sid, _ = buy(stripe_client, fake_stripe)
    inquiry = fake_stripe.dispute_for(sid, status="warning_needs_response")
    answer = post_event(stripe_client, fake_stripe.event("charge.dispute.created", inquiry))
    assert answer.json()["result"] == "notice"
    order = order_of(engine, sid)
    assert order.status == OrderStatus.paid and order.flagged
    assert order.dispute_status == "warning_needs_response"
    assert can_open(engine, EBOOK)
    make_user(engine, "admin@example.com", "admin")
    with TestClient(stripe_client.app) as admin:
        sign_in(admin, engine, "admin@example.com")
        page = admin.get("/admin/orders").text
    assert "A dispute" in page and "warning_needs_response" in page


@pytest.mark.parametrize("event_type", ["refund.failed", "refund.updated", "charge.refund.updated"])
def test_a_failed_refund_gives_access_back(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine, event_type: str
) -> None:
    sid, _ = buy(stripe_client, fake_stripe)
    refund_id = refund(stripe_client, fake_stripe, sid)
    assert order_of(engine, sid).status == OrderStatus.refunded and not can_open(engine, EBOOK)
    failed = fake_stripe.fail_refund(refund_id, status="failed")
    answer = post_event(stripe_client, fake_stripe.event(event_type, failed))
    assert answer.json()["result"] == "notice"
    order = order_of(engine, sid)
    assert order.status == OrderStatus.paid and order.amount_refunded == 0
    assert can_open(engine, EBOOK)
    # The same failure reported again, or the old charge.refunded delivered late: no change.
    post_event(stripe_client, fake_stripe.event("charge.refund.updated", failed))
    stale = fake_stripe.event(
        "charge.refunded",
        fake_stripe.charge_for(sid) | {"refunded": True, "amount_refunded": 2900},
        created=int(fake_stripe.refunds[0]["created"]),
    )
    post_event(stripe_client, stale)
    order = order_of(engine, sid)
    assert order.status == OrderStatus.paid and order.amount_refunded == 0
    assert can_open(engine, EBOOK)


def test_a_canceled_refund_gives_access_back(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    sid, _ = buy(stripe_client, fake_stripe)
    refund_id = refund(stripe_client, fake_stripe, sid)
    canceled = fake_stripe.fail_refund(refund_id, status="canceled")
    post_event(stripe_client, fake_stripe.event("refund.updated", canceled))
    assert order_of(engine, sid).status == OrderStatus.paid and can_open(engine, EBOOK)


# Retries and changed minds never dead-end --------------------------------------------------


def test_try_again_after_a_stripe_500_reaches_checkout(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    key = uuid.uuid4().hex
    fake_stripe.fail_next_500 = 1
    failed = checkout(stripe_client, key=key)
    assert failed.status_code == 503 and "Try again" in failed.text
    # Stripe saved that 500 under the key: the same key would get it again for a day.
    retry = checkout(stripe_client, key=key)
    assert retry.status_code == 303 and fake_stripe.created_count == 1
    assert order_of(engine, session_id_of(retry)).checkout_attempt == 1


def test_switching_the_language_and_submitting_again_gets_a_session(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    key = uuid.uuid4().hex
    english = checkout(stripe_client, key=key)
    stripe_client.cookies.set("lang", "de")
    german = checkout(stripe_client, key=key)
    assert english.status_code == german.status_code == 303
    sid = session_id_of(german)
    assert fake_stripe.sessions[sid]["locale"] == "de"
    assert order_of(engine, sid).provider_session_id == sid and len(orders(engine)) == 1


# Live and test never mix --------------------------------------------------------------------


def test_a_live_event_under_a_test_key_is_stored_and_ignored(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    sid = session_id_of(checkout(stripe_client))
    session = fake_stripe.complete(sid, email="lena@example.com")
    live = fake_stripe.event("checkout.session.completed", session, livemode=True)
    assert post_event(stripe_client, live).json()["result"] == "livemode"
    assert orders(engine)[0].status == OrderStatus.pending and not can_open(engine, EBOOK)
    with Session(engine) as s:
        stored = s.exec(select(WebhookEvent)).one()
    assert stored.outcome == "livemode" and stored.handled_at is not None


# The VAT ID reaches Stripe ------------------------------------------------------------------


def test_company_and_vat_id_reach_stripe_on_a_customer(
    stripe_client: TestClient, fake_stripe: FakeStripe
) -> None:
    sid = session_id_of(
        checkout(
            stripe_client,
            business="true",
            company_name="Muster GmbH",
            vat_id="DE 123456789",
            consent="",
        )
    )
    customers = [q for q in fake_stripe.requests if q.path == "/v1/customers"]
    assert len(customers) == 1
    form = customers[0].form
    assert form["name"] == "Muster GmbH" and form["email"] == "lena@example.com"
    assert form["tax_id_data[0][type]"] == "eu_vat"
    assert form["tax_id_data[0][value]"] == "DE123456789"
    session = fake_stripe.sessions[sid]
    assert session["customer"] and session["customer_email"] is None
    created = [q for q in fake_stripe.requests if q.path == "/v1/checkout/sessions"][-1].form
    assert created["customer_update[name]"] == "auto"
    assert created["adaptive_pricing[enabled]"] == "false"


# Revenue is the money that moved ------------------------------------------------------------


def test_dashboard_revenue_is_the_money_that_moved_per_currency(
    stripe_client: TestClient, fake_stripe: FakeStripe, engine: Engine
) -> None:
    buy(stripe_client, fake_stripe, EBOOK, discount_percent=50, promotion_code="HALF")
    course, _ = buy(stripe_client, fake_stripe, "trust-at-a-distance")
    refund(stripe_client, fake_stripe, course, amount=4000)
    bundle, _ = buy(stripe_client, fake_stripe, BUNDLE)
    refund(stripe_client, fake_stripe, bundle)
    usd = session_id_of(checkout(stripe_client, EBOOK, currency="USD"))
    post_event(
        stripe_client,
        fake_stripe.event(
            "checkout.session.completed", fake_stripe.complete(usd, email="lena@example.com")
        ),
    )
    # What Stripe charged and gave back, per currency, in cents:
    #   EUR paid      1450 (29.00 less 50 %) + 14900 (course) + 9900 (bundle) = 26250
    #   EUR refunded                            4000 (partial) + 9900 (bundle) = 13900
    #   EUR net       26250 - 13900 = 12350  (= 1450 + 10900 + 0)
    #   USD paid 3200, refunded 0, net 3200
    charges = [c for c in fake_stripe.charges.values()]
    moved = {
        cur: sum(c["amount"] - c["amount_refunded"] for c in charges if c["currency"] == cur)
        for cur in ("eur", "usd")
    }
    assert moved == {"eur": 12350, "usd": 3200}
    today = datetime.now(UTC).date()
    with Session(engine) as s:
        rows = {r.currency: r for r in admin.revenue(s, admin.DateRange(today, today))}
    assert (rows["EUR"].orders, rows["EUR"].gross, rows["EUR"].refunded) == (3, 26250, 13900)
    assert rows["EUR"].net == 12350 == moved["eur"]
    assert (rows["USD"].gross, rows["USD"].refunded, rows["USD"].net) == (3200, 0, 3200)
    make_user(engine, "admin@example.com", "admin")
    with TestClient(stripe_client.app) as client:
        sign_in(client, engine, "admin@example.com")
        page = client.get(f"/admin?from={today}&to={today}").text
    table = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.split('id="table-revenue"')[1]))
    assert "EUR 3 €262.50 €139.00 €0.00 €123.50" in table
    assert "USD 1 $32.00 $0.00 $0.00 $32.00" in table
