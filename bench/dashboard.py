"""dashboard_p50: the admin dashboard's median latency at 100k buyers against 10k buyers.

ours: `GET /admin` (the default range, the last 90 days) signed in as the admin, on the
PostgreSQL database `rapport_bench` that `make bench-data` fills with 100,000 buyers, 5M
engagement events and the rollups. baseline: the same request on `rapport_bench_10k`, the same
generator with 10,000 buyers. Both span the same two years, so the 90 days hold ten times as
many buyers in ours: the ratio is the growth of the page's cost with the data (ours ÷ baseline,
lower is better; goal < 2, and ours ≤ 300 ms).

One uvicorn worker per database, both running at once; sequential requests (a person looking
at a page, not a load test), alternating between the two servers in rounds; the median of all.
When the databases are missing (bench-data takes minutes and is not part of `make bench`),
the figure is skipped with a message and no line.
"""

from __future__ import annotations

import http.client
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import psycopg

from bench._common import (
    BenchError,
    Result,
    Server,
    bench_rounds,
    env_number,
    log,
    median,
    rapport_env,
    run_cli,
)
from bench.data import ADMIN, DATABASES, MARK, PG_URL, app_url, libpq_url

OURS, BASELINE = "rapport_bench", "rapport_bench_10k"
PATH = "/admin"


@dataclass(frozen=True)
class GrowthRatio(Result):
    """A cost whose ratio is ours/baseline: how many times the page's cost grows."""

    higher_is_better: bool = False

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else 0.0


def ready(database: str) -> str | None:
    """Why the database cannot be measured, or None when bench-data filled it."""
    try:
        with psycopg.connect(libpq_url(PG_URL), connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                (database,),
            ).fetchone()
    except psycopg.OperationalError as exc:
        return f"PostgreSQL is not reachable ({exc})".strip()
    if row is None:
        return f"database {database} does not exist"
    if not (row[0] or "").startswith(f"{MARK} buyers={DATABASES[database]} "):
        return f"database {database} is incomplete (bench-data did not finish)"
    return None


def _request(
    port: int, method: str, path: str, headers: Mapping[str, str], body: str = ""
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body.encode() if body else None, headers=dict(headers))
        resp = conn.getresponse()
        data = resp.read()
        jar: SimpleCookie = SimpleCookie()
        for header in resp.headers.get_all("Set-Cookie") or []:
            jar.load(header)
        return resp.status, {k: m.value for k, m in jar.items()}, data
    finally:
        conn.close()


def admin_cookies(server: Server, env: Mapping[str, str]) -> str:
    """Sign the admin in through a printed login link, as a browser would; the Cookie header."""
    printed = run_cli(["login-link", ADMIN], env, "login-link")
    match = re.search(r"token=([A-Za-z0-9_\-]+)", printed)
    if not match:
        raise BenchError(f"login-link printed no token:\n{printed}")
    token = match.group(1)
    status, cookies, _ = _request(server.port, "GET", f"/auth/magic?token={token}", {})
    csrf = cookies.get("rapport_csrf")
    if status != 200 or not csrf:
        raise BenchError(f"{server.label}: GET /auth/magic answered {status} without a CSRF cookie")
    status, cookies, _ = _request(
        server.port,
        "POST",
        "/auth/magic",
        {"Cookie": f"rapport_csrf={csrf}", "Content-Type": "application/x-www-form-urlencoded"},
        urlencode({"token": token, "csrftoken": csrf, "next": "/account"}),
    )
    session = cookies.get("rapport_session")
    if status != 303 or not session:
        raise BenchError(f"{server.label}: POST /auth/magic answered {status} without a session")
    return f"rapport_csrf={csrf}; rapport_session={session}"


def timed_get(server: Server, cookie: str) -> float:
    """Milliseconds of one GET of the dashboard; anything but a full page fails the figure."""
    start = time.perf_counter()
    status, _, body = _request(server.port, "GET", PATH, {"Cookie": cookie, "Accept": "text/html"})
    ms = (time.perf_counter() - start) * 1000
    if status != 200 or b'class="kpi-value"' not in body:
        raise BenchError(
            f"{server.label}: GET {PATH} answered {status}\n--- its stderr ---\n"
            f"{server.stderr_text()}"
        )
    return ms


def run() -> list[Result]:
    """The dashboard's p50 on both databases, or nothing when they are not there."""
    for database in (OURS, BASELINE):
        why = ready(database)
        if why is not None:
            hint = (
                "Start it, or set BENCH_PG_URL."
                if why.startswith("PostgreSQL")
                else "Run `make bench-data` first (a few minutes)."
            )
            log(f"dashboard_p50 skipped: {why}. {hint}")
            return []
    per_round = int(env_number("BENCH_DASHBOARD_REQUESTS", 15, 1))
    rounds = bench_rounds()
    with tempfile.TemporaryDirectory(prefix="rapport-bench-") as tmpdir:
        started: list[Server] = []
        servers: list[tuple[Server, str, list[float]]] = []
        try:
            for label, database in (("100k", OURS), ("10k", BASELINE)):
                env = {
                    **rapport_env(Path(tmpdir) / label),
                    "RAPPORT_DATABASE_URL": app_url(database),
                    "RAPPORT_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
                }
                server = Server(
                    label, "app.main:create_app", env, factory=True, ready_path="/healthz"
                )
                started.append(server)
                server.start()
                servers.append((server, admin_cookies(server, env), []))
            for server, cookie, _ in servers:
                for _ in range(5):  # warm: connections, compiled templates, database caches
                    timed_get(server, cookie)
            for i in range(rounds):
                for server, cookie, samples in servers:
                    samples.extend(timed_get(server, cookie) for _ in range(per_round))
                    log(f"round {i + 1}/{rounds} {server.label}: p50 {median(samples):.1f} ms")
        finally:
            for server in started:
                server.stop()
    (_, _, ours), (_, _, baseline) = servers
    return [GrowthRatio("dashboard_p50", median(ours), median(baseline), "ms")]
