"""The engagement score (app/engagement/score.py), part by part, with the arithmetic written out.

Default settings: weights completion 40, media 25, pages 15, recency 20; full marks at 60
media minutes and 40 pages; recency falls to 0 over 30 days; engaged from 50 on.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.engagement.score import Facts, Part, Score, score
from tests.engagement.conftest import score_settings as config

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_each_part_is_its_fraction_times_its_weight() -> None:
    facts = Facts(
        lessons_total=4,
        lessons_completed=3,
        media_seconds=1800.0,
        pages_read=8,
        last_active_at=NOW - timedelta(days=15),
    )
    assert score(facts, config(), now=NOW) == Score(
        total=55.5,  # 30 + 12.5 + 3 + 10
        parts=(
            Part("completion", 0.75, 40.0, 30.0),  # 3 / 4 lessons
            Part("media", 0.5, 25.0, 12.5),  # 1800 s = 30 min of 60
            Part("pages", 0.2, 15.0, 3.0),  # 8 of 40 pages
            Part("recency", 0.5, 20.0, 10.0),  # 1 - 15 days / 30
        ),
        engaged=True,
    )


def test_the_settings_set_the_full_marks_and_the_weights() -> None:
    settings = config(
        score_weight_completion=10,
        score_weight_media=20,
        score_weight_pages=30,
        score_weight_recency=40,
        score_media_minutes=10,
        score_pages=4,
        score_recency_days=10,
    )
    facts = Facts(
        lessons_total=5,
        lessons_completed=1,
        media_seconds=300.0,
        pages_read=1,
        last_active_at=NOW - timedelta(days=2),
    )
    assert score(facts, settings, now=NOW).parts == (
        Part("completion", 0.2, 10.0, 2.0),  # 1 / 5
        Part("media", 0.5, 20.0, 10.0),  # 300 s = 5 min of 10
        Part("pages", 0.25, 30.0, 7.5),  # 1 of 4
        Part("recency", 0.8, 40.0, 32.0),  # 1 - 2 days / 10
    )


def test_points_are_rounded_to_one_decimal_and_so_is_the_total() -> None:
    facts = Facts(3, 1, 0.0, 0, None)
    result = score(facts, config(), now=NOW)
    # 1/3 x 40 = 13.333... -> 13.3; never active: recency 0, not full marks.
    assert result.parts == (
        Part("completion", 1 / 3, 40.0, 13.3),
        Part("media", 0.0, 25.0, 0.0),
        Part("pages", 0.0, 15.0, 0.0),
        Part("recency", 0.0, 20.0, 0.0),
    )
    assert result.total == 13.3 and not result.engaged


def test_fractions_are_capped_at_one_and_at_zero() -> None:
    facts = Facts(
        lessons_total=0,  # owns nothing with lessons: completion 0, not a division by zero
        lessons_completed=0,
        media_seconds=7200.0,  # 120 min of 60: 2 -> 1
        pages_read=80,  # 80 of 40: 2 -> 1
        last_active_at=NOW + timedelta(hours=1),  # a client clock ahead: 0 days, not -1/24
    )
    assert score(facts, config(), now=NOW) == Score(
        total=60.0,  # 0 + 25 + 15 + 20
        parts=(
            Part("completion", 0.0, 40.0, 0.0),
            Part("media", 1.0, 25.0, 25.0),
            Part("pages", 1.0, 15.0, 15.0),
            Part("recency", 1.0, 20.0, 20.0),
        ),
        engaged=True,
    )
    # 45 days ago: 1 - 45/30 = -0.5 -> 0
    old = Facts(1, 1, 0.0, 0, NOW - timedelta(days=45))
    assert score(old, config(), now=NOW).parts[3] == Part("recency", 0.0, 20.0, 0.0)


def test_recency_counts_days_to_the_second() -> None:
    settings = config(score_recency_days=1)
    six_hours = Facts(1, 0, 0.0, 0, NOW - timedelta(hours=6))
    # 6 h = 0.25 days: 1 - 0.25 / 1 = 0.75
    assert score(six_hours, settings, now=NOW).parts[3] == Part("recency", 0.75, 20.0, 15.0)


# Completion 1 of 1 (40) + 24 media minutes of 60 (0.4 x 25 = 10): exactly 50.0.
FIFTY = Facts(1, 1, 1440.0, 0, None)
# Completion 1 of 1 (40) + 12 media minutes of 60 (0.2 x 25 = 5): 45.0.
FORTY_FIVE = Facts(1, 1, 720.0, 0, None)


@pytest.mark.parametrize(
    ("facts", "threshold", "engaged"),
    [
        (FIFTY, None, True),  # the default threshold, 50: reached, so engaged (>=, not >)
        (FIFTY, 50.1, False),
        (FORTY_FIVE, None, False),
        (FORTY_FIVE, 45, True),  # the setting, not a fixed 50
        (FORTY_FIVE, 45.1, False),
        (FORTY_FIVE, 0, True),
        (FIFTY, 100, False),
    ],
)
def test_engaged_from_the_threshold_setting_on(
    facts: Facts, threshold: float | None, engaged: bool
) -> None:
    settings = config() if threshold is None else config(engaged_threshold=threshold)
    result = score(facts, settings, now=NOW)
    assert result.total == (50.0 if facts is FIFTY else 45.0)
    assert result.engaged is engaged
