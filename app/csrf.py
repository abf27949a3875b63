"""CSRF protection (double-submit cookie): the signed cookie `rapport_csrf` and the same value
in the form field `csrftoken` or the header `x-csrftoken` on every unsafe request.

Our own middleware, not asgi-csrf: its last release (0.11) builds python-multipart's
FormParser with a `FileClass` argument that python-multipart 0.0.26 removed, so every
multipart POST raised a TypeError (a 500); the versions before 0.0.26 have published CVEs, so
pinning them back is no way out. The tokens are the ones asgi-csrf made (itsdangerous, same
salt), so cookies already in browsers stay valid.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from itsdangerous import BadSignature, URLSafeSerializer
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.datastructures import MutableHeaders
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import wants_json
from app.guard import MALFORMED
from app.web import choose_locale, render, translations

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

SCOPE_KEY = "csrftoken"  # scope[SCOPE_KEY]() gives the token for a form (app/web.py)
FORM_FIELD = "csrftoken"
HEADER = b"x-csrftoken"
SALT = "csrftoken"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
MAX_TOKEN_FIELD = 1024  # a token is ~70 characters; a longer field is not one

Refuse = Callable[[Scope, Send], Awaitable[None]]


class _Refused(Exception):
    """The body holds no usable token: a file before it, or nothing readable."""


class _Disconnected(Exception):
    pass


class _Malformed(Exception):
    """A form body or cookie header that is not UTF-8: 400 (README "Requests and headers")."""


def csrf_exempt(scope: Scope) -> bool:
    """Webhooks are signed by their sender and carry no browser cookies worth protecting."""
    return str(scope.get("path", "")).startswith("/webhooks/")


class CsrfMiddleware:
    """Refuses unsafe requests without the cookie's token (403), before any route reads them.

    Passed without a token: safe methods, `skip(scope)`, and `Authorization: Bearer` (which
    only the JSON API honours, and never together with the cookie). A multipart body is read
    only up to the token field, which must come before any file; what was read is replayed to
    the app.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        secret: str,
        cookie_name: str,
        cookie_secure: bool,
        skip: Callable[[Scope], bool] = csrf_exempt,
        refuse: Refuse | None = None,
    ) -> None:
        self.app = app
        self.signer = URLSafeSerializer(secret)
        self.cookie_name = cookie_name
        self.cookie_secure = cookie_secure
        self.skip = skip
        self.refuse = refuse or csrf_failed

    def _cookie_token(self, scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"cookie":
                try:
                    text = value.decode("utf-8")
                except UnicodeDecodeError:
                    raise _Malformed() from None
                token = cookie_parser(text).get(self.cookie_name)
                if token:
                    try:
                        self.signer.loads(token, salt=SALT)
                    except BadSignature:
                        return None
                    return token
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            cookie_token = self._cookie_token(scope)
        except _Malformed:
            await _malformed(send)
            return
        token = cookie_token or self.signer.dumps(secrets.token_urlsafe(12), salt=SALT)
        used = False

        def get_token() -> str:
            nonlocal used
            used = True
            return token

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and used:
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                headers.add_vary_header("Cookie")  # the page holds this visitor's token
                if cookie_token is None:
                    attrs = [f"{self.cookie_name}={token}", "Path=/", "SameSite=Lax"]
                    if self.cookie_secure:
                        attrs.append("Secure")
                    headers.append("set-cookie", "; ".join(attrs))
            await send(message)

        scope = {**scope, SCOPE_KEY: get_token}
        if scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send_with_cookie)
            return
        headers = dict(scope["headers"])
        sent = headers.get(HEADER, b"").decode("latin-1")
        if (cookie_token is not None and _same(sent, cookie_token)) or self.skip(scope):
            await self.app(scope, receive, send_with_cookie)
            return
        if headers.get(b"authorization", b"").startswith(b"Bearer "):
            await self.app(scope, receive, send_with_cookie)
            return
        kind, params = parse_options_header(headers.get(b"content-type", b""))
        try:
            if kind == b"application/x-www-form-urlencoded":
                found, replay = await _urlencoded_token(receive)
            elif kind == b"multipart/form-data" and params.get(b"boundary"):
                found, replay = await _multipart_token(params[b"boundary"], receive)
            else:
                raise _Refused()
        except _Disconnected:
            return  # nobody is left to answer
        except _Malformed:
            await _malformed(send_with_cookie)
            return
        except _Refused:
            found, replay = None, receive
        if cookie_token is None or found is None or not _same(found, cookie_token):
            await self.refuse(scope, send_with_cookie)
            return
        await self.app(scope, replay, send_with_cookie)


