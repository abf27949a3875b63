"""The Redis runner, on rq: the only module that imports the queue library.

Every queued rq job names one function, `perform(name, kwargs)`, which runs the job registered
under that name with the worker's context; arguments travel as JSON, never pickles. rq keeps
the retries: a failed attempt is scheduled again after the next backoff interval, and the
worker's scheduler puts it back on the queue when it is due.

When Redis cannot be reached, the web app's runner (`hold_when_down`) keeps the jobs it could
not queue in memory and queues them, in order, as soon as Redis answers again; the request that
made them does not fail. Held jobs are lost only if the process stops before Redis is back
(logged as job.dropped_at_shutdown), as the in-process runner's waiting retries are.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import redis
import structlog
from rq import Queue, Retry, SimpleWorker, get_current_job
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from sqlmodel import Session

from app.jobs.base import (
    JobContext,
    JobsUnavailable,
    checked,
    load_jobs,
    on_commit,
    run_attempt,
)

log = structlog.get_logger()

# Seconds before each retry: a short outage is ridden out quickly, a long one for ~40 minutes.
REDIS_BACKOFF: tuple[int, ...] = (10, 60, 300, 1800)
JOB_TIMEOUT = 600  # seconds one attempt may take (stamping a large e-book)
FAILED_TTL = 7 * 24 * 3600  # how long rq keeps a failed job for `rq info` and the operator
_DONE = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}
# rq's defaults suit a Redis that never goes away: after an outage its worker would look for
# Redis only every 60 s, and restart its scheduler (which dies with the connection, and without
# which no retry is ever due) only at its next maintenance, 10 minutes on. Shorter, so that a
# worker is back to work seconds after Redis is.
RECONNECT_MAX = 5.0  # seconds between the worker's tries to reach Redis again, at most
MAINTENANCE_INTERVAL = 60  # seconds between maintenance runs (which restart a dead scheduler)
WORKER_TTL = 75  # an idle worker's blocking wait ends every WORKER_TTL - 15 s, for maintenance
MAX_HELD = 10_000  # jobs held in memory while Redis is down; beyond that, enqueue raises
HOLD_RETRY = (0.5, 1.0, 2.0, 5.0)  # seconds between tries to queue held jobs (then 5 s)


class RedisRunner:
    """Queues jobs in Redis for `rapport worker` processes, on any machine."""

    def __init__(
        self,
        url: str,
        *,
        queue: str = "rapport",
        backoff: Sequence[int] = REDIS_BACKOFF,
        hold_when_down: bool = False,
    ) -> None:
        self.url = url
        self.queue_name = queue
        self.backoff = tuple(int(b) for b in backoff)
        # Timeouts on the enqueueing side only: a request must not hang on a dead Redis.
        self.connection = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
        self.queue = Queue(queue, connection=self.connection, serializer=JSONSerializer)
        self.hold_when_down = hold_when_down
        self._held: deque[tuple[str, dict[str, Any], str | None]] = deque()
        self._held_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._closing = threading.Event()

    def enqueue(self, name: str, /, **kwargs: Any) -> None:
        """Queue the job; a unique job already queued or waiting for a retry is not queued again.

        Raises JobsUnavailable when Redis cannot be reached, unless the runner holds such jobs
        (hold_when_down) until Redis is back.
        """
        spec = checked(name, kwargs)
        key = spec.key_for(kwargs)
        try:
            self._queue_now(name, kwargs, key)
        except JobsUnavailable as exc:
            if not (self.hold_when_down and self._hold(name, kwargs, key, exc)):
                raise

    def _queue_now(self, name: str, kwargs: dict[str, Any], key: str | None) -> None:
        job_id = f"{self.queue_name}-{name}-{key or uuid.uuid4().hex}"
        try:
            try:
                self._enqueue(job_id, name, kwargs, unique=key is not None)
            except DuplicateJobError:
                if not self._forget_if_done(job_id):
                    log.debug("job.already_queued", job=name, key=key)
                    return
                try:
                    self._enqueue(job_id, name, kwargs, unique=True)
                except DuplicateJobError:
                    return  # another process queued it just now
        except redis.RedisError as exc:
            raise JobsUnavailable(f"Redis at {self._where()}: {exc}") from exc
        log.info("job.queued", job=name, key=key, queue=self.queue_name)

    # Jobs held while Redis is down ----------------------------------------------------------

    def held(self) -> int:
        """Jobs waiting in this process for Redis to come back."""
        return len(self._held)

    def _hold(self, name: str, kwargs: dict[str, Any], key: str | None, exc: Exception) -> bool:
        with self._held_lock:
            if self._closing.is_set() or len(self._held) >= MAX_HELD:
                return False
            if key is not None and any(n == name and k == key for n, _, k in self._held):
                return True  # that unique job is held already
            self._held.append((name, kwargs, key))
            count = len(self._held)
            if self._flusher is None or not self._flusher.is_alive():
                self._flusher = threading.Thread(
                    target=self._flush, name="rapport-held-jobs", daemon=True
                )
                self._flusher.start()
        log.warning("job.held", job=name, key=key, held=count, error=str(exc)[:200])
        return True

    def _flush(self) -> None:
        """Queue the held jobs, oldest first, as soon as Redis takes them; then end."""
        attempt = 0
        while True:
            with self._held_lock:
                # Decided under the lock that _hold takes: a job held from now on starts a
                # flusher of its own.
                if self._closing.is_set() or not self._held:
                    self._flusher = None
                    return
                item = self._held[0]
            name, kwargs, key = item
            try:
                self._queue_now(name, kwargs, key)
            except JobsUnavailable:
                delay = HOLD_RETRY[min(attempt, len(HOLD_RETRY) - 1)]
                attempt += 1
                self._closing.wait(delay)
                continue
            except Exception:  # e.g. a job registry changed under us: never block the rest
                log.exception("job.held_not_queued", job=name, key=key)
            attempt = 0
            with self._held_lock:
                if self._held and self._held[0] is item:  # else dropped by a shutdown
                    self._held.popleft()
                if not self._held:
                    log.info("job.held_all_queued")

    def enqueue_after_commit(self, session: Session, name: str, /, **kwargs: Any) -> None:
        """Queue the job when the session commits (never for work that is rolled back)."""
        checked(name, kwargs)  # a mistake shows in the request, not later in a log
        on_commit(session, lambda: self.enqueue(name, **kwargs))

    def _enqueue(self, job_id: str, name: str, kwargs: dict[str, Any], *, unique: bool) -> None:
        self.queue.enqueue_call(
            perform,
            kwargs={"name": name, "kwargs": kwargs},
            job_id=job_id,
            unique=unique,
            description=name,
            timeout=JOB_TIMEOUT,
            result_ttl=0,  # jobs return nothing worth keeping
            failure_ttl=FAILED_TTL,
            retry=Retry(max=len(self.backoff), interval=list(self.backoff))
            if self.backoff
            else None,
            meta={"tries": len(self.backoff) + 1},
        )

    def _forget_if_done(self, job_id: str) -> bool:
        """Delete a finished or failed job of that id, so that it can be queued anew."""
        try:
            existing = Job.fetch(job_id, connection=self.connection, serializer=JSONSerializer)
        except NoSuchJobError:
            return True
        if existing.get_status() not in _DONE:
            return False
        existing.delete()
        return True

    def pending(self) -> int:
        """Jobs queued, running or waiting for a retry."""
        scheduled: ScheduledJobRegistry = self.queue.scheduled_job_registry
        started: StartedJobRegistry = self.queue.started_job_registry
        return len(self.queue) + scheduled.count + started.count

    def work(self, context: JobContext, *, burst: bool = False, log_level: str = "INFO") -> None:
        """Run jobs in this process until stopped; with burst, until none is queued or due.

        Call it on the main thread: rq stops a job that runs too long with a signal.
        """
        global _context
        previous, _context = _context, context
        # rq installs its own SIGINT/SIGTERM handlers; an embedding process gets its own back.
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        # No socket timeout here: the worker waits on the queue with a blocking pop.
        connection = redis.Redis.from_url(self.url)
        queue = Queue(self.queue_name, connection=connection, serializer=JSONSerializer)
        try:
            try:
                connection.ping()
            except redis.RedisError as exc:
                raise JobsUnavailable(f"Redis at {self._where()}: {exc}") from exc
            load_jobs()  # before the first job, not during it
            while True:
                worker = _Worker(
                    [queue],
                    connection=connection,
                    serializer=JSONSerializer,
                    name=f"{self.queue_name}-{uuid.uuid4().hex[:12]}",  # findable by queue
                    maintenance_interval=MAINTENANCE_INTERVAL,
                    worker_ttl=WORKER_TTL,
                )
                reason = "the rq worker quit"
                try:
                    worker.work(burst=burst, with_scheduler=True, logging_level=log_level)
                except redis.RedisError as exc:
                    if burst or worker.stop_requested:
                        raise
                    reason = f"{type(exc).__name__}: {str(exc)[:200]}"
                if worker.stop_requested:
                    return
                if not burst:
                    # rq's worker quits (or raises) on a Redis error met outside its wait for
                    # jobs, e.g. while it records a job's end: wait for Redis, then work on.
                    log.warning("worker.restarting", reason=reason)
                    if not self._wait_for_redis(connection):
                        return
                    continue
                # A burst also waits out the retries still scheduled, so that it leaves nothing.
                wait = _next_due_in(queue)
                if wait is None:
                    return
                time.sleep(wait)
        finally:
            _context = previous
            connection.close()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _wait_for_redis(self, connection: redis.Redis) -> bool:
        """Wait until Redis answers (True), or until SIGINT/SIGTERM asks this process to stop."""
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda _signum, _frame: stop.set())
        delay = 0.5
        while not stop.is_set():
            try:
                connection.ping()
            except redis.RedisError:
                stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            log.info("worker.redis_back")
            return True
        return False

    def shutdown(self) -> None:
        """Close the connections to Redis; jobs still held for it are logged as dropped."""
        self._closing.set()
        flusher = self._flusher
        if flusher is not None:
            flusher.join(timeout=5)
        with self._held_lock:
            dropped, self._held = list(self._held), deque()
        for name, _kwargs, key in dropped:
            log.error("job.dropped_at_shutdown", job=name, key=key, reason="Redis unreachable")
        self.connection.close()
        # Ready again, as the in-process runner is: an app may be started more than once.
        self._closing.clear()

    def _where(self) -> str:
        pool_kwargs = self.connection.connection_pool.connection_kwargs
        return f"{pool_kwargs.get('host', '?')}:{pool_kwargs.get('port', '?')}"


def redis_problem(url: str, *, timeout: float = 1.0) -> str | None:
    """None when Redis at url answers PING within timeout, else what is wrong (readiness)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    finally:
        client.close()
    return None


