"""PostgreSQL crashes and comes back while the app runs: 503s meanwhile, nothing acknowledged
is lost, the batches the client retries are stored once, and both pools recover by themselves
(SQLAlchemy's for pages, the events fast path's psycopg pool for event batches)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx2 as httpx
import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from app.catalog.models import Lesson
from tests.faults.conftest import (
    PrivatePostgres,
    Rapport,
    Stopwatch,
    add_buyer,
    csrf,
    sign_in,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("faults")]

SLUG = "trust-at-a-distance"


def lessons(engine: Engine) -> dict[str, int]:
    with Session(engine) as s:
        return {lesson.key: lesson.id or 0 for lesson in s.exec(select(Lesson))}


def batch(ids: dict[str, int], size: int) -> list[dict[str, Any]]:
    """Events as the player sends them, each with its own client UUID."""
    now = datetime.now(UTC).isoformat()
    video = ids["first-call-limits"]
    events: list[dict[str, Any]] = [
        {"id": str(uuid.uuid4()), "kind": "lesson_opened", "lesson_id": video, "at": now}
    ]
    for i in range(size - 1):
        events.append(
            {
                "id": str(uuid.uuid4()),
                "kind": "video_progress",
                "lesson_id": video,
                "at": now,
                "start": float(i),
                "end": float(i + 1),
                "rate": 1,
            }
        )
    return events


def post(client: httpx.Client, events: list[dict[str, Any]]) -> httpx.Response:
    return client.post(
        "/api/v1/events", json={"events": events}, headers={"x-csrftoken": csrf(client)}
    )


def resend(client: httpx.Client, events: list[dict[str, Any]]) -> httpx.Response | None:
    """The answer if the batch was taken; None (try again) if it was a 503."""
    r = post(client, events)
    assert r.status_code in (202, 503), r.text  # never a 500, nor anything else
    return r if r.status_code == 202 else None


def stored_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT client_id::text FROM engagement_event ORDER BY id"))
        return [str(r[0]) for r in rows]


def test_postgres_crash_answers_503_and_loses_nothing_acknowledged(
    make_rapport: Callable[[dict[str, str]], Rapport], private_postgres: PrivatePostgres
) -> None:
    url = private_postgres.create_database(f"rapport_faults_{uuid.uuid4().hex[:8]}")
    app = make_rapport({"RAPPORT_DATABASE_URL": url})
    engine = app.engine()
    add_buyer(engine, "buyer@example.com")
    ids = lessons(engine)
    app.serve()
    clock = Stopwatch("postgres")
    with app.client() as buyer:
        sign_in(buyer, engine, "buyer@example.com")
        acknowledged: list[dict[str, Any]] = []
        for _ in range(3):
            events = batch(ids, 5)
            r = post(buyer, events)
            assert r.status_code == 202 and r.json()["accepted"] == 5, r.text
            acknowledged += events
        lesson_page = f"/learn/{SLUG}/first-call-limits"
        assert buyer.get(lesson_page).status_code == 200

        private_postgres.stop("immediate")  # a crash: no checkpoint, WAL replayed at start
        clock.mark("PostgreSQL stopped (immediate)")
        failed = [batch(ids, 5) for _ in range(3)]
        # Sent at once, as several tabs would: each waits for a pooled connection in vain
        # (a bounded wait, and the client's timeout bounds it again), then is told to retry.
        with ThreadPoolExecutor(len(failed)) as tabs:
            answers = list(tabs.map(lambda events: post(buyer, events), failed))
        for r in answers:
            assert r.status_code == 503 and r.headers["retry-after"], r.text
            assert r.json()["status"] == 503
        clock.mark("event batches answered 503")
        ready = buyer.get("/readyz")
        assert ready.status_code == 503 and ready.json()["failing"] == ["database"]
        assert ready.headers["retry-after"]
        assert buyer.get("/healthz").status_code == 200
        assert buyer.get("/static/css/app.css").status_code == 200
        page = buyer.get(lesson_page, headers={"Accept": "text/html"})
        assert page.status_code == 503 and "Temporarily unavailable" in page.text
        assert page.headers["retry-after"]
        stream = buyer.get(f"/api/v1/lessons/{ids['first-call-limits']}/stream")
        assert stream.status_code == 503, stream.text
        with app.client() as visitor:  # a first visit: no page of the cache to fall back on
            for path in ("/", f"/products/{SLUG}"):
                r = visitor.get(path, headers={"Accept": "text/html"})
                assert r.status_code == 503 and r.headers["retry-after"], (path, r.status_code)
        clock.mark("pages and the stream URL answered 503")

        private_postgres.start()  # the app is not restarted
        clock.mark("PostgreSQL started again")
        # The client retries its failed batches, unchanged, until they are taken.
        for n, events in enumerate(failed):
            r = wait_until(
                partial(resend, buyer, events), timeout=60, what="an event batch to be taken again"
            )
            if n == 0:
                clock.mark("the first retried batch was taken (the events pool is back)")
            # Each is stored once: a batch that reached the database before the crash would
            # count here as duplicate, never twice.
            assert r.json()["accepted"] + r.json()["duplicate"] == 5, r.text
            acknowledged += events
        clock.mark("the failed batches were retried and taken")
        again = post(buyer, acknowledged[:15])  # a retry of batches acknowledged before
        assert again.status_code == 202 and again.json()["duplicate"] == 15, again.text
        wait_until(
            lambda: buyer.get("/readyz").status_code == 200, timeout=30, what="/readyz to be 200"
        )
        assert buyer.get(lesson_page).status_code == 200
        assert buyer.get(f"/api/v1/lessons/{ids['first-call-limits']}/stream").status_code == 200
        clock.mark("pages, stream URLs and /readyz answer again")
    # Every acknowledged event, each once (a batch is inserted in client id order).
    assert sorted(stored_ids(engine)) == sorted(e["id"] for e in acknowledged)
