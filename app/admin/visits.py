"""Cookie-free visitor counting for the catalog and product pages.

A visitor is a daily-rotating hash of (that day's random salt, IP address, user agent). The
salt lives in `visit_salt` only for its day; once it is deleted, nobody (us included) can tell
whose hash a row was. Per day we keep the hash only to count each visitor once
(`visit`, deleted the next day) and add them to the per-day counters in `visit_day`, which is
all the dashboard reads. No cookie, no IP, no user agent is ever stored.

The middleware sits outside the page cache (cached pages are answered before routing) and
does no I/O: it appends a small tuple to a queue. A writer thread hashes and writes in
batches, so a visit costs the request a few microseconds.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import structlog
from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.accounts.models import Role
from app.admin.models import Visit, VisitDay, VisitKind, VisitSalt

log = structlog.get_logger()

PRODUCT_PREFIX = "/products/"
# Substrings of user agents that announce a program rather than a person.
BOT_MARKERS = (
    "bot",
    "crawl",
    "spider",
    "slurp",
    "preview",
    "fetch",
    "monitor",
    "headless",
    "lighthouse",
    "curl",
    "wget",
    "python",
    "httpx",
    "go-http",
    "java/",
    "okhttp",
    "libwww",
    "scrapy",
    "wrk",
)
STAFF = (Role.admin, Role.author, Role.admin.value, Role.author.value)
MAX_PENDING = 20_000  # beyond this (a flood), hits are dropped rather than held in memory
VISIT_KEY = ("day", "visitor", "kind", "product_slug")
MAX_SEEN = 200_000
EPOCH = date(
    1970, 1, 1
).toordinal()  # per-process memory of today's written keys; the database de-duplicates too


@dataclass(frozen=True)
class Hit:
    """One counted page view, as the middleware saw it (IP and agent stay in memory only)."""

    day: date
    ip: str
    agent: str
    kind: str  # catalog | product
    product_slug: str
    source: str


def page_kind(path: str) -> tuple[str, str] | None:
    """(kind, product slug) of a counted path, or None for every other path."""
    if path == "/":
        return VisitKind.catalog, ""
    if path.startswith(PRODUCT_PREFIX):
        slug = path[len(PRODUCT_PREFIX) :]
        if slug and "/" not in slug and len(slug) <= 80:
            return VisitKind.product, slug
    return None


def normalize_source(value: str) -> str:
    """A source as the reports group it: lower case, a URL reduced to its host without www."""
    value = value.strip().lower()
    if "://" in value:
        value = urlsplit(value).hostname or ""
    if value.startswith("www."):
        value = value[4:]
    return value[:200]


def visit_source(query_string: bytes, referrer: str, own_host: str) -> str:
    """The UTM source of the URL, else the host of an outside referrer, else '' (direct)."""
    if query_string and b"utm_source" in query_string:
        params = dict(parse_qsl(query_string.decode("latin-1")))
        source = normalize_source(params.get("utm_source", ""))
        if source:
            return source
    if referrer:
        host = urlsplit(referrer).hostname or ""
        if host and host != own_host:
            return normalize_source(host)
    return ""


@lru_cache(maxsize=4096)  # agents repeat: the same few hundred strings all day
def is_bot(agent: str) -> bool:
    """Whether a user agent announces a program (or nothing) rather than a browser."""
    lowered = agent.lower()
    return not lowered or any(marker in lowered for marker in BOT_MARKERS)


def visitor_hash(salt: str, ip: str, agent: str) -> str:
    """The day's pseudonym of a visitor: 128 bits of BLAKE2b over salt, IP and agent."""
    data = f"{ip}\n{agent}".encode()
    return hashlib.blake2b(data, key=salt.encode()[:64], digest_size=16).hexdigest()


# What the middleware queues: (unix time, IP, user agent, kind, slug, query string, referrer).
# A plain tuple, and the source worked out later by the writer: the request pays for no more.
RawHit = tuple[float, str, str, str, str, bytes, str]


