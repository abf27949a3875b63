"""The engagement score: a documented, explainable formula over a buyer's facts.

score = Wc · completion + Wm · media + Wp · pages + Wr · recency, each part between 0 and 1:
- completion: lessons completed ÷ lessons in the products the buyer owns;
- media: minutes of media really watched (merged coverage) ÷ the "full marks" minutes, capped at 1;
- pages: distinct e-book pages read ÷ the "full marks" pages, capped at 1;
- recency: 1 on the day of the last activity, falling linearly to 0 after the recency window.
With the default weights (40/25/15/20) the score runs from 0 to 100; a buyer is engaged from
the threshold on (default 50). The first crossing is remembered, so the invitation stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.config import Settings


@dataclass(frozen=True)
class Facts:
    """What a buyer (or a company's buyers together) did."""

    lessons_total: int
    lessons_completed: int
    media_seconds: float
    pages_read: int
    last_active_at: datetime | None


@dataclass(frozen=True)
class Part:
    name: str  # completion | media | pages | recency
    value: float  # 0..1
    weight: float
    points: float  # value x weight


@dataclass(frozen=True)
class Score:
    total: float
    parts: tuple[Part, ...]
    engaged: bool


def _clamp(value: float) -> float:
    return max(0.0, min(1.0, value))


def score(facts: Facts, settings: Settings, *, now: datetime) -> Score:
    """The buyer's score with each part's contribution, so that it can be explained."""
    completion = facts.lessons_completed / facts.lessons_total if facts.lessons_total else 0.0
    media = facts.media_seconds / 60 / settings.score_media_minutes
    pages = facts.pages_read / settings.score_pages
    recency = 0.0
    if facts.last_active_at is not None:
        days = max(0.0, (now - facts.last_active_at).total_seconds() / 86400)
        recency = 1 - days / settings.score_recency_days
    values = (
        ("completion", _clamp(completion), settings.score_weight_completion),
        ("media", _clamp(media), settings.score_weight_media),
        ("pages", _clamp(pages), settings.score_weight_pages),
        ("recency", _clamp(recency), settings.score_weight_recency),
    )
    parts = tuple(
        Part(name, value, weight, round(value * weight, 1)) for name, value, weight in values
    )
    total = round(sum(p.points for p in parts), 1)
    return Score(total=total, parts=parts, engaged=total >= settings.engaged_threshold)
