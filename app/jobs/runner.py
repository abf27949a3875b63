"""The two runners: in process (the embedded default) and Redis (`rapport worker`), by settings.

The in-process runner keeps jobs in this process: a small thread pool, retries on timers.
Jobs queued there are lost when the process stops, which is why production uses Redis.
Jobs are idempotent, so running one twice is harmless.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import structlog
from sqlmodel import Session

from app.config import Settings
from app.jobs.base import JobContext, Runner, checked, on_commit, run_attempt

log = structlog.get_logger()

# Seconds before each retry. Small and bounded: a process that stops loses what waits here.
IN_PROCESS_BACKOFF: tuple[float, ...] = (1.0, 4.0, 15.0)


@dataclass(frozen=True)
class _Task:
    name: str
    kwargs: dict[str, Any]
    key: str | None
    attempt: int = 1


class InProcessRunner:
    """Runs jobs on worker threads of this process, retrying failures with backoff."""

    def __init__(
        self,
        context: Callable[[], JobContext],
        *,
        workers: int = 2,
        backoff: Sequence[float] = IN_PROCESS_BACKOFF,
    ) -> None:
        self._context = context
        self._workers = workers
        self.backoff = tuple(backoff)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Condition()
        self._outstanding = 0  # queued, running or waiting for a retry
        self._keys: set[str] = set()
        self._waiting: dict[int, tuple[threading.Timer, _Task]] = {}  # retries on timers
        self._next_token = 0
        self._stopping = False

    def _executor(self) -> ThreadPoolExecutor:
        # Made on first use, and again after a shutdown: an app can be started more than once.
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="rapport-job")
            return self._pool

    def enqueue(self, name: str, /, **kwargs: Any) -> None:
        """Run the job soon; failures are retried, then logged, never raised to the caller."""
        spec = checked(name, kwargs)
        key = spec.key_for(kwargs)
        with self._lock:
            if key is not None:
                if f"{name}-{key}" in self._keys:
                    return  # already queued, running or waiting for its retry
                self._keys.add(f"{name}-{key}")
            self._outstanding += 1
        self._submit(_Task(name, kwargs, key))

    def enqueue_after_commit(self, session: Session, name: str, /, **kwargs: Any) -> None:
        """Queue the job when the session commits (never for work that is rolled back)."""
        checked(name, kwargs)  # a mistake shows in the request, not later in a log
        on_commit(session, lambda: self.enqueue(name, **kwargs))

    def _submit(self, task: _Task) -> None:
        try:
            self._executor().submit(self._run, task)
        except RuntimeError:  # a shutdown retired that pool just now; the next one takes it
            self._executor().submit(self._run, task)

    def _run(self, task: _Task) -> None:
        final = task.attempt > len(self.backoff)
        try:
            run_attempt(self._context(), task.name, task.kwargs, final=final, attempt=task.attempt)
        except Exception:  # logged by run_attempt; a job's failure must not take a thread down
            if not final and self._retry_later(task):
                return
        self._finish(task)

    def _retry_later(self, task: _Task) -> bool:
        delay = self.backoff[task.attempt - 1]
        with self._lock:
            if self._stopping:
                log.warning("job.dropped_at_shutdown", job=task.name, attempt=task.attempt)
                return False
            self._next_token += 1
            token = self._next_token
            timer = threading.Timer(delay, self._resubmit, (token,))
            timer.daemon = True  # a waiting retry must not keep the process alive
            self._waiting[token] = (timer, replace(task, attempt=task.attempt + 1))
        timer.start()
        return True

    def _resubmit(self, token: int) -> None:
        with self._lock:
            waiting = self._waiting.pop(token, None)
        if waiting is not None:  # else dropped by a shutdown meanwhile
            self._submit(waiting[1])

    def _finish(self, task: _Task) -> None:
        with self._lock:
            self._outstanding -= 1
            if task.key is not None:
                self._keys.discard(f"{task.name}-{task.key}")
            self._lock.notify_all()

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued job, and its retries, has finished (tests, shutdown)."""
        with self._lock:
            return self._lock.wait_for(lambda: self._outstanding == 0, timeout=timeout)

    def shutdown(self, grace: float = 5.0) -> None:
        """Give queued jobs (and their follow-ups) grace seconds, drop retries still waiting."""
        self.drain(timeout=grace)
        with self._lock:
            self._stopping = True
            waiting, self._waiting = self._waiting, {}
            pool, self._pool = self._pool, None
        for timer, task in waiting.values():
            timer.cancel()
            log.warning("job.dropped_at_shutdown", job=task.name, attempt=task.attempt)
            self._finish(task)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=False)
        with self._lock:
            self._stopping = False


def build_context(settings: Settings, jobs: Runner) -> JobContext:
    """A job context of its own, made from settings (a worker process)."""
    from app.db import make_engine
    from app.delivery.storage import make_storage
    from app.mail import make_mailer

    return JobContext(
        settings=settings,
        engine=make_engine(settings.database_url),
        storage=make_storage(settings),
        mailer=make_mailer(settings),
        jobs=jobs,
    )


def uses_redis(settings: Settings) -> bool:
    """RAPPORT_JOBS=redis, or auto with RAPPORT_REDIS_URL set."""
    return settings.jobs == "redis" or (settings.jobs == "auto" and bool(settings.redis_url))


def make_runner(settings: Settings, context: Callable[[], JobContext]) -> Runner:
    """The Redis runner when settings ask for it, else the in-process one using context."""
    if uses_redis(settings):
        from app.integrations.queue import RedisRunner

        assert settings.redis_url  # Settings refuses RAPPORT_JOBS=redis without a URL
        # The web app's jobs outlive a Redis outage: held in memory, queued when it is back.
        return RedisRunner(settings.redis_url, queue=settings.jobs_queue, hold_when_down=True)
    return InProcessRunner(context)
