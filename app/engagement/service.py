"""Event ingestion and the rollups it keeps: validated in bulk, written once, summed as it arrives.

One batch is one transaction: the events that are new are appended (a retry with the same
client ids adds nothing), and the per-lesson progress and per-buyer totals are updated from
those new events only, under row locks, so pages and dashboards never scan the raw events.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from app.config import Settings
from app.engagement import coverage
from app.engagement.models import (
    BuyerEngagement,
    EngagementEvent,
    EventKind,
    LessonProgress,
    Rejection,
)
from app.engagement.score import Facts, Score, score
from app.models_base import utcnow

EVENTS = EngagementEvent.__table__  # type: ignore[attr-defined]
PROGRESS = LessonProgress.__table__  # type: ignore[attr-defined]
BUYER = BuyerEngagement.__table__  # type: ignore[attr-defined]

CLIENT_KINDS = frozenset(
    {
        EventKind.lesson_opened,
        EventKind.video_progress,
        EventKind.lesson_completed,
        EventKind.page_viewed,
    }
)
DURATION_SLACK = 1.0  # players report the last frame a little past the container's duration
MAX_RATE = 4.0
MIN_RATE = 0.25
MAX_PAGE_SECONDS = 3600.0
PAGE_READ_SECONDS = 2.0  # a page flipped past faster than this was not read


@dataclass
class Outcome:
    """What became of a batch: counts and, for each rejected event, its index and reason."""

    accepted: int = 0
    duplicate: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    engaged_now: bool = False

    def as_json(self) -> dict[str, Any]:
        reasons = Counter(r["reason"] for r in self.rejected)
        return {
            "accepted": self.accepted,
            "duplicate": self.duplicate,
            "rejected": len(self.rejected),
            "reasons": dict(reasons),
            "errors": self.rejected,
        }


@dataclass
class _Event:
    index: int
    client_id: uuid.UUID
    kind: str
    lesson_id: int
    at: datetime
    start: float | None = None
    end: float | None = None
    rate: float | None = None
    page: int | None = None
    seconds: float | None = None
    product_id: int = 0


class BadBatch(ValueError):
    """The batch as a whole cannot be read (not a list, too many events)."""


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, str) and 0 < len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    number = _number(value)
    if number is not None and 0 < number < 1e14:  # milliseconds since the epoch (Date.now())
        return datetime.fromtimestamp(number / 1000, UTC)
    return None


def _parse(index: int, raw: object, *, now: datetime, settings: Settings) -> _Event | Rejection:
    """The event's shape and values, before anything is looked up."""
    if not isinstance(raw, dict):
        return Rejection.malformed
    try:
        client_id = uuid.UUID(str(raw.get("id", "")))
    except ValueError:
        return Rejection.malformed
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in CLIENT_KINDS:
        return Rejection.unknown_kind
    lesson_id = raw.get("lesson_id")
    if isinstance(lesson_id, bool) or not isinstance(lesson_id, int) or not 0 < lesson_id < 2**31:
        return Rejection.malformed
    at = _parse_time(raw.get("at"))
    if at is None:
        return Rejection.malformed
    if at > now + timedelta(seconds=settings.events_max_future_seconds):
        return Rejection.bad_time
    if at < now - timedelta(days=settings.events_max_age_days):
        return Rejection.bad_time
    event = _Event(index, client_id, kind, lesson_id, at)
    if kind == EventKind.video_progress:
        start, end = _number(raw.get("start")), _number(raw.get("end"))
        rate = _number(raw.get("rate", 1.0))
        if start is None or end is None or rate is None:
            return Rejection.malformed
        if start < 0 or end <= start or not MIN_RATE <= rate <= MAX_RATE:
            return Rejection.out_of_range
        event.start, event.end, event.rate = start, end, rate
    elif kind == EventKind.page_viewed:
        page, seconds = raw.get("page"), _number(raw.get("seconds", 0))
        if isinstance(page, bool) or not isinstance(page, int) or seconds is None:
            return Rejection.malformed
        if not 1 <= page <= 100_000 or not 0 <= seconds <= MAX_PAGE_SECONDS:
            return Rejection.out_of_range
        event.page, event.seconds = page, seconds
    return event


