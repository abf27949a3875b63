"""Chaos on PostgreSQL: 500 Stripe deliveries for 100 orders, duplicated, shuffled, concurrent.

A real `rapport serve` process receives the deliveries over HTTP from 8 concurrent senders.
About 30 % of the deliveries are retries of an event already sent (same event id, as Stripe
retries), the order is shuffled (refunds and disputes arrive before the payment they undo),
and the end state must be exact: one entitlement per paying buyer, none for the refunded or
disputed ones, every event stored once and acted on, and no answer >= 500.
"""

from __future__ import annotations

import copy
import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from app.accounts.models import User
from app.catalog.models import Product
from app.catalog.service import publish_folder
from app.checkout import service
from app.checkout.models import Entitlement, Order, OrderStatus, WebhookEvent
from app.delivery.storage import LocalStorage
from tests.conftest import COURSES, ROOT, WEBHOOK_SECRET, free_port
from tests.fakes.stripe_api import (
    _CHARGE,
    _DISPUTE,
    _PAYMENT_INTENT,
    _SESSION,
    FakeStripe,
    stripe_signature,
)

pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("chaos")]

ORDERS = 100
REFUNDED = 20
DISPUTED = 10
CUSTOMERS = 20  # events of a type we ignore
DELIVERIES = 500
DUPLICATES = 150  # 30 % of the deliveries re-send an event already in the list
EARLY = 15  # refunds/disputes sent before the completion they undo (the other 15: after it)
UNDO = ("charge.refunded", "charge.dispute.created")
# Buyers who paid in their own currency through Stripe's Adaptive Pricing: their sessions carry
# `currency_conversion` with `fx_rate`, a decimal string.
ADAPTIVE = 10
SENDERS = 8
SEED = 20261130
SLUG = "linkedin-playbook"
AMOUNT = 2900  # EUR price of the demo e-book
BASE_CREATED = 1_764_489_600  # 2025-11-30T08:00:00Z


@dataclass(frozen=True)
class Delivery:
    """One POST of an event; retries of an event share its id and its payload."""

    event: dict[str, Any]
    order: int | None  # the order index the event concerns (None for unrelated events)

    @property
    def id(self) -> str:
        return str(self.event["id"])

    @property
    def type(self) -> str:
        return str(self.event["type"])


@dataclass
class Plan:
    """The events, the deliveries and what the end state must be."""

    deliveries: list[Delivery]
    distinct: int
    refunded: set[int]
    disputed: set[int]
    completions: dict[int, dict[str, Any]] = field(default_factory=dict)
    early: int = 0  # refunds/disputes whose first delivery precedes the first completion


@dataclass(frozen=True)
class Answer:
    index: int
    status: int  # -1: the request itself failed (connection reset, timeout)
    result: str


# Building the events --------------------------------------------------------------------------


def _pi(i: int) -> str:
    return f"pi_chaos_{i}"


def _charge_id(i: int) -> str:
    return f"ch_chaos_{i}"


def _session_object(i: int, number: str, *, adaptive: bool) -> dict[str, Any]:
    obj = copy.deepcopy(_SESSION)
    obj.update(
        id=f"cs_test_chaos_{i}",
        object="checkout.session",
        client_reference_id=number,
        status="complete",
        payment_status="paid",
        payment_intent=_pi(i),
        mode="payment",
        currency="eur",
        amount_subtotal=AMOUNT,
        amount_total=AMOUNT,
        customer_email=None,
        metadata={"order_number": number},
        created=BASE_CREATED + i * 10,
        currency_conversion=None,
    )
    if adaptive:  # shown and paid in USD, settled in EUR
        obj.update(currency="usd", amount_subtotal=3150, amount_total=3150)
        obj["currency_conversion"] = {
            "amount_subtotal": AMOUNT,
            "amount_total": AMOUNT,
            "fx_rate": "1.0862068966",
            "source_currency": "eur",
        }
    obj["customer_details"] = {
        **(obj.get("customer_details") or {}),
        "email": f"buyer{i}@example.com",
        "name": f"Buyer {i}",
        "business_name": None,
        "tax_ids": [],
    }
    return obj


