"""Error pages and JSON errors: clear 4xx/503 answers, never a bare 500 for client input."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.delivery.storage import StorageUnavailable
from app.web import negotiate_locale, render, translations

log = structlog.get_logger()


class NotFound(StarletteHTTPException):
    def __init__(self) -> None:
        super().__init__(status_code=404)


TITLES = {
    400: "Bad request",
    403: "Access denied",
    404: "Page not found",
    405: "Method not allowed",
    413: "Too large",
    416: "Range not satisfiable",
    422: "Invalid input",
    429: "Too many requests",
    500: "Something went wrong",
    503: "Temporarily unavailable",
}
MESSAGES = {
    404: "The page you are looking for does not exist or is no longer available.",
    403: "You do not have access to this page.",
    500: "An unexpected error occurred. We have logged it and will look into it.",
    503: "A service Rapport depends on is not reachable right now. Please try again shortly.",
    422: "Some of the information sent is not valid. Please check the form and try again.",
    429: "Too many attempts. Please wait a moment and try again.",
}


def wants_json(path: str, accept: str) -> bool:
    """Whether an error for this request should be JSON (API clients) rather than a page."""
    if path.startswith(("/api/", "/webhooks/", "/healthz", "/readyz", "/media/")):
        return True
    return "application/json" in accept and "text/html" not in accept


def _wants_json(request: Request) -> bool:
    return wants_json(request.url.path, request.headers.get("accept", ""))


def error_response(
    request: Request, status: int, detail: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """A JSON error for API clients, or the error page in the shared layout."""
    title = TITLES.get(status, "Error")
    if _wants_json(request):
        return JSONResponse(
            {"detail": detail or ("Not found" if status == 404 else title), "status": status},
            status_code=status,
            headers=headers,
        )
    locale = negotiate_locale(request, request.app.state.settings.default_locale)
    tr = translations(locale)
    message = detail or MESSAGES.get(status) or tr.gettext(title)
    html = render(
        "errors/error.html",
        locale=locale,
        status=status,
        title=tr.gettext(title),
        message=tr.gettext(message),
        request_id=request.scope.get("state", {}).get("request_id", ""),
        path=request.url.path,
    )
    return HTMLResponse(html, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) and exc.status_code != 404 else None
        return error_response(request, exc.status_code, detail, getattr(exc, "headers", None))

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if _wants_json(request):
            errors = [
                {"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()
            ]
            return JSONResponse({"detail": errors, "status": 422}, status_code=422)
        return error_response(request, 422)

    async def unavailable(request: Request, exc: Exception) -> Response:
        log.warning("dependency.unavailable", error=str(exc), kind=type(exc).__name__)
        return error_response(request, 503, None, {"Retry-After": "5"})

    async def crash(request: Request, exc: Exception) -> Response:
        log.exception("http.unhandled", path=request.url.path)
        return error_response(request, 500)

    from urllib.parse import quote

    from fastapi.responses import RedirectResponse

    from app.deps import Forbidden, LoginRequired
    from app.mail import MailError
    from app.ratelimit import RateLimited, RateLimitUnavailable

    async def login_required(request: Request, exc: Exception) -> Response:
        if _wants_json(request):
            return JSONResponse(
                {"detail": "Sign in or send a valid API token", "status": 401},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/auth/login?next={quote(target, safe='')}", status_code=303)

    async def forbidden(request: Request, exc: Exception) -> Response:
        return error_response(request, 403)

    async def rate_limited(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RateLimited)
        return error_response(request, 429, None, {"Retry-After": str(exc.retry_after)})

    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(Forbidden, forbidden)
    app.add_exception_handler(RateLimited, rate_limited)
    app.add_exception_handler(RateLimitUnavailable, unavailable)
    app.add_exception_handler(MailError, unavailable)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StorageUnavailable, unavailable)
    app.add_exception_handler(OperationalError, unavailable)
    app.add_exception_handler(InterfaceError, unavailable)
    app.add_exception_handler(Exception, crash)
