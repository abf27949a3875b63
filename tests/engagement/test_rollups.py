"""`service.fold`'s rollups, the facts the score is computed from: per-lesson progress and the
buyer's totals after one batch, from the stored rows and the new events (no database)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.engagement.service import (
    BuyerRow,
    ClientEvent,
    Fold,
    LessonFacts,
    ProgressRow,
    ProgressUpdate,
    fold,
)
from tests.engagement.conftest import score_settings

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HOUR_AGO = NOW - timedelta(hours=1)
EARLIER = NOW - timedelta(days=3)
VIDEO = LessonFacts(product_id=1, kind="video", duration=100.0, page_count=None)
PDF = LessonFacts(product_id=1, kind="pdf", duration=None, page_count=10)
TEXT = LessonFacts(product_id=1, kind="text", duration=None, page_count=None)
NEW_BUYER = BuyerRow(0, 0.0, 0, 0.0, None, None, None)


def ev(kind: str, lesson_id: int, at: datetime = NOW, **fields: Any) -> ClientEvent:
    return ClientEvent(0, str(uuid.uuid4()), kind, lesson_id, at, **fields)


def row(lesson_id: int, **fields: Any) -> ProgressRow:
    untouched = ProgressRow(lesson_id, [], 0.0, 0.0, [], 0.0, None, None, None)
    return untouched._replace(**fields)


def run(
    events: list[ClientEvent],
    lessons: dict[int, LessonFacts],
    rows: Sequence[ProgressRow] = (),
    buyer: BuyerRow = NEW_BUYER,
) -> Fold:
    current = {lid: row(lid) for lid in lessons} | {r.lesson_id: r for r in rows}
    return fold(
        events, lessons, current, buyer, lessons_total=8, settings=score_settings(), now=NOW
    )


def test_the_totals_add_each_lessons_new_media_pages_and_reading() -> None:
    result = run(
        [
            ev("video_progress", 1, start=5, end=25, rate=1),  # 0-10 stored: 15 s more
            ev("video_progress", 2, start=0, end=20, rate=1),  # 20 s
            ev("page_viewed", 3, page=3, seconds=4),  # 1 and 2 stored: page 3 more
            ev("page_viewed", 3, page=2, seconds=3),
            ev("page_viewed", 4, page=1, seconds=2.0),  # 2 s: read
            ev("page_viewed", 4, page=2, seconds=1.5),  # flipped past: not read
            ev("page_viewed", 4, page=5, seconds=0.0),  # not read, no reading time
        ],
        {1: VIDEO, 2: VIDEO, 3: PDF, 4: PDF},
        [
            row(1, intervals=[[0.0, 10.0]], covered_seconds=10.0),
            row(3, pages=[1, 2], reading_seconds=7.5),
        ],
        BuyerRow(0, 10.0, 2, 7.5, None, None, None),
    )
    got = {
        p.lesson_id: (p.intervals, p.covered_seconds, p.pages, p.reading_seconds)
        for p in result.progress
    }
    assert got == {
        1: ([[0.0, 25.0]], 25.0, [], 0.0),
        2: ([[0.0, 20.0]], 20.0, [], 0.0),
        3: ([], 0.0, [1, 2, 3], 14.5),  # 7.5 + 4 + 3
        4: ([], 0.0, [1], 3.5),  # 2 + 1.5 + 0
    }
    buyer = result.buyer
    assert buyer.media_seconds == 45.0  # 10 stored + 15 + 20
    assert buyer.pages_read == 4  # 2 stored + 1 + 1
    assert buyer.reading_seconds == 18.0  # 7.5 stored + 7 + 3.5
    assert buyer.lessons_completed == 0


def test_the_totals_are_rounded_to_hundredths() -> None:
    result = run(
        [
            ev("video_progress", 1, start=0, end=12.34, rate=1),
            ev("page_viewed", 2, page=1, seconds=1.2344),
        ],
        {1: VIDEO, 2: PDF},
    )
    assert (result.buyer.media_seconds, result.buyer.reading_seconds) == (12.34, 1.23)


def test_a_lesson_completed_before_is_not_counted_again() -> None:
    result = run(
        [ev("lesson_completed", 1)],
        {1: TEXT},
        [row(1, opened_at=EARLIER, completed_at=EARLIER, last_active_at=EARLIER)],
        BuyerRow(1, 0.0, 0, 0.0, EARLIER, EARLIER, None),
    )
    assert result.buyer.lessons_completed == 1
    assert result.progress[0].completed_at == EARLIER


def test_an_older_batch_moves_no_position_and_no_activity_back() -> None:
    """Events from an hour ago arriving after the lesson's last activity (a client that was
    offline): they add coverage, and leave the position, the first opening and the last and
    first activity as they were."""
    result = run(
        [ev("video_progress", 1, HOUR_AGO, start=60, end=70, rate=1)],
        {1: VIDEO},
        [
            row(
                1,
                intervals=[[0.0, 50.0]],
                covered_seconds=50.0,
                position=50.0,
                opened_at=EARLIER,
                last_active_at=NOW,
            )
        ],
        BuyerRow(0, 50.0, 0, 0.0, EARLIER, NOW, None),
    )
    assert result.progress == [
        ProgressUpdate(
            lesson_id=1,
            intervals=[[0.0, 50.0], [60.0, 70.0]],
            covered_seconds=60.0,
            duration_seconds=100.0,
            position=50.0,
            pages=[],
            reading_seconds=0.0,
            opened_at=EARLIER,
            completed_at=None,
            last_active_at=NOW,
        )
    ]
    buyer = result.buyer
    assert (buyer.first_active_at, buyer.last_active_at) == (EARLIER, NOW)
    assert buyer.media_seconds == 60.0
    # completion 0 of 8; media 60 s = 1 min of 60: 25/60 = 0.4; active now: recency 20
    assert buyer.score_at_last_event == 20.4


@pytest.mark.parametrize(
    ("events", "stored", "position"),
    [
        pytest.param(
            [
                ev("video_progress", 1, start=20, end=30, rate=1),
                ev("video_progress", 1, start=35, end=40, rate=1),
            ],
            row(1),
            30.0,
            id="the first of the latest events",
        ),
        pytest.param(
            [ev("lesson_opened", 1), ev("video_progress", 1, start=0, end=20, rate=1)],
            row(1),
            20.0,
            id="a video event after another kind at the same moment",
        ),
        pytest.param(
            [ev("lesson_opened", 1)],
            row(1, position=50.0, last_active_at=HOUR_AGO),
            50.0,
            id="no video event: kept",
        ),
        pytest.param(
            [ev("video_progress", 1, start=0, end=10, rate=1)],
            row(1, position=50.0, last_active_at=NOW),
            10.0,
            id="as recent as the stored activity: moved",
        ),
    ],
)
def test_the_position_is_where_the_latest_video_event_ended(
    events: list[ClientEvent], stored: ProgressRow, position: float
) -> None:
    assert run(events, {1: VIDEO}, [stored]).progress[0].position == position