def _charge_object(i: int, *, refunded: bool) -> dict[str, Any]:
    obj = copy.deepcopy(_CHARGE)
    obj.update(
        id=_charge_id(i),
        object="charge",
        amount=AMOUNT,
        amount_captured=AMOUNT,
        amount_refunded=AMOUNT if refunded else 0,
        refunded=refunded,
        captured=True,
        paid=True,
        status="succeeded",
        currency="eur",
        payment_intent=_pi(i),
        receipt_url=f"https://pay.stripe.com/receipts/chaos_{i}",
        created=BASE_CREATED + i * 10 + 1,
    )
    return obj


def _dispute_object(i: int) -> dict[str, Any]:
    obj = copy.deepcopy(_DISPUTE)
    obj.update(
        id=f"dp_chaos_{i}",
        object="dispute",
        amount=AMOUNT,
        currency="eur",
        charge=_charge_id(i),
        payment_intent=_pi(i),
        reason="fraudulent",
        status="needs_response",
        created=BASE_CREATED + 5000 + i,
    )
    return obj


def _intent_object(i: int) -> dict[str, Any]:
    obj = copy.deepcopy(_PAYMENT_INTENT)
    obj.update(
        id=_pi(i),
        object="payment_intent",
        amount=AMOUNT,
        amount_received=AMOUNT,
        currency="eur",
        status="succeeded",
        latest_charge=_charge_id(i),
        client_secret=f"{_pi(i)}_secret_chaos",
        created=BASE_CREATED + i * 10,
    )
    return obj


def _customer_object(n: int) -> dict[str, Any]:
    return {
        "id": f"cus_chaos_{n}",
        "object": "customer",
        "email": f"someone{n}@example.com",
        "name": None,
        "created": BASE_CREATED + n,
        "livemode": False,
        "metadata": {},
    }


