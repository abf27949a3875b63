"""The PostgreSQL fast path (app/engagement/fastpath.py) gives the answers and rows of the
SQLAlchemy path: every scenario of test_events.py again, on PostgreSQL, with the app's lifespan
running (which opens the event pool), plus what only the fast path has (its lesson cache)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from app.catalog.changes import catalog_changed
from app.catalog.models import Product, ProductStatus
from app.engagement.models import BuyerEngagement, EngagementEvent, LessonProgress
from tests.conftest import sign_in
from tests.engagement import test_events
from tests.engagement.conftest import Shop, entitle, event
from tests.engagement.test_events import (  # noqa: F401 - collected here once more
    test_a_batch_is_stored_once_and_rolled_up,
    test_bad_events_are_rejected_with_reasons_and_never_stored,
    test_events_of_another_buyer_stay_theirs,
    test_good_and_bad_events_in_one_batch,
    test_revoked_access_stops_counting_at_once,
    test_text_lessons_complete_when_read_and_pdf_pages_count,
    test_watching_ninety_percent_completes_the_lesson,
    test_watching_the_course_makes_the_buyer_engaged,
    test_whole_batch_refusals,
)

pytestmark = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
def buyer(app: FastAPI, engine: Engine, shop: Shop) -> Iterator[TestClient]:
    """The signed-in buyer of test_events, with the lifespan running: the fast path answers."""
    with TestClient(app) as client:
        sign_in(client, engine, "a@example.com")
        assert app.state.event_writer is not None and app.state.event_writer.pools
        yield client


def test_the_fast_path_is_taken(app: FastAPI, buyer: TestClient, shop: Shop) -> None:
    calls: list[int] = []
    writer = app.state.event_writer
    original = writer.ingest

    async def counting(**kwargs: object) -> object:
        calls.append(1)
        return await original(**kwargs)

    writer.ingest = counting
    batch = [event("lesson_opened", shop.lessons["welcome"])]
    assert test_events.post(buyer, batch).json()["accepted"] == 1
    assert calls == [1]


def test_both_paths_answer_and_store_the_same(app: FastAPI, engine: Engine, shop: Shop) -> None:
    """The same batches from two buyers, one through each path: the same answers, the same
    events, the same rollups (but for the moments the server stamps itself)."""
    entitle(engine, shop.other, "trust-at-a-distance")
    welcome, second = shop.lessons["welcome"], shop.lessons["first-call-limits"]
    text, pdf = shop.lessons["first-call-checklist"], shop.lessons["linkedin-playbook"]
    at = datetime.now(UTC) - timedelta(minutes=5)

    def moment(seconds: int) -> str:
        return (at + timedelta(seconds=seconds)).isoformat()

    first = [
        event("lesson_opened", welcome, at=moment(0)),
        event("video_progress", welcome, start=0, end=3.5, rate=1, at=moment(1)),
        event("video_progress", welcome, start=3.2, end=6, rate=2, at=moment(2)),
        event("video_progress", second, start=1, end=3.25, rate=1.5, at=moment(2)),
        event("page_viewed", pdf, page=2, seconds=1.5, at=moment(3)),
        event("page_viewed", pdf, page=3, seconds=7.25, at=moment(3)),
        event("lesson_completed", text, at=moment(4)),
        event("lesson_opened", welcome) | {"lesson_id": 999999},
        event("video_progress", welcome, start=5, end=2),
    ]
    batches = [
        first,
        [*first[:3], event("video_progress", welcome, start=1, end=2.5, at=moment(9))],
        [event("video_progress", welcome, start=0, end=shop.durations["welcome"], at=moment(20))],
    ]
    with TestClient(app) as fast:
        sign_in(fast, engine, "a@example.com")
        slow = TestClient(app)  # outside any lifespan: service.ingest through SQLAlchemy
        sign_in(slow, engine, "b@example.com")
        for batch in batches:
            a, b = test_events.post(fast, batch), test_events.post(slow, batch)
            assert (a.status_code, a.json()) == (b.status_code, b.json())
    with Session(engine) as s:
        events = {
            user: sorted(
                (
                    str(e.client_id),
                    e.kind,
                    e.lesson_id,
                    e.start,
                    e.end,
                    e.rate,
                    e.page,
                    e.seconds,
                    e.occurred_at,
                )
                for e in s.exec(select(EngagementEvent).where(EngagementEvent.user_id == user))
            )
            for user in (shop.buyer, shop.other)
        }
        assert events[shop.buyer] == events[shop.other] and len(events[shop.buyer]) == 9
        stamped = {"user_id", "completed_at", "engaged_at", "score_at_last_event"}
        for model in (LessonProgress, BuyerEngagement):
            rows: dict[int, list[tuple[dict[str, object], bool]]] = {}
            for user in (shop.buyer, shop.other):
                found = s.exec(select(model).where(model.user_id == user)).all()
                rows[user] = sorted(
                    (
                        (
                            {k: v for k, v in row.model_dump().items() if k not in stamped},
                            getattr(row, "completed_at", None) is not None,
                        )
                        for row in found
                    ),
                    key=repr,
                )
            assert rows[shop.buyer] == rows[shop.other] and rows[shop.buyer]


def test_the_lesson_cache_follows_catalog_changes(
    app: FastAPI, engine: Engine, buyer: TestClient, shop: Shop
) -> None:
    welcome = shop.lessons["welcome"]
    watcher, writer = app.state.catalog_watcher, app.state.event_writer
    deadline = time.monotonic() + 10
    while not watcher.healthy and time.monotonic() < deadline:  # LISTEN is connecting
        time.sleep(0.02)
    assert watcher.healthy
    assert test_events.post(buyer, [event("lesson_opened", welcome)]).json()["accepted"] == 1
    assert welcome.id in writer.cache.lessons  # remembered for the next batches
    with Session(engine) as s:
        product = s.get(Product, welcome.product_id)
        assert product is not None
        product.status = ProductStatus.draft
        s.add(product)
        catalog_changed(s)
        s.commit()
    r = test_events.post(buyer, [event("lesson_opened", welcome)])
    assert r.json()["reasons"] == {"unknown_lesson": 1}  # a draft's lessons take no events
