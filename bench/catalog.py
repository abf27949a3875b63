"""catalog: req/s of our storefront `GET /` against a bare FastAPI app serving the same bytes.

Ours runs the whole request path (middleware, access log line, locale negotiation, page cache
with its change check); the page is rendered once and then served from the cache. The baseline
returns the very same body from a bare `async def` endpoint under the same uvicorn flags.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench._common import (
    BenchError,
    Result,
    Server,
    compare_rps,
    log,
    rapport_env,
    setup_catalog,
    wrk_path,
)


def run() -> list[Result]:
    wrk_path()  # fail fast, before any setup, when wrk is missing
    with tempfile.TemporaryDirectory(prefix="rapport-bench-") as tmpdir:
        tmp = Path(tmpdir)
        env = rapport_env(tmp)
        log("catalog: migrating and publishing the demo courses")
        setup_catalog(tmp, env)
        with Server("ours", "app.main:create_app", env, factory=True) as ours:
            body = ours.get("/")
            if b"<html" not in body.lower():
                raise BenchError("our GET / did not return an HTML page")
            body_file = tmp / "catalog-body.html"
            body_file.write_bytes(body)
            log(f"catalog: our storefront is {len(body)} bytes")
            base_env = {**env, "BENCH_BODY_FILE": str(body_file)}
            with Server("baseline", "bench.bare_app:create_app", base_env, factory=True) as base:
                if base.get("/") != body:
                    raise BenchError("the baseline does not serve the same bytes as ours")
                ours_rps, base_rps = compare_rps(ours, base, "/")
    return [Result("catalog", ours_rps, base_rps, "req/s")]