def _same(sent: str, expected: str) -> bool:
    return secrets.compare_digest(sent.encode("utf-8", "replace"), expected.encode())


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    async def replay() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replay


async def _next_chunk(receive: Receive, messages: list[Message]) -> tuple[bytes, bool]:
    message = await receive()
    if message["type"] != "http.request":
        raise _Disconnected()
    messages.append(message)
    return message.get("body", b""), bool(message.get("more_body", False))


async def _urlencoded_token(receive: Receive) -> tuple[str | None, Receive]:
    """The whole body is read (RequestGuard caps it), then handed on unchanged."""
    messages: list[Message] = []
    chunks = []
    more = True
    while more:
        chunk, more = await _next_chunk(receive, messages)
        chunks.append(chunk)
    try:
        body = b"".join(chunks).decode("utf-8")
        fields = dict(parse_qsl(body, keep_blank_values=True, encoding="utf-8", errors="strict"))
    except UnicodeDecodeError:
        raise _Malformed() from None
    return fields.get(FORM_FIELD), _replaying(messages, receive)


class _TokenField:
    """Callbacks for python-multipart's streaming parser: stop at the token field."""

    def __init__(self) -> None:
        self.header_name = bytearray()
        self.header_value = bytearray()
        self.disposition = b""
        self.in_token = False
        self.value = bytearray()
        self.token: str | None = None

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_data,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name.extend(data[start:end])

    def header_data(self, data: bytes, start: int, end: int) -> None:
        self.header_value.extend(data[start:end])

    def part_begin(self) -> None:
        self.disposition = b""
        self.in_token = False
        self.value.clear()

    def header_end(self) -> None:
        if bytes(self.header_name).strip().lower() == b"content-disposition":
            self.disposition = bytes(self.header_value)
        self.header_name.clear()
        self.header_value.clear()

    def headers_finished(self) -> None:
        _kind, params = parse_options_header(self.disposition)
        if b"filename" in params or b"filename*" in params:
            raise _Refused()  # a file before the token: the token must come first
        self.in_token = params.get(b"name") == FORM_FIELD.encode()

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_token:
            self.value.extend(data[start:end])
            if len(self.value) > MAX_TOKEN_FIELD:
                raise _Refused()

    def part_end(self) -> None:
        if self.in_token:
            self.token = self.value.decode("utf-8", "replace")


async def _multipart_token(boundary: bytes, receive: Receive) -> tuple[str | None, Receive]:
    """Reads the body only as far as the token field; what was read is replayed."""
    messages: list[Message] = []
    field = _TokenField()
    parser = MultipartParser(boundary, field.callbacks())
    more = True
    while more and field.token is None:
        chunk, more = await _next_chunk(receive, messages)
        try:
            parser.write(chunk)
        except (FormParserError, ValueError) as exc:
            raise _Refused() from exc
    return field.token, _replaying(messages, receive)


async def _malformed(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(MALFORMED)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": MALFORMED})


async def csrf_failed(scope: Scope, send: Send) -> None:
    headers = dict(scope.get("headers") or [])
    accept = headers.get(b"accept", b"").decode("latin-1")
    path = str(scope.get("path", ""))
    if wants_json(path, accept):
        body = b'{"detail": "CSRF token missing or invalid", "status": 403}'
        ctype = b"application/json"
    else:
        locale = choose_locale(None, headers.get(b"accept-language", b"").decode("latin-1"))
        _ = translations(locale).gettext
        body = render(
            "errors/error.html",
            locale=locale,
            status=403,
            title=_("Access denied"),
            message=_(
                "This form has expired or was sent from another site. "
                "Please go back, reload the page and try again."
            ),
            request_id="",
            path=path,
        ).encode()
        ctype = b"text/html; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
