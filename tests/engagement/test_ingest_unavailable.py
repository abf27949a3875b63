"""A database that goes away mid-batch: the client gets 503, and its retry (same ids) stores
each event once. On PostgreSQL, through both ways to the database: the event pool of the
running app (fast path) and SQLAlchemy (a TestClient outside the app's lifespan)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func
from sqlalchemy.engine import make_url
from sqlmodel import Session, select

from app.engagement.fastpath import APPLICATION_NAME
from app.engagement.models import EngagementEvent
from tests.conftest import sign_in
from tests.engagement.conftest import Shop, event
from tests.engagement.test_events import post

pytestmark = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def stored(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(EngagementEvent)).one())


def admin(database_url: str) -> psycopg.Connection[Any]:
    """A plain connection to the test database, for locks and pg_terminate_backend."""
    url = make_url(database_url).set(drivername="postgresql")
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)


def waiting_backend(conn: psycopg.Connection[Any], blocker: int) -> int:
    """The pid of the backend that waits for the blocker's row lock."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND %s = ANY("
            "pg_blocking_pids(pid))",
            (blocker,),
        ).fetchone()
        if row is not None:
            return int(row[0])
        time.sleep(0.02)
    raise AssertionError("no batch came to wait for the buyer row")


def cut_off_mid_batch(
    client: TestClient, database_url: str, user_id: int, batch: list[dict[str, Any]]
) -> Any:
    """Send the batch while the buyer's rollup row is locked, and terminate the backend of
    the batch once it waits for that lock: its events are inserted but not committed."""
    answers: list[Any] = []
    with admin(database_url) as control, admin(database_url) as blocker:
        blocker.execute("BEGIN")
        blocker.execute("SELECT 1 FROM buyer_engagement WHERE user_id = %s FOR UPDATE", (user_id,))
        blocker_pid = blocker.info.backend_pid
        sender = threading.Thread(target=lambda: answers.append(post(client, batch)))
        sender.start()
        victim = waiting_backend(control, blocker_pid)
        control.execute("SELECT pg_terminate_backend(%s)", (victim,))
        sender.join(timeout=30)
        blocker.execute("ROLLBACK")
    assert answers, "the batch got no answer"
    return answers[0]


@pytest.fixture
def live_buyer(app: FastAPI, engine: Engine, shop: Shop) -> Iterator[TestClient]:
    """The buyer, with the app's lifespan running: batches take the event pool."""
    with TestClient(app) as client:
        sign_in(client, engine, "a@example.com")
        yield client


def batch_of(shop: Shop, n: int = 50) -> list[dict[str, Any]]:
    welcome = shop.lessons["welcome"]
    last = int(shop.durations["welcome"]) - 1
    return [event("video_progress", welcome, start=i % last, end=i % last + 1) for i in range(n)]


def test_fast_path_answers_503_and_the_retry_stores_once(
    app: FastAPI, engine: Engine, database_url: str, live_buyer: TestClient, shop: Shop
) -> None:
    assert post(live_buyer, batch_of(shop, 1)).json()["accepted"] == 1  # the rollup rows exist
    batch = batch_of(shop)
    r = cut_off_mid_batch(live_buyer, database_url, shop.buyer, batch)
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "5" and r.json()["status"] == 503
    assert stored(engine) == 1  # rolled back with the connection
    retry = post(live_buyer, batch)
    assert retry.status_code == 202, retry.text
    assert (retry.json()["accepted"], retry.json()["duplicate"]) == (50, 0)
    again = post(live_buyer, batch)
    assert (again.json()["accepted"], again.json()["duplicate"]) == (0, 50)
    assert stored(engine) == 51


def test_sqlalchemy_path_answers_503_and_the_retry_stores_once(
    app: FastAPI, engine: Engine, database_url: str, shop: Shop
) -> None:
    client = TestClient(app)  # no lifespan, no event pool: service.ingest answers
    sign_in(client, engine, "a@example.com")
    assert post(client, batch_of(shop, 1)).json()["accepted"] == 1
    batch = batch_of(shop)
    r = cut_off_mid_batch(client, database_url, shop.buyer, batch)
    assert r.status_code == 503, r.text
    assert stored(engine) == 1
    retry = post(client, batch)
    assert (retry.status_code, retry.json()["accepted"]) == (202, 50)
    assert post(client, batch).json()["duplicate"] == 50
    assert stored(engine) == 51


def test_connections_broken_while_pooled_are_replaced_without_an_error(
    database_url: str, live_buyer: TestClient, shop: Shop
) -> None:
    """PostgreSQL restarted since the pool's connections were opened: the batch still goes
    through (the broken connection is found on the first round trip, before any write)."""
    assert post(live_buyer, batch_of(shop, 1)).status_code == 202
    with admin(database_url) as control:
        ended = control.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            (APPLICATION_NAME,),
        ).fetchall()
    assert ended
    r = post(live_buyer, batch_of(shop))
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 50