# The lessons of a batch with what is needed to check each event: its product's status, the
# media's length and pages, and the user's entitlement. One query for the whole batch.
_LESSONS_SQL = text(
    """
    SELECT l.id, l.product_id, l.kind, p.status, a.duration_seconds, a.page_count,
           e.id AS entitlement_id, e.revoked_at
    FROM lesson l
    JOIN product p ON p.id = l.product_id
    LEFT JOIN asset a ON a.id = l.asset_id
    LEFT JOIN entitlement e ON e.product_id = l.product_id AND e.user_id = :uid
    WHERE l.id IN :ids
    """
).bindparams(bindparam("ids", expanding=True))

_LESSONS_TOTAL_SQL = text(
    """
    SELECT count(*) FROM lesson l
    JOIN product p ON p.id = l.product_id AND p.status = 'published'
    JOIN entitlement e ON e.product_id = l.product_id AND e.user_id = :uid
    WHERE e.revoked_at IS NULL
    """
)


@dataclass(frozen=True)
class _Lesson:
    product_id: int
    kind: str
    duration: float | None
    page_count: int | None


def _check(event: _Event, lesson: _Lesson | None) -> Rejection | None:
    if lesson is None:
        return Rejection.unknown_lesson
    if event.kind == EventKind.video_progress:
        if lesson.kind != "video":
            return Rejection.wrong_kind
        if lesson.duration and (event.end or 0) > lesson.duration + DURATION_SLACK:
            return Rejection.out_of_range
    if event.kind == EventKind.page_viewed:
        if lesson.kind != "pdf":
            return Rejection.wrong_kind
        if lesson.page_count and (event.page or 0) > lesson.page_count:
            return Rejection.out_of_range
    return None


def _insert(conn: Connection) -> Any:
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    return module.insert


def ingest(
    conn: Connection,
    *,
    user_id: int,
    batch: object,
    settings: Settings,
    now: datetime | None = None,
) -> Outcome:
    """Validate a batch of client events, store the new ones once and update the rollups."""
    now = now or utcnow()
    if not isinstance(batch, list):
        raise BadBatch("expected a JSON object with a list of events under 'events'")
    if len(batch) > settings.events_batch_limit:
        raise BadBatch(
            f"a batch holds at most {settings.events_batch_limit} events; this one has {len(batch)}"
        )
    outcome = Outcome()
    parsed: list[_Event] = []
    seen: set[uuid.UUID] = set()
    for index, raw in enumerate(batch):
        result = _parse(index, raw, now=now, settings=settings)
        if isinstance(result, Rejection):
            outcome.rejected.append(_rejection(index, raw, result))
        elif result.client_id in seen:
            outcome.duplicate += 1
        else:
            seen.add(result.client_id)
            parsed.append(result)
    if not parsed:
        return outcome

    lessons: dict[int, _Lesson] = {}
    refused: set[int] = set()
    ids = sorted({e.lesson_id for e in parsed})
    for row in conn.execute(_LESSONS_SQL, {"uid": user_id, "ids": ids}):
        if row.status != "published":
            continue  # a draft is as unknown to buyers as a lesson that does not exist
        if row.entitlement_id is None or row.revoked_at is not None:
            refused.add(row.id)
            continue
        lessons[row.id] = _Lesson(row.product_id, row.kind, row.duration_seconds, row.page_count)
    valid: list[_Event] = []
    for event in parsed:
        reason = (Rejection.not_entitled if event.lesson_id in refused else None) or _check(
            event, lessons.get(event.lesson_id)
        )
        if reason is not None:
            outcome.rejected.append(_rejection(event.index, None, reason, event))
        else:
            event.product_id = lessons[event.lesson_id].product_id
            valid.append(event)
    if not valid:
        return outcome

    new = _append(conn, user_id, valid, now)
    outcome.accepted = len(new)
    outcome.duplicate += len(valid) - len(new)
    if new:
        outcome.engaged_now = _roll_up(conn, user_id, new, lessons, settings, now)
    return outcome


