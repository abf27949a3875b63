"""Catalog HTML: the storefront and the product pages, served from the page cache."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from app.catalog import service
from app.catalog.cache import SESSION_COOKIE, PageCache, page_key
from app.errors import NotFound
from app.web import negotiate_locale, page, render

router = APIRouter()
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")
HTML = "text/html; charset=utf-8"
VARY = {"Vary": "Accept-Language, Cookie", "Cache-Control": "no-cache"}

# A page is a template and the catalog data it shows (None: no such page).
PageData = tuple[str, dict[str, Any]] | None
Loader = Callable[[Session], PageData]


def _signed_in_page(request: Request, load: Loader) -> Response | None:
    """The page for a signed-in visitor (personal header, never cached), or None."""
    from app.deps import get_optional_user

    with Session(request.app.state.engine) as session:
        if get_optional_user(request, session) is None:
            return None
        data = load(session)
    if data is None:
        raise NotFound()
    template, context = data
    return page(request, template, headers=VARY, **context)


def _anonymous_body(request: Request, load: Loader, locale: str) -> bytes | None:
    with Session(request.app.state.engine) as session:
        data = load(session)
    if data is None:
        return None
    template, context = data
    return render(template, locale=locale, path=request.url.path, **context).encode()


async def _cached(request: Request, load: Loader) -> Response:
    """Render on a miss and fill the cache; hits are answered by CachedPages before routing."""
    if SESSION_COOKIE in request.cookies:
        personal = await run_in_threadpool(_signed_in_page, request, load)
        if personal is not None:
            return personal
    cache: PageCache = request.app.state.page_cache
    locale = negotiate_locale(request, request.app.state.settings.default_locale)
    key = page_key(request.url.path)
    if key is None:
        raise NotFound()
    full_key = (*key, locale)
    generation = cache.generation()
    body = cache.get(full_key, generation)
    if body is None:
        body = await run_in_threadpool(_anonymous_body, request, load, locale)
        if body is None:
            raise NotFound()
        cache.put(full_key, generation, body)
    return Response(body, media_type=HTML, headers=VARY)


def _catalog(session: Session) -> PageData:
    return "catalog/index.html", {"products": service.list_published(session=session)}


def _product(slug: str) -> Loader:
    def load(session: Session) -> PageData:
        product = service.get_published(session=session, slug=slug)
        return ("catalog/product.html", {"product": product}) if product else None

    return load


@router.get("/", include_in_schema=False)
async def catalog(request: Request) -> Response:
    return await _cached(request, _catalog)


@router.get("/products/{slug}", include_in_schema=False)
async def product(request: Request, slug: str) -> Response:
    if not SLUG_RE.fullmatch(slug):
        raise NotFound()
    return await _cached(request, _product(slug))
