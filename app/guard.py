"""Request hygiene before anything parses a body: size limits and well-formed form headers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from http.cookies import CookieError

from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_413 = b'{"detail": "Request body too large", "status": 413}'
MALFORMED = b'{"detail": "Malformed request: cookies and form fields must be UTF-8", "status": 400}'


async def _reject(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    pass


MAX_HEADERS = 64 * 1024
JSON_431 = b'{"detail": "Request headers too large", "status": 431}'


class HeaderLimit:
    """Answer 431 to a request whose head (target and headers) is over `max_bytes` in all.

    The HTTP server reads at most about twice that before it answers 431 itself (granian's
    buffer, app/__main__.py); this makes the limit exact, whatever server runs the app.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_HEADERS) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
            for name, value in scope["headers"]:
                size += len(name) + len(value) + 4  # ": " and CRLF
            if size > self.max_bytes:
                await _reject(send, 431, JSON_431)
                return
        await self.app(scope, receive, send)


class RequestGuard:
    """Refuse bodies over the limit (413) and multipart bodies without a boundary (400).

    Runs before the CSRF middleware (app/csrf.py), which reads form bodies up to the token.
    `larger` names the routes that take bigger bodies on purpose (path pattern, byte cap):
    the local-storage upload chunks (app/authoring/upload_routes.py), streamed to disk.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int = 1024 * 1024,
        larger: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.larger = [(re.compile(pattern), cap) for pattern, cap in larger]

    def limit(self, path: str) -> int:
        """The body cap for a path: the default unless it is one of the larger routes."""
        for pattern, cap in self.larger:
            if pattern.fullmatch(path):
                return cap
        return self.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            started = False

            async def send_tracking(message: Message) -> None:
                nonlocal started
                started = started or message["type"] == "http.response.start"
                await send(message)

            try:
                await self.app(scope, receive, send_tracking)
            except (UnicodeDecodeError, CookieError):
                # Cookie headers that are not UTF-8, read as text by a layer inside.
                if not started:
                    await _reject(send, 400, MALFORMED)
            return
        max_body = self.limit(scope["path"])
        length = None
        content_type = b""
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value
        if length is not None:
            try:
                if int(length) > max_body:
                    await _reject(send, 413, JSON_413)
                    return
            except ValueError:
                await _reject(send, 400, b'{"detail": "Invalid Content-Length", "status": 400}')
                return
        if content_type.split(b";", 1)[0].strip().lower() == b"multipart/form-data" and (
            b"; boundary=" not in content_type
        ):
            await _reject(send, 400, b'{"detail": "Malformed multipart body", "status": 400}')
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _reject(send, 413, JSON_413)
        except (UnicodeDecodeError, CookieError):
            # Form bodies or cookies that are not UTF-8, read as text by a layer inside.
            if not started:
                await _reject(send, 400, MALFORMED)
