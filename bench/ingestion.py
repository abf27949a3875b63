"""ingestion: engagement events stored per second through our API, against a raw COPY.

ours: `POST /api/v1/events` on our app server (`app.main:create_app` under the shared uvicorn
command line, BENCH_INGEST_WORKERS workers, default 2) on a temporary PostgreSQL database,
migrated and published with the CLI. wrk sends batches of 50 events with fresh UUIDs, built by
a Lua script, for BUYERS buyers who own both demo products and are signed in through login
links (session and CSRF cookies, as a browser sends them). Each batch is checked (session,
every event's values and live entitlement), stored once and folded into the rollups in one
transaction. The figure is wrk's requests/s x 50, after checking that the database gained
exactly the acknowledged events (none rejected, none lost; a batch cut off by the end of the
run may add its 50). The CPU time per event of the app's processes and of PostgreSQL's
backends is logged for both sides: on a shared machine it moves much less than the rates.

baseline: rows/s of a psycopg COPY of the same rows (same columns, same mix of kinds) into the
same table, in one transaction per round, measured in the same run, alternating with ours.

A trivial endpoint (`trivial_app`, a bare async POST that reads the body and answers a
constant 202) is measured once with the same wrk script, to show that wrk is not the limit.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from fastapi import FastAPI, Request, Response
from sqlalchemy import make_url

from app.engagement.fastpath import APPLICATION_NAME
from bench._common import (
    BenchError,
    Result,
    Server,
    WrkRun,
    bench_rounds,
    bench_seconds,
    env_number,
    log,
    median,
    parse_wrk,
    rapport_env,
    setup_catalog,
    warmup_seconds,
    wrk_path,
)
from bench.stream_url import sign_in, start_all

PG_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
GOAL = 0.2
BATCH = 50
BUYERS = 64  # one per connection on average: real buyers rarely send two batches at once
CONNECTIONS = 64
COPY_ROWS = 200_000  # per baseline round: a second or more, enough for a steady rate


def workers() -> int:
    """Uvicorn workers of our server (BENCH_INGEST_WORKERS, default 2: one per core)."""
    return int(env_number("BENCH_INGEST_WORKERS", 2, 1))


@dataclass(frozen=True)
class Catalog:
    """The lessons the events are about, and the buyers who send them."""

    videos: list[tuple[int, int, float]]  # lesson id, product id, duration
    pdf: tuple[int, int, int]  # lesson id, product id, pages
    texts: list[tuple[int, int]]  # lesson id, product id
    buyers: list[int]
    tokens: list[str]  # a login-link token per buyer


def trivial_app() -> FastAPI:
    """What a POST costs with nothing but FastAPI in the way: wrk's ceiling for this script."""
    app = FastAPI()
    answer = b'{"accepted":50,"duplicate":0,"rejected":0,"reasons":{},"errors":[],"engaged":false}'

    @app.post("/api/v1/events")
    async def events(request: Request) -> Response:
        await request.body()
        return Response(answer, status_code=202, media_type="application/json")

    @app.get("/")
    async def index() -> Response:
        return Response(b"ok")

    return app


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on PG_URL, dropped afterwards."""
    admin = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"rapport_bench_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise BenchError(f"ingestion needs PostgreSQL at {PG_URL} (BENCH_PG_URL): {exc}") from exc
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log(f"ingestion: dropped database {name}")


def prepare(database_url: str) -> Catalog:
    """BUYERS buyers, each entitled to both demo products, each with a login link."""
    from sqlmodel import Session, text

    import app.models  # noqa: F401 - every table, for the foreign keys
    from app.accounts import service as accounts
    from app.accounts.models import Role
    from app.checkout.models import Entitlement
    from app.db import make_engine

    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            rows = session.execute(
                text(
                    "SELECT l.id, l.product_id, l.kind, a.duration_seconds, a.page_count"
                    " FROM lesson l JOIN product p ON p.id = l.product_id"
                    " LEFT JOIN asset a ON a.id = l.asset_id"
                    " WHERE p.status = 'published' ORDER BY l.id"
                )
            ).all()
            videos = [
                (r.id, r.product_id, float(r.duration_seconds))
                for r in rows
                if r.kind == "video" and (r.duration_seconds or 0) > 4
            ]
            pdfs = [(r.id, r.product_id, int(r.page_count)) for r in rows if r.kind == "pdf"]
            texts = [(r.id, r.product_id) for r in rows if r.kind == "text"]
            if not videos or not pdfs or not pdfs[0][2] or not texts:
                raise BenchError("the demo courses lack a video, a PDF with pages or a text lesson")
            buyers: list[int] = []
            tokens: list[str] = []
            for n in range(BUYERS):
                email = f"buyer{n}@example.com"
                user = accounts.create_user(session=session, email=email, role=Role.buyer)
                assert user.id is not None
                buyers.append(user.id)
                for product_id in sorted({r.product_id for r in rows}):
                    session.add(Entitlement(user_id=user.id, product_id=product_id))
                tokens.append(
                    accounts.create_login_link(session=session, email=email, ttl_seconds=3600)
                )
            session.commit()
    finally:
        engine.dispose()
    return Catalog(videos, pdfs[0], texts, buyers, tokens)


# The batch a player and reader might send, the same in Lua (for wrk) and in Python (for the
# probe and the COPY rows): every 10th event a page read, the 2nd one the video opened, the
# 3rd a text lesson completed, the rest 2-second stretches of one video at random places.


def sample_batch(catalog: Catalog, rng: random.Random) -> list[dict[str, object]]:
    video, _product, duration = rng.choice(catalog.videos)
    pdf, _pdf_product, pages = catalog.pdf
    text_lesson = rng.choice(catalog.texts)[0]
    at = int(time.time()) * 1000
    events: list[dict[str, object]] = []
    for i in range(1, BATCH + 1):
        event: dict[str, object] = {"id": str(uuid.uuid4()), "at": at}
        if i % 10 == 0:
            event |= {"kind": "page_viewed", "lesson_id": pdf, "page": rng.randint(1, pages)}
            event["seconds"] = 5
        elif i == 2:
            event |= {"kind": "lesson_opened", "lesson_id": video}
        elif i == 3:
            event |= {"kind": "lesson_completed", "lesson_id": text_lesson}
        else:
            start = rng.randint(0, int(duration) - 3)
            event |= {"kind": "video_progress", "lesson_id": video, "start": start}
            event |= {"end": start + 2, "rate": 1}
        events.append(event)
    return events


LUA = """-- written by bench/ingestion.py for one wrk run
local prefix = "%(prefix)s"
local buyers = {%(buyers)s}
local videos = {%(videos)s}
local pdf, pages = %(pdf)d, %(pages)d
local texts = {%(texts)s}
local threads = 0
local n, seq = 0, 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  math.randomseed(tid * 7919 + os.time())
end

