"""CSRF settings for asgi-csrf (double-submit cookie): what is exempt, and the refusal page."""

from __future__ import annotations

from typing import Any

from starlette.types import Scope, Send

from app.errors import wants_json
from app.web import choose_locale, render, translations


class _EveryPath:
    """asgi-csrf skips cookie-less POSTs unless the path is "always protected": protect all,
    so that a login form cannot be forged either."""

    def __contains__(self, _path: object) -> bool:
        return True


EVERY_PATH: Any = _EveryPath()


def csrf_exempt(scope: Scope) -> bool:
    """Webhooks are signed by their sender and carry no browser cookies worth protecting."""
    return str(scope.get("path", "")).startswith("/webhooks/")


async def csrf_failed(scope: Scope, send: Send, _message_id: object) -> None:
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
