"""Crossing the engaged threshold: the first batch that brings the score to the threshold
sets `engaged_at` and answers `engaged: true`; no later batch moves or clears it, even when
the score drops below the threshold and rises above it again.

The decision is `service.fold`'s, for both ingestion paths. Here only completion counts
(weight 100, the other weights 0) and the threshold is 37.5, so with the demo course's 8
lessons the score is 12.5 a completed lesson: 3 of 8 = 37.5 reaches the threshold exactly.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from app.config import Settings
from app.engagement import service
from app.engagement.models import BuyerEngagement
from app.engagement.service import BuyerRow, ClientEvent, Fold, LessonFacts, ProgressRow, fold
from app.main import create_app
from app.models_base import as_utc
from tests.conftest import csrf_token, sign_in
from tests.engagement.conftest import Shop, entitle, event
from tests.engagement.conftest import score_settings as config

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(days=3)
ONLY_COMPLETION = {
    "score_weight_completion": 100,
    "score_weight_media": 0,
    "score_weight_pages": 0,
    "score_weight_recency": 0,
    "engaged_threshold": 37.5,
}


# -- fold: one batch against the buyer's stored totals ---------------------------------------

TEXT = LessonFacts(product_id=1, kind="text", duration=None, page_count=None)
LESSON = 3  # a text lesson the buyer has not touched yet


def fold_batch(
    completed_before: int,
    engaged_at: datetime | None = None,
    *,
    kind: str = "lesson_completed",
    settings: Settings | None = None,
) -> Fold:
    """One event on LESSON (completing it, or `kind`), for a buyer of 8 lessons who had
    completed `completed_before` of them and was engaged since `engaged_at`."""
    return fold(
        [ClientEvent(0, str(uuid.uuid4()), kind, LESSON, NOW)],
        {LESSON: TEXT},
        {LESSON: ProgressRow(LESSON, [], 0.0, 0.0, [], 0.0, None, None, None)},
        BuyerRow(completed_before, 0.0, 0, 0.0, None, None, engaged_at),
        lessons_total=8,
        settings=settings or config(**ONLY_COMPLETION),
        now=NOW,
    )


def test_the_batch_that_reaches_the_threshold_crosses_it() -> None:
    result = fold_batch(2)  # 3 of 8 = 37.5: the threshold itself
    assert result.engaged_now is True
    assert result.buyer.engaged_at == NOW
    assert result.buyer.score_at_last_event == 37.5
    assert result.buyer.lessons_completed == 3


def test_a_batch_below_the_threshold_does_not_cross() -> None:
    result = fold_batch(1)  # 2 of 8 = 25.0
    assert result.engaged_now is False
    assert result.buyer.engaged_at is None
    assert result.buyer.score_at_last_event == 25.0


@pytest.mark.parametrize(
    ("threshold", "completed_before", "crosses"),
    [
        (37.5, 2, True),  # 37.5 >= 37.5
        (37.5, 1, False),  # 25.0 < 37.5
        (25, 1, True),  # 25.0 >= 25: the setting, not a fixed threshold
        (50, 2, False),  # 37.5 < 50
        (50, 3, True),  # 4 of 8 = 50.0 >= 50
    ],
)
def test_the_threshold_is_the_setting(
    threshold: float, completed_before: int, crosses: bool
) -> None:
    settings = config(**{**ONLY_COMPLETION, "engaged_threshold": threshold})
    result = fold_batch(completed_before, settings=settings)
    assert result.engaged_now is crosses
    assert result.buyer.engaged_at == (NOW if crosses else None)


@pytest.mark.parametrize("completed_before", [2, 6])  # reaching 37.5 again, or 87.5
def test_a_buyer_engaged_before_is_not_crossing_again(completed_before: int) -> None:
    result = fold_batch(completed_before, EARLIER)
    assert result.engaged_now is False
    assert result.buyer.engaged_at == EARLIER  # the first crossing's moment stays


def test_a_score_below_the_threshold_keeps_the_first_crossing() -> None:
    # Engaged 3 days ago; since then the buyer owns more lessons and the score is 0 of 8.
    result = fold_batch(0, EARLIER, kind="lesson_opened")
    assert result.buyer.score_at_last_event == 0.0
    assert result.engaged_now is False
    assert result.buyer.engaged_at == EARLIER


# -- the same through stored rows, batch after batch -----------------------------------------


def totals(engine: Engine, user_id: int) -> BuyerEngagement:
    with Session(engine) as s:
        row = s.get(BuyerEngagement, user_id)
        assert row is not None
        return row


def test_engaged_at_is_the_first_crossing_for_good(engine: Engine, shop: Shop) -> None:
    settings = config(**ONLY_COMPLETION)
    lesson = shop.lessons

    def batch(at: datetime, *events: tuple[str, str]) -> bool:
        """Ingest the events (kind, lesson key) at `at`; whether the batch crossed."""
        sent = [event(kind, lesson[key], at=at.isoformat()) for kind, key in events]
        with engine.begin() as conn:
            outcome = service.ingest(
                conn, user_id=shop.buyer, batch=sent, settings=settings, now=at
            )
        assert outcome.accepted == len(sent) and not outcome.rejected
        return outcome.engaged_now

    t0, t1, t2, t3, t4 = (NOW + timedelta(hours=h) for h in (0, 1, 2, 24, 48))
    # 2 of 8 = 25.0: below
    assert not batch(
        t0, ("lesson_completed", "first-call-checklist"), ("lesson_completed", "silent-inquiry")
    )
    row = totals(engine, shop.buyer)
    assert (row.score_at_last_event, row.engaged_at) == (25.0, None)
    # 3 of 8 = 37.5: the first crossing
    assert batch(t1, ("lesson_completed", "linkedin-playbook"))
    row = totals(engine, shop.buyer)
    assert row.score_at_last_event == 37.5 and as_utc(row.engaged_at) == t1
    # still 37.5: engaged, but no crossing
    assert not batch(t2, ("lesson_opened", "welcome"))
    assert as_utc(totals(engine, shop.buyer).engaged_at) == t1
    # the e-book's 2 lessons join the 8: 3 of 10 = 30.0, below again
    entitle(engine, shop.buyer, "linkedin-playbook")
    assert not batch(t3, ("lesson_opened", "welcome"))
    row = totals(engine, shop.buyer)
    assert (row.lessons_total, row.score_at_last_event) == (10, 30.0)
    assert as_utc(row.engaged_at) == t1
    # 4 of 10 = 40.0: above once more, which is not a crossing
    assert not batch(t4, ("lesson_completed", "sample-profile-as-first-meeting"))
    row = totals(engine, shop.buyer)
    assert row.score_at_last_event == 40.0 and as_utc(row.engaged_at) == t1


def test_the_api_answers_engaged_once_on_either_path(
    settings: Settings, engine: Engine, shop: Shop
) -> None:
    """The same batches over HTTP: on PostgreSQL through the fast path (the app's lifespan
    opens the event pool), on SQLite through service.ingest. `engaged` is true once."""
    app = create_app(settings.model_copy(update=ONLY_COMPLETION))
    lesson = shop.lessons
    with TestClient(app) as client:
        assert (app.state.event_writer is not None) == (engine.dialect.name == "postgresql")
        sign_in(client, engine, "a@example.com")

        def batch(*events: tuple[str, str]) -> bool:
            r = client.post(
                "/api/v1/events",
                json={"events": [event(kind, lesson[key]) for kind, key in events]},
                headers={"x-csrftoken": csrf_token(client)},
            )
            assert r.status_code == 202 and r.json()["accepted"] == len(events), r.text
            engaged: bool = r.json()["engaged"]
            return engaged

        done = "lesson_completed"
        assert not batch((done, "first-call-checklist"), (done, "silent-inquiry"))  # 25.0
        assert totals(engine, shop.buyer).engaged_at is None
        assert batch((done, "linkedin-playbook"))  # 37.5
        first = totals(engine, shop.buyer).engaged_at
        assert first is not None
        assert not batch(("lesson_opened", "welcome"))  # 37.5 again
        entitle(engine, shop.buyer, "linkedin-playbook")
        assert not batch(("lesson_opened", "welcome"))  # 3 of 10 = 30.0
        assert totals(engine, shop.buyer).score_at_last_event == 30.0
        assert not batch((done, "sample-profile-as-first-meeting"))  # 40.0
        row = totals(engine, shop.buyer)
        assert row.score_at_last_event == 40.0 and row.engaged_at == first