def build_plan(numbers: list[str]) -> Plan:
    """350 distinct events, 150 retries of them, shuffled with a fixed seed."""
    rng = random.Random(SEED)
    fake = FakeStripe()
    serial = iter(range(1, 10_000))

    def event(type_: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
        return fake.event(type_, obj, event_id=f"evt_chaos_{next(serial):04d}", created=created)

    picked = rng.sample(range(ORDERS), REFUNDED + DISPUTED)
    refunded, disputed = set(picked[:REFUNDED]), set(picked[REFUNDED:])
    adaptive = set(rng.sample(range(ORDERS), ADAPTIVE))
    plan = Plan(deliveries=[], distinct=0, refunded=refunded, disputed=disputed)
    relevant: list[Delivery] = []
    noise: list[Delivery] = []
    for i, number in enumerate(numbers):
        t = BASE_CREATED + i * 10
        session = _session_object(i, number, adaptive=i in adaptive)
        completion = event("checkout.session.completed", session, t + 2)
        plan.completions[i] = completion
        relevant.append(Delivery(completion, i))
        noise.append(Delivery(event("payment_intent.succeeded", _intent_object(i), t), i))
        noise.append(Delivery(event("charge.succeeded", _charge_object(i, refunded=False), t), i))
        if i in refunded:
            charge = _charge_object(i, refunded=True)
            relevant.append(Delivery(event("charge.refunded", charge, t + 4000), i))
        if i in disputed:
            relevant.append(Delivery(event("charge.dispute.created", _dispute_object(i), t), i))
    for n in range(CUSTOMERS):
        noise.append(Delivery(event("customer.created", _customer_object(n), BASE_CREATED), None))
    distinct = relevant + noise
    plan.distinct = len(distinct)
    # Retries lean on the events that matter: two thirds re-send completions, refunds, disputes.
    retries = rng.choices(relevant, k=DUPLICATES * 2 // 3)
    retries += rng.choices(noise, k=DUPLICATES - len(retries))
    deliveries = distinct + retries
    rng.shuffle(deliveries)
    plan.deliveries = deliveries
    _order_undo(plan)
    return plan


def _first_index(deliveries: list[Delivery], event_id: str) -> int:
    return next(n for n, d in enumerate(deliveries) if d.id == event_id)


def _order_undo(plan: Plan) -> None:
    """Send the first EARLY refunds/disputes (by event id) before their completion, the rest
    after it: swap first deliveries until the first delivery of each is where it should be."""
    undo = sorted({d.id: d for d in plan.deliveries if d.type in UNDO}.values(), key=lambda d: d.id)
    for n, d in enumerate(undo):
        assert d.order is not None
        done_id = str(plan.completions[d.order]["id"])
        while True:
            first_undo = _first_index(plan.deliveries, d.id)
            first_done = _first_index(plan.deliveries, done_id)
            if (first_undo < first_done) == (n < EARLY):
                break
            plan.deliveries[first_undo], plan.deliveries[first_done] = (
                plan.deliveries[first_done],
                plan.deliveries[first_undo],
            )
    plan.early = sum(
        1
        for d in undo
        if d.order is not None
        and _first_index(plan.deliveries, d.id)
        < _first_index(plan.deliveries, str(plan.completions[d.order]["id"]))
    )


# The database and the server ------------------------------------------------------------------


def create_orders(engine: Engine, tmp_path: Path) -> list[str]:
    """The demo e-book, published, and ORDERS pending Stripe orders for it; their numbers."""
    numbers: list[str] = []
    with Session(engine) as s:
        storage = LocalStorage(tmp_path / "media", secret="test-secret")
        publish_folder(session=s, storage=storage, folder=COURSES / SLUG)
        s.commit()
        for i in range(ORDERS):
            order, _product = service.start_order(
                session=s,
                product_slug=SLUG,
                currency="EUR",
                checkout_key=f"chaos{i:027d}",
                provider="stripe",
                user=None,
                email=f"buyer{i}@example.com",
                business=True,
                company_name="Co",
                vat_id=None,
                consent_locale=None,
                attribution={},
            )
            service.attach_session(session=s, order=order, session_id=f"cs_test_chaos_{i}")
            numbers.append(order.number)
        s.commit()
    assert len(set(numbers)) == ORDERS
    return numbers


@pytest.fixture
def pg_url(database_url: str) -> str:
    assert database_url.startswith("postgresql")  # see the parametrize on the test
    return database_url


@pytest.fixture
def live_server(pg_url: str, engine: Engine, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`rapport serve` on the migrated PostgreSQL database; yields its URL and its log file."""
    port = free_port()
    data = tmp_path / "server"
    data.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")},
        "PYTHONPATH": str(ROOT),
        "RAPPORT_DATABASE_URL": pg_url,
        "RAPPORT_DATA_DIR": str(data),
        "RAPPORT_BASE_URL": f"http://127.0.0.1:{port}",
        "RAPPORT_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "RAPPORT_ACCESS_LOG": "false",
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        # The log goes to a file: a full pipe would block the server mid-test.
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port), "--no-migrate"],
            env=env,
            cwd=data,  # away from a developer's .env in the checkout
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rapport serve did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield url, data
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def post(client: httpx.Client, event: dict[str, Any]) -> httpx.Response:
    payload = json.dumps(event).encode()
    return client.post(
        "/webhooks/stripe",
        content=payload,
        headers={
            "Stripe-Signature": stripe_signature(payload, WEBHOOK_SECRET),
            "Content-Type": "application/json",
        },
    )


def send_all(url: str, deliveries: list[Delivery]) -> list[Answer]:
    """SENDERS threads, each with its own client, take the deliveries in list order."""
    work: queue.Queue[tuple[int, Delivery]] = queue.Queue()
    for n, d in enumerate(deliveries):
        work.put((n, d))
    answers: list[Answer] = []
    lock = threading.Lock()

    def sender() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                try:
                    n, d = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    r = post(client, d.event)
                    result = r.json().get("result", "") if r.status_code == 200 else r.text[:200]
                    answer = Answer(n, r.status_code, str(result))
                except httpx.HTTPError as exc:
                    answer = Answer(n, -1, f"{type(exc).__name__}: {exc}")
                with lock:
                    answers.append(answer)

    with ThreadPoolExecutor(SENDERS) as pool:
        for future in [pool.submit(sender) for _ in range(SENDERS)]:
            future.result()
    return sorted(answers, key=lambda a: a.index)


# The test -------------------------------------------------------------------------------------


# PostgreSQL only: the point is concurrency, which SQLite serialises away.
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_500_chaotic_deliveries_end_with_exact_entitlements(
    live_server: tuple[str, Path], engine: Engine, tmp_path: Path
) -> None:
    url, data_dir = live_server
    numbers = create_orders(engine, tmp_path)
    plan = build_plan(numbers)
    deliveries = plan.deliveries
    assert len(deliveries) == DELIVERIES
    assert plan.distinct == len({d.id for d in deliveries}) == DELIVERIES - DUPLICATES
    assert plan.early == EARLY, plan.early

    started = time.monotonic()
    answers = send_all(url, deliveries)
    seconds = time.monotonic() - started

    assert len(answers) == DELIVERIES
    errors_5xx = sum(1 for a in answers if a.status >= 500)
    transport_errors = sum(1 for a in answers if a.status == -1)
    failed = [
        (deliveries[a.index].type, deliveries[a.index].id, a.status, a.result[:80])
        for a in answers
        if a.status != 200
    ]
    results = Counter(a.result for a in answers if a.status == 200)
    revoked_orders = plan.refunded | plan.disputed

    with Session(engine) as s:
        product = s.exec(select(Product).where(Product.slug == SLUG)).one()
        orders = {o.number: o for o in s.exec(select(Order))}
        users = {u.id: u for u in s.exec(select(User))}
        entitlements = list(s.exec(select(Entitlement)))
        events = list(s.exec(select(WebhookEvent)))
        rows_per_pair = Counter((e.user_id, e.product_id) for e in entitlements)
        active_per_pair = Counter(
            (e.user_id, e.product_id) for e in entitlements if e.revoked_at is None
        )
        by_user = {e.user_id: e for e in entitlements if e.product_id == product.id}

        double_grants = sum(1 for c in active_per_pair.values() if c > 1)
        lost = 0
        wrong: list[str] = []
        for i, number in enumerate(numbers):
            order = orders[number]
            user = users.get(order.user_id) if order.user_id is not None else None
            ent = by_user.get(user.id) if user is not None and user.id is not None else None
            active = ent is not None and ent.revoked_at is None
            if user is None or user.email != f"buyer{i}@example.com":
                wrong.append(f"{number}: buyer {user.email if user else None}")
            if not order.account_created:
                wrong.append(f"{number}: account_created is false")
            if order.payment_intent != _pi(i):
                wrong.append(f"{number}: payment_intent {order.payment_intent}")
            if i in revoked_orders:
                double_grants += int(active)
                want = OrderStatus.refunded if i in plan.refunded else OrderStatus.disputed
                reason = "refunded" if i in plan.refunded else "disputed"
                if order.status != want:
                    wrong.append(f"{number}: status {order.status}, expected {want}")
                if ent is not None and (ent.revoke_reason != reason or ent.order_id != order.id):
                    wrong.append(f"{number}: entitlement {ent.revoke_reason} {ent.order_id}")
                if i in plan.refunded and order.amount_refunded != AMOUNT:
                    wrong.append(f"{number}: amount_refunded {order.amount_refunded}")
                if i in plan.disputed and not order.flagged:
                    wrong.append(f"{number}: disputed but not flagged")
            else:
                lost += int(not active)
                if order.status != OrderStatus.paid:
                    wrong.append(f"{number}: status {order.status}, expected paid")
                if ent is not None and ent.order_id != order.id:
                    wrong.append(f"{number}: entitlement of order {ent.order_id}")
        entitled = sum(1 for e in entitlements if e.revoked_at is None)
        revoked = sum(1 for e in entitlements if e.revoked_at is not None)
        stored = Counter(e.event_id for e in events)
        unhandled = [f"{e.event_id} {e.type} {e.note}" for e in events if e.handled_at is None]
        replayed = sum(1 for e in events if e.note == "replayed after its order became known")

    # Purchase emails: one per grant; a grant undone in the same transaction (a refund or
    # dispute that was waiting for its order) still sends one.
    # The server's job threads write them; wait until no new one has come for half a second.
    seen, deadline = -1, time.monotonic() + 20
    while time.monotonic() < deadline:
        count = len(list((data_dir / "outbox").glob("*.eml")))
        if count == seen:
            break
        seen = count
        time.sleep(0.5)
    mails = [message_from_bytes(p.read_bytes()) for p in (data_dir / "outbox").glob("*.eml")]
    mailed = Counter(str(m["To"]) for m in mails)
    mailed_revoked = sum(mailed[f"buyer{i}@example.com"] for i in revoked_orders)
    retries = (tmp_path / "serve.log").read_text().count("webhook.retry")

    print(
        f"\nchaos: deliveries={len(answers)} distinct_events={len(stored)} "
        f"duplicates={results['duplicate']} orders={len(orders)} entitled={entitled} "
        f"revoked={revoked} double_grants={double_grants} lost={lost} errors_5xx={errors_5xx} "
        f"transport_errors={transport_errors} "
        f"early_undo={plan.early} replayed={replayed} db_retries={retries} "
        f"mails={len(mails)} mails_to_revoked={mailed_revoked} seconds={seconds:.1f}"
    )

    assert errors_5xx == 0, (Counter(f[0] for f in failed if f[2] >= 500), failed[:5])
    assert not failed, failed[:5]
    assert double_grants == 0
    assert lost == 0
    assert not wrong, wrong[:10]
    # Every distinct event stored exactly once, acted on (or deliberately ignored), and every
    # retry answered as a duplicate.
    assert len(events) == len(stored) == plan.distinct
    assert set(stored) == {d.id for d in deliveries} and max(stored.values()) == 1
    assert not unhandled, unhandled[:5]
    assert results["duplicate"] == DUPLICATES, results
    # Receipts, refunds and disputes that found no order yet are kept, then replayed by the
    # completion. (charge.succeeded carries the receipt link for the buyer's orders page.)
    acted_on = ORDERS + ORDERS + REFUNDED + DISPUTED
    # A dispute is handled and also put before the admin ("notice").
    assert 0 < results["notice"] <= DISPUTED, results
    assert results["handled"] + results["notice"] + results["unmatched"] == acted_on, results
    assert results["unmatched"] == replayed, results
    assert results["ignored"] == plan.distinct - acted_on, results
    # Exactly the expected entitlements, one row per buyer, one buyer per completion.
    assert len(orders) == ORDERS and len(users) == ORDERS
    assert len(entitlements) == ORDERS and max(rows_per_pair.values()) == 1
    assert entitled == ORDERS - REFUNDED - DISPUTED and revoked == REFUNDED + DISPUTED
    # Every paying buyer got exactly one purchase email, nobody got two.
    assert all(
        mailed[f"buyer{i}@example.com"] == 1 for i in range(ORDERS) if i not in revoked_orders
    )
    assert max(mailed.values()) == 1, mailed.most_common(3)

    # Afterwards: Stripe re-sends a refunded order's completion, and a new event about the
    # same session arrives; neither gives access back.
    i = min(plan.refunded)
    again = plan.completions[i]
    fresh = {**copy.deepcopy(again), "id": "evt_chaos_late_new", "created": BASE_CREATED + 9999}
    d = min(plan.disputed)
    fresh_dispute = {**copy.deepcopy(plan.completions[d]), "id": "evt_chaos_late_dispute"}
    with httpx.Client(base_url=url, timeout=30) as client:
        late = [post(client, e) for e in (again, fresh, fresh_dispute, fresh)]
    assert [r.status_code for r in late] == [200, 200, 200, 200]
    assert [r.json()["result"] for r in late] == ["duplicate", "handled", "handled", "duplicate"]
    with Session(engine) as s:
        for k, status in ((i, OrderStatus.refunded), (d, OrderStatus.disputed)):
            order = s.exec(select(Order).where(Order.number == numbers[k])).one()
            assert order.status == status
            assert order.user_id is not None
            assert (
                service.active_entitlement(
                    session=s, user_id=order.user_id, product_id=order.product_id
                )
                is None
            )
        still_active = s.exec(
            select(func.count())
            .select_from(Entitlement)
            .where(col(Entitlement.revoked_at).is_(None))
        ).one()
        assert still_active == ORDERS - REFUNDED - DISPUTED
        assert s.exec(select(func.count()).select_from(User)).one() == ORDERS
