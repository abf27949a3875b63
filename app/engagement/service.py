"""Event ingestion and the rollups it keeps: validated in bulk, written once, summed as it arrives.

One batch is one transaction: the events that are new are appended (a retry with the same
client ids adds nothing), and the per-lesson progress and per-buyer totals are updated from
those new events only, under row locks, so pages and dashboards never scan the raw events.

Two ways lead to the database, and every decision is made here, once, for both:
`read_batch` checks the batch's shape and values, `admit` checks each event against its
lesson and the buyer's entitlements, `fold` computes the new rollup rows. `ingest` below runs
them through SQLAlchemy (SQLite, and PostgreSQL without the app's event pool, e.g. a
TestClient outside its lifespan); `app/engagement/fastpath.py` runs them on PostgreSQL
through an async psycopg pool in three round trips. Only the queries differ.
"""

from __future__ import annotations

import math
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, delete, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from app.accounts.models import User
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
from app.models_base import as_utc, utcnow

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
VIDEO_PROGRESS = EventKind.video_progress.value
PAGE_VIEWED = EventKind.page_viewed.value
LESSON_COMPLETED = EventKind.lesson_completed.value
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


@dataclass(slots=True)
class ClientEvent:
    """One event of a batch after `read_batch`: values checked, lesson not yet looked up."""

    index: int
    client_id: str  # canonical UUID text, see _client_id
    kind: str
    lesson_id: int
    at: datetime
    start: float | None = None
    end: float | None = None
    rate: float | None = None
    page: int | None = None
    seconds: float | None = None
    product_id: int = 0


@dataclass(frozen=True, slots=True)
class LessonFacts:
    """What checking an event needs to know about its lesson (a lesson of a published
    product; drafts are as unknown to buyers as lessons that do not exist)."""

    product_id: int
    kind: str
    duration: float | None
    page_count: int | None


class BadBatch(ValueError):
    """The batch as a whole cannot be read (not a list, too many events)."""


def _number(value: object) -> float | None:
    """A finite number as float; None for anything else (booleans, strings, inf, nan)."""
    kind = type(value)  # exact types first: this runs several times per event
    if kind is float:
        return value if math.isfinite(value) else None  # type: ignore[arg-type,return-value]
    if kind is not int and (kind is bool or not isinstance(value, int | float)):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:  # an integer of hundreds of digits
        return None
    return number if math.isfinite(number) else None


def _parse_time(value: object) -> datetime | None:
    if type(value) is str:
        if not 0 < len(value) <= 40:
            return None
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    number = _number(value)
    if number is not None and 0 < number < 1e14:  # milliseconds since the epoch (Date.now())
        return datetime.fromtimestamp(number / 1000, UTC)
    return None


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _client_id(value: object) -> str | None:
    """The canonical text of a UUID (lowercase, hyphenated), or None.

    Text rather than uuid.UUID objects: the ids are hashed, compared and sorted for every
    event, which UUID objects do in Python and strings in C. Canonical text sorts like the
    UUID's value, which is the order PostgreSQL's uuid type has too.
    """
    if type(value) is str and _CANONICAL_UUID.fullmatch(value):
        return value  # what browsers' crypto.randomUUID() sends: nothing to convert
    try:
        return str(uuid.UUID(value if type(value) is str else str(value)))
    except ValueError:
        return None


def _parse(
    index: int, raw: object, earliest: datetime, latest: datetime
) -> ClientEvent | Rejection:
    """The event's shape and values, before anything is looked up.

    earliest/latest: the accepted client times, computed once per batch (this runs for every
    event of every batch, the hottest loop of ingestion).
    """
    if type(raw) is not dict:
        return Rejection.malformed
    client_id = _client_id(raw.get("id", ""))
    if client_id is None:
        return Rejection.malformed
    kind = raw.get("kind")
    if type(kind) is not str or kind not in CLIENT_KINDS:
        return Rejection.unknown_kind
    lesson_id = raw.get("lesson_id")
    if type(lesson_id) is not int or not 0 < lesson_id < 2**31:
        return Rejection.malformed
    at = _parse_time(raw.get("at"))
    if at is None:
        return Rejection.malformed
    if at > latest or at < earliest:
        return Rejection.bad_time
    if kind == VIDEO_PROGRESS:
        start, end = _number(raw.get("start")), _number(raw.get("end"))
        rate = _number(raw.get("rate", 1.0))
        if start is None or end is None or rate is None:
            return Rejection.malformed
        if start < 0 or end <= start or not MIN_RATE <= rate <= MAX_RATE:
            return Rejection.out_of_range
        return ClientEvent(index, client_id, kind, lesson_id, at, start, end, rate)
    if kind == PAGE_VIEWED:
        page, seconds = raw.get("page"), _number(raw.get("seconds", 0))
        if type(page) is not int or seconds is None:
            return Rejection.malformed
        if not 1 <= page <= 100_000 or not 0 <= seconds <= MAX_PAGE_SECONDS:
            return Rejection.out_of_range
        return ClientEvent(index, client_id, kind, lesson_id, at, page=page, seconds=seconds)
    return ClientEvent(index, client_id, kind, lesson_id, at)


