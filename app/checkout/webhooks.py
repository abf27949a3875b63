"""Provider events: stored once, acted on once, in the same transaction as their effects."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import Engine, insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, select

from app.checkout import service
from app.checkout.models import EventOutcome, WebhookEvent
from app.integrations.stripe_api import details_from_session
from app.models_base import utcnow

log = structlog.get_logger()
PROVIDER = "stripe"
Handler = Callable[[Session, dict[str, Any], service.Outcome], bool]


def _ref(event: dict[str, Any]) -> str | None:
    """The payment intent an event concerns, if it names one."""
    obj = _object(event)
    intent = obj.get("payment_intent")
    if isinstance(intent, dict):
        intent = intent.get("id")
    if obj.get("object") == "payment_intent":
        intent = obj.get("id")
    return intent if isinstance(intent, str) else None


def _object(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    return obj if isinstance(obj, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _created(event: dict[str, Any]) -> int:
    return _int(event.get("created")) or int(time.time())


def _checkout(kind: str) -> Handler:
    def handle(session: Session, event: dict[str, Any], outcome: service.Outcome) -> bool:
        details = details_from_session(_object(event))
        result = service.apply_checkout(
            session=session, provider=PROVIDER, details=details, event=kind
        )
        outcome.order = result.order
        outcome.kind = result.kind
        outcome.granted = outcome.granted or result.granted
        outcome.new_user_id = outcome.new_user_id or result.new_user_id
        if result.order is not None and details.payment_intent:
            _replay(session, details.payment_intent, outcome)
        # A session that is not ours is final: nothing to wait for, nothing to replay.
        return True

    return handle


def _refunded(session: Session, event: dict[str, Any], outcome: service.Outcome) -> bool:
    charge = _object(event)
    intent = _ref(event)
    if not intent:
        return True  # a charge without a payment intent is not ours
    amount = _int(charge.get("amount"))
    refunded = _int(charge.get("amount_refunded"))
    fully = charge.get("refunded") is True or (amount > 0 and refunded >= amount)
    order = service.apply_refund(
        session=session,
        payment_intent=intent,
        amount_refunded=refunded,
        fully=fully,
        receipt_url=charge.get("receipt_url")
        if isinstance(charge.get("receipt_url"), str)
        else None,
        reported_at=_created(event),
    )
    return order is not None


def _refund_status(session: Session, event: dict[str, Any], outcome: service.Outcome) -> bool:
    refund = _object(event)
    intent = _ref(event)
    refund_id, status = refund.get("id"), refund.get("status")
    if not intent or not isinstance(refund_id, str) or not isinstance(status, str):
        return True  # not a refund of a payment of ours
    order = service.apply_refund_status(
        session=session,
        provider=PROVIDER,
        payment_intent=intent,
        refund_id=refund_id,
        amount=_int(refund.get("amount")),
        status=status,
        reported_at=_created(event),
    )
    if order is not None and status in service.REFUND_FAILED:
        outcome.kind = EventOutcome.notice
    return order is not None


def _disputed(session: Session, event: dict[str, Any], outcome: service.Outcome) -> bool:
    dispute = _object(event)
    intent = _ref(event)
    if not intent:
        return True
    status = dispute.get("status") if isinstance(dispute.get("status"), str) else "needs_response"
    order = service.apply_dispute(
        session=session,
        payment_intent=intent,
        dispute_id=dispute.get("id") if isinstance(dispute.get("id"), str) else None,
        status=str(status),
        amount=_int(dispute.get("amount")),
    )
    if order is not None:
        outcome.kind = EventOutcome.notice
    return order is not None


def _dispute_closed(session: Session, event: dict[str, Any], outcome: service.Outcome) -> bool:
    dispute = _object(event)
    intent = _ref(event)
    status = dispute.get("status")
    if not intent or not isinstance(status, str):
        return True
    order = service.apply_dispute_closed(
        session=session,
        payment_intent=intent,
        dispute_id=dispute.get("id") if isinstance(dispute.get("id"), str) else None,
        status=status,
        amount=_int(dispute.get("amount")),
    )
    if order is not None:
        outcome.kind = EventOutcome.notice
    return order is not None


def _charge_succeeded(session: Session, event: dict[str, Any], outcome: service.Outcome) -> bool:
    intent = _ref(event)
    url = _object(event).get("receipt_url")
    if not intent or not isinstance(url, str) or not url.startswith("https://"):
        return True  # nothing we can use
    return (
        service.record_receipt(session=session, payment_intent=intent, receipt_url=url) is not None
    )


HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": _checkout("completed"),
    "checkout.session.async_payment_succeeded": _checkout("async_succeeded"),
    "checkout.session.async_payment_failed": _checkout("async_failed"),
    "checkout.session.expired": _checkout("expired"),
    "charge.succeeded": _charge_succeeded,
    "charge.refunded": _refunded,
    "refund.created": _refund_status,
    "refund.updated": _refund_status,
    "refund.failed": _refund_status,
    "charge.refund.updated": _refund_status,
    "charge.dispute.created": _disputed,
    "charge.dispute.updated": _disputed,
    "charge.dispute.funds_withdrawn": _disputed,
    "charge.dispute.closed": _dispute_closed,
}


def _replay(session: Session, intent: str, outcome: service.Outcome) -> None:
    """Act on refunds or disputes that arrived before the payment they concern was known."""
    for stored in service.pending_events_for(session, PROVIDER, intent):
        handler = HANDLERS.get(stored.type)
        if handler is None or stored.type.startswith("checkout.session."):
            continue
        if handler(session, stored.payload, outcome):
            stored.handled_at = utcnow()
            stored.outcome = EventOutcome.handled
            stored.note = "replayed after its order became known"
            session.add(stored)


def _insert_event(session: Session, event: dict[str, Any]) -> WebhookEvent | None:
    """Store the event unless it is already stored; None for a duplicate."""
    values = {
        "provider": PROVIDER,
        "event_id": event["id"],
        "type": event["type"][:100],
        "ref": _ref(event),
        "payload": event,
        "received_at": utcnow(),
    }
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = pg_insert(WebhookEvent).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite_insert(WebhookEvent).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - only the two supported databases
        stmt = insert(WebhookEvent).values(**values)
    result = session.execute(stmt.returning(WebhookEvent.id))
    new_id = result.scalar()
    if new_id is None:
        return None
    return session.exec(select(WebhookEvent).where(WebhookEvent.id == new_id)).one()


def handle_event(
    engine: Engine,
    event: dict[str, Any],
    on_paid: Callable[[int], None] | None = None,
    *,
    livemode: bool | None = None,
) -> str:
    """Store and act on one verified event; returns what happened (for logs and tests).

    `livemode` is what the configured key expects (None: do not check); an event from the
    other mode is stored and ignored.

    Deadlocks or serialisation failures are retried; the event row and its effects commit
    together, so a crash in between leaves nothing half done and the provider retries.
    """
    for attempt in range(5):
        outcome = service.Outcome()
        try:
            with Session(engine) as session:
                stored = _insert_event(session, event)
                if stored is None:
                    session.commit()
                    return "duplicate"
                result: str
                handler = HANDLERS.get(stored.type)
                if livemode is not None and event.get("livemode") is not livemode:
                    stored.handled_at = utcnow()
                    stored.note = "livemode does not match the configured key; ignored"
                    result = EventOutcome.livemode
                    log.error("webhook.livemode_mismatch", event_id=stored.event_id)
                elif handler is None:
                    stored.handled_at = utcnow()
                    stored.note = "type ignored"
                    result = EventOutcome.ignored
                elif handler(session, event, outcome):
                    stored.handled_at = utcnow()
                    result = outcome.kind
                    if result == EventOutcome.foreign:
                        stored.note = "a payment we did not create: nothing granted"
                    elif result == EventOutcome.mismatch:
                        stored.note = "amount or currency differs from the order: nothing granted"
                else:
                    stored.note = "no matching order yet; kept for replay"
                    result = EventOutcome.unmatched
                    log.warning("webhook.unmatched", event_id=stored.event_id, type=stored.type)
                stored.outcome = result
                session.add(stored)
                # No thank-you mail when a refund replayed in this same step took access back.
                paid = outcome.granted and outcome.order is not None
                paid_id = outcome.order.id if paid and outcome.order.status == "paid" else None  # type: ignore[union-attr]
                session.commit()
            if paid_id is not None and on_paid is not None:
                on_paid(paid_id)
            return result
        except (OperationalError, DBAPIError) as exc:
            if attempt == 4 or not _retryable(exc):
                raise
            log.info("webhook.retry", event_id=event.get("id"), attempt=attempt + 1)
    raise AssertionError("unreachable")


def _retryable(exc: DBAPIError) -> bool:
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    text = str(exc).lower()
    return code in ("40001", "40P01") or "deadlock" in text or "database is locked" in text