def _rejection(
    index: int, raw: object, reason: Rejection, event: _Event | None = None
) -> dict[str, Any]:
    client_id = str(event.client_id) if event else None
    if client_id is None and isinstance(raw, dict) and isinstance(raw.get("id"), str):
        client_id = raw["id"][:64]
    return {"index": index, "id": client_id, "reason": reason.value}


def _append(conn: Connection, user_id: int, events: list[_Event], now: datetime) -> list[_Event]:
    """Insert the events; the ones already stored (a retry) are skipped and not returned."""
    rows = [
        {
            "user_id": user_id,
            "client_id": e.client_id,
            "product_id": e.product_id,
            "lesson_id": e.lesson_id,
            "kind": e.kind,
            "start": e.start,
            "end": e.end,
            "rate": e.rate,
            "page": e.page,
            "seconds": e.seconds,
            "occurred_at": e.at,
            "received_at": now,
        }
        for e in events
    ]
    stmt = (
        _insert(conn)(EVENTS)
        .on_conflict_do_nothing(index_elements=["user_id", "client_id"])
        .returning(EVENTS.c.client_id)
    )
    stored = {row[0] for row in conn.execute(stmt, rows)}
    return [e for e in events if e.client_id in stored]


def _lock_rows(
    conn: Connection, user_id: int, lesson_ids: list[int], products: dict[int, int]
) -> None:
    """Make sure the rollup rows exist, so that they can be locked and updated."""
    insert = _insert(conn)
    conn.execute(
        insert(PROGRESS).on_conflict_do_nothing(index_elements=["user_id", "lesson_id"]),
        [
            {
                "user_id": user_id,
                "lesson_id": lid,
                "product_id": products[lid],
                "intervals": [],
                "pages": [],
                "covered_seconds": 0.0,
                "position": 0.0,
                "reading_seconds": 0.0,
            }
            for lid in lesson_ids
        ],
    )
    conn.execute(
        insert(BUYER).on_conflict_do_nothing(index_elements=["user_id"]),
        {
            "user_id": user_id,
            "lessons_total": 0,
            "lessons_completed": 0,
            "media_seconds": 0.0,
            "pages_read": 0,
            "reading_seconds": 0.0,
            "downloads": 0,
            "score_at_last_event": 0.0,
        },
    )


