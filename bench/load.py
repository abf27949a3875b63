"""load: LOAD_SECONDS (60) of mixed buyer traffic from LOAD_CLIENTS (100) concurrent clients.

`make load` (or `.venv/bin/python bench/load.py`). Sets up a temporary PostgreSQL database on
BENCH_PG_URL (SQLite in a temporary folder, with a message, when that server cannot be
reached), migrates it and publishes the demo courses with the CLI, creates one buyer per
client who owns trust-at-a-distance, starts `python -m app serve --workers LOAD_WORKERS` (2)
and signs every buyer in through a login link (session and CSRF cookies, as a browser keeps
them). Then each client, over its own keep-alive connection and with its buyer's cookies,
sends one request after another, drawn by weight from:

    catalog   GET /                                        200
    product   GET /products/trust-at-a-distance            200
    library   GET /library                                 200
    stream    GET /api/v1/lessons/{id}/stream?redirect=1   302 to /media/...
    events    POST /api/v1/events, 10 fresh events         202, all 10 accepted

Anything else is an error: another status, a stream redirect elsewhere, an event batch with a
rejected or duplicate event, a connection error, no answer within LOAD_TIMEOUT (30 s). At the
end the database must hold exactly the events acknowledged (none lost, none doubled).

Prints per endpoint and in total: requests, errors, p50 and p99 (latency seen by the client,
from writing the request to the last byte of the answer, connecting included), and last
`load requests=N errors=E p50_ms=X p99_ms=Y seconds=S`. Exit code 1 when errors > 0.

The client is one process on the event loop (uvloop) with a small HTTP/1.1 client on
httptools' parser: much cheaper per request than a general-purpose client, so that on these
2-core machines the server, not the load generator, is what is measured. Its CPU use and the
server's are logged, to check that.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
# Run as a script: `bench` and `app` import from the repo root (as bench/run.py does).
sys.path[0] = str(ROOT)

import httptools  # noqa: E402
from sqlalchemy import make_url, text  # noqa: E402

from bench._common import (  # noqa: E402
    PYTHON,
    BenchError,
    Server,
    env_number,
    log,
    rapport_env,
    setup_catalog,
)
from bench.stream_url import sign_in  # noqa: E402

PG_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
COURSE = "trust-at-a-distance"
BATCH = 10
# Weights of the mix: what a buyer's browser asks for while working through a course (the
# player reports events and fetches stream links far more often than pages are opened).
MIX: tuple[tuple[str, int], ...] = (
    ("catalog", 15),
    ("product", 15),
    ("library", 15),
    ("stream", 25),
    ("events", 30),
)


@dataclass(frozen=True)
class Lessons:
    """What the clients need to know of COURSE: a lesson to stream, valid event values."""

    stream: int  # a non-preview video lesson: the entitlement is checked on every request
    videos: list[tuple[int, float]]  # (lesson id, duration in seconds)
    pdf: tuple[int, int] | None  # (lesson id, pages)


@dataclass(frozen=True)
class Buyer:
    cookie: str  # the Cookie header: session and CSRF cookies
    csrf: str  # the CSRF cookie's value, echoed in x-csrftoken


@dataclass
class Endpoint:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    events_acknowledged: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies)


class ServeProcess(Server):
    """`python -m app serve` (migrating nothing: setup did) as deployed, in its own process
    group; stdout (JSON log lines, the access log) and stderr kept in files for errors."""

    def __init__(self, env: Mapping[str, str], workers: int, logs: Path) -> None:
        super().__init__("rapport", "app serve", env, ready_path="/healthz", start_timeout=90)
        self.workers = workers
        self.logs = logs

    def start(self) -> None:
        cmd = [
            PYTHON,
            *("-m", "app", "serve", "--no-migrate"),
            *("--host", "127.0.0.1", "--port", str(self.port)),
            *("--workers", str(self.workers)),
        ]
        log(f"load: starting {' '.join(cmd[1:])} on {self.url}")
        with self.logs.open("wb") as stdout:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.logs.parent,  # not the repo root: a developer's .env must not apply
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=self._stderr,
                start_new_session=True,  # stopped as a whole group by Server.stop()
            )
        deadline = time.monotonic() + self.start_timeout
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(
                    f"rapport serve did not start (exit {self.proc.poll()})\n"
                    f"--- its stderr ---\n{self.stderr_text()}"
                )
            time.sleep(0.2)

    def cpu_seconds(self) -> float:
        """User + system CPU of every process in the server's group (master and workers)."""
        if self.proc is None:
            return 0.0
        group = self.proc.pid
        return cpu_seconds(lambda fields, _cmdline: int(fields[2]) == group)


