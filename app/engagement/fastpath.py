"""Event ingestion on PostgreSQL, on the event loop: an async psycopg pool, three round trips.

The checks and the rollup arithmetic are those of `service` (read_batch, admit, fold); this
module only moves the data. A batch is one transaction on a pooled connection:

1. BEGIN; the user's session version and their live entitlements (every batch: a revocation
   counts at once), plus the lessons this process has not cached yet;
2. one `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING RETURNING client_id` for the
   admitted events (in client id order), then the rollup rows locked with
   `SELECT ... FOR UPDATE`: the buyer's row first, then the progress rows in lesson order
   (2b: rows missing on a buyer's first batch, or a lesson's, are created and locked);
3. one `UPDATE ... FROM unnest(...)` for the progress rows, one for the buyer; COMMIT.

Each round trip is one simple query holding several `EXECUTE`s of statements prepared on
every connection when the pool opens it: PostgreSQL does not plan them again, and psycopg
only escapes one string per value (the arrays are passed as array literals). Measured on
these machines, this costs a fraction of the Python time of server-side binding (one
message, and per-element adaptation, per statement), and about as little PostgreSQL time.

Lesson facts (product, kind, duration, page count, published or not) and the number of
lessons per published product are cached per process and dropped whenever the catalog
change signal moves (app/catalog/changes.py); while that signal is down, nothing is cached.

Why not the SQLAlchemy path: a thread-pool hop per batch, an ORM session for the user and
one statement per rollup row cost several times the database work itself (bench ingestion).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
import structlog
from psycopg import pq
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

from app.catalog.changes import CatalogWatcher
from app.config import Settings
from app.engagement.service import (
    BuyerRow,
    ClientEvent,
    LessonFacts,
    Outcome,
    ProgressRow,
    admit,
    fold,
    insert_order,
)

log = structlog.get_logger()

APPLICATION_NAME = "rapport-events"  # to tell its connections apart in pg_stat_activity
# How long a batch waits for a pooled connection: far above the queue under load (ms), and
# the answer when PostgreSQL is away (503, the client retries).
POOL_WAIT = 5.0
# Few connections per process: a batch holds one for three round trips. More would only make
# PostgreSQL's backends compete for the same cores; batches waiting for one wait on the loop.
POOL_MIN = 2
POOL_MAX = 8


class _Statement(NamedTuple):
    """A statement prepared on every pooled connection (the pool's `configure`), run with
    `EXECUTE name (values)` through a client-side cursor: PostgreSQL neither parses nor plans
    it again, and several of them travel in one round trip (see `_results`)."""

    name: str
    params: tuple[tuple[str, str], ...]  # (parameter name, PostgreSQL type): $1, $2, ...
    body: str

    def prepare(self) -> str:
        types = f" ({', '.join(t for _, t in self.params)})" if self.params else ""
        return f"PREPARE {self.name}{types} AS {self.body}"

    def execute(self) -> str:
        values = f" ({', '.join(f'%({n})s' for n, _ in self.params)})" if self.params else ""
        return f"EXECUTE {self.name}{values};"


_USER = _Statement(
    "rapport_events_user",
    (("uid", "int"), ("sid", "text")),
    """SELECT u.session_version,
              ARRAY(SELECT e.product_id FROM entitlement e
                    WHERE e.user_id = u.id AND e.revoked_at IS NULL),
              EXISTS(SELECT 1 FROM ended_session x WHERE x.sid = $2)
       FROM "user" u WHERE u.id = $1""",
)
_LESSONS = _Statement(
    "rapport_events_lessons",
    (("missing", "int[]"),),
    """SELECT l.id, l.product_id, l.kind,
              CASE WHEN l.published AND m.status = 'published' THEN p.status ELSE 'draft' END,
              a.duration_seconds, a.page_count
       FROM lesson l
       JOIN product p ON p.id = l.product_id
       JOIN module m ON m.id = l.module_id
       LEFT JOIN asset a ON a.id = l.asset_id
       WHERE l.id = ANY($1)""",
)
_COUNTS = _Statement(
    "rapport_events_counts",
    (),
    """SELECT l.product_id, count(*) FROM lesson l
       JOIN product p ON p.id = l.product_id AND p.status = 'published'
       JOIN module m ON m.id = l.module_id AND m.status = 'published'
       WHERE l.published
       GROUP BY l.product_id""",
)
_APPEND = _Statement(
    "rapport_events_append",
    (
        ("uid", "int"),
        ("ids", "uuid[]"),
        ("products", "int[]"),
        ("lessons", "int[]"),
        ("kinds", "text[]"),
        ("starts", "float8[]"),
        ("ends", "float8[]"),
        ("rates", "float8[]"),
        ("pages", "int[]"),
        ("seconds", "float8[]"),
        ("ats", "timestamptz[]"),
        ("now", "timestamptz"),
    ),
    """INSERT INTO engagement_event (user_id, client_id, product_id, lesson_id, kind, start,
                                     "end", rate, page, seconds, occurred_at, received_at)
       SELECT $1, e.*, $12 FROM unnest($2, $3, $4, $5, $6, $7, $8, $9, $10, $11) AS e
       ON CONFLICT (user_id, client_id) DO NOTHING
       RETURNING client_id::text""",
)
# The buyer row first, then the progress rows in key order: every batch of a buyer takes the
# buyer row, so two batches of the same buyer queue up there and never deadlock.
_LOCK_BUYER = _Statement(
    "rapport_events_lock_buyer",
    (("uid", "int"),),
    f"SELECT {', '.join(BuyerRow._fields)} FROM buyer_engagement WHERE user_id = $1 FOR UPDATE",  # noqa: S608 - column names from a NamedTuple
)
_LOCK_PROGRESS = _Statement(
    "rapport_events_lock_progress",
    (("uid", "int"), ("touched", "int[]")),
    f"""SELECT {", ".join(ProgressRow._fields)} FROM lesson_progress
        WHERE user_id = $1 AND lesson_id = ANY($2) ORDER BY lesson_id FOR UPDATE""",  # noqa: S608 - column names from a NamedTuple
)
# Only when a lock found no row: a buyer's first batch, or a lesson's.
_ENSURE_BUYER = _Statement(
    "rapport_events_ensure_buyer",
    (("uid", "int"),),
    """INSERT INTO buyer_engagement (user_id, lessons_total, lessons_completed, media_seconds,
                                     pages_read, reading_seconds, downloads, score_at_last_event)
       VALUES ($1, 0, 0, 0, 0, 0, 0, 0)
       ON CONFLICT (user_id) DO NOTHING""",
)
_ENSURE_PROGRESS = _Statement(
    "rapport_events_ensure_progress",
    (("uid", "int"), ("touched", "int[]"), ("touched_products", "int[]")),
    """INSERT INTO lesson_progress (user_id, lesson_id, product_id, intervals, covered_seconds,
                                    position, pages, reading_seconds)
       SELECT $1, t.lesson_id, t.product_id, '[]', 0, 0, '[]', 0
       FROM unnest($2, $3) AS t(lesson_id, product_id)
       ORDER BY t.lesson_id
       ON CONFLICT (user_id, lesson_id) DO NOTHING""",
)
_UPDATE_PROGRESS = _Statement(
    "rapport_events_update_progress",
    (
        ("uid", "int"),
        ("lessons", "int[]"),
        ("intervals", "text[]"),
        ("covered", "float8[]"),
        ("durations", "float8[]"),
        ("positions", "float8[]"),
        ("pages", "text[]"),
        ("reading", "float8[]"),
        ("opened", "timestamptz[]"),
        ("completed", "timestamptz[]"),
        ("last", "timestamptz[]"),
    ),
    """UPDATE lesson_progress AS p SET
           intervals = u.intervals::json, covered_seconds = u.covered_seconds,
           duration_seconds = u.duration_seconds, position = u.position,
           pages = u.pages::json, reading_seconds = u.reading_seconds,
           opened_at = u.opened_at, completed_at = u.completed_at,
           last_active_at = u.last_active_at
       FROM unnest($2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
            AS u(lesson_id, intervals, covered_seconds, duration_seconds, position, pages,
                 reading_seconds, opened_at, completed_at, last_active_at)
       WHERE p.user_id = $1 AND p.lesson_id = u.lesson_id""",
)
_UPDATE_BUYER = _Statement(
    "rapport_events_update_buyer",
    (
        ("uid", "int"),
        ("lessons_total", "int"),
        ("lessons_completed", "int"),
        ("media_seconds", "float8"),
        ("pages_read", "int"),
        ("reading_seconds", "float8"),
        ("first_active_at", "timestamptz"),
        ("last_active_at", "timestamptz"),
        ("engaged_at", "timestamptz"),
        ("score_at_last_event", "float8"),
    ),
    """UPDATE buyer_engagement SET
           lessons_total = $2, lessons_completed = $3, media_seconds = $4, pages_read = $5,
           reading_seconds = $6, first_active_at = $7, last_active_at = $8, engaged_at = $9,
           score_at_last_event = $10
       WHERE user_id = $1""",
)
_STATEMENTS = (
    _USER,
    _LESSONS,
    _COUNTS,
    _APPEND,
    _LOCK_BUYER,
    _LOCK_PROGRESS,
    _ENSURE_BUYER,
    _ENSURE_PROGRESS,
    _UPDATE_PROGRESS,
    _UPDATE_BUYER,
)
# Round trip 2, and 2b when a lock found a rollup row missing; round trip 3 ends the batch.
_APPEND_AND_LOCK_SQL = _APPEND.execute() + _LOCK_BUYER.execute() + _LOCK_PROGRESS.execute()
_ENSURE_AND_LOCK_SQL = (
    _ENSURE_BUYER.execute()
    + _LOCK_BUYER.execute()
    + _ENSURE_PROGRESS.execute()
    + _LOCK_PROGRESS.execute()
)
_UPDATE_SQL = _UPDATE_PROGRESS.execute() + _UPDATE_BUYER.execute() + "COMMIT;"


async def _prepare(conn: psycopg.AsyncConnection[Any]) -> None:
    """The pool's `configure`: every new connection gets the statements prepared."""
    for statement in _STATEMENTS:
        await conn.execute(statement.prepare())


def _array(values: Iterable[object]) -> str:
    """A PostgreSQL array literal of numbers, UUIDs, event kinds or ISO 8601 times: values
    that never need quoting inside an array. One string parameter costs a fraction of what
    psycopg's list adaptation does (it inspects every element)."""
    return "{" + ",".join(["NULL" if v is None else str(v) for v in values]) + "}"


def _times(values: Iterable[datetime | None]) -> str:
    return _array(None if v is None else v.isoformat() for v in values)


def _texts(values: Iterable[str]) -> str:
    """An array literal of arbitrary strings, each quoted."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


async def _results(
    cur: psycopg.AsyncClientCursor[Any], sql: str, params: dict[str, Any]
) -> list[list[Any]]:
    """Run several statements in one round trip; the rows of each (empty for commands).

    The cursor is a client-side one: psycopg binds the values into the text, which lets
    several statements travel in one simple query (see the module's docstring).
    """
    await cur.execute(sql, params)
    results: list[list[Any]] = []
    while True:
        # The result's status, not `cur.description`, which builds column objects each time.
        rows = cur.pgresult is not None and cur.pgresult.status == pq.ExecStatus.TUPLES_OK
        results.append(await cur.fetchall() if rows else [])
        if not cur.nextset():
            return results


def _live(user_row: tuple[Any, ...], session_version: object) -> bool:
    """The user row of `_USER` says the session still signs in: same version, not ended."""
    return bool(user_row[0] == session_version and not user_row[2])


class Unavailable(Exception):
    """PostgreSQL could not be reached, or the connection broke before the commit: nothing
    of the batch was stored for sure, and the client's retry (same ids) stores it once."""


class _StaleConnection(Exception):
    """The connection broke on the batch's first round trip, before anything was written."""


@dataclass
class LessonCache:
    """Lesson facts per lesson id and lesson counts per published product, for one catalog
    generation. Lessons that do not exist are not remembered (ids are the client's choice)."""

    watcher: CatalogWatcher
    generation: int = -1
    lessons: dict[int, LessonFacts | None] = field(default_factory=dict)  # None: a draft's
    counts: dict[int, int] | None = None

    def current(self) -> int:
        """The generation to read and fill the cache for; -1 (signal down): do not cache."""
        generation = self.watcher.current()
        if generation != self.generation:
            self.generation = generation
            self.lessons = {}
            self.counts = None
        return generation


class EventWriter:
    """The PostgreSQL ingestion path: one pool per event loop, opened by the app's lifespan.

    One loop per server process; tests may run several apps' lifespans at once, each on a
    loop of its own (a pool belongs to the loop that opened it).
    """

    def __init__(self, conninfo: str, watcher: CatalogWatcher) -> None:
        self.conninfo = conninfo
        self.cache = LessonCache(watcher)
        self.pools: dict[asyncio.AbstractEventLoop, AsyncConnectionPool] = {}
        self._checks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        pool: AsyncConnectionPool = AsyncConnectionPool(
            self.conninfo,
            # Autocommit: each batch writes its own BEGIN and COMMIT into its round trips
            # (psycopg would otherwise spend a round trip on BEGIN).
            kwargs={
                "connect_timeout": 5,
                "application_name": APPLICATION_NAME,
                "autocommit": True,
            },
            configure=_prepare,
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            open=False,
            name="events",
        )
        # Without waiting: PostgreSQL may be away at start; batches answer 503 meanwhile.
        await pool.open(wait=False)
        self.pools[asyncio.get_running_loop()] = pool

    async def close(self) -> None:
        pool = self.pools.pop(asyncio.get_running_loop(), None)
        for task in list(self._checks):
            task.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)
        if pool is not None:
            await pool.close()

    def ready(self) -> bool:
        """Whether this loop has a pool (not so for a TestClient outside its lifespan)."""
        return asyncio.get_running_loop() in self.pools

    async def signed_in(self, user_id: int, session_version: object, sid: str = "") -> bool:
        """Whether the session is still valid (the batch itself was refused before)."""
        try:
            async with self._pool().connection(timeout=POOL_WAIT) as conn:
                cur = psycopg.AsyncClientCursor(conn)
                rows = await _results(cur, _USER.execute(), {"uid": user_id, "sid": sid})
        except psycopg.OperationalError as exc:
            raise Unavailable(str(exc)) from exc
        return bool(rows[0]) and _live(rows[0][0], session_version)

    async def ingest(
        self,
        *,
        user_id: int,
        session_version: object,
        outcome: Outcome,
        events: list[ClientEvent],
        settings: Settings,
        now: datetime,
        sid: str = "",
    ) -> Outcome | None:
        """Store what `read_batch` left of a batch; None when the session is no longer valid.

        A connection found broken on the first round trip (PostgreSQL restarted since it was
        pooled) makes the pool test its idle connections, and the batch is tried once more:
        nothing had been written yet.
        """
        for attempt in (1, 2):
            try:
                # A copy per attempt: the attempt adds its rejections and counts to it.
                tried = replace(outcome, rejected=list(outcome.rejected))
                return await self._ingest(
                    user_id, (session_version, sid), tried, events, settings, now
                )
            except _StaleConnection as exc:
                log.warning("events.stale_connection", error=str(exc)[:200], attempt=attempt)
                if attempt == 2:
                    self._check_pool(exc)
                    raise Unavailable(str(exc)) from exc
                await self._pool().check()
            except psycopg.OperationalError as exc:
                # Connection gone (class 08), server shut down (57), pool timeout, and class
                # 40 (serialization, deadlock) too: the transaction did not commit.
                self._check_pool(exc)
                raise Unavailable(str(exc)) from exc
        raise AssertionError("unreachable")

    def _pool(self) -> AsyncConnectionPool:
        return self.pools[asyncio.get_running_loop()]

    def _check_pool(self, exc: Exception) -> None:
        """Have the pool test its idle connections, so that the other stale ones go too."""
        if self._checks:
            return
        log.warning("events.db_error", error=str(exc)[:200], kind=type(exc).__name__)
        task = asyncio.get_running_loop().create_task(self._pool().check())
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _ingest(
        self,
        user_id: int,
        session: tuple[object, str],
        outcome: Outcome,
        events: list[ClientEvent],
        settings: Settings,
        now: datetime,
    ) -> Outcome | None:
        cache = self.cache
        generation = cache.current()
        lesson_ids = sorted({e.lesson_id for e in events})
        missing = [lid for lid in lesson_ids if lid not in cache.lessons]
        counts = cache.counts
        async with self._pool().connection(timeout=POOL_WAIT) as conn:
            cur = psycopg.AsyncClientCursor(conn)
            # Round trip 1: who is asking, what they own now, what the lessons are.
            sql = _USER.execute()
            if events:
                sql = "BEGIN;" + sql
                if missing:
                    sql += _LESSONS.execute()
                if counts is None:
                    sql += _COUNTS.execute()
            try:
                results = await _results(
                    cur, sql, {"uid": user_id, "sid": session[1], "missing": _array(missing)}
                )
            except psycopg.OperationalError as exc:
                raise _StaleConnection(str(exc)) from exc
            user = results[1 if events else 0]
            if not user or not _live(user[0], session[0]):
                return None  # the pool's connection context ends the (read-only) transaction
            if not events:
                return outcome
            entitled = frozenset(user[0][1])
            fetched = results[2] if missing else []
            found: dict[int, LessonFacts | None] = {
                lid: LessonFacts(product_id, kind, duration, page_count)
                if status == "published"
                else None
                for lid, product_id, kind, status, duration, page_count in fetched
            }
            if counts is None:
                counts = {product_id: int(n) for product_id, n in results[-1]}
            # Only into the generation it was read in: a batch that overlapped a catalog
            # change may have read the old facts.
            if generation != -1 and cache.generation == generation:
                cache.lessons.update(found)
                cache.counts = counts
            lessons: dict[int, LessonFacts] = {}
            for lid in lesson_ids:
                facts = found[lid] if lid in found else cache.lessons.get(lid)
                if facts is not None:
                    lessons[lid] = facts
            valid = admit(outcome, events, lessons, entitled)
            if not valid:
                await cur.execute("COMMIT")
                return outcome

            # Round trip 2: append, then lock the rollup rows the batch may touch.
            ordered = insert_order(valid)
            touched = sorted({e.lesson_id for e in valid})
            keys = {
                "uid": user_id,
                "touched": _array(touched),
                "touched_products": _array([lessons[lid].product_id for lid in touched]),
            }
            results = await _results(
                cur,
                _APPEND_AND_LOCK_SQL,
                {
                    **keys,
                    "ids": _array([e.client_id for e in ordered]),
                    "products": _array([e.product_id for e in ordered]),
                    "lessons": _array([e.lesson_id for e in ordered]),
                    "kinds": _array([e.kind for e in ordered]),
                    "starts": _array([e.start for e in ordered]),
                    "ends": _array([e.end for e in ordered]),
                    "rates": _array([e.rate for e in ordered]),
                    "pages": _array([e.page for e in ordered]),
                    "seconds": _array([e.seconds for e in ordered]),
                    "ats": _times([e.at for e in ordered]),
                    "now": now,
                },
            )
            stored = {row[0] for row in results[0]}
            new = [e for e in valid if e.client_id in stored]
            outcome.accepted = len(new)
            outcome.duplicate += len(valid) - len(new)
            if not new:
                await cur.execute("COMMIT")
                return outcome
            buyer, progress = results[1], results[2]
            if not buyer or len(progress) < len(touched):
                # Round trip 2b: a first batch of the buyer, or for one of these lessons.
                results = await _results(cur, _ENSURE_AND_LOCK_SQL, keys)
                buyer, progress = results[1], results[3]
            current = {row[0]: ProgressRow(*row) for row in progress}
            total = sum(counts.get(product_id, 0) for product_id in entitled)
            folded = fold(
                new,
                lessons,
                current,
                BuyerRow(*buyer[0]),
                lessons_total=total,
                settings=settings,
                now=now,
            )

            # Round trip 3: the new rollup values, and COMMIT.
            changes = folded.progress
            await cur.execute(
                _UPDATE_SQL,
                {
                    "uid": user_id,
                    "lessons": _array([c.lesson_id for c in changes]),
                    # The text SQLAlchemy's JSON type writes, so both paths store the same.
                    "intervals": _texts([json.dumps(c.intervals) for c in changes]),
                    "covered": _array([c.covered_seconds for c in changes]),
                    "durations": _array([c.duration_seconds for c in changes]),
                    "positions": _array([c.position for c in changes]),
                    "pages": _texts([json.dumps(c.pages) for c in changes]),
                    "reading": _array([c.reading_seconds for c in changes]),
                    "opened": _times([c.opened_at for c in changes]),
                    "completed": _times([c.completed_at for c in changes]),
                    "last": _times([c.last_active_at for c in changes]),
                    **folded.buyer._asdict(),
                },
            )
            outcome.engaged_now = folded.engaged_now
        return outcome


def make_event_writer(database_url: str, watcher: CatalogWatcher) -> EventWriter | None:
    """The PostgreSQL ingestion path, or None (SQLite: `service.ingest` serves every batch)."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return EventWriter(
        url.set(drivername="postgresql").render_as_string(hide_password=False), watcher
    )


def as_json(outcome: Outcome) -> dict[str, Any]:
    """The 202 body, the same for both paths."""
    return {**outcome.as_json(), "engaged": outcome.engaged_now}
