"""Structured JSON logs with the request id bound to every line of a request."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def configure_logging(*, level: str = "INFO", json: bool = True) -> None:
    """JSON lines to stdout (or readable lines for a terminal), stdlib logging routed too."""
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )


_json = json.JSONEncoder(ensure_ascii=True).encode


def write_access_line(method: str, path: str, status: int, ms: float, request_id: str) -> None:
    """One JSON line per request, in the shape of the structlog lines, without its pipeline.

    The access line is on every request, the cached catalog ones too: the full structlog
    chain cost as much as the rest of the request (see bench/README.md).
    """
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    sys.stdout.write(
        f'{{"event": "http.request", "level": "info", "timestamp": "{now}", '
        f'"request_id": "{request_id}", "method": {_json(method)}, "path": {_json(path)}, '
        f'"status": {status}, "ms": {ms}}}\n'
    )


class RequestContextMiddleware:
    """Request id (kept from X-Request-ID when sane), one access line, security headers.

    Plain ASGI rather than BaseHTTPMiddleware: it sits on every request, the hot ones too.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        access_log: bool = True,
        media_origins: tuple[str, ...] = (),
        form_origins: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.access_log = access_log
        # Media may come from the S3 endpoint (presigned URLs), which may be plain http in dev.
        media = " ".join(("'self'", "blob:", "https:", *media_origins))
        forms = " ".join(("'self'", "https:", *form_origins))
        csp = (
            f"default-src 'self'; img-src 'self' data: {media}; media-src {media};"
            f" connect-src {media}; worker-src 'self' blob:; frame-ancestors 'none';"
            f" font-src 'self' data:; base-uri 'self'; form-action {forms}; object-src 'none'"
        )
        self.HEADERS = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"strict-origin-when-cross-origin"),
            (b"x-frame-options", b"DENY"),
            (b"content-security-policy", csp.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if 0 < len(candidate) <= 64 and candidate.replace("-", "").isalnum():
                    request_id = candidate
                break
        if not request_id:
            import os

            request_id = os.urandom(8).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        start = time.perf_counter()
        status = 500
        rid = request_id.encode()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid))
                present = {h[0].lower() for h in headers}
                headers.extend(h for h in self.HEADERS if h[0] not in present)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if self.access_log:
                ms = round((time.perf_counter() - start) * 1000, 2)
                write_access_line(scope["method"], scope["path"], status, ms, request_id)
            structlog.contextvars.unbind_contextvars("request_id")