def read_batch(
    batch: object, *, settings: Settings, now: datetime
) -> tuple[Outcome, list[ClientEvent]]:
    """Check the batch's shape and each event's values; repeats within the batch count as
    duplicates. The events left still need `admit` (lesson and entitlement)."""
    if not isinstance(batch, list):
        raise BadBatch("expected a JSON object with a list of events under 'events'")
    if len(batch) > settings.events_batch_limit:
        raise BadBatch(
            f"a batch holds at most {settings.events_batch_limit} events; this one has {len(batch)}"
        )
    earliest = now - timedelta(days=settings.events_max_age_days)
    latest = now + timedelta(seconds=settings.events_max_future_seconds)
    outcome = Outcome()
    parsed: list[ClientEvent] = []
    seen: set[str] = set()
    for index, raw in enumerate(batch):
        result = _parse(index, raw, earliest, latest)
        if isinstance(result, Rejection):
            outcome.rejected.append(_rejection(index, raw, result))
        elif result.client_id in seen:
            outcome.duplicate += 1
        else:
            seen.add(result.client_id)
            parsed.append(result)
    return outcome, parsed


def _check(event: ClientEvent, lesson: LessonFacts | None) -> Rejection | None:
    if lesson is None:
        return Rejection.unknown_lesson
    if event.kind == VIDEO_PROGRESS:
        if lesson.kind != "video":
            return Rejection.wrong_kind
        if lesson.duration and (event.end or 0) > lesson.duration + DURATION_SLACK:
            return Rejection.out_of_range
    if event.kind == PAGE_VIEWED:
        if lesson.kind != "pdf":
            return Rejection.wrong_kind
        if lesson.page_count and (event.page or 0) > lesson.page_count:
            return Rejection.out_of_range
    return None


def admit(
    outcome: Outcome,
    events: list[ClientEvent],
    lessons: Mapping[int, LessonFacts],
    entitled: Collection[int],
) -> list[ClientEvent]:
    """The events the buyer may record: a published lesson (`lessons`) of a product they are
    entitled to now (`entitled`: product ids), with values that fit the lesson. The others
    are added to the outcome's rejections."""
    valid: list[ClientEvent] = []
    for event in events:
        lesson = lessons.get(event.lesson_id)
        reason = (
            Rejection.not_entitled
            if lesson is not None and lesson.product_id not in entitled
            else _check(event, lesson)
        )
        if reason is not None:
            outcome.rejected.append(_rejection(event.index, None, reason, event))
        else:
            event.product_id = lesson.product_id  # type: ignore[union-attr]
            valid.append(event)
    return valid


def _rejection(
    index: int, raw: object, reason: Rejection, event: ClientEvent | None = None
) -> dict[str, Any]:
    client_id = event.client_id if event else None
    if client_id is None and isinstance(raw, dict) and isinstance(raw.get("id"), str):
        client_id = raw["id"][:64]
    return {"index": index, "id": client_id, "reason": reason.value}


# -- the rollups, computed the same way whichever way they are stored ----------------------


class ProgressRow(NamedTuple):
    """A locked lesson_progress row, as `fold` reads it (both paths select these columns)."""

    lesson_id: int
    intervals: list[list[float]]
    covered_seconds: float
    position: float
    pages: list[int]
    reading_seconds: float
    opened_at: datetime | None
    completed_at: datetime | None
    last_active_at: datetime | None


class BuyerRow(NamedTuple):
    """The locked buyer_engagement row, as `fold` reads it."""

    lessons_completed: int
    media_seconds: float
    pages_read: int
    reading_seconds: float
    first_active_at: datetime | None
    last_active_at: datetime | None
    engaged_at: datetime | None


