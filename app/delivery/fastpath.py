"""The stream-URL hot path, answered before routing: `GET /api/v1/lessons/{id}/stream?redirect=1`.

Only the granted case is answered here (one query, a signature, a 302); everything else —
sign-in needed, revoked, unknown, and any database trouble — falls through to the regular
route, so that every error answer stays in one place.

The query runs on the event loop, through connections of the fast path's own, opened when the
app starts (its lifespan) and closed when it stops: a thread-pool hop costs more than the
query itself, and the SQLAlchemy engine more again (bench stream_url). SQLite: one sqlite3
connection per event loop, which never waits for a lock. PostgreSQL: a psycopg async pool in
autocommit, where the requests that arrive together share one prepared statement. Nothing is
cached between requests but connections and statements, so a revocation takes effect on the
very next request.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from base64 import b64decode
from typing import Any, Protocol

import itsdangerous
import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db import libpq_dsn
from app.delivery.service import (
    GRANT_BATCH_SQL_PSYCOPG,
    GRANT_SQL_SQLITE,
    NO_USER,
    Access,
    GrantRow,
    decide_grant,
    grant_params,
    stream_url,
)
from app.delivery.storage import Storage

PATH = re.compile(r"/api/v1/lessons/([1-9]\d{0,9})/stream")
MAX_ID = 2**31 - 1
# How long a request waits for a pooled PostgreSQL connection before the route answers it
# instead: far above a queue under load (milliseconds), far below a client's patience when
# PostgreSQL is away (the route then answers 503).
POOL_WAIT = 0.5
# Batched, one event loop keeps few queries in flight; the pool grows (to POOL_MAX) only
# while batches wait for a connection.
POOL_MIN, POOL_MAX = 2, 8
BATCH_MAX = 128  # pairs in one query: a few milliseconds of PostgreSQL's time at most
LOG_EVERY = 10.0  # seconds between two log lines about the same trouble
APPLICATION_NAME = "rapport-stream-fast-path"  # to tell its connections apart in pg_stat_activity

log = structlog.get_logger()


class Unavailable(Exception):
    """The fast path's database could not answer; the route will, on its own connection."""


class GrantReader(Protocol):
    """Runs the grant query on a connection of the fast path's own."""

    async def row(
        self, lesson_id: int, user_id: int | None, sid: str | None = None
    ) -> GrantRow | None: ...

    async def close(self) -> None: ...


class SqliteReader:
    """One sqlite3 connection, used on the event loop itself.

    A primary-key read of pages in the page cache takes microseconds, less than handing the
    call to a thread and back. It must never wait, though: its busy timeout is zero, so when
    the file is locked (rare in WAL mode) the read fails at once and the route answers, in
    the thread pool, with the engine's own patience.
    """

    def __init__(self, database: str) -> None:
        # isolation_level=None: autocommit, so each read sees the latest commit (revocations).
        self._conn = sqlite3.connect(database, timeout=0, isolation_level=None)
        self._conn.execute("PRAGMA query_only=ON")

    async def row(
        self, lesson_id: int, user_id: int | None, sid: str | None = None
    ) -> GrantRow | None:
        try:
            # fetchall, not fetchone: it runs the statement to its end, which ends the read
            # transaction; a half-read statement would keep an old snapshot open.
            rows = self._conn.execute(
                GRANT_SQL_SQLITE, grant_params(lesson_id, user_id, sid)
            ).fetchall()
        except sqlite3.Error as exc:
            raise Unavailable(str(exc)) from exc
        return GrantRow(*rows[0]) if rows else None

    async def close(self) -> None:
        self._conn.close()


class PostgresReader:
    """A psycopg async pool in autocommit; the requests of one turn of the loop share a query.

    Under load many stream requests arrive together. Each would cost a round trip, a wake-up
    of its PostgreSQL backend and psycopg's own work, which on a small machine cost more
    than the rest of the request. So the requests that start in the same turn of the event
    loop wait for the next turn, and then ask in one prepared statement (the grant query
    for each pair, see GRANT_BATCH_SQL_PSYCOPG). A lone request waits for nothing but that
    one turn. Each request's query still starts after the request arrived: nothing is reused
    from an earlier answer.

    Connections broken by a PostgreSQL restart fail their next query: those requests fall
    through to the route, the pool drops the connection and opens a new one, and a check of
    the whole pool is started so that the other stale connections go too.
    """

    def __init__(self, conninfo: str) -> None:
        self._pool: AsyncConnectionPool = AsyncConnectionPool(
            conninfo,
            kwargs={
                "autocommit": True,
                "connect_timeout": 5,
                "application_name": APPLICATION_NAME,
            },
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            open=False,
            name="stream-fast-path",
        )
        self._waiting: list[tuple[int, int, str, asyncio.Future[GrantRow | None]]] = []
        self._batches: set[asyncio.Task[None]] = set()  # kept referenced until done
        self._check: asyncio.Task[None] | None = None
        self._logged_at = -LOG_EVERY

    async def open(self) -> None:
        # Without waiting: PostgreSQL may be away at start; the pool keeps trying.
        await self._pool.open(wait=False)

    async def row(
        self, lesson_id: int, user_id: int | None, sid: str | None = None
    ) -> GrantRow | None:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[GrantRow | None] = loop.create_future()
        if not self._waiting:
            # Runs after every request already started in this turn has joined the batch.
            loop.call_soon(self._send)
        self._waiting.append((lesson_id, user_id or NO_USER, sid or "", answer))
        return await answer

    def _send(self) -> None:
        waiting, self._waiting = self._waiting, []
        loop = asyncio.get_running_loop()
        for start in range(0, len(waiting), BATCH_MAX):
            task = loop.create_task(self._ask(waiting[start : start + BATCH_MAX]))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _ask(
        self, batch: list[tuple[int, int, str, asyncio.Future[GrantRow | None]]]
    ) -> None:
        params = {
            "lids": [lid for lid, _, _, _ in batch],
            "uids": [uid for _, uid, _, _ in batch],
            "sids": [sid for _, _, sid, _ in batch],
        }
        try:
            async with self._pool.connection(timeout=POOL_WAIT) as conn:
                cur = await conn.execute(GRANT_BATCH_SQL_PSYCOPG, params, prepare=True)
                rows = await cur.fetchall()
            found: dict[int, GrantRow] = {}
            for n, *columns in rows:
                found.setdefault(n, GrantRow(*columns))
            for n, (_, _, _, answer) in enumerate(batch, start=1):
                if not answer.done():  # done: the request was cancelled meanwhile
                    answer.set_result(found.get(n))
        except psycopg.Error as exc:
            self._failed(exc)
        except Exception:
            # A bug here must not leave requests hanging: they fall through, it is logged.
            log.exception("stream_fast_path.batch_failed")
        finally:
            for _, _, _, answer in batch:
                if not answer.done():
                    answer.set_exception(Unavailable("no answer from the database"))

    def _failed(self, exc: psycopg.Error) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:  # PostgreSQL away: one line, not one a request
            self._logged_at = now
            log.warning("stream_fast_path.db_error", error=str(exc)[:200])
        # A connection lost to a restart means its siblings in the pool are lost too: test
        # them all now, in the background, rather than failing one request for each.
        if (
            isinstance(exc, psycopg.OperationalError)
            and not self._pool.closed
            and (self._check is None or self._check.done())
        ):
            self._check = asyncio.get_running_loop().create_task(self._pool.check())

    async def close(self) -> None:
        # Batches still asking finish first: their requests are answered, not dropped.
        await asyncio.gather(*self._batches, return_exceptions=True)
        if self._check is not None:
            self._check.cancel()
            await asyncio.gather(self._check, return_exceptions=True)
        await self._pool.close()


