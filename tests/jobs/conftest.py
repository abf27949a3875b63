"""Fixtures for the job runners: a real Redis (its own database number), jobs made for tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
import redis
from sqlalchemy import Engine, create_engine

from app.config import Settings
from app.delivery.storage import LocalStorage
from app.integrations.queue import RedisRunner
from app.jobs.base import JobContext, Runner
from app.mail import OutboxMailer
from tests.conftest import missing

# A database number of its own, so that these tests never touch the rate-limit test's keys.
REDIS_URL = os.environ.get("RAPPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


class MakeContext(Protocol):
    def __call__(self, runner: Runner, engine: Engine | None = None) -> JobContext: ...


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis; skipped without one on a laptop, a failure in CI."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        missing("Redis", f"nothing answers at {REDIS_URL}; start redis-server on 127.0.0.1:6379")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def queue_name(redis_url: str) -> Iterator[str]:
    """A queue no other test (or xdist worker) uses; its keys are deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        # Job ids start with the queue name, so this pattern finds the jobs' keys too.
        keys = list(client.scan_iter(match=f"*{name}*", count=500))
        if keys:
            client.delete(*keys)
        client.srem("rq:queues", f"rq:queue:{name}")
    finally:
        client.close()


@pytest.fixture
def redis_runner(redis_url: str, queue_name: str) -> Iterator[RedisRunner]:
    """A Redis runner on the test queue with short backoff (rq counts in whole seconds)."""
    runner = RedisRunner(redis_url, queue=queue_name, backoff=(1, 1))
    yield runner
    runner.shutdown()


@pytest.fixture
def bare_engine(tmp_path: Path) -> Iterator[Engine]:
    """An engine for jobs that do not touch the database."""
    engine = create_engine(f"sqlite:///{tmp_path / 'bare.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def make_context(tmp_path: Path, bare_engine: Engine) -> MakeContext:
    """A job context with its own engine, folder storage and outbox, for a given runner."""
    settings = Settings(env="test", data_dir=tmp_path, _env_file=None)

    def make(runner: Runner, engine: Engine | None = None) -> JobContext:
        return JobContext(
            settings=settings,
            engine=engine or bare_engine,
            storage=LocalStorage(tmp_path / "media", secret="test-secret"),
            mailer=OutboxMailer(tmp_path / "outbox", settings.mail_from),
            jobs=runner,
        )

    return make
