"""stream_url: req/s of a signed-in buyer's stream link against a bare async constant 302.

ours: `GET /api/v1/lessons/{id}/stream?redirect=1` for a non-preview video lesson of
trust-at-a-distance, sent with the cookies of a buyer who owns the course and signed in
through a login link (the session cookie and the CSRF cookie, as a browser sends them). Each
request runs our whole request path as deployed: the outer middleware (request id, access line),
then the stream fast path (app/delivery/fastpath.py), which checks the session cookie, runs the
one access query on the event loop through its own connection (sqlite3; on PostgreSQL a psycopg
async pool, requests arriving together sharing one query) and signs a local media link; it
answers 302 to it.
Measured twice: on SQLite (a file in a temporary folder) and on PostgreSQL (a temporary
database created on BENCH_PG_URL and dropped at the end; skipped, with a message, when that
server cannot be reached). baseline: `GET /redirect` of `bench/bare_app.py`, an `async def`
returning a constant RedirectResponse (302), sent the same headers, under the same uvicorn
command line. All three servers run at once and are measured in alternating rounds, so both
figures share one baseline.
"""

from __future__ import annotations

import http.client
import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

from sqlalchemy import make_url, text
from sqlmodel import Session

from bench._common import (
    BenchError,
    Result,
    Server,
    WrkRun,
    bench_rounds,
    bench_seconds,
    log,
    median,
    parse_wrk,
    rapport_env,
    run_cli,
    setup_catalog,
    warmup_seconds,
    wrk_path,
)

PG_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BUYER = "buyer@example.com"
COURSE = "trust-at-a-distance"
GOAL = 0.25
CONNECTIONS = 64


@dataclass
class Target:
    """One server under test: where to send wrk and with which Cookie header."""

    label: str
    server: Server
    path: str
    headers: tuple[str, ...]
    rps: list[float]


def grant_course(database_url: str) -> int:
    """Give BUYER an entitlement to COURSE; the id of a non-preview video lesson of it."""
    import app.models  # noqa: F401 - every table, for the entitlement's foreign keys
    from app.checkout.models import Entitlement
    from app.db import make_engine

    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            row = session.execute(
                text(
                    "SELECT l.id, l.product_id FROM lesson l JOIN product p ON p.id = l.product_id"
                    " JOIN asset a ON a.id = l.asset_id WHERE p.slug = :slug AND"
                    " l.kind = 'video' AND NOT l.is_preview AND a.status = 'ready'"
                    " ORDER BY l.position LIMIT 1"
                ),
                {"slug": COURSE},
            ).first()
            if row is None:
                raise BenchError(f"{COURSE} has no published non-preview video lesson")
            user = session.execute(
                text('SELECT id FROM "user" WHERE email = :email'), {"email": BUYER}
            ).first()
            if user is None:
                raise BenchError(f"create-user did not create {BUYER}")
            session.add(Entitlement(user_id=user.id, product_id=row.product_id))
            session.commit()
            return int(row.id)
    finally:
        engine.dispose()


def _request(
    server: Server, method: str, path: str, headers: Mapping[str, str], body: str = ""
) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request(method, path, body=body.encode() if body else None, headers=dict(headers))
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def _cookies(resp: http.client.HTTPResponse) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for header in resp.headers.get_all("Set-Cookie") or []:
        jar.load(header)
    return {name: morsel.value for name, morsel in jar.items()}


