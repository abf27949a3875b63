"""The in-process runner: the same promises as the Redis runner, with threads and timers."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from app.accounts.models import User
from app.config import Settings
from app.jobs.runner import InProcessRunner, make_runner
from tests.jobs.conftest import MakeContext
from tests.jobs.jobs_for_tests import FAILED, RUNS, token


@pytest.fixture
def runner(make_context: MakeContext) -> Iterator[InProcessRunner]:
    holder: list[InProcessRunner] = []
    r = InProcessRunner(lambda: make_context(holder[0]), backoff=(0.2, 0.2))
    holder.append(r)
    yield r
    r.shutdown(grace=0)


def test_a_job_that_fails_twice_succeeds_on_the_third_try(runner: InProcessRunner) -> None:
    t = token()
    runner.enqueue("test_flaky", token=t, fail_times=2)
    assert runner.drain(timeout=10)
    runs = RUNS[t]
    assert len(runs) == 3 and t not in FAILED
    assert all(later - earlier >= 0.2 for earlier, later in itertools.pairwise(runs))


def test_a_job_that_keeps_failing_is_marked_failed_with_its_reason(
    runner: InProcessRunner,
) -> None:
    t = token()
    runner.enqueue("test_flaky", token=t, fail_times=99)
    assert runner.drain(timeout=10)
    assert len(RUNS[t]) == 3
    assert FAILED[t] == "RuntimeError: attempt 3 fails on purpose"


def test_a_job_enqueued_in_a_rolled_back_transaction_never_runs(
    runner: InProcessRunner, engine: Engine
) -> None:
    rolled_back, committed, inner = token(), token(), token()
    with Session(engine) as session:
        session.add(User(email="ghost@example.com"))
        session.flush()
        runner.enqueue_after_commit(session, "test_flaky", token=rolled_back)
        session.rollback()
        session.add(User(email="real@example.com"))
        runner.enqueue_after_commit(session, "test_flaky", token=committed)
        savepoint = session.begin_nested()
        runner.enqueue_after_commit(session, "test_flaky", token=inner)
        savepoint.rollback()
        assert RUNS[committed] == []  # nothing runs before the commit
        session.commit()
    assert runner.drain(timeout=10)
    assert len(RUNS[committed]) == 1
    assert RUNS[rolled_back] == [] and RUNS[inner] == []


def test_a_unique_job_is_not_queued_twice_while_it_waits(runner: InProcessRunner) -> None:
    t = token()
    runner.enqueue("test_once", token=t, fail_times=1)
    runner.enqueue("test_once", token=t, fail_times=1)  # while the first waits for its retry
    assert runner.drain(timeout=10)
    assert len(RUNS[t]) == 2 and t not in FAILED
    runner.enqueue("test_once", token=t)  # done: it may be queued again
    assert runner.drain(timeout=10)
    assert len(RUNS[t]) == 3


def test_shutdown_drops_retries_still_waiting(make_context: MakeContext) -> None:
    holder: list[InProcessRunner] = []
    runner = InProcessRunner(lambda: make_context(holder[0]), backoff=(30,))
    holder.append(runner)
    t = token()
    runner.enqueue("test_flaky", token=t, fail_times=1)
    deadline = time.monotonic() + 5
    while not RUNS[t] and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    runner.shutdown(grace=0.1)
    assert time.monotonic() - started < 5 and runner.drain(timeout=0)
    assert len(RUNS[t]) == 1


def test_arguments_must_be_json(runner: InProcessRunner) -> None:
    with pytest.raises(TypeError, match="JSON"):
        runner.enqueue("test_flaky", token={1, 2})


def test_settings_choose_the_runner(tmp_path: object) -> None:
    from app.integrations.queue import RedisRunner

    def runner_for(**values: object) -> object:
        return make_runner(Settings(env="test", _env_file=None, **values), lambda: None)  # type: ignore[arg-type,return-value]

    assert isinstance(runner_for(), InProcessRunner)
    with_redis = runner_for(redis_url="redis://127.0.0.1:6379/14")
    assert isinstance(with_redis, RedisRunner) and with_redis.queue_name == "rapport"
    assert isinstance(runner_for(redis_url="redis://x:6379/0", jobs="inprocess"), InProcessRunner)
    with pytest.raises(ValueError, match="RAPPORT_JOBS=redis needs RAPPORT_REDIS_URL"):
        Settings(env="test", _env_file=None, jobs="redis")
