"""Rendered catalog pages kept in memory until the catalog changes."""

from __future__ import annotations

from app.catalog.changes import CatalogWatcher

MAX_PAGES = 512


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
