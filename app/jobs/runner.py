"""Background jobs, in process: a small thread pool; work is queued only after a commit.

The Redis-backed runner for production (`rapport worker`) is planned with the authoring
capability; jobs here are idempotent so that running one twice is harmless.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import structlog
from sqlalchemy import event
from sqlmodel import Session

log = structlog.get_logger()


class InProcessRunner:
    """Runs jobs on worker threads of this process."""

    def __init__(self, workers: int = 2) -> None:
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        # Made on first use, and again after a shutdown: an app can be started more than once.
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="rapport-job")
            return self._pool

    def submit(self, job: Callable[..., None], *args: Any) -> None:
        """Run job(*args) soon; failures are logged, never raised to the caller."""

        def run() -> None:
            try:
                job(*args)
            except Exception:  # a job's failure must not take the worker down
                log.exception("job.failed", job=getattr(job, "__name__", str(job)))

        future = self._executor().submit(run)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def after_commit(self, session: Session, job: Callable[..., None], *args: Any) -> None:
        """Queue the job when the session commits (never for work that is rolled back)."""
        event.listen(session, "after_commit", lambda _s: self.submit(job, *args), once=True)

    def drain(self, timeout: float = 30.0) -> None:
        """Wait for queued jobs (tests, and a graceful shutdown)."""
        with self._lock:
            pending = set(self._pending)
        wait(pending, timeout=timeout)

    def shutdown(self) -> None:
        """Finish queued jobs and stop the threads."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=False)
