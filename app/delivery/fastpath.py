"""The stream-URL hot path, answered before routing: `GET /api/v1/lessons/{id}/stream?redirect=1`.

Only the granted case is answered here (one query, a signature, a 302); everything else —
sign-in needed, revoked, unknown — falls through to the regular route, so that every error
answer stays in one place.
"""

from __future__ import annotations

import json
import re
from base64 import b64decode
from http.cookies import CookieError, SimpleCookie
from typing import Any

import anyio.to_thread
import itsdangerous
from starlette.types import ASGIApp, Receive, Scope, Send

from app.delivery.service import Access, media_grant, stream_url

PATH = re.compile(r"/api/v1/lessons/([1-9]\d{0,9})/stream")


class StreamFastPath:
    def __init__(self, app: ASGIApp, *, state: Any, session_cookie: str, max_age: int) -> None:
        self.app = app
        self.state = state
        self.cookie = session_cookie
        self.max_age = max_age
        # The same signature as Starlette's SessionMiddleware, to read its cookie.
        self.signer = itsdangerous.TimestampSigner(str(state.settings.secret_key))

    def _session(self, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        for name, value in headers:
            if name != b"cookie":
                continue
            try:
                morsel = SimpleCookie(value.decode("latin-1")).get(self.cookie)
                if morsel is None:
                    return {}
                raw = self.signer.unsign(morsel.value.encode(), max_age=self.max_age)
                data = json.loads(b64decode(raw))
            except (CookieError, itsdangerous.BadSignature, ValueError):
                return {}
            return data if isinstance(data, dict) else {}
        return {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or scope["query_string"] != b"redirect=1"
        ):
            await self.app(scope, receive, send)
            return
        match = PATH.fullmatch(scope["path"])
        if match is None or int(match.group(1)) > 2**31 - 1:
            await self.app(scope, receive, send)
            return
        auth = self._session(scope["headers"]).get("auth")
        user_id = auth.get("uid") if isinstance(auth, dict) else None
        version = auth.get("ver") if isinstance(auth, dict) else None
        grant = await anyio.to_thread.run_sync(
            lambda: media_grant(
                self.state.engine,
                lesson_id=int(match.group(1)),
                user_id=user_id if isinstance(user_id, int) else None,
                session_version=version if isinstance(version, int) else None,
            )
        )
        if grant.access is not Access.granted:
            await self.app(scope, receive, send)  # the route gives the right error answer
            return
        url, _expires = stream_url(
            self.state.storage, grant, ttl=self.state.settings.download_url_ttl
        )
        await send(
            {
                "type": "http.response.start",
                "status": 302,
                "headers": [
                    (b"location", url.encode()),
                    (b"cache-control", b"private, no-store"),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})