def sign_in(server: Server, token: str) -> str:
    """Sign BUYER in with a login-link token, as a browser would; the Cookie header value.

    A browser keeps both cookies it was given: the CSRF cookie from the confirmation page and
    the session cookie from the sign-in, and sends both with every later request.
    """
    resp = _request(server, "GET", f"/auth/magic?token={token}", {})
    csrf = _cookies(resp).get("rapport_csrf")
    if resp.status != 200 or not csrf:
        raise BenchError(
            f"{server.label}: GET /auth/magic answered {resp.status} without a rapport_csrf "
            f"cookie\n--- its stderr ---\n{server.stderr_text()}"
        )
    form = urlencode({"token": token, "csrftoken": csrf, "next": "/account"})
    resp = _request(
        server,
        "POST",
        "/auth/magic",
        {
            "Cookie": f"rapport_csrf={csrf}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        form,
    )
    session = _cookies(resp).get("rapport_session")
    if resp.status != 303 or not session:
        raise BenchError(
            f"{server.label}: POST /auth/magic answered {resp.status} without a rapport_session "
            f"cookie\n--- its stderr ---\n{server.stderr_text()}"
        )
    return f"rapport_csrf={csrf}; rapport_session={session}"


def expect_302(target: Target, location_prefix: str) -> None:
    resp = _request(
        target.server, "GET", target.path, dict(h.split(": ", 1) for h in target.headers)
    )
    location = resp.getheader("Location") or ""
    if resp.status != 302 or not location.startswith(location_prefix):
        raise BenchError(
            f"{target.label}: GET {target.path} answered {resp.status} (Location {location!r}), "
            f"not 302 to {location_prefix}...\n--- its stderr ---\n{target.server.stderr_text()}"
        )


def wrk_with_headers(target: Target, seconds: int) -> WrkRun:
    """One wrk run with the target's headers; any non-2xx/3xx or socket error fails it."""
    cmd = [wrk_path(), "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s"]
    for header in target.headers:
        cmd += ["-H", header]
    cmd.append(target.server.url + target.path)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise BenchError(
            f"wrk failed (exit {proc.returncode}) against {target.label}\n{proc.stderr}"
        )
    run = parse_wrk(proc.stdout)  # 3xx count as success: wrk only reports non-2xx/3xx
    bad = {k: v for k, v in run.socket_errors.items() if v}
    if run.non_2xx_3xx or bad:
        raise BenchError(
            f"wrk against {target.label} saw {run.non_2xx_3xx} non-2xx/3xx responses and "
            f"socket errors {bad or 'none'}\n{proc.stdout}\n"
            f"--- its stderr ---\n{target.server.stderr_text()}"
        )
    return run


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """A fresh database on PG_URL, dropped afterwards; None (logged) when PG is unreachable."""
    import psycopg

    admin = make_url(PG_URL).set(drivername="postgresql")
    name = f"rapport_bench_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        log(f"stream_url: PostgreSQL at {PG_URL} is not usable ({exc}); no stream_url_pg figure")
        yield None
        return
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log(f"stream_url: dropped database {name}")


@dataclass(frozen=True)
class Prepared:
    figure: str
    label: str
    env: dict[str, str]
    lesson_id: int
    token: str  # a login-link token for BUYER


def prepare(tmp: Path, figure: str, label: str, database_url: str | None) -> Prepared:
    """Migrate, publish, create the buyer, their entitlement and a login link."""
    log(f"stream_url: {label}: migrating, publishing, a buyer with {COURSE}")
    tmp.mkdir()
    env = rapport_env(tmp)
    env["RAPPORT_SECRET_KEY"] = secrets.token_urlsafe(32)
    if database_url:
        env["RAPPORT_DATABASE_URL"] = database_url
    setup_catalog(tmp, env)
    run_cli(["create-user", BUYER], env, "create-user")
    lesson_id = grant_course(env["RAPPORT_DATABASE_URL"])
    printed = run_cli(["login-link", BUYER], env, "login-link")
    match = re.search(r"token=([A-Za-z0-9_\-]+)", printed)
    if match is None:
        raise BenchError(f"no token=... in the output of login-link:\n{printed}")
    return Prepared(figure, label, env, lesson_id, match.group(1))


def start_all(stack: ExitStack, servers: Sequence[Server]) -> None:
    """Start the servers side by side (each takes seconds to import); all stopped by `stack`."""
    for server in servers:
        stack.callback(server.stop)
    with ThreadPoolExecutor(len(servers)) as pool:
        for future in [pool.submit(server.start) for server in servers]:
            future.result()


def run() -> list[Result]:
    wrk_path()  # fail fast, before any setup, when wrk is missing
    with tempfile.TemporaryDirectory(prefix="rapport-bench-") as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        pg_url = stack.enter_context(postgres_database())
        variants: list[tuple[str, str, str | None]] = [("stream_url", "ours-sqlite", None)]
        if pg_url is not None:
            variants.append(("stream_url_pg", "ours-pg", pg_url))
        with ThreadPoolExecutor(len(variants)) as pool:
            futures = [pool.submit(prepare, tmp / lbl, fig, lbl, url) for fig, lbl, url in variants]
            prepared = [future.result() for future in futures]

        location = "/media/assets/" + "0" * 32 + ".mp4?exp=1&disp=inline&type=video%2Fmp4&sig=x"
        base_env = {**rapport_env(tmp), "BENCH_REDIRECT_TO": location}
        servers = [Server(p.label, "app.main:create_app", p.env, factory=True) for p in prepared]
        base_server = Server("baseline", "bench.bare_app:create_app", base_env, factory=True)
        start_all(stack, [*servers, base_server])

        ours: dict[str, Target] = {}
        for p, server in zip(prepared, servers, strict=True):
            cookie = f"Cookie: {sign_in(server, p.token)}"
            path = f"/api/v1/lessons/{p.lesson_id}/stream?redirect=1"
            ours[p.figure] = Target(p.label, server, path, (cookie,), [])
            expect_302(ours[p.figure], "/media/assets/")
            log(f"stream_url: {p.label}: {path} answers 302 for the signed-in buyer")
        # The same request headers as ours, so that only the answering differs.
        baseline = Target("baseline", base_server, "/redirect", ours["stream_url"].headers, [])
        expect_302(baseline, location)

        targets = [*ours.values(), baseline]
        for target in targets:
            wrk_with_headers(target, warmup_seconds())
        seconds, rounds = bench_seconds(), bench_rounds()
        for i in range(rounds):
            for target in targets:
                rps = wrk_with_headers(target, seconds).requests_per_sec
                target.rps.append(rps)
                log(f"round {i + 1}/{rounds} {target.label}: {rps:.0f} req/s")
    base_rps = median(baseline.rps)
    results = [Result(name, median(t.rps), base_rps, "req/s") for name, t in ours.items()]
    for result in results:
        verdict = "meets" if result.ratio >= GOAL else "MISSES"
        log(f"{result.name}: ratio {result.ratio:.2f} {verdict} the goal of >= {GOAL}")
    return results
