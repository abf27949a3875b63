"""The job interface: jobs registered by name, their context, one attempt, after-commit queueing.

A job is a function `fn(ctx, **kwargs)` registered with `@job("name")`. Its keyword arguments
must survive JSON (the Redis runner stores them that way; the in-process runner checks the
same, so a job that works in development works in production). Both runners retry a failing
job with backoff; when the last attempt fails, the job's `on_failure` hook gets the reason, so
that domain code can record it where the author sees it (e.g. the stamped copy's row).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from sqlalchemy import event
from sqlalchemy.orm import SessionTransaction
from sqlmodel import Session

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from app.config import Settings
    from app.delivery.storage import Storage
    from app.mail import Mailer

log = structlog.get_logger()

Handler = Callable[..., None]  # fn(ctx, **kwargs)
FailureHook = Callable[..., None]  # hook(ctx, reason, **kwargs)
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


class JobsUnavailable(Exception):
    """The queue cannot take the job now (Redis unreachable)."""


class Runner(Protocol):
    """What domain code sees of either runner."""

    def enqueue(self, name: str, /, **kwargs: Any) -> None:
        """Queue the job now (call it only outside a transaction, or after its commit)."""
        ...

    def enqueue_after_commit(self, session: Session, name: str, /, **kwargs: Any) -> None:
        """Queue the job when session commits; never when its transaction rolls back."""
        ...

    def shutdown(self) -> None:
        """Stop taking jobs and release resources."""
        ...


@dataclass(frozen=True)
class JobContext:
    """What a job may use; the web app passes its own, a worker builds one from Settings."""

    settings: Settings
    engine: Engine
    storage: Storage
    mailer: Mailer
    jobs: Runner


@dataclass(frozen=True)
class JobSpec:
    name: str
    run: Handler
    on_failure: FailureHook | None
    unique_by: tuple[str, ...]

    def key_for(self, kwargs: dict[str, Any]) -> str | None:
        """The job's identity when it must not be queued twice (e.g. one stamping per copy)."""
        if not self.unique_by:
            return None
        key = "-".join(str(kwargs[k]) for k in self.unique_by)
        # Queue libraries restrict job ids; anything unusual is hashed into a safe one.
        return key if _SAFE_KEY.fullmatch(key) else hashlib.sha256(key.encode()).hexdigest()[:32]


REGISTRY: dict[str, JobSpec] = {}


def job(
    name: str, *, on_failure: FailureHook | None = None, unique_by: tuple[str, ...] = ()
) -> Callable[[Handler], Handler]:
    """Register fn(ctx, **kwargs) as the job `name`; unique_by names the arguments of its key."""

    def register(fn: Handler) -> Handler:
        if name in REGISTRY and REGISTRY[name].run is not fn:
            raise ValueError(f"job {name!r} is registered twice")
        REGISTRY[name] = JobSpec(name=name, run=fn, on_failure=on_failure, unique_by=unique_by)
        return fn

    return register


def load_jobs() -> None:
    """Import the job definitions, which registers them."""
    import app.jobs.tasks  # noqa: F401


def lookup(name: str) -> JobSpec:
    """The registered job called name (importing the job definitions on first use)."""
    load_jobs()
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"no job named {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def checked(name: str, kwargs: dict[str, Any]) -> JobSpec:
    """The job's spec, after checking that its arguments are complete and survive JSON."""
    spec = lookup(name)
    missing = [k for k in spec.unique_by if k not in kwargs]
    if missing:
        raise TypeError(f"job {name!r} needs {', '.join(missing)}")
    try:
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"job {name!r}: arguments must be JSON values: {exc}") from exc
    return spec


def run_attempt(
    ctx: JobContext, name: str, kwargs: dict[str, Any], *, final: bool, attempt: int
) -> None:
    """Run one attempt of a job; after a failed final attempt call its on_failure hook. Raises."""
    spec = lookup(name)
    try:
        spec.run(ctx, **kwargs)
    except Exception as exc:
        reason = (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)[:300]
        key = spec.key_for(kwargs)
        if not final:
            log.warning("job.retry", job=name, key=key, attempt=attempt, reason=reason)
            raise
        log.error("job.failed", job=name, key=key, attempt=attempt, reason=reason)
        if spec.on_failure is not None:
            try:
                spec.on_failure(ctx, reason, **kwargs)
            except Exception:  # the hook must not hide the job's own failure
                log.exception("job.failure_hook_failed", job=name, key=key)
        raise
    log.info("job.done", job=name, attempt=attempt)


# After commit -----------------------------------------------------------------------------------

_PENDING = "rapport_jobs_pending"


@dataclass
class _Pending:
    transaction: SessionTransaction | None  # the innermost transaction when it was queued
    action: Callable[[], None]


def on_commit(session: Session, action: Callable[[], None]) -> None:
    """Call action after the session's transaction commits; forget it if that rolls back.

    A rolled-back savepoint drops only what was queued inside it. An action that raises is
    logged: the transaction has committed by then and cannot be undone.
    """
    pending: list[_Pending] | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
        event.listen(session, "after_commit", _run_pending)
        event.listen(session, "after_soft_rollback", _drop_rolled_back)
        event.listen(session, "after_transaction_end", _forget_on_end)
    current = session.get_nested_transaction() or session.get_transaction()
    pending.append(_Pending(current, action))


def _within(item: _Pending, transaction: SessionTransaction) -> bool:
    if transaction.parent is None:
        return True  # the whole transaction rolled back
    t = item.transaction
    while t is not None:
        if t is transaction:
            return True
        t = t.parent
    return False


def _run_pending(session: Session) -> None:
    items: list[_Pending] = session.info.get(_PENDING, [])
    session.info[_PENDING] = []
    for item in items:
        try:
            item.action()
        except Exception:
            log.exception("job.enqueue_failed")


def _drop_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    items: list[_Pending] = session.info.get(_PENDING, [])
    kept = [i for i in items if not _within(i, previous_transaction)]
    if len(kept) != len(items):
        log.info("job.dropped_on_rollback", count=len(items) - len(kept))
    session.info[_PENDING] = kept


def _forget_on_end(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction ended without a commit (e.g. the session was closed).
    if transaction.parent is None:
        session.info[_PENDING] = []
