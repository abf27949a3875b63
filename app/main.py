"""The application factory."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app import ops
from app.accounts import pages as accounts_pages
from app.accounts import routes as accounts_routes
from app.admin import pages as admin_pages
from app.admin.visits import VisitCounter, VisitRecorder
from app.authoring import pages as authoring_pages
from app.authoring import routes as authoring_routes
from app.authoring import upload_routes
from app.catalog import pages as catalog_pages
from app.catalog.cache import SESSION_COOKIE, CachedPages, PageCache
from app.catalog.changes import CatalogWatcher
from app.checkout import pages as checkout_pages
from app.checkout import routes as checkout_routes
from app.checkout.attribution import FirstTouch
from app.checkout.providers import make_provider
from app.config import Settings, get_settings
from app.csrf import CsrfMiddleware
from app.db import make_engine
from app.delivery import pages as delivery_pages
from app.delivery import routes as delivery_routes
from app.delivery.fastpath import StreamFastPath
from app.delivery.storage import make_storage
from app.engagement import routes as engagement_routes
from app.engagement.fastpath import make_event_writer
from app.errors import install_error_handlers
from app.guard import HeaderLimit, RequestGuard
from app.inquiries import pages as inquiry_pages
from app.jobs.base import JobContext
from app.jobs.runner import make_runner
from app.logs import RequestContextMiddleware, configure_logging
from app.mail import make_mailer
from app.ratelimit import make_limiter
from app.web import LOCALE_COOKIE, LOCALES, safe_next

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application

STATIC = Path(__file__).resolve().parent / "static"
mimetypes.add_type("video/mp2t", ".ts")
mimetypes.add_type("text/vtt", ".vtt")
mimetypes.add_type("text/javascript", ".mjs")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app: engine, storage, catalog change feed, routes, error pages."""
    settings = settings or get_settings()
    configure_logging(level=settings.log_level, json=settings.log_json)
    engine = make_engine(settings.database_url)
    storage = make_storage(settings)
    watcher = CatalogWatcher(settings.database_url)
    event_writer = make_event_writer(settings.database_url, watcher)  # None on SQLite

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await watcher.start()
        app.state.visits.start()
        if event_writer is not None:
            await event_writer.open()
        try:
            yield
        finally:
            if event_writer is not None:
                await event_writer.close()
            app.state.visits.stop()
            app.state.jobs.shutdown()
            await watcher.stop()
            engine.dispose()

    app = FastAPI(
        title="Rapport",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI would load its scripts from a CDN, which our CSP refuses
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.storage = storage
    app.state.catalog_watcher = watcher
    app.state.event_writer = event_writer
    app.state.page_cache = PageCache(watcher)
    app.state.limiter = make_limiter(settings.redis_url)
    app.state.mailer = make_mailer(settings)
    app.state.payments = make_provider(settings)
    app.state.visits = VisitRecorder(engine, own_host=urlsplit(settings.base_url).hostname or "")
    # In-process jobs use the app's own engine, storage and mailer, read when each job runs.
    app.state.jobs = make_runner(
        settings,
        lambda: JobContext(
            settings=app.state.settings,
            engine=app.state.engine,
            storage=app.state.storage,
            mailer=app.state.mailer,
            jobs=app.state.jobs,
        ),
    )

    media_origins: tuple[str, ...] = ()
    if settings.storage == "s3" and settings.s3_endpoint_url:
        endpoint = urlsplit(settings.s3_endpoint_url)
        media_origins = (f"{endpoint.scheme}://{endpoint.netloc}",)
    # Checkout forms redirect to the payment page: Stripe's is https (allowed), a Stripe-like
    # API on another address (a local fake in tests) must be named.
    form_origins: tuple[str, ...] = ()
    if settings.stripe_api_base:
        api = urlsplit(settings.stripe_api_base)
        form_origins = (f"{api.scheme}://{api.netloc}",)
    # Innermost first: session, CSRF, request guard, cached pages, visit counter, request context.
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key,
        session_cookie=SESSION_COOKIE,
        max_age=settings.session_max_age,
        same_site="lax",
        https_only=settings.secure_cookies,
    )
    app.add_middleware(
        CsrfMiddleware,
        secret=settings.secret_key,
        cookie_name="rapport_csrf",
        cookie_secure=settings.secure_cookies,
    )
    # Bodies are capped at 1 MiB, except the upload chunks of local mode (streamed to disk).
    app.add_middleware(
        RequestGuard,
        larger=[(upload_routes.CHUNK_PATH, settings.upload_chunk_mib * 1024 * 1024)],
    )
    app.add_middleware(
        StreamFastPath,
        state=app.state,
        session_cookie=SESSION_COOKIE,
        max_age=settings.session_max_age,
    )
    app.add_middleware(
        CachedPages, cache=app.state.page_cache, default_locale=settings.default_locale
    )
    if settings.count_visits:
        # Outside CachedPages, which answers cached pages before anything inside it runs.
        app.add_middleware(VisitCounter, recorder=app.state.visits)
    app.add_middleware(
        FirstTouch,
        own_host=urlsplit(settings.base_url).hostname or "",
        secure=settings.secure_cookies,
    )
    app.add_middleware(HeaderLimit)
    app.add_middleware(
        RequestContextMiddleware,
        access_log=settings.access_log,
        media_origins=media_origins,
        form_origins=form_origins,
    )
    install_error_handlers(app)
    # Order matters for speed: the catalog is the hottest route, so it is matched first.
    app.include_router(catalog_pages.router)
    app.include_router(delivery_routes.api)  # stream URLs: the next hottest path
    app.include_router(engagement_routes.api)
    app.include_router(ops.router)
    app.include_router(inquiry_pages.router)
    app.include_router(accounts_pages.router)
    app.include_router(accounts_routes.router)
    app.include_router(admin_pages.router)
    app.include_router(checkout_pages.router)
    app.include_router(checkout_routes.router)
    app.include_router(delivery_routes.router)
    app.include_router(delivery_pages.router)
    app.include_router(authoring_pages.router)
    app.include_router(authoring_routes.router)
    app.include_router(upload_routes.router)

    @app.get("/lang/{code}", include_in_schema=False)
    async def switch_language(code: str, request: Request, next: str = "/") -> RedirectResponse:
        response = RedirectResponse(safe_next(next), status_code=303)
        if code in LOCALES:
            response.set_cookie(
                LOCALE_COOKIE,
                code,
                max_age=365 * 24 * 3600,
                samesite="lax",
                httponly=True,
                secure=settings.base_url.startswith("https"),
            )
        return response

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    return app


def create_served_app() -> ASGIApp:
    """The app as `rapport serve` runs it: client address and scheme from X-Forwarded-For and
    -Proto, trusted only from FORWARDED_ALLOW_IPS (default 127.0.0.1,::1), as uvicorn does."""
    trusted = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
    # uvicorn's middleware declares the ASGI types its own way; both are the ASGI 3 interface.
    inner = cast("ASGI3Application", create_app())
    return cast(ASGIApp, ProxyHeadersMiddleware(inner, trusted_hosts=trusted))