class ProgressUpdate(NamedTuple):
    """The new values of one lesson_progress row."""

    lesson_id: int
    intervals: list[list[float]]
    covered_seconds: float
    duration_seconds: float | None
    position: float
    pages: list[int]
    reading_seconds: float
    opened_at: datetime | None
    completed_at: datetime | None
    last_active_at: datetime | None


class BuyerUpdate(NamedTuple):
    """The new values of the buyer_engagement row."""

    lessons_total: int
    lessons_completed: int
    media_seconds: float
    pages_read: int
    reading_seconds: float
    first_active_at: datetime | None
    last_active_at: datetime | None
    engaged_at: datetime | None
    score_at_last_event: float


@dataclass(frozen=True)
class Fold:
    progress: list[ProgressUpdate]  # in lesson id order
    buyer: BuyerUpdate
    engaged_now: bool  # the score crossed the threshold with this batch, for the first time


def fold(
    events: list[ClientEvent],
    lessons: Mapping[int, LessonFacts],
    current: Mapping[int, ProgressRow],
    buyer: BuyerRow,
    *,
    lessons_total: int,
    settings: Settings,
    now: datetime,
) -> Fold:
    """Fold new events (in batch order) into the locked progress rows of their lessons and
    the buyer's totals."""
    by_lesson: dict[int, list[ClientEvent]] = defaultdict(list)
    for e in events:
        by_lesson[e.lesson_id].append(e)
    d_media = 0.0
    d_pages = 0
    d_reading = 0.0
    d_completed = 0
    first = last = events[0].at
    updates: list[ProgressUpdate] = []
    for lid in sorted(by_lesson):
        row, lesson, new = current[lid], lessons[lid], by_lesson[lid]
        # One pass over the lesson's new events (this runs for every event of every batch).
        stretches: list[tuple[float, float]] = []
        read: set[int] = set()
        seconds: list[float] = []
        said_done = False
        latest = latest_video = new[0]
        earliest = new[0].at
        video = False
        for e in new:
            if e.kind == VIDEO_PROGRESS:
                stretches.append((e.start, e.end))  # type: ignore[arg-type]
                if not video or e.at > latest_video.at:  # the first of the latest, as max()
                    latest_video, video = e, True
            elif e.kind == PAGE_VIEWED:
                seconds.append(e.seconds or 0)
                if e.page is not None and (e.seconds or 0) >= PAGE_READ_SECONDS:
                    read.add(e.page)
            elif e.kind == LESSON_COMPLETED:
                said_done = True
            if e.at > latest.at:
                latest = e
            earliest = min(earliest, e.at)
        first, last = min(first, earliest), max(last, latest.at)
        intervals, covered = row.intervals, row.covered_seconds
        if stretches:
            intervals, covered = coverage.add(row.intervals, stretches)
        pages = sorted(set(row.pages) | read)
        reading = row.reading_seconds + sum(seconds)
        row_last = as_utc(row.last_active_at)
        position = row.position
        if video and (row_last is None or latest.at >= row_last):
            position = latest_video.end or 0.0
        completed_at = row.completed_at
        if completed_at is None and _completes(lesson, covered, pages, said_done):
            completed_at = now
            d_completed += 1
        d_media += covered - row.covered_seconds
        d_pages += len(pages) - len(row.pages)
        d_reading += reading - row.reading_seconds
        updates.append(
            ProgressUpdate(
                lesson_id=lid,
                intervals=intervals,
                covered_seconds=covered,
                duration_seconds=lesson.duration,
                position=position,
                pages=pages,
                reading_seconds=reading,
                opened_at=as_utc(row.opened_at) or earliest,
                completed_at=completed_at,
                last_active_at=max(row_last or latest.at, latest.at),
            )
        )
    facts = Facts(
        lessons_total=lessons_total,
        lessons_completed=buyer.lessons_completed + d_completed,
        media_seconds=buyer.media_seconds + d_media,
        pages_read=buyer.pages_read + d_pages,
        last_active_at=max(as_utc(buyer.last_active_at) or last, last),
    )
    result = score(facts, settings, now=now)
    engaged_now = buyer.engaged_at is None and result.engaged
    totals = BuyerUpdate(
        lessons_total=facts.lessons_total,
        lessons_completed=facts.lessons_completed,
        media_seconds=round(facts.media_seconds, 2),
        pages_read=facts.pages_read,
        reading_seconds=round(buyer.reading_seconds + d_reading, 2),
        first_active_at=min(as_utc(buyer.first_active_at) or first, first),
        last_active_at=facts.last_active_at,
        engaged_at=now if engaged_now else buyer.engaged_at,
        score_at_last_event=result.total,
    )
    return Fold(updates, totals, engaged_now)


