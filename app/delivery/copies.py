"""Personalised e-book copies: requested by the buyer, stamped in a job, stored and reused."""

from __future__ import annotations

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
from app.delivery.storage import Storage, StorageError, new_key

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
        if copy is None or copy.status == CopyStatus.ready:
            return  # gone, or done by an earlier run of the same job
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
        except StorageError as exc:
            log.warning("copy.storage_unavailable", copy_id=copy_id, error=str(exc))
            return  # stays pending; the next request queues it again
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
