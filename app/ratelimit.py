"""Rate limits with the `limits` library: Redis when RAPPORT_REDIS_URL is set, else memory.

When Redis cannot be reached, the limits degrade rather than fail: they are counted in this
process's memory (each replica then limits on its own) until Redis answers again, which is
tried again every few seconds. A login or inquiry form must neither fail (503) nor stop being
limited because Redis is away.
"""

from __future__ import annotations

import threading
import time

import structlog
from limits import RateLimitItem, parse
from limits.errors import ConfigurationError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

log = structlog.get_logger()

# Seconds to count in memory after the shared store failed, before it is tried again: short,
# so that the shared limits return soon; not zero, so that a dead Redis is not asked per request.
RETRY_SHARED = 5.0
# A request must not wait long on a Redis that does not answer (a refused connection is instant).
REDIS_TIMEOUT = 1.0


class RateLimited(Exception):
    """Too many attempts; retry_after is in whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many requests; retry in {retry_after} s")
        self.retry_after = retry_after


class RateLimitUnavailable(Exception):
    """The rate-limit store (Redis) cannot be reached, and the limiter may not degrade."""


class RateLimiter:
    """Moving-window limits shared by every app process that uses the same store."""

    def __init__(self, uri: str, *, degrade: bool = True) -> None:
        shared = not uri.startswith("memory")
        options: dict[str, float] = (
            {"socket_connect_timeout": REDIS_TIMEOUT, "socket_timeout": REDIS_TIMEOUT}
            if uri.startswith(("redis", "rediss"))
            else {}
        )
        storage = storage_from_string(uri, **options)
        assert isinstance(storage, Storage)  # the synchronous kind, for a synchronous limiter
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(self.storage)
        # The stand-in while the shared store is down (None: memory already, or strict).
        self._local: MovingWindowRateLimiter | None = (
            MovingWindowRateLimiter(MemoryStorage()) if shared and degrade else None
        )
        self._lock = threading.Lock()
        self._shared_down_until = 0.0  # monotonic time before which the shared store is skipped
        self._shared_error: str | None = None

    def hit(self, rule: str, *keys: str) -> None:
        """Count one attempt against rule for keys; raise RateLimited when over the limit."""
        item: RateLimitItem = parse(rule)
        retry_after: int | None
        if self._local is None or time.monotonic() >= self._shared_down_until:
            try:
                retry_after = self._check(self.strategy, item, keys)
            except (ConfigurationError, ValueError):
                raise
            except Exception as exc:  # the store's own errors (e.g. Redis down) vary by backend
                if self._local is None:
                    raise RateLimitUnavailable(str(exc)) from exc
                self._shared_failed(exc)
                retry_after = self._check(self._local, item, keys)
            else:
                self._shared_ok()
        else:
            retry_after = self._check(self._local, item, keys)
        if retry_after is not None:
            raise RateLimited(retry_after)

    @staticmethod
    def _check(
        strategy: MovingWindowRateLimiter, item: RateLimitItem, keys: tuple[str, ...]
    ) -> int | None:
        """None when the attempt is allowed, else the seconds until it would be."""
        if strategy.hit(item, *keys):
            return None
        reset, _remaining = strategy.get_window_stats(item, *keys)
        return max(1, int(reset - time.time()) + 1)

    def _shared_failed(self, exc: Exception) -> None:
        with self._lock:
            first = self._shared_error is None
            self._shared_error = f"{type(exc).__name__}: {str(exc)[:200]}"
            self._shared_down_until = time.monotonic() + RETRY_SHARED
        if first:
            log.warning("ratelimit.degraded", error=self._shared_error, store="memory")

    def _shared_ok(self) -> None:
        if self._shared_error is None:
            return
        with self._lock:
            was, self._shared_error = self._shared_error, None
        if was is not None:
            log.info("ratelimit.shared_again")

    def degraded(self) -> str | None:
        """Why the limits are counted in memory now (the shared store's error), else None."""
        return self._shared_error

    def reset(self) -> None:
        """Forget every counter (tests, and an operator's escape hatch)."""
        if self._local is not None:
            self._local.storage.reset()
        self.storage.reset()


def make_limiter(redis_url: str | None) -> RateLimiter:
    """Redis-backed when a URL is given, so that limits hold across replicas."""
    return RateLimiter(redis_url if redis_url else "memory://")