class VisitRecorder:
    """Collects hits from the event loop; writes them from one thread, in batches."""

    def __init__(self, engine: Engine, *, own_host: str = "", interval: float = 1.0) -> None:
        self.engine = engine
        self.own_host = own_host
        self.interval = interval
        self._pending: deque[Hit | RawHit] = deque()
        self._lock = threading.Lock()  # one flush at a time (the thread, or a test)
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._salts: dict[date, str] = {}
        self._seen: set[tuple[date, str, str, str]] = set()
        self._seen_day: date | None = None

    def hit(self, hit: Hit | RawHit) -> None:
        """Queue a hit; never blocks (deque appends are atomic)."""
        if len(self._pending) < MAX_PENDING:
            self._pending.append(hit)

    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="visit-recorder", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread after writing what is queued."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop = True
            self._wake.set()
            thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # a database hiccup must not end counting for good
                log.exception("visits.flush_failed")
                time.sleep(self.interval)

    def flush(self, *, today: date | None = None) -> int:
        """Write the queued hits; the number of newly counted (visitor, page) rows."""
        with self._lock:
            items: list[Hit | RawHit] = []
            while self._pending:
                items.append(self._pending.popleft())
            if not items:
                return 0
            return self._write(items, today or datetime.now(UTC).date())

    def _write(self, items: Sequence[Hit | RawHit], today: date) -> int:
        if self._seen_day != today:
            self._seen.clear()
            self._seen_day = today
        if today not in self._salts:
            with self.engine.begin() as conn:
                self._salts = {today: _todays_salt(conn, today)}
        # Keys of rows to insert, each with the source of its first hit in this batch. Most
        # hits are a known visitor's next page: they cost a hash and two set lookups, no I/O.
        rows: dict[tuple[date, str, str, str], str] = {}
        hashes: dict[tuple[date, str, str], str] = {}  # this batch only: no IP outlives it
        for item in items:
            if isinstance(item, Hit):
                day, ip, agent, kind, slug = (
                    item.day,
                    item.ip,
                    item.agent,
                    item.kind,
                    item.product_slug,
                )
                query, referrer, source = b"", "", item.source
            else:
                at, ip, agent, kind, slug, query, referrer = item
                day, source = date.fromordinal(EPOCH + int(at // 86400)), None
            salt = self._salts.get(day)
            if salt is None:
                continue  # a hit from before midnight whose salt is gone: not countable
            visitor = hashes.get((day, ip, agent))
            if visitor is None:
                visitor = hashes[day, ip, agent] = visitor_hash(salt, ip, agent)
            for key in ((day, visitor, VisitKind.site, ""), (day, visitor, kind, slug)):
                if key not in self._seen and key not in rows:
                    if source is None:
                        source = visit_source(query, referrer, self.own_host)
                    rows[key] = source
        if not rows:
            return 0
        with self.engine.begin() as conn:
            new = _insert_new(conn, list(rows))
            counts: dict[tuple[date, str, str, str], int] = {}
            for key in new:
                day, _visitor, kind, slug = key
                counter = (day, kind, slug, rows[key])
                counts[counter] = counts.get(counter, 0) + 1
            _add_counts(conn, counts)
        if len(self._seen) + len(rows) > MAX_SEEN:
            self._seen.clear()
        self._seen.update(rows)
        return len(new)


def _insert(conn: Any) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _todays_salt(conn: Any, today: date) -> str:
    """Today's salt, made by whichever worker asks first; older salts and hashes are deleted."""
    conn.execute(delete(VisitSalt).where(VisitSalt.day < today))  # type: ignore[arg-type]
    conn.execute(delete(Visit).where(Visit.day < today))  # type: ignore[arg-type]
    insert = _insert(conn)
    conn.execute(
        insert(VisitSalt)
        .values(day=today, salt=secrets.token_hex(32))
        .on_conflict_do_nothing(index_elements=["day"])
    )
    salt: str = conn.execute(
        select(col(VisitSalt.salt)).where(col(VisitSalt.day) == today)
    ).scalar_one()
    return salt


def _insert_new(
    conn: Any, keys: list[tuple[date, str, str, str]]
) -> list[tuple[date, str, str, str]]:
    """Insert de-duplication rows; the keys that were not there yet (another worker may race)."""
    insert = _insert(conn)
    new: list[tuple[date, str, str, str]] = []
    for start in range(0, len(keys), 500):  # SQLite's limit on bound parameters
        chunk = keys[start : start + 500]
        stmt = (
            insert(Visit)
            .values([dict(zip(VISIT_KEY, key, strict=True)) for key in chunk])
            .on_conflict_do_nothing()
            .returning(*(col(getattr(Visit, name)) for name in VISIT_KEY))
        )
        new.extend((r[0], r[1], r[2], r[3]) for r in conn.execute(stmt))
    return new


def _add_counts(conn: Any, counts: dict[tuple[date, str, str, str], int]) -> None:
    if not counts:
        return
    insert = _insert(conn)
    rows = [
        {"day": d, "kind": k, "product_slug": s, "source": src, "visitors": n}
        for (d, k, s, src), n in counts.items()
    ]
    stmt = insert(VisitDay).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["day", "kind", "product_slug", "source"],
        set_={"visitors": VisitDay.visitors + stmt.excluded.visitors},
    )
    conn.execute(stmt)


def record_counts(engine: Engine, rows: Iterable[tuple[date, str, str, str, int]]) -> None:
    """Add to the per-day counters directly (fixtures, imports of old figures)."""
    counts: dict[tuple[date, str, str, str], int] = {}
    for day, kind, slug, source, n in rows:
        key = (day, kind, slug, source)
        counts[key] = counts.get(key, 0) + n
    with engine.begin() as conn:
        _add_counts(conn, counts)


class VisitCounter:
    """Count GETs of the catalog and product pages answered 200 with HTML to a person.

    Not counted: bots and tools (by user agent), requests that do not accept HTML, anything
    but 200, and signed-in staff (known only after the app ran: the route sets the user).
    """

    def __init__(self, app: ASGIApp, *, recorder: VisitRecorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        page = page_kind(scope["path"])
        if page is None:
            await self.app(scope, receive, send)
            return
        agent = referrer = ""
        accepts_html = False
        for name, value in scope["headers"]:
            if name == b"user-agent":
                agent = value.decode("latin-1")[:500]
            elif name == b"accept":
                accepts_html = b"text/html" in value
            elif name == b"referer":
                referrer = value.decode("latin-1")[:500]
        if not accepts_html or is_bot(agent):
            await self.app(scope, receive, send)
            return
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        state = scope.setdefault("state", {})
        await self.app(scope, receive, send_status)
        if status != 200:
            return
        user = state.get("user")
        if user is not None and getattr(user, "role", None) in STAFF:
            return
        client = scope.get("client")
        ip = client[0] if client else ""
        self.recorder.hit(
            (time.time(), ip, agent, page[0], page[1], scope["query_string"], referrer)
        )
