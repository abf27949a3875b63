"""Catalog HTML: the storefront and the product pages, served from the page cache."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from sqlmodel import Session

from app.catalog import service
from app.catalog.cache import PageCache, page_key
from app.errors import NotFound
from app.web import negotiate_locale, render

router = APIRouter()
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")
HTML = "text/html; charset=utf-8"
VARY = {"Vary": "Accept-Language, Cookie", "Cache-Control": "no-cache"}


async def _cached(request: Request, build: Callable[[Engine, str], bytes | None]) -> Response:
    """Render on a miss and fill the cache; hits are answered by CachedPages before routing."""
    cache: PageCache = request.app.state.page_cache
    locale = negotiate_locale(request, request.app.state.settings.default_locale)
    key = page_key(request.url.path)
    if key is None:
        raise NotFound()
    full_key = (*key, locale)
    generation = cache.generation()
    body = cache.get(full_key, generation)
    if body is None:
        body = await run_in_threadpool(build, request.app.state.engine, locale)
        if body is None:
            raise NotFound()
        cache.put(full_key, generation, body)
    return Response(body, media_type=HTML, headers=VARY)


def _catalog_page(engine: Engine, locale: str) -> bytes:
    with Session(engine) as session:
        products = service.list_published(session=session)
    return render("catalog/index.html", locale=locale, products=products, path="/").encode()


def _product_page(slug: str) -> Callable[[Engine, str], bytes | None]:
    def build(engine: Engine, locale: str) -> bytes | None:
        with Session(engine) as session:
            product = service.get_published(session=session, slug=slug)
        if product is None:
            return None
        path = f"/products/{slug}"
        return render("catalog/product.html", locale=locale, product=product, path=path).encode()

    return build


@router.get("/", include_in_schema=False)
async def catalog(request: Request) -> Response:
    return await _cached(request, _catalog_page)


@router.get("/products/{slug}", include_in_schema=False)
async def product(request: Request, slug: str) -> Response:
    if not SLUG_RE.fullmatch(slug):
        raise NotFound()
    return await _cached(request, _product_page(slug))