async def open_reader(engine: Engine) -> GrantReader | None:
    """A reader on the engine's database; None where there is no way to share it."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:" or url.query:
            return None  # a private in-memory database, or URI options we would not honour
        return SqliteReader(url.database)
    if url.get_backend_name() == "postgresql":
        reader = PostgresReader(libpq_dsn(url))
        await reader.open()
        return reader
    return None


class StreamFastPath:
    def __init__(self, app: ASGIApp, *, state: Any, session_cookie: str, max_age: int) -> None:
        self.app = app
        self.state = state
        self.cookie = session_cookie
        self.max_age = max_age
        # The same signature as Starlette's SessionMiddleware, to read its cookie.
        self.signer = itsdangerous.TimestampSigner(str(state.settings.secret_key))
        self.storage: Storage = state.storage
        self.ttl: int = state.settings.download_url_ttl
        # One reader per event loop: a pool belongs to the loop that opened it. The server
        # has one loop; tests run one per TestClient, each with its own lifespan.
        self.readers: dict[asyncio.AbstractEventLoop, GrantReader] = {}

    def _session(self, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        for name, value in headers:
            if name != b"cookie":
                continue
            # Starlette's own parser, the one SessionMiddleware reads the cookie with.
            signed = cookie_parser(value.decode("latin-1")).get(self.cookie)
            if signed is None:
                return {}
            try:
                raw = self.signer.unsign(signed.encode("latin-1"), max_age=self.max_age)
                data = json.loads(b64decode(raw))
            except (itsdangerous.BadSignature, ValueError):
                return {}
            return data if isinstance(data, dict) else {}
        return {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or scope["query_string"] != b"redirect=1"
        ):
            await self.app(scope, receive, send)
            return
        match = PATH.fullmatch(scope["path"])
        reader = self.readers.get(asyncio.get_running_loop())
        if match is None or reader is None or int(match.group(1)) > MAX_ID:
            await self.app(scope, receive, send)  # no reader: started without a lifespan
            return
        auth = self._session(scope["headers"]).get("auth")
        user_id = auth.get("uid") if isinstance(auth, dict) else None
        version = auth.get("ver") if isinstance(auth, dict) else None
        sid = auth.get("sid") if isinstance(auth, dict) else None
        user_id = user_id if isinstance(user_id, int) else None
        try:
            row = await reader.row(
                int(match.group(1)), user_id, sid if isinstance(sid, str) else None
            )
        except Unavailable:
            await self.app(scope, receive, send)  # the route asks again, and answers
            return
        grant = decide_grant(
            row, user_id=user_id, session_version=version if isinstance(version, int) else None
        )
        if grant.access is not Access.granted:
            await self.app(scope, receive, send)  # the route gives the right error answer
            return
        url, _expires = stream_url(self.storage, grant, ttl=self.ttl)
        await send(
            {
                "type": "http.response.start",
                "status": 302,
                "headers": [
                    (b"location", url.encode()),
                    (b"cache-control", b"private, no-store"),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Open this loop's reader at startup, close it at shutdown (or when the app's own
        lifespan ends any other way)."""
        loop = asyncio.get_running_loop()

        async def receive_and_manage() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._open(loop)
            elif message["type"] == "lifespan.shutdown":
                await self._close(loop)
            return message

        try:
            await self.app(scope, receive_and_manage, send)
        finally:
            await self._close(loop)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            reader = await open_reader(self.state.engine)
        except (sqlite3.Error, psycopg.Error, OSError) as exc:
            # Not fatal: the route answers every stream request, only slower.
            log.warning("stream_fast_path.disabled", error=str(exc)[:200])
            return
        if reader is not None:
            self.readers[loop] = reader

    async def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        reader = self.readers.pop(loop, None)
        if reader is not None:
            await reader.close()
