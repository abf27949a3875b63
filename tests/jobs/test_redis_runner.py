"""The Redis runner on a real Redis: retries with backoff, final failures, commits and rollbacks."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from app.accounts.models import User
from app.integrations.queue import RedisRunner
from tests.jobs.conftest import MakeContext
from tests.jobs.jobs_for_tests import FAILED, RUNS, token


def test_a_job_that_fails_twice_succeeds_on_the_third_try(
    redis_url: str, queue_name: str, make_context: MakeContext
) -> None:
    runner = RedisRunner(redis_url, queue=queue_name, backoff=(2, 2))
    t = token()
    runner.enqueue("test_flaky", token=t, fail_times=2)
    assert runner.pending() == 1
    runner.work(make_context(runner), burst=True, log_level="WARNING")
    runs = RUNS[t]
    assert len(runs) == 3
    # Each retry waited in rq's schedule; the scheduler counts whole seconds, hence > 1 s.
    assert all(later - earlier > 1.0 for earlier, later in itertools.pairwise(runs))
    assert t not in FAILED
    assert runner.pending() == 0 and runner.queue.failed_job_registry.count == 0
    runner.shutdown()


def test_a_job_that_keeps_failing_is_marked_failed_with_its_reason(
    redis_runner: RedisRunner, make_context: MakeContext
) -> None:
    t = token()
    redis_runner.enqueue("test_flaky", token=t, fail_times=99)
    redis_runner.work(make_context(redis_runner), burst=True, log_level="WARNING")
    assert len(RUNS[t]) == 3  # the first try and two retries
    assert FAILED[t] == "RuntimeError: attempt 3 fails on purpose"
    assert redis_runner.pending() == 0
    assert redis_runner.queue.failed_job_registry.count == 1  # kept for the operator


def test_a_job_enqueued_in_a_rolled_back_transaction_never_runs(
    redis_runner: RedisRunner, make_context: MakeContext, engine: Engine
) -> None:
    rolled_back, committed = token(), token()
    with Session(engine) as session:
        session.add(User(email="ghost@example.com"))
        session.flush()
        redis_runner.enqueue_after_commit(session, "test_flaky", token=rolled_back)
        assert redis_runner.pending() == 0  # nothing is queued before the commit
        session.rollback()
        session.add(User(email="real@example.com"))
        redis_runner.enqueue_after_commit(session, "test_flaky", token=committed)
        session.commit()
    assert redis_runner.pending() == 1
    redis_runner.work(make_context(redis_runner, engine), burst=True, log_level="WARNING")
    assert len(RUNS[committed]) == 1
    assert RUNS[rolled_back] == []
    with Session(engine) as session:
        assert [u.email for u in session.exec(select(User))] == ["real@example.com"]


def test_a_rolled_back_savepoint_drops_only_its_own_jobs(
    redis_runner: RedisRunner, make_context: MakeContext, engine: Engine
) -> None:
    outer, inner = token(), token()
    with Session(engine) as session:
        session.add(User(email="outer@example.com"))
        redis_runner.enqueue_after_commit(session, "test_flaky", token=outer)
        savepoint = session.begin_nested()
        redis_runner.enqueue_after_commit(session, "test_flaky", token=inner)
        savepoint.rollback()
        session.commit()
    redis_runner.work(make_context(redis_runner, engine), burst=True, log_level="WARNING")
    assert len(RUNS[outer]) == 1 and RUNS[inner] == []


def test_a_session_closed_without_commit_queues_nothing(
    redis_runner: RedisRunner, engine: Engine
) -> None:
    with Session(engine) as session:
        session.add(User(email="left@example.com"))
        session.flush()
        redis_runner.enqueue_after_commit(session, "test_flaky", token=token())
    with Session(engine) as session:
        session.commit()  # the same engine, a new session: nothing carried over
    assert redis_runner.pending() == 0


def test_a_unique_job_is_queued_once_and_again_after_it_ended(
    redis_runner: RedisRunner, make_context: MakeContext
) -> None:
    t = token()
    redis_runner.enqueue("test_once", token=t, fail_times=99)
    redis_runner.enqueue("test_once", token=t, fail_times=99)
    assert redis_runner.pending() == 1
    redis_runner.work(make_context(redis_runner), burst=True, log_level="WARNING")
    assert len(RUNS[t]) == 3 and t in FAILED
    # Failed for good: a new request (e.g. the buyer's next visit) may queue it afresh.
    redis_runner.enqueue("test_once", token=t)
    assert redis_runner.pending() == 1


def test_arguments_must_be_json_and_names_known(redis_runner: RedisRunner) -> None:
    with pytest.raises(TypeError, match="JSON"):
        redis_runner.enqueue("test_flaky", token=object())
    with pytest.raises(KeyError, match="no job named"):
        redis_runner.enqueue("no_such_job")
    assert redis_runner.pending() == 0


def test_an_unreachable_redis_is_reported(make_context: MakeContext) -> None:
    from app.jobs.base import JobsUnavailable
    from tests.conftest import free_port

    runner = RedisRunner(f"redis://127.0.0.1:{free_port()}/0", queue="nowhere")
    with pytest.raises(JobsUnavailable, match=r"127\.0\.0\.1"):
        runner.enqueue("test_flaky", token=token())
    with pytest.raises(JobsUnavailable):
        runner.work(make_context(runner), burst=True)
    runner.shutdown()