def _completes(lesson: LessonFacts, covered: float, pages: list[int], said_done: bool) -> bool:
    if lesson.kind == "video":
        # Watching counts, not the player's claim, unless the length is unknown.
        return coverage.is_complete(covered, lesson.duration) if lesson.duration else said_done
    if lesson.kind == "pdf" and lesson.page_count:
        return len(pages) >= 0.9 * lesson.page_count or said_done
    return said_done


def insert_order(events: list[ClientEvent]) -> list[ClientEvent]:
    """The events in client id order, the order both paths insert them in: two batches that
    share events (a retry sent while the first try still runs) then wait for each other on
    the unique index instead of deadlocking."""
    return sorted(events, key=lambda e: e.client_id)


# -- through SQLAlchemy ----------------------------------------------------------------------

# The lessons of a batch with what is needed to check each event: its product's status, the
# media's length and pages, and the user's entitlement. One query for the whole batch.
_LESSONS_SQL = text(
    """
    SELECT l.id, l.product_id, l.kind,
           CASE WHEN l.published AND m.status = 'published' THEN p.status ELSE 'draft' END
             AS status,
           a.duration_seconds, a.page_count, e.id AS entitlement_id, e.revoked_at
    FROM lesson l
    JOIN product p ON p.id = l.product_id
    JOIN module m ON m.id = l.module_id
    LEFT JOIN asset a ON a.id = l.asset_id
    LEFT JOIN entitlement e ON e.product_id = l.product_id AND e.user_id = :uid
    WHERE l.id IN :ids
    """
).bindparams(bindparam("ids", expanding=True))

_LESSONS_TOTAL_SQL = text(
    """
    SELECT count(*) FROM lesson l
    JOIN product p ON p.id = l.product_id AND p.status = 'published'
    JOIN module m ON m.id = l.module_id AND m.status = 'published'
    JOIN entitlement e ON e.product_id = l.product_id AND e.user_id = :uid
    WHERE e.revoked_at IS NULL AND l.published
    """
)


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
    outcome, parsed = read_batch(batch, settings=settings, now=now)
    if not parsed:
        return outcome

    lessons: dict[int, LessonFacts] = {}
    entitled: set[int] = set()
    ids = sorted({e.lesson_id for e in parsed})
    for row in conn.execute(_LESSONS_SQL, {"uid": user_id, "ids": ids}):
        if row.status != "published":
            continue  # a draft is as unknown to buyers as a lesson that does not exist
        lessons[row.id] = LessonFacts(
            row.product_id, row.kind, row.duration_seconds, row.page_count
        )
        if row.entitlement_id is not None and row.revoked_at is None:
            entitled.add(row.product_id)
    valid = admit(outcome, parsed, lessons, entitled)
    if not valid:
        return outcome

    new = _append(conn, user_id, valid, now)
    outcome.accepted = len(new)
    outcome.duplicate += len(valid) - len(new)
    if new:
        outcome.engaged_now = _roll_up(conn, user_id, new, lessons, settings, now)
    return outcome


