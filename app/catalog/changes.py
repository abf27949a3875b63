"""Tell every app process that the catalog changed, the moment the change commits.

PostgreSQL: `NOTIFY rapport_catalog` inside the publishing transaction (delivered on commit
to every replica's listener). SQLite (one machine): a stamp file touched after commit, whose
mtime each process compares per request for the price of one stat().
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import weakref
from pathlib import Path

import structlog
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

CHANNEL = "rapport_catalog"
log = structlog.get_logger()


def stamp_path(database_url: str) -> Path | None:
    """The stamp file beside a SQLite database, or None for other databases."""
    url = make_url(database_url)
    if not url.drivername.startswith("sqlite") or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).with_suffix(".catalog-stamp")


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time_ns()
    path.touch()
    os.utime(path, ns=(now, now))


# Watchers of this process, so that an in-process change is seen at once, not a moment later.
_local_watchers: weakref.WeakSet[CatalogWatcher] = weakref.WeakSet()


def _same_database(a: str, b: str) -> bool:
    return make_url(a).set(drivername="x") == make_url(b).set(drivername="x")


def catalog_changed(session: Session) -> None:
    """Record that the catalog changed; the signal goes out when the session commits."""
    bind = session.get_bind()
    url = bind.engine.url.render_as_string(hide_password=False)
    if bind.dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {CHANNEL}"))  # other processes and replicas
    if session.info.get("catalog_hook"):
        return
    session.info["catalog_hook"] = True
    stamp = stamp_path(url)

    def _after_commit(_s: Session) -> None:
        session.info.pop("catalog_hook", None)
        if event.contains(session, "after_rollback", _after_rollback):
            event.remove(session, "after_rollback", _after_rollback)
        if stamp is not None:
            _touch(stamp)
        for watcher in list(_local_watchers):
            if _same_database(watcher.database_url, url):
                watcher.bump()

    def _after_rollback(_s: Session) -> None:
        session.info.pop("catalog_hook", None)
        if event.contains(session, "after_commit", _after_commit):
            event.remove(session, "after_commit", _after_commit)

    event.listen(session, "after_commit", _after_commit, once=True)
    event.listen(session, "after_rollback", _after_rollback, once=True)


class CatalogWatcher:
    """Holds a generation number that moves whenever the catalog may have changed."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.generation = 0
        self.healthy = True
        self._stamp = stamp_path(database_url)
        self._stamp_mtime = self._read_stamp()
        self._task: asyncio.Task[None] | None = None
        _local_watchers.add(self)

    def _read_stamp(self) -> int:
        if self._stamp is None:
            return 0
        try:
            return os.stat(self._stamp).st_mtime_ns
        except FileNotFoundError:
            return 0

    def bump(self) -> None:
        """Invalidate now (an in-process change, or a notification)."""
        self.generation += 1

    def current(self) -> int:
        """The generation to key caches by; -1 means do not cache (change feed down)."""
        if self._stamp is not None:
            mtime = self._read_stamp()
            if mtime != self._stamp_mtime:
                self._stamp_mtime = mtime
                self.generation += 1
        return self.generation if self.healthy else -1

    async def start(self) -> None:
        """Start listening for PostgreSQL notifications (no-op for SQLite)."""
        if make_url(self.database_url).get_backend_name() == "postgresql":
            self.healthy = False
            self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        import psycopg

        url = make_url(self.database_url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    dsn, autocommit=True, connect_timeout=5
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    # Anything may have changed while we were not listening.
                    self.bump()
                    self.healthy = True
                    delay = 0.5
                    async for _note in conn.notifies():
                        self.bump()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the feed must come back by itself, whatever broke
                log.warning("catalog.listen_failed", error=str(exc), retry_in=delay)
            self.healthy = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
