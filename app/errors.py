"""Error pages and JSON errors: clear 4xx/503 answers, never a bare 500 for client input."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi import routing as fastapi_routing
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
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
            # "type" too: the body must match the HTTPValidationError schema that FastAPI
            # documents for every 422 (the raw "input" and "ctx" stay out: they can echo
            # secrets or huge bodies back).
            errors = [
                {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                for e in exc.errors()
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
    _document_errors(app)


ERROR_SCHEMA = {
    "type": "object",
    "title": "ErrorBody",
    "properties": {"detail": {"type": "string"}, "status": {"type": "integer"}},
    "required": ["detail", "status"],
}


def _calls(dependant: Dependant) -> Iterator[object]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _calls(dep)


def _api_routes(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    """Each API route with its full path as /openapi.json names it. FastAPI 0.165+ keeps
    included routers as lazy branches (walked with `iter_route_contexts`, as its own OpenAPI
    generator does); older versions copy every route into `app.routes`."""
    iter_contexts = getattr(fastapi_routing, "iter_route_contexts", None)
    if iter_contexts is None:
        for route in app.routes:
            if isinstance(route, APIRoute):
                yield route.path_format, route
        return
    for context in iter_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and context.path_format:
            yield context.path_format, route


def _document_errors(app: FastAPI) -> None:
    """Declare in /openapi.json the errors that shared machinery answers for an operation, so
    that no route has to repeat them (and none can forget them):

    - 400 for a route with a body: FastAPI refuses a body it cannot decode (not UTF-8);
    - 401 for a route that reads the user (deps.get_optional_user and what builds on it): no
      sign-in, or an invalid API token, is answered by `login_required` above;
    - 403 for a route behind deps.get_author or deps.get_admin (`forbidden` above).

    A route's own `responses=` for the same status wins.
    """
    from app.deps import get_admin, get_author, get_optional_user

    build = app.openapi

    def openapi() -> dict[str, Any]:
        # FastAPI's schema, cached on the app until the routes change; completed in place once.
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if components.get("ErrorBody") is ERROR_SCHEMA:
            return schema
        components["ErrorBody"] = ERROR_SCHEMA
        body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        for path, route in _api_routes(app):
            if not route.include_in_schema:
                continue
            calls = set(_calls(route.dependant))
            shared: dict[str, str] = {}
            if route.body_field is not None:
                shared["400"] = "the body could not be read"
            if get_optional_user in calls:
                shared["401"] = "not signed in, or an invalid API token"
            if get_author in calls or get_admin in calls:
                shared["403"] = "signed in without the role this needs"
            for method in route.methods or ():
                operation = schema["paths"].get(path, {}).get(method.lower())
                if operation is None:
                    continue
                for status, description in shared.items():
                    operation["responses"].setdefault(
                        status, {"description": description, "content": body}
                    )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