def _append(
    conn: Connection, user_id: int, events: list[ClientEvent], now: datetime
) -> list[ClientEvent]:
    """Insert the events; the ones already stored (a retry) are skipped and not returned."""
    rows = [
        {
            "user_id": user_id,
            "client_id": uuid.UUID(e.client_id),
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
        for e in insert_order(events)
    ]
    stmt = (
        _insert(conn)(EVENTS)
        .on_conflict_do_nothing(index_elements=["user_id", "client_id"])
        .returning(EVENTS.c.client_id)
    )
    stored = {str(row[0]) for row in conn.execute(stmt, rows)}
    return [e for e in events if e.client_id in stored]


def _lock_rows(
    conn: Connection, user_id: int, lesson_ids: list[int], products: dict[int, int]
) -> BuyerRow:
    """Make sure the rollup rows exist, and lock the buyer's (PostgreSQL), which comes first.

    Every batch of a buyer (and every download) takes the buyer row before any progress row,
    on this path and on the fast path alike: two writers of the same buyer queue up there
    instead of deadlocking. SQLite holds the database's write lock already.
    """
    insert = _insert(conn)
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
    buyer_q = select(*(BUYER.c[name] for name in BuyerRow._fields)).where(
        BUYER.c.user_id == user_id
    )
    if conn.dialect.name == "postgresql":
        buyer_q = buyer_q.with_for_update()
    buyer = BuyerRow(*conn.execute(buyer_q).one())
    if lesson_ids:
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
    return buyer


def _roll_up(
    conn: Connection,
    user_id: int,
    events: list[ClientEvent],
    lessons: Mapping[int, LessonFacts],
    settings: Settings,
    now: datetime,
) -> bool:
    """Fold new events into lesson progress and the buyer's totals; True if now engaged."""
    lesson_ids = sorted({e.lesson_id for e in events})
    buyer = _lock_rows(
        conn, user_id, lesson_ids, {lid: lessons[lid].product_id for lid in lesson_ids}
    )
    # The progress rows in key order, after the buyer row (see _lock_rows).
    progress_q = (
        select(*(PROGRESS.c[name] for name in ProgressRow._fields))
        .where(PROGRESS.c.user_id == user_id, PROGRESS.c.lesson_id.in_(lesson_ids))
        .order_by(PROGRESS.c.lesson_id)
    )
    if conn.dialect.name == "postgresql":
        progress_q = progress_q.with_for_update()
    current = {row.lesson_id: ProgressRow(*row) for row in conn.execute(progress_q)}
    total = conn.execute(_LESSONS_TOTAL_SQL, {"uid": user_id}).scalar_one()
    folded = fold(
        events, lessons, current, buyer, lessons_total=int(total), settings=settings, now=now
    )
    rows: list[dict[str, Any]] = []
    for change in folded.progress:
        values = change._asdict()
        # Keys named like a column would join the SET clause: the key goes by another name.
        values["b_lesson"] = values.pop("lesson_id")
        rows.append({"b_user": user_id, **values})
    conn.execute(
        update(PROGRESS)
        .where(
            PROGRESS.c.user_id == bindparam("b_user"), PROGRESS.c.lesson_id == bindparam("b_lesson")
        )
        .values({k: bindparam(k) for k in ProgressUpdate._fields if k != "lesson_id"}),
        rows,
    )
    conn.execute(update(BUYER).where(BUYER.c.user_id == user_id).values(folded.buyer._asdict()))
    return folded.engaged_now


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
        last_active_at=as_utc(row.last_active_at),
    )


def standing(conn: Connection, *, user_id: int, settings: Settings) -> Standing:
    """The buyer's current facts and score (recency as of now)."""
    row = conn.execute(select(BUYER).where(BUYER.c.user_id == user_id)).first()
    facts = facts_of(row)
    return Standing(
        facts=facts,
        score=score(facts, settings, now=utcnow()),
        engaged_at=as_utc(row.engaged_at) if row is not None else None,
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
            touched, key=lambda r: as_utc(r.last_active_at) or datetime.min.replace(tzinfo=UTC)
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


# -- a person's data ------------------------------------------------------------------------


def export_engagement(*, session: Session, user: User) -> dict[str, object]:
    """The user's engagement: totals, progress per lesson and every stored event."""
    assert user.id is not None
    totals = session.get(BuyerEngagement, user.id)
    progress = session.scalars(select(LessonProgress).where(PROGRESS.c.user_id == user.id)).all()
    events = session.scalars(
        select(EngagementEvent).where(EVENTS.c.user_id == user.id).order_by(EVENTS.c.id)
    ).all()
    return {
        "engagement": {
            "totals": totals.model_dump(mode="json", warnings=False, exclude={"user_id"})
            if totals
            else None,
            "progress": [
                p.model_dump(mode="json", warnings=False, exclude={"user_id"}) for p in progress
            ],
            "events": [
                e.model_dump(mode="json", warnings=False, exclude={"user_id", "id"}) for e in events
            ],
        }
    }


def erase_engagement(*, session: Session, user: User) -> None:
    """Delete the user's events and rollups (not left to foreign-key cascades, which SQLite
    only applies when they are switched on)."""
    for table in (EVENTS, PROGRESS, BUYER):
        session.execute(delete(table).where(table.c.user_id == user.id))