def _next_due_in(queue: Queue) -> float | None:
    """Seconds until the next scheduled retry is due (0 when jobs are queued); None: nothing."""
    if len(queue):
        return 0.0
    registry: ScheduledJobRegistry = queue.scheduled_job_registry
    ids = registry.get_job_ids(0, 0)
    if not ids:
        return None
    try:
        due = registry.get_scheduled_time(ids[0])
    except NoSuchJobError:
        return 0.2
    # The scheduler counts in whole seconds; a short pause keeps this loop from spinning.
    return min(max((due - datetime.now(UTC)).total_seconds(), 0.2), 5.0)


# The worker side ---------------------------------------------------------------------------------


class _Worker(SimpleWorker):
    """rq's SimpleWorker that remembers a requested stop (SIGINT/SIGTERM), so that `work` can
    tell it from a worker that quit on a Redis error, and that looks for a lost Redis often."""

    max_connection_wait_time = RECONNECT_MAX
    stop_requested = False

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested = True
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]  # rq: untyped


_context: JobContext | None = None


def _worker_context() -> JobContext:
    """The context given to work(), or one made from the environment (a plain `rq worker`)."""
    global _context
    if _context is None:
        from app.config import get_settings
        from app.jobs.runner import build_context

        settings = get_settings()
        if not settings.redis_url:
            raise RuntimeError("RAPPORT_REDIS_URL is not set")
        _context = build_context(
            settings, RedisRunner(settings.redis_url, queue=settings.jobs_queue)
        )
    return _context


def perform(name: str, kwargs: dict[str, Any]) -> None:
    """What every queued job runs: the registered job `name`, retried by rq when it raises."""
    job = get_current_job()
    retries_left = (job.retries_left or 0) if job is not None else 0
    tries = int(job.meta.get("tries", 1)) if job is not None else 1
    run_attempt(
        _worker_context(),
        name,
        kwargs,
        final=retries_left == 0,
        attempt=max(tries - retries_left, 1),
    )
