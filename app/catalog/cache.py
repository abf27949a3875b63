"""Rendered catalog pages kept in memory until the catalog changes, served at the ASGI edge."""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie

from starlette.types import ASGIApp, Receive, Scope, Send

from app.catalog.changes import CatalogWatcher
from app.web import LOCALE_COOKIE, choose_locale

MAX_PAGES = 512
PRODUCT_PREFIX = "/products/"
HTML = b"text/html; charset=utf-8"
SESSION_COOKIE = "rapport_session"
# Cookies that make a page personal; such requests skip the shared cache.
PERSONAL_COOKIES = (SESSION_COOKIE,)


def page_key(path: str) -> tuple[str, ...] | None:
    """The cache key of a cacheable page path, or None."""
    if path == "/":
        return ("catalog",)
    if path.startswith(PRODUCT_PREFIX) and "/" not in path[len(PRODUCT_PREFIX) :]:
        return ("product", path[len(PRODUCT_PREFIX) :])
    return None


class PageCache:
    """Page bytes by key, valid for one catalog generation.

    A render that started before a change is never stored after it: callers read the
    generation first and hand it back with the body.
    """

    def __init__(self, watcher: CatalogWatcher) -> None:
        self.watcher = watcher
        self._generation = -1
        self._pages: dict[tuple[str, ...], bytes] = {}

    def generation(self) -> int:
        gen = self.watcher.current()
        if gen != self._generation:
            self._pages.clear()
            self._generation = gen
        return gen

    def get(self, key: tuple[str, ...], generation: int) -> bytes | None:
        if generation < 0:
            return None
        return self._pages.get(key)

    def put(self, key: tuple[str, ...], generation: int, body: bytes) -> None:
        if generation < 0 or generation != self._generation:
            return
        if len(self._pages) >= MAX_PAGES:
            self._pages.clear()
        self._pages[key] = body

    def clear(self) -> None:
        self.watcher.bump()


class CachedPages:
    """Answer GETs of cached pages before routing; everything else goes to the app.

    The cached catalog is the hottest request: serving it here skips the framework's
    routing and handler machinery, which otherwise costs more than the page itself.
    Misses fall through to the normal route, which renders and fills the cache.
    """

    def __init__(self, app: ASGIApp, *, cache: PageCache, default_locale: str) -> None:
        self.app = app
        self.cache = cache
        self.default_locale = default_locale

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            key = page_key(scope["path"])
            if key is not None:
                body = self._lookup(key, scope["headers"])
                if body is not None:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [
                                (b"content-type", HTML),
                                (b"content-length", str(len(body)).encode()),
                                (b"vary", b"Accept-Language, Cookie"),
                                (b"cache-control", b"no-cache"),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    def _lookup(self, key: tuple[str, ...], headers: list[tuple[bytes, bytes]]) -> bytes | None:
        accept = ""
        lang: str | None = None
        for name, value in headers:
            if name == b"accept-language":
                accept = value.decode("latin-1")
            elif name == b"cookie":
                try:
                    cookies = SimpleCookie(value.decode("latin-1"))
                except CookieError:
                    return None
                if any(c in cookies for c in PERSONAL_COOKIES):
                    return None
                if LOCALE_COOKIE in cookies:
                    lang = cookies[LOCALE_COOKIE].value
        locale = choose_locale(lang, accept, self.default_locale)
        generation = self.cache.generation()
        return self.cache.get((*key, locale), generation)
