"""The events API: checked per event, stored once, rolled up into progress and the score."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, update
from sqlmodel import Session, select

from app.checkout.models import Entitlement
from app.engagement.models import BuyerEngagement, EngagementEvent, LessonProgress
from tests.conftest import csrf_token, sign_in
from tests.engagement.conftest import Shop, entitle, event


def post(client: TestClient, events: Any) -> Any:
    return client.post(
        "/api/v1/events", json={"events": events}, headers={"x-csrftoken": csrf_token(client)}
    )


def stored(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(EngagementEvent)).one())


def progress(engine: Engine, user_id: int, lesson_id: int | None) -> LessonProgress:
    with Session(engine) as s:
        row = s.get(LessonProgress, (user_id, lesson_id))
        assert row is not None
        return row


@pytest.fixture
def buyer(app: FastAPI, engine: Engine, shop: Shop) -> TestClient:
    client = TestClient(app)
    sign_in(client, engine, "a@example.com")
    return client


def test_a_batch_is_stored_once_and_rolled_up(
    buyer: TestClient, engine: Engine, shop: Shop
) -> None:
    welcome = shop.lessons["welcome"]
    batch = [
        event("lesson_opened", welcome),
        event("video_progress", welcome, start=0, end=3, rate=1),
        event("video_progress", welcome, start=3, end=5, rate=2),
        event("video_progress", welcome, start=1, end=4, rate=1),  # replay
    ]
    r = post(buyer, batch)
    assert r.status_code == 202, r.text
    assert r.json() | {"errors": []} == {
        "accepted": 4,
        "duplicate": 0,
        "rejected": 0,
        "reasons": {},
        "errors": [],
        "engaged": False,
    }
    again = post(buyer, batch)  # the client retries: nothing counts twice
    assert again.json()["accepted"] == 0 and again.json()["duplicate"] == 4
    assert stored(engine) == 4
    row = progress(engine, shop.buyer, welcome.id)
    assert row.intervals == [[0, 5]] and row.covered_seconds == 5 and row.position == 4
    assert row.opened_at is not None and row.completed_at is None
    with Session(engine) as s:
        totals = s.get(BuyerEngagement, shop.buyer)
        assert totals is not None and totals.media_seconds == 5 and totals.lessons_total == 8


def test_watching_ninety_percent_completes_the_lesson(
    buyer: TestClient, engine: Engine, shop: Shop
) -> None:
    welcome = shop.lessons["welcome"]
    duration = shop.durations["welcome"]
    post(buyer, [event("video_progress", welcome, start=0, end=duration * 0.5, rate=1)])
    # a skip to the end does not complete it
    post(buyer, [event("lesson_completed", welcome)])
    assert progress(engine, shop.buyer, welcome.id).completed_at is None
    post(buyer, [event("video_progress", welcome, start=duration * 0.5, end=duration * 0.91)])
    assert progress(engine, shop.buyer, welcome.id).completed_at is not None
    with Session(engine) as s:
        totals = s.get(BuyerEngagement, shop.buyer)
        assert totals is not None and totals.lessons_completed == 1


def test_text_lessons_complete_when_read_and_pdf_pages_count(
    buyer: TestClient, engine: Engine, shop: Shop
) -> None:
    text_lesson, pdf = shop.lessons["first-call-checklist"], shop.lessons["linkedin-playbook"]
    assert shop.pages > 2
    r = post(
        buyer,
        [
            event("lesson_completed", text_lesson),
            event("page_viewed", pdf, page=1, seconds=20),
            event("page_viewed", pdf, page=2, seconds=30),
            event("page_viewed", pdf, page=1, seconds=5),
        ],
    )
    assert r.json()["accepted"] == 4
    assert progress(engine, shop.buyer, text_lesson.id).completed_at is not None
    row = progress(engine, shop.buyer, pdf.id)
    assert row.pages == [1, 2] and row.reading_seconds == 55 and row.completed_at is None
    with Session(engine) as s:
        totals = s.get(BuyerEngagement, shop.buyer)
        assert totals is not None and totals.pages_read == 2 and totals.reading_seconds == 55


def test_bad_events_are_rejected_with_reasons_and_never_stored(
    buyer: TestClient, engine: Engine, shop: Shop
) -> None:
    welcome, pdf = shop.lessons["welcome"], shop.lessons["linkedin-playbook"]
    foreign = shop.lessons["playbook-pdf"]  # the e-book product, not bought
    now = datetime.now(UTC)
    duration = shop.durations["welcome"]
    bad = [
        event("video_progress", foreign, start=0, end=2),
        event("lesson_opened", welcome) | {"lesson_id": 999999},
        event("video_progress", welcome, start=0, end=duration + 30),
        event("video_progress", welcome, start=5, end=2),
        event("video_progress", welcome, start=0, end=2, rate=40),
        event("lesson_opened", welcome) | {"id": "not-a-uuid"},
        event("lesson_opened", welcome) | {"kind": "hacked"},
        event("lesson_opened", welcome) | {"at": (now + timedelta(hours=2)).isoformat()},
        event("lesson_opened", welcome) | {"at": "yesterday-ish"},
        event("page_viewed", pdf, page=shop.pages + 1),
        event("page_viewed", welcome, page=1),
        event("lesson_opened", welcome) | {"lesson_id": "1; DROP TABLE"},
        "not an object",
        event("video_progress", welcome, start=float("nan"), end=2) | {"start": "NaN"},
    ]
    r = post(buyer, bad)
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] == 0 and body["rejected"] == len(bad)
    assert body["reasons"] == {
        "not_entitled": 1,
        "unknown_lesson": 1,
        "out_of_range": 4,
        "malformed": 5,
        "unknown_kind": 1,
        "bad_time": 1,
        "wrong_kind": 1,
    }
    assert sorted(e["index"] for e in body["errors"]) == list(range(len(bad)))
    assert stored(engine) == 0


def test_good_and_bad_events_in_one_batch(buyer: TestClient, engine: Engine, shop: Shop) -> None:
    welcome = shop.lessons["welcome"]
    good = event("lesson_opened", welcome)
    r = post(buyer, [good, event("lesson_opened", welcome) | {"lesson_id": 999999}, good])
    assert (r.json()["accepted"], r.json()["duplicate"], r.json()["rejected"]) == (1, 1, 1)
    assert stored(engine) == 1


def test_whole_batch_refusals(app: FastAPI, buyer: TestClient, engine: Engine, shop: Shop) -> None:
    welcome = shop.lessons["welcome"]
    limit = app.state.settings.events_batch_limit
    too_many = [event("lesson_opened", welcome) for _ in range(limit + 1)]
    assert post(buyer, too_many).status_code == 413
    token = {"x-csrftoken": csrf_token(buyer)}
    assert buyer.post("/api/v1/events", content=b"{nope", headers=token).status_code == 400
    assert buyer.post("/api/v1/events", json={"events": "x"}, headers=token).status_code == 422
    assert buyer.post("/api/v1/events", json=[1], headers=token).status_code == 422
    # no CSRF token from a page: refused
    assert buyer.post("/api/v1/events", json={"events": []}).status_code == 403
    with TestClient(app) as anonymous:
        r = anonymous.post(
            "/api/v1/events",
            json={"events": [event("lesson_opened", welcome)]},
            headers={"x-csrftoken": csrf_token(anonymous)},
        )
        assert r.status_code == 401
    assert stored(engine) == 0


def test_revoked_access_stops_counting_at_once(
    buyer: TestClient, engine: Engine, shop: Shop
) -> None:
    welcome = shop.lessons["welcome"]
    assert post(buyer, [event("lesson_opened", welcome)]).json()["accepted"] == 1
    with Session(engine) as s:
        s.execute(update(Entitlement).values(revoked_at=datetime.now(UTC)))
        s.commit()
    assert post(buyer, [event("lesson_opened", welcome)]).json()["reasons"] == {"not_entitled": 1}


def test_events_of_another_buyer_stay_theirs(
    app: FastAPI, engine: Engine, buyer: TestClient, shop: Shop
) -> None:
    welcome = shop.lessons["welcome"]
    entitle(engine, shop.other, "trust-at-a-distance")
    shared = event("video_progress", welcome, start=0, end=2)
    assert post(buyer, [shared]).json()["accepted"] == 1
    with TestClient(app) as b:
        sign_in(b, engine, "b@example.com")
        # the same client id from another user is that user's own event
        assert post(b, [shared]).json()["accepted"] == 1
    assert progress(engine, shop.other, welcome.id).covered_seconds == 2


def test_watching_the_course_makes_the_buyer_engaged(
    buyer: TestClient, engine: Engine, shop: Shop
) -> None:
    course = [
        k for k, v in shop.lessons.items() if v.product_id == shop.lessons["welcome"].product_id
    ]
    batch = []
    for key in course:
        lesson = shop.lessons[key]
        if key in shop.durations:
            batch.append(event("video_progress", lesson, start=0, end=shop.durations[key]))
        elif lesson.kind == "pdf":
            batch += [
                event("page_viewed", lesson, page=p, seconds=10) for p in range(1, shop.pages + 1)
            ]
        else:
            batch.append(event("lesson_completed", lesson))
    r = post(buyer, batch)
    assert r.json()["accepted"] == len(batch) and r.json()["engaged"] is True
    with Session(engine) as s:
        totals = s.get(BuyerEngagement, shop.buyer)
        assert totals is not None and totals.engaged_at is not None
        assert totals.lessons_completed == totals.lessons_total == len(course)


def test_hidden_lessons_are_not_counted(buyer: TestClient, engine: Engine, shop: Shop) -> None:
    from app.catalog.models import Lesson

    hidden = shop.lessons["existing-clients"]
    with Session(engine) as s:
        s.execute(update(Lesson).where(Lesson.id == hidden.id).values(published=False))  # type: ignore[arg-type]
        s.commit()
    r = post(
        buyer, [event("lesson_opened", hidden), event("lesson_opened", shop.lessons["welcome"])]
    )
    assert r.json()["reasons"] == {"unknown_lesson": 1} and r.json()["accepted"] == 1
    with Session(engine) as s:
        totals = s.get(BuyerEngagement, shop.buyer)
        assert totals is not None and totals.lessons_total == 7
