"""Where a visitor first came from (UTM parameters, referrer), kept in a first-party cookie."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "rapport_src"
UTM = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
MAX_AGE = 90 * 24 * 3600


def read_attribution(request: Request) -> dict[str, Any]:
    """The first-landing data of this visitor, or {} (never trusted for anything but reports)."""
    raw = request.cookies.get(COOKIE, "")
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode() + b"==").decode())
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: str(v)[:200] for k, v in data.items() if k in (*UTM, "referrer", "landing", "at")}


class FirstTouch:
    """On a visitor's first page view, remember UTM parameters and an outside referrer."""

    def __init__(self, app: ASGIApp, *, own_host: str, secure: bool) -> None:
        self.app = app
        self.own_host = own_host
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        referrer = ""
        has_cookie = False
        for name, value in scope["headers"]:
            if name == b"referer":
                referrer = value.decode("latin-1")[:500]
            elif name == b"cookie" and COOKIE.encode() in value:
                has_cookie = True
        if has_cookie:
            await self.app(scope, receive, send)
            return
        params = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        data: dict[str, str] = {k: params[k][:200] for k in UTM if params.get(k)}
        host = urlsplit(referrer).hostname or ""
        if host and host != self.own_host:
            data["referrer"] = referrer[:300]
        if not data:
            await self.app(scope, receive, send)
            return
        data["landing"] = scope["path"][:200]
        data["at"] = str(int(time.time()))
        value = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
        cookie = f"{COOKIE}={value}; Path=/; Max-Age={MAX_AGE}; SameSite=Lax; HttpOnly"
        if self.secure:
            cookie += "; Secure"

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
            await send(message)

        await self.app(scope, receive, send_with_cookie)