def _roll_up(
    conn: Connection,
    user_id: int,
    events: list[_Event],
    lessons: dict[int, _Lesson],
    settings: Settings,
    now: datetime,
) -> bool:
    """Fold new events into lesson progress and the buyer's totals; True if now engaged."""
    by_lesson: dict[int, list[_Event]] = defaultdict(list)
    for e in events:
        by_lesson[e.lesson_id].append(e)
    lesson_ids = sorted(by_lesson)
    _lock_rows(conn, user_id, lesson_ids, {lid: lessons[lid].product_id for lid in lesson_ids})
    # Locked in key order (progress rows, then the buyer row) so that concurrent batches of
    # the same buyer queue up instead of deadlocking. SQLite holds the write lock already.
    progress_q = (
        select(PROGRESS)
        .where(PROGRESS.c.user_id == user_id, PROGRESS.c.lesson_id.in_(lesson_ids))
        .order_by(PROGRESS.c.lesson_id)
    )
    buyer_q = select(BUYER).where(BUYER.c.user_id == user_id)
    if conn.dialect.name == "postgresql":
        progress_q = progress_q.with_for_update()
        buyer_q = buyer_q.with_for_update()
    current = {row.lesson_id: row for row in conn.execute(progress_q)}
    buyer = conn.execute(buyer_q).one()

    d_media = 0.0
    d_pages = 0
    d_reading = 0.0
    d_completed = 0
    first = min(e.at for e in events)
    last = max(e.at for e in events)
    updates: list[dict[str, Any]] = []
    for lid in lesson_ids:
        row, lesson, new = current[lid], lessons[lid], by_lesson[lid]
        intervals, covered = row.intervals, row.covered_seconds
        stretches = [(e.start, e.end) for e in new if e.kind == EventKind.video_progress]
        if stretches:
            intervals, covered = coverage.add(row.intervals, stretches)  # type: ignore[arg-type]
        pages = sorted(
            set(row.pages)
            | {e.page for e in new if e.page is not None and (e.seconds or 0) >= PAGE_READ_SECONDS}
        )
        reading = row.reading_seconds + sum(e.seconds or 0 for e in new)
        latest = max(new, key=lambda e: e.at)
        row_last = _aware(row.last_active_at)
        position = row.position
        positioned = [e for e in new if e.kind == EventKind.video_progress]
        if positioned and (row_last is None or latest.at >= row_last):
            position = max(positioned, key=lambda e: e.at).end or 0.0
        completed_at = row.completed_at
        if completed_at is None and _completes(lesson, covered, pages, new):
            completed_at = now
            d_completed += 1
        d_media += covered - row.covered_seconds
        d_pages += len(pages) - len(row.pages)
        d_reading += reading - row.reading_seconds
        opened = _aware(row.opened_at) or min(e.at for e in new)
        updates.append(
            {
                "b_user": user_id,
                "b_lesson": lid,
                "intervals": intervals,
                "covered_seconds": covered,
                "duration_seconds": lesson.duration,
                "position": position,
                "pages": pages,
                "reading_seconds": reading,
                "opened_at": opened,
                "completed_at": completed_at,
                "last_active_at": max(row_last or latest.at, latest.at),
            }
        )
    conn.execute(
        update(PROGRESS)
        .where(
            PROGRESS.c.user_id == bindparam("b_user"), PROGRESS.c.lesson_id == bindparam("b_lesson")
        )
        .values({k: bindparam(k) for k in updates[0] if not k.startswith("b_")}),
        updates,
    )

    total = conn.execute(_LESSONS_TOTAL_SQL, {"uid": user_id}).scalar_one()
    facts = Facts(
        lessons_total=int(total),
        lessons_completed=buyer.lessons_completed + d_completed,
        media_seconds=buyer.media_seconds + d_media,
        pages_read=buyer.pages_read + d_pages,
        last_active_at=max(_aware(buyer.last_active_at) or last, last),
    )
    result = score(facts, settings, now=now)
    engaged_now = buyer.engaged_at is None and result.engaged
    conn.execute(
        update(BUYER)
        .where(BUYER.c.user_id == user_id)
        .values(
            lessons_total=facts.lessons_total,
            lessons_completed=facts.lessons_completed,
            media_seconds=round(facts.media_seconds, 2),
            pages_read=facts.pages_read,
            reading_seconds=round(buyer.reading_seconds + d_reading, 2),
            first_active_at=min(_aware(buyer.first_active_at) or first, first),
            last_active_at=facts.last_active_at,
            engaged_at=now if engaged_now else buyer.engaged_at,
            score_at_last_event=result.total,
        )
    )
    return engaged_now


def _completes(lesson: _Lesson, covered: float, pages: list[int], new: list[_Event]) -> bool:
    said_done = any(e.kind == EventKind.lesson_completed for e in new)
    if lesson.kind == "video":
        # Watching counts, not the player's claim, unless the length is unknown.
        return coverage.is_complete(covered, lesson.duration) if lesson.duration else said_done
    if lesson.kind == "pdf" and lesson.page_count:
        return len(pages) >= 0.9 * lesson.page_count or said_done
    return said_done