def cpu_seconds(select: Callable[[list[str], bytes], bool]) -> float:
    """User + system CPU so far of the processes `select` picks by their /proc stat fields
    (after the command name: fields[2] is the process group) and command line."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        if select(fields, cmdline):
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def database_cpu_seconds(database_url: str) -> float:
    """CPU so far of the PostgreSQL backends serving this database (when on this machine:
    their command lines read `postgres: USER DATABASE HOST ...`); 0 on SQLite."""
    name = make_url(database_url).database or ""
    if not database_url.startswith("postgresql") or not name:
        return 0.0
    marker = f" {name} ".encode()
    return cpu_seconds(
        lambda _fields, cmdline: cmdline.startswith(b"postgres:") and marker in cmdline
    )


# -- setup --------------------------------------------------------------------------------


@contextmanager
def database(tmp: Path) -> Iterator[str]:
    """A fresh PostgreSQL database on PG_URL, dropped afterwards; else a SQLite file."""
    import psycopg

    admin = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"rapport_load_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        log(
            f"load: PostgreSQL at {PG_URL} is not usable ({str(exc).strip()}); "
            "falling back to SQLite, which is not how Rapport is deployed: set BENCH_PG_URL"
        )
        yield f"sqlite:///{tmp / 'load.db'}"
        return
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log(f"load: dropped database {name}")


def create_buyers(database_url: str, count: int) -> tuple[Lessons, list[str]]:
    """`count` buyers who own COURSE, a login-link token each; the lessons of COURSE."""
    from sqlmodel import Session

    import app.models  # noqa: F401 - every table, for the entitlement's foreign keys
    from app.accounts import service as accounts
    from app.accounts.models import Role
    from app.checkout.models import Entitlement
    from app.db import make_engine

    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            rows = session.execute(
                text(
                    "SELECT l.id, l.product_id, l.kind, l.is_preview, a.duration_seconds,"
                    " a.page_count FROM lesson l JOIN product p ON p.id = l.product_id"
                    " LEFT JOIN asset a ON a.id = l.asset_id"
                    " WHERE p.slug = :slug AND l.published ORDER BY l.position"
                ),
                {"slug": COURSE},
            ).all()
            videos = [
                (int(r.id), float(r.duration_seconds))
                for r in rows
                if r.kind == "video" and (r.duration_seconds or 0) >= 4
            ]
            locked = [int(r.id) for r in rows if r.kind == "video" and not r.is_preview]
            pdfs = [
                (int(r.id), int(r.page_count)) for r in rows if r.kind == "pdf" and r.page_count
            ]
            if not videos or not locked:
                raise BenchError(f"{COURSE} has no published video lessons with a duration")
            product_id = int(rows[0].product_id)
            tokens: list[str] = []
            for n in range(count):
                email = f"load-buyer-{n}@example.com"
                user = accounts.create_user(session=session, email=email, role=Role.buyer)
                assert user.id is not None
                session.add(Entitlement(user_id=user.id, product_id=product_id))
                tokens.append(
                    accounts.create_login_link(session=session, email=email, ttl_seconds=3600)
                )
            session.commit()
    finally:
        engine.dispose()
    return Lessons(locked[0], videos, pdfs[0] if pdfs else None), tokens


def stored_events(database_url: str) -> int:
    """The number of engagement events in the database. Retried for a while: on a shared
    PostgreSQL server every connection slot may be taken for a moment."""
    from sqlalchemy.exc import OperationalError

    from app.db import make_engine

    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        attempts = 20
        while True:
            try:
                with engine.connect() as conn:
                    query = text("SELECT count(*) FROM engagement_event")
                    return int(conn.execute(query).scalar_one())
            except OperationalError as exc:
                attempts -= 1
                if not attempts:
                    raise BenchError(f"cannot count the stored events: {exc}") from exc
                time.sleep(0.5)
    finally:
        engine.dispose()


# -- the client ---------------------------------------------------------------------------


class HttpError(Exception):
    """The connection broke, or the bytes were not HTTP."""


@dataclass
class Answer:
    status: int
    location: str
    body: bytes


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, answers parsed by
    httptools (llhttp, in C)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.location = ""
        self.body: list[bytes] = []
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport does not subclass asyncio.Transport but has its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"unparsable answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(HttpError(f"connection closed by the server{f': {exc}' if exc else ''}"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.location = ""
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"location":
            self.location = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.close()
        if self.waiter is not None and not self.waiter.done():
            status = self.parser.get_status_code()
            self.waiter.set_result(Answer(status, self.location, b"".join(self.body)))

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def send(self, request: bytes) -> Answer:
        if self.transport is None or self.closed:
            raise HttpError("connection is closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Traffic:
    """The requests of the mix for one buyer, each with the check of its answer."""

    def __init__(self, host: str, buyer: Buyer, lessons: Lessons, rng: random.Random) -> None:
        self.lessons = lessons
        self.rng = rng
        common = (
            f"Host: {host}\r\nCookie: {buyer.cookie}\r\nAccept-Language: en\r\n"
            "User-Agent: rapport-load\r\n"
        )
        page = "Accept: text/html\r\n"
        self.gets = {
            "catalog": f"GET / HTTP/1.1\r\n{common}{page}\r\n".encode(),
            "product": f"GET /products/{COURSE} HTTP/1.1\r\n{common}{page}\r\n".encode(),
            "library": f"GET /library HTTP/1.1\r\n{common}{page}\r\n".encode(),
            "stream": (
                f"GET /api/v1/lessons/{lessons.stream}/stream?redirect=1 HTTP/1.1\r\n{common}\r\n"
            ).encode(),
        }
        self.post_head = (
            f"POST /api/v1/events HTTP/1.1\r\n{common}x-csrftoken: {buyer.csrf}\r\n"
            "Content-Type: application/json\r\n"
        )
        # The buyer's player: which video, where in it, whether its opening was reported.
        self.video, self.duration = rng.choice(lessons.videos)
        self.position = 0.0
        self.opened = False

    def request(self, name: str) -> bytes:
        if name != "events":
            return self.gets[name]
        body = json.dumps({"events": self.batch()}).encode()
        return f"{self.post_head}Content-Length: {len(body)}\r\n\r\n".encode() + body

    def batch(self) -> list[dict[str, object]]:
        """BATCH fresh events as the player and reader send them: the video opened when
        started, 2-second stretches of it, now and then a page of the PDF read."""
        at = datetime.now(UTC).isoformat()
        events: list[dict[str, object]] = []
        while len(events) < BATCH:
            if not self.opened:
                events.append(self._event("lesson_opened", self.video, at))
                self.opened = True
            elif self.lessons.pdf is not None and self.rng.random() < 0.1:
                pdf, pages = self.lessons.pdf
                page = self.rng.randint(1, pages)
                events.append(self._event("page_viewed", pdf, at, page=page, seconds=12))
            elif self.position + 2 > self.duration:  # watched to the end: the next video
                self.video, self.duration = self.rng.choice(self.lessons.videos)
                self.position, self.opened = 0.0, False
            else:
                start, self.position = self.position, self.position + 2
                events.append(
                    self._event("video_progress", self.video, at, start=start, end=start + 2)
                )
        return events

    @staticmethod
    def _event(kind: str, lesson: int, at: str, **values: object) -> dict[str, object]:
        return {"id": str(uuid.uuid4()), "kind": kind, "lesson_id": lesson, "at": at, **values}

    @staticmethod
    def problem(name: str, answer: Answer) -> str | None:
        """Why the answer is wrong, or None."""
        if name == "stream":
            if answer.status != 302:
                return f"status {answer.status}"
            if not answer.location.startswith("/media/"):
                return "redirect not to /media/"
            return None
        if name == "events":
            if answer.status != 202:
                return f"status {answer.status}"
            outcome = json.loads(answer.body)
            if outcome.get("accepted") != BATCH:
                return f"events not accepted: {outcome.get('reasons') or outcome}"
            return None
        return None if answer.status == 200 else f"status {answer.status}"


async def connect(port: int) -> Connection:
    _, conn = await asyncio.get_running_loop().create_connection(Connection, "127.0.0.1", port)
    return conn


async def one_client(
    port: int, traffic: Traffic, stop_at: float, endpoints: dict[str, Endpoint], patience: float
) -> None:
    """Request after request until stop_at, each timed and checked; a connection that failed
    is replaced (reconnecting is part of the next request's time)."""
    names = [name for name, _ in MIX]
    weights = [weight for _, weight in MIX]
    conn: Connection | None = None
    while time.monotonic() < stop_at:
        name = traffic.rng.choices(names, weights)[0]
        request = traffic.request(name)
        endpoint = endpoints[name]
        started = time.perf_counter()
        problem: str | None
        try:
            async with asyncio.timeout(patience):
                if conn is None or conn.closed:
                    conn = await connect(port)
                answer = await conn.send(request)
            problem = traffic.problem(name, answer)
            if problem is None and name == "events":
                endpoint.events_acknowledged += BATCH
        except TimeoutError:
            problem = f"no answer within {patience:.0f} s"
        except (OSError, HttpError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        endpoint.latencies.append(time.perf_counter() - started)
        if problem is not None:
            endpoint.errors[problem[:160]] += 1
            if conn is not None:  # start afresh: the connection may hold a half answer
                conn.close()
                conn = None
    if conn is not None:
        conn.close()


async def drive(
    port: int, buyers: list[Buyer], lessons: Lessons, seconds: float, patience: float
) -> tuple[dict[str, Endpoint], float]:
    """Every buyer's client at once for `seconds`; the endpoints' figures and the time the
    run took (the last answers arrive a little after `seconds`)."""
    endpoints = {name: Endpoint(name) for name, _ in MIX}
    host = f"127.0.0.1:{port}"
    # A seeded generator per client: the same mix and event values on every run.
    clients = [Traffic(host, buyer, lessons, random.Random(n)) for n, buyer in enumerate(buyers)]
    started = time.monotonic()
    stop_at = started + seconds
    await asyncio.gather(
        *(one_client(port, traffic, stop_at, endpoints, patience) for traffic in clients)
    )
    return endpoints, time.monotonic() - started


# -- report -------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(q * len(sorted_values))))
    return sorted_values[rank - 1]


def line(label: str, latencies: list[float], errors: int, extra: str = "") -> str:
    ordered = sorted(latencies)
    p50, p99 = percentile(ordered, 0.50) * 1000, percentile(ordered, 0.99) * 1000
    return (
        f"load {label}requests={len(ordered)} errors={errors} "
        f"p50_ms={p50:.1f} p99_ms={p99:.1f}{extra}"
    )


def server_problems(logs: Path, stderr: str) -> Counter[str]:
    """The server's own warnings and errors, counted by event and message: the cause behind
    a 5xx or a broken connection, for the reader of a failed run."""
    found: Counter[str] = Counter()
    with logs.open(errors="replace") as lines:
        for text_line in lines:
            if '"level": "warning"' not in text_line and '"level": "error"' not in text_line:
                continue
            try:
                entry = json.loads(text_line)
            except ValueError:
                found[text_line.strip()[:300]] += 1
                continue
            detail = str(entry.get("error") or entry.get("exception") or "")
            found[f"{entry.get('level')} {entry.get('event')}: {detail[:300]}"] += 1
    for text_line in stderr.splitlines():
        if "ERROR" in text_line or "Error" in text_line:
            found[text_line.strip()[:300]] += 1
    return found


def run() -> int:
    clients = int(env_number("LOAD_CLIENTS", 100, 1))
    seconds = env_number("LOAD_SECONDS", 60, 1)
    workers = int(env_number("LOAD_WORKERS", 2, 1))
    patience = env_number("LOAD_TIMEOUT", 30, 1)
    with tempfile.TemporaryDirectory(prefix="rapport-load-") as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        database_url = stack.enter_context(database(tmp))
        env = rapport_env(tmp)
        env |= {
            "RAPPORT_DATABASE_URL": database_url,
            "RAPPORT_SECRET_KEY": secrets.token_urlsafe(32),
        }
        log(f"load: migrating and publishing the demo on {make_url(database_url).drivername}")
        setup_catalog(tmp, env)
        lessons, tokens = create_buyers(database_url, clients)
        server = ServeProcess(env, workers, tmp / "server.log")
        server.env["RAPPORT_BASE_URL"] = server.url
        stack.callback(server.stop)
        server.start()
        log(f"load: signing in {clients} buyers through login links")
        buyers: list[Buyer] = []
        for token in tokens:
            cookie = sign_in(server, token)
            csrf = re.search(r"rapport_csrf=([^;]+)", cookie)
            assert csrf is not None
            buyers.append(Buyer(cookie, csrf.group(1)))
        before_events = stored_events(database_url)
        log(
            f"load: {clients} clients for {seconds:.0f} s against {workers} workers, "
            f"mix {' '.join(f'{n}={w}' for n, w in MIX)}"
        )
        cpu_client, cpu_server = resource.getrusage(resource.RUSAGE_SELF), server.cpu_seconds()
        cpu_database = database_cpu_seconds(database_url)
        endpoints, elapsed = run_loop(server.port, buyers, lessons, seconds, patience)
        after = resource.getrusage(resource.RUSAGE_SELF)
        client_cpu = after.ru_utime + after.ru_stime - cpu_client.ru_utime - cpu_client.ru_stime
        server_cpu = server.cpu_seconds() - cpu_server
        database_cpu = database_cpu_seconds(database_url) - cpu_database
        log(
            f"load: CPU over the run, in cores (of {os.cpu_count()}): client "
            f"{client_cpu / elapsed:.2f}, server {server_cpu / elapsed:.2f}, "
            f"PostgreSQL backends {database_cpu / elapsed:.2f}"
        )
        problems = server_problems(server.logs, server.stderr_text())
        server.stop()  # before counting: its connections may be all the server allows
        acknowledged = sum(e.events_acknowledged for e in endpoints.values())
        try:
            gained = stored_events(database_url) - before_events
        except BenchError as exc:
            endpoints["events"].errors[str(exc)[:300]] += 1
        else:
            if gained != acknowledged:
                endpoints["events"].errors[
                    f"the database gained {gained} events, {acknowledged} were acknowledged"
                ] += 1

    total_errors = 0
    everything: list[float] = []
    for endpoint in endpoints.values():
        errors = sum(endpoint.errors.values())
        total_errors += errors
        everything += endpoint.latencies
        rate = endpoint.requests / elapsed
        print(line(f"{endpoint.name} ", endpoint.latencies, errors, f" rps={rate:.0f}"))
        for problem, count in endpoint.errors.most_common(10):
            print(f"load {endpoint.name} error count={count}: {problem}")
    if problems:
        print(f"load server logged {sum(problems.values())} warning/error line(s):")
        for problem, count in problems.most_common(10):
            print(f"load server count={count}: {problem}")
    print(line("", everything, total_errors, f" seconds={elapsed:.1f}"), flush=True)
    return 1 if total_errors else 0


def run_loop(
    port: int, buyers: list[Buyer], lessons: Lessons, seconds: float, patience: float
) -> tuple[dict[str, Endpoint], float]:
    import uvloop

    return uvloop.run(drive(port, buyers, lessons, seconds, patience))


def _terminate(signum: int, _frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so that the server is stopped and the database dropped.
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run()
    except BenchError as exc:
        print(f"load FAILED: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
