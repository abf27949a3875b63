"""Personalised e-book copies: requested by the buyer, stamped in a job, stored and reused."""

from __future__ import annotations

import html
import tempfile
from collections.abc import Callable
from pathlib import Path

import structlog
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from app.accounts.models import User
from app.catalog.models import Asset, AssetStatus
from app.checkout.models import Entitlement, Order
from app.delivery.models import CopyStatus, StampedCopy
from app.delivery.stamping import Stamp, StampError, stamp_pdf
from app.delivery.storage import Storage, new_key
from app.mail import Mail

log = structlog.get_logger()


def copy_for(
    *, session: Session, user: User, asset_id: int, product_id: int
) -> tuple[StampedCopy, bool]:
    """The user's copy of the asset, created (pending) if new; the flag says it was created."""
    copy = session.exec(
        select(StampedCopy).where(StampedCopy.user_id == user.id, StampedCopy.asset_id == asset_id)
    ).first()
    if copy is not None:
        return copy, False
    number = session.exec(
        select(Order.number)
        .join(Entitlement, col(Entitlement.order_id) == col(Order.id))
        .where(Entitlement.user_id == user.id, Entitlement.product_id == product_id)
    ).first()
    copy = StampedCopy(user_id=user.id or 0, asset_id=asset_id, order_number=number or "—")
    session.add(copy)
    session.flush()
    return copy, True


def make_copy(
    engine: Engine, storage: Storage, copy_id: int, notify: Callable[[str], None] | None = None
) -> None:
    """Job: stamp the buyer's name, email and order number into their copy and store it."""
    with Session(engine) as session:
        copy = session.get(StampedCopy, copy_id)
        if copy is None or copy.status != CopyStatus.pending:
            return  # gone, or done (or given up) by an earlier run of the same job
        asset = session.get(Asset, copy.asset_id)
        user = session.get(User, copy.user_id)
        if asset is None or user is None:
            return
        stamp = Stamp(
            name=user.name or user.email, email=user.email, order_number=copy.order_number
        )
        source_key = asset.storage_key
    with tempfile.TemporaryDirectory(prefix="rapport-stamp-") as tmp:
        source, target = Path(tmp) / "in.pdf", Path(tmp) / "out.pdf"
        try:
            with source.open("wb") as f:
                for chunk in storage.iter_bytes(source_key):
                    f.write(chunk)
            stamp_pdf(source, target, stamp)
        except StampError as exc:
            reason = f"the e-book file {source_key} cannot be stamped: {exc}"
            _fail(engine, copy_id, reason, asset_failed=True)
            if notify is not None:
                notify(reason)
            return
        # A StorageError propagates: the job runner retries it with backoff, and when the
        # retries are spent, copy_failed() records the reason.
        key = new_key("copies", "copy.pdf")
        with target.open("rb") as f:
            storage.put(key, f, content_type="application/pdf")
    with Session(engine) as session:
        copy = session.get(StampedCopy, copy_id)
        if copy is None:
            storage.delete(key)
            return
        copy.storage_key = key
        copy.status = CopyStatus.ready
        copy.error = None
        session.add(copy)
        session.commit()
    log.info("copy.ready", copy_id=copy_id)


def copy_failed(engine: Engine, copy_id: int, reason: str) -> None:
    """Record on the copy that its job failed for good (after its retries), with the reason."""
    _fail(engine, copy_id, f"the copy could not be made: {reason}", asset_failed=False)


def failure_notice(*, to: str, reason: str, asset_failed: bool) -> Mail:
    """The email that tells the admin a buyer's copy could not be made, and what to do."""
    hint = (
        "Please upload the file again."
        if asset_failed
        else "The file may be fine: check that storage is reachable (see the log)."
    )
    text = f"An e-book copy could not be made for a buyer.\n\n{reason}\n\n{hint}"
    return Mail(
        to=to,
        subject="Rapport: an e-book file needs attention",
        text=text,
        html=f"<p>{html.escape(text).replace(chr(10), '<br>')}</p>",
    )


def _fail(engine: Engine, copy_id: int, reason: str, *, asset_failed: bool) -> None:
    with Session(engine) as session:
        copy = session.get(StampedCopy, copy_id)
        if copy is None:
            return
        copy.status = CopyStatus.failed
        copy.error = reason[:300]
        session.add(copy)
        if asset_failed:
            asset = session.get(Asset, copy.asset_id)
            if asset is not None:
                asset.status = AssetStatus.failed
                session.add(asset)
        session.commit()
    # The author sees failed assets on the author pages; the log line alerts the operator now.
    log.error("copy.failed", copy_id=copy_id, reason=reason)