def record_download(
    conn: Connection, *, user_id: int, product_id: int, lesson_id: int, now: datetime | None = None
) -> None:
    """Count a personalised e-book download as engagement (the server saw it happen)."""
    now = now or utcnow()
    _lock_rows(conn, user_id, [], {})
    conn.execute(
        _insert(conn)(EVENTS),
        {
            "user_id": user_id,
            "client_id": uuid.uuid4(),
            "product_id": product_id,
            "lesson_id": lesson_id,
            "kind": EventKind.ebook_downloaded.value,
            "occurred_at": now,
            "received_at": now,
        },
    )
    conn.execute(
        update(BUYER)
        .where(BUYER.c.user_id == user_id)
        .values(downloads=BUYER.c.downloads + 1, last_active_at=now)
    )


# -- reading the rollups -------------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """A buyer's engagement as pages show it: facts, score and whether they are engaged."""

    facts: Facts
    score: Score
    engaged_at: datetime | None
    downloads: int
    reading_seconds: float

    @property
    def engaged(self) -> bool:
        return self.engaged_at is not None


def facts_of(row: Any | None) -> Facts:
    """The score's facts from a buyer_engagement row (zeros when there is none)."""
    if row is None:
        return Facts(0, 0, 0.0, 0, None)
    return Facts(
        lessons_total=row.lessons_total,
        lessons_completed=row.lessons_completed,
        media_seconds=row.media_seconds,
        pages_read=row.pages_read,
        last_active_at=_aware(row.last_active_at),
    )


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes for timezone columns; they were written in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def standing(conn: Connection, *, user_id: int, settings: Settings) -> Standing:
    """The buyer's current facts and score (recency as of now)."""
    row = conn.execute(select(BUYER).where(BUYER.c.user_id == user_id)).first()
    facts = facts_of(row)
    return Standing(
        facts=facts,
        score=score(facts, settings, now=utcnow()),
        engaged_at=_aware(row.engaged_at) if row is not None else None,
        downloads=row.downloads if row is not None else 0,
        reading_seconds=row.reading_seconds if row is not None else 0.0,
    )


def progress_of(conn: Connection, *, user_id: int, product_id: int | None = None) -> dict[int, Any]:
    """Lesson progress rows of a buyer (of one product, or all), keyed by lesson id."""
    query = select(PROGRESS).where(PROGRESS.c.user_id == user_id)
    if product_id is not None:
        query = query.where(PROGRESS.c.product_id == product_id)
    return {row.lesson_id: row for row in conn.execute(query)}


@dataclass(frozen=True)
class CourseProgress:
    """How far a buyer is in one product, and the lesson to continue with."""

    done: int
    total: int
    completed: frozenset[int]
    resume_key: str | None  # None: not started yet
    started: bool

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0


def course_progress(rows: dict[int, Any], lessons: list[tuple[int, str]]) -> CourseProgress:
    """Progress over a product's lessons (id, key in order) from the buyer's progress rows."""
    ids = [lid for lid, _ in lessons]
    completed = frozenset(lid for lid in ids if lid in rows and rows[lid].completed_at is not None)
    touched = [rows[lid] for lid in ids if lid in rows and rows[lid].last_active_at is not None]
    resume: str | None = None
    if touched:
        latest = max(
            touched, key=lambda r: _aware(r.last_active_at) or datetime.min.replace(tzinfo=UTC)
        )
        at = ids.index(latest.lesson_id)
        # The lesson last worked on, unless it is finished: then the next one not finished.
        order = (
            ids[at:] + ids[:at] if latest.completed_at is None else ids[at + 1 :] + ids[: at + 1]
        )
        pending = [lid for lid in order if lid not in completed]
        target = pending[0] if pending else latest.lesson_id
        resume = dict(lessons)[target]
    return CourseProgress(len(completed), len(ids), completed, resume, bool(touched))