function request()
  n = n + 1
  local headers = buyers[((n * 2 + tid) %% #buyers) + 1]
  local video = videos[math.random(#videos)]
  local text = texts[math.random(#texts)]
  local at = os.time() * 1000
  local parts = {}
  for i = 1, %(batch)d do
    seq = seq + 1
    local id = string.format("%%s-%%04x-4000-8000-%%012x", prefix, tid, seq)
    local e
    if i %% 10 == 0 then
      e = string.format('{"id":"%%s","kind":"page_viewed","lesson_id":%%d,"at":%%d,' ..
        '"page":%%d,"seconds":5}', id, pdf, at, math.random(pages))
    elseif i == 2 then
      e = string.format('{"id":"%%s","kind":"lesson_opened","lesson_id":%%d,"at":%%d}',
        id, video[1], at)
    elseif i == 3 then
      e = string.format('{"id":"%%s","kind":"lesson_completed","lesson_id":%%d,"at":%%d}',
        id, text, at)
    else
      local start = math.random(0, video[2] - 3)
      e = string.format('{"id":"%%s","kind":"video_progress","lesson_id":%%d,"at":%%d,' ..
        '"start":%%d,"end":%%d,"rate":1}', id, video[1], at, start, start + 2)
    end
    parts[i] = e
  end
  local body = '{"events":[' .. table.concat(parts, ",") .. ']}'
  return wrk.format("POST", "/api/v1/events", headers, body)
end
"""


def lua_script(catalog: Catalog, cookies: list[str]) -> str:
    """The wrk script, with a fresh id prefix: every run sends events never sent before."""

    def headers(cookie: str) -> str:
        csrf = cookie.split("rapport_csrf=", 1)[1].split(";", 1)[0]
        return (
            f'{{["Cookie"]="{cookie}", ["X-CSRFToken"]="{csrf}",'
            ' ["Content-Type"]="application/json"}'
        )

    return LUA % {
        "prefix": secrets.token_hex(4),
        "buyers": ", ".join(headers(c) for c in cookies),
        "videos": ", ".join(f"{{{lid}, {int(duration)}}}" for lid, _p, duration in catalog.videos),
        "pdf": catalog.pdf[0],
        "pages": catalog.pdf[2],
        "texts": ", ".join(str(lid) for lid, _p in catalog.texts),
        "batch": BATCH,
    }


def wrk_post(server: Server, script: Path, seconds: int) -> WrkRun:
    """One wrk run of the script; any non-2xx/3xx or socket error fails the benchmark."""
    cmd = [wrk_path(), "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "20s"]
    cmd += ["-s", str(script), server.url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise BenchError(
            f"wrk failed (exit {proc.returncode}) against {server.label}\n{proc.stderr}"
        )
    run = parse_wrk(proc.stdout)
    bad = {k: v for k, v in run.socket_errors.items() if v}
    if run.non_2xx_3xx or bad:
        raise BenchError(
            f"wrk against {server.label} saw {run.non_2xx_3xx} non-2xx/3xx responses and "
            f"socket errors {bad or 'none'}\n{proc.stdout}\n"
            f"--- its stderr ---\n{server.stderr_text()}"
        )
    return run


# CPU time per event, read from /proc (Linux; the figure is skipped elsewhere): on a shared
# machine the rates move with the neighbours' load, the CPU time each event costs much less.
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes (those gone meanwhile count zero)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (uvicorn's workers)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return pids


def connect(conninfo: str) -> psycopg.Connection[Any]:
    """A connection for the bench's own queries, patient with a busy shared server (whose
    connection slots other test runs may hold for a moment)."""
    for attempt in range(10):
        try:
            return psycopg.connect(conninfo)
        except psycopg.OperationalError as exc:
            if attempt == 9:
                raise BenchError(f"could not connect to PostgreSQL: {exc}") from exc
            time.sleep(1)
    raise AssertionError("unreachable")


def backends(conninfo: str, application_name: str) -> list[int]:
    """PostgreSQL's processes serving the app's event pools (PostgreSQL runs on this host)."""
    with connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            (application_name,),
        ).fetchall()
    return [int(r[0]) for r in rows]


def stored_events(conninfo: str) -> int:
    with connect(conninfo) as conn:
        row = conn.execute("SELECT count(*) FROM engagement_event").fetchone()
    return int(row[0]) if row else 0


def probe(server: Server, catalog: Catalog, cookie: str) -> None:
    """One batch through our server: all 50 accepted, or the figure would mean nothing."""
    import http.client
    import json

    csrf = cookie.split("rapport_csrf=", 1)[1].split(";", 1)[0]
    body = json.dumps({"events": sample_batch(catalog, random.Random(1))})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Cookie": cookie, "X-CSRFToken": csrf, "Content-Type": "application/json"}
    conn.request("POST", "/api/v1/events", body=body, headers=headers)
    resp = conn.getresponse()
    answer = resp.read().decode()
    conn.close()
    if resp.status != 202 or json.loads(answer).get("accepted") != BATCH:
        raise BenchError(
            f"{server.label}: a batch of {BATCH} was answered {resp.status} {answer[:500]}\n"
            f"--- its stderr ---\n{server.stderr_text()}"
        )


def copy_rows(catalog: Catalog, count: int, rng: random.Random) -> list[tuple[object, ...]]:
    """The rows our server would store for `count` events of sample batches."""
    products = {lid: pid for lid, pid, _d in catalog.videos}
    products[catalog.pdf[0]] = catalog.pdf[1]
    products.update(dict(catalog.texts))
    now = datetime.now(UTC)
    rows: list[tuple[object, ...]] = []
    while len(rows) < count:
        user = rng.choice(catalog.buyers)
        for e in sample_batch(catalog, rng):
            lesson = int(e["lesson_id"])  # type: ignore[call-overload]
            rows.append(
                (
                    user,
                    uuid.UUID(str(e["id"])),
                    products[lesson],
                    lesson,
                    e["kind"],
                    e.get("start"),
                    e.get("end"),
                    e.get("rate"),
                    e.get("page"),
                    e.get("seconds"),
                    now,
                    now,
                )
            )
    return rows[:count]


COPY_SQL = (
    'COPY engagement_event (user_id, client_id, product_id, lesson_id, kind, start, "end",'
    " rate, page, seconds, occurred_at, received_at) FROM STDIN"
)


def copy_rate(conninfo: str, rows: list[tuple[object, ...]]) -> tuple[float, float, float]:
    """Rows/s of one COPY of the rows into the events table, committed; and the CPU seconds
    per row of this process and of PostgreSQL's backend."""
    with connect(conninfo) as conn:
        backend = [conn.info.backend_pid]
        cpu_client, cpu_backend = time.process_time(), cpu_seconds(backend)
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(COPY_SQL) as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        elapsed = time.perf_counter() - started
        client = (time.process_time() - cpu_client) / len(rows)
        return len(rows) / elapsed, client, (cpu_seconds(backend) - cpu_backend) / len(rows)


def run() -> list[Result]:
    wrk_path()  # fail fast, before any setup, when wrk is missing
    with tempfile.TemporaryDirectory(prefix="rapport-bench-") as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        database_url = stack.enter_context(postgres_database())
        conninfo = make_url(database_url).set(drivername="postgresql")
        dsn = conninfo.render_as_string(hide_password=False)
        log("ingestion: migrating, publishing, buyers who own both products")
        env = rapport_env(tmp)
        env |= {
            "RAPPORT_DATABASE_URL": database_url,
            "RAPPORT_SECRET_KEY": secrets.token_urlsafe(32),
            "UVICORN_WORKERS": str(workers()),  # read by uvicorn's command line
        }
        setup_catalog(tmp, env)
        catalog = prepare(database_url)
        ours = Server("ours", "app.main:create_app", env, factory=True, ready_path="/healthz")
        trivial = Server("trivial", "bench.ingestion:trivial_app", rapport_env(tmp), factory=True)
        start_all(stack, [ours, trivial])
        cookies = [sign_in(ours, token) for token in catalog.tokens]
        probe(ours, catalog, cookies[0])
        script = tmp / "events.lua"

        def fresh_script() -> Path:
            script.write_text(lua_script(catalog, cookies))
            return script

        seconds, rounds = bench_seconds(), bench_rounds()
        ceiling = wrk_post(trivial, fresh_script(), seconds).requests_per_sec * BATCH
        trivial.stop()
        log(f"ingestion: wrk against a trivial endpoint: {ceiling:.0f} events/s")
        rng = random.Random(7)
        wrk_post(ours, fresh_script(), warmup_seconds())
        copy_rate(dsn, copy_rows(catalog, COPY_ROWS // 10, rng))
        ours_rates: list[float] = []
        copy_rates: list[float] = []
        for i in range(rounds):
            before = stored_events(dsn)
            app_pids = process_tree(ours.proc.pid) if ours.proc else []
            pg_pids = backends(dsn, APPLICATION_NAME)
            cpu_app, cpu_pg = cpu_seconds(app_pids), cpu_seconds(pg_pids)
            run_ = wrk_post(ours, fresh_script(), seconds)
            cpu_app, cpu_pg = cpu_seconds(app_pids) - cpu_app, cpu_seconds(pg_pids) - cpu_pg
            gained = stored_events(dsn) - before
            match = re.search(r"(\d+) requests in", run_.output)
            answered = int(match.group(1)) * BATCH if match else 0
            # At least what was acknowledged; a batch cut off by the end of the run may
            # have been stored without wrk counting its answer.
            if not answered <= gained <= answered + CONNECTIONS * BATCH:
                raise BenchError(
                    f"ours acknowledged {answered} events (202) but stored {gained}: "
                    "events were rejected, lost or stored twice\n"
                    f"--- its stderr ---\n{ours.stderr_text()}"
                )
            rate = run_.requests_per_sec * BATCH
            ours_rates.append(rate)
            per_event = 1e6 / max(gained, 1)
            log(
                f"round {i + 1}/{rounds} ours: {rate:.0f} events/s; CPU per event: app"
                f" {cpu_app * per_event:.1f} us, PostgreSQL {cpu_pg * per_event:.1f} us"
            )
            copied, client, backend = copy_rate(dsn, copy_rows(catalog, COPY_ROWS, rng))
            copy_rates.append(copied)
            log(
                f"round {i + 1}/{rounds} COPY: {copied:.0f} rows/s; CPU per row: client"
                f" {client * 1e6:.1f} us, PostgreSQL {backend * 1e6:.1f} us"
            )
        result = Result("ingestion", median(ours_rates), median(copy_rates), "events/s")
        if result.ours > 0.8 * ceiling:
            raise BenchError(
                f"ours ({result.ours:.0f} events/s) is close to what wrk can send "
                f"({ceiling:.0f}): the load generator would be the limit"
            )
    verdict = "meets" if result.ratio >= GOAL else "MISSES"
    log(f"ingestion: ratio {result.ratio:.2f} {verdict} the goal of >= {GOAL}")
    return [result]
