"""The pieces that ride out a Redis outage, in process and fast: the rate limiter counts in
memory while Redis is away and returns to it, and the web app's job runner holds the jobs it
cannot queue and queues them when Redis is back (or says at shutdown which ones it dropped)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from structlog.testing import capture_logs

from app import ratelimit
from app.config import Settings
from app.delivery.storage import LocalStorage
from app.integrations.queue import RedisRunner
from app.jobs.base import JobContext, JobsUnavailable
from app.mail import OutboxMailer
from app.ratelimit import RateLimited, RateLimiter, RateLimitUnavailable
from tests.faults.conftest import PrivateRedis, wait_until
from tests.jobs.jobs_for_tests import RUNS, token

pytestmark = [pytest.mark.xdist_group("faults")]


def test_rate_limits_degrade_to_memory_and_return_to_redis(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "RETRY_SHARED", 0.2)  # try Redis again soon
    limiter = RateLimiter(private_redis.url())
    strict = RateLimiter(private_redis.url(), degrade=False)
    key = uuid.uuid4().hex
    limiter.hit("3/minute", "test", key)
    assert limiter.degraded() is None

    private_redis.stop()
    with pytest.raises(RateLimitUnavailable):
        strict.hit("3/minute", "test", key)
    # Counted afresh in memory, and still enforced there.
    for _ in range(3):
        limiter.hit("3/minute", "test", key)
    with pytest.raises(RateLimited) as refused:
        limiter.hit("3/minute", "test", key)
    assert refused.value.retry_after >= 1
    assert (limiter.degraded() or "").startswith("ConnectionError")

    private_redis.start()
    # Back in Redis: its count (one hit before the outage) lets two more through, not none.
    wait_until(lambda: _allowed(limiter, key), timeout=10, what="the limiter to use Redis again")
    assert limiter.degraded() is None
    limiter.hit("3/minute", "test", key)
    with pytest.raises(RateLimited):
        limiter.hit("3/minute", "test", key)


def _allowed(limiter: RateLimiter, key: str) -> bool:
    try:
        limiter.hit("3/minute", "test", key)
    except RateLimited:
        return False
    return True


def _context(tmp_path: Path, runner: RedisRunner) -> JobContext:
    settings = Settings(env="test", data_dir=tmp_path, _env_file=None)
    return JobContext(
        settings=settings,
        engine=create_engine(f"sqlite:///{tmp_path / 'jobs.db'}"),
        storage=LocalStorage(tmp_path / "media", secret="test-secret"),
        mailer=OutboxMailer(tmp_path / "outbox", settings.mail_from),
        jobs=runner,
    )


def test_jobs_held_while_redis_is_down_are_queued_when_it_is_back(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    queue = f"faults-{uuid.uuid4().hex[:8]}"
    runner = RedisRunner(private_redis.url(), queue=queue, backoff=(), hold_when_down=True)
    plain, unique = token(), token()
    private_redis.stop()
    with capture_logs() as logs:
        runner.enqueue("test_flaky", token=plain)
        runner.enqueue("test_once", token=unique)
        runner.enqueue("test_once", token=unique)  # a unique job is held once
    assert runner.held() == 2
    assert [e["event"] for e in logs] == ["job.held", "job.held"]

    private_redis.start()
    wait_until(lambda: runner.held() == 0, timeout=15, what="the held jobs to be queued")
    assert runner.pending() == 2
    runner.work(_context(tmp_path, runner), burst=True, log_level="WARNING")
    assert len(RUNS[plain]) == 1 and len(RUNS[unique]) == 1
    runner.shutdown()


def test_a_runner_that_does_not_hold_raises_and_one_that_stops_says_what_it_dropped(
    private_redis: PrivateRedis,
) -> None:
    queue = f"faults-{uuid.uuid4().hex[:8]}"
    strict = RedisRunner(private_redis.url(), queue=queue)
    holding = RedisRunner(private_redis.url(), queue=queue, hold_when_down=True)
    private_redis.stop()
    with pytest.raises(JobsUnavailable):
        strict.enqueue("test_flaky", token=token())
    holding.enqueue("test_flaky", token=token())
    with capture_logs() as logs:
        holding.shutdown()
    assert [e["event"] for e in logs] == ["job.dropped_at_shutdown"]
    assert holding.held() == 0
    strict.shutdown()
