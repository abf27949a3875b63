"""The baseline server: a bare FastAPI app with async endpoints and nothing else in the way.

Served by the same uvicorn command line as ours (see `_common.uvicorn_args`), it is what a
response costs with nothing but FastAPI in the way:

- `GET /` returns the bytes of the file named by BENCH_BODY_FILE (for the catalog figure: our
  own rendered storefront; empty when unset);
- `GET /redirect` answers a constant 302 (for the stream_url figure) to BENCH_REDIRECT_TO.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, Response
from fastapi.responses import RedirectResponse

_BODY_FILE = os.environ.get("BENCH_BODY_FILE", "")
BODY = Path(_BODY_FILE).read_bytes() if _BODY_FILE else b""
REDIRECT_TO = os.environ.get("BENCH_REDIRECT_TO", "/media/assets/bench.mp4")


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def page() -> Response:
        return Response(content=BODY, media_type="text/html; charset=utf-8")

    @app.get("/redirect")
    async def redirect() -> RedirectResponse:
        return RedirectResponse(REDIRECT_TO, status_code=302)

    return app
