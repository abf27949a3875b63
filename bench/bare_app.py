"""The baseline server: a bare FastAPI app with one async endpoint returning fixed bytes.

Served by the same uvicorn command line as ours (see `_common.uvicorn_args`), it is what a
page costs with nothing but FastAPI in the way. BENCH_BODY_FILE names the file whose bytes
`GET /` returns (for the catalog figure: our own rendered storefront).
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, Response

BODY = Path(os.environ["BENCH_BODY_FILE"]).read_bytes()


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/")
    async def page() -> Response:
        return Response(content=BODY, media_type="text/html; charset=utf-8")

    return app
