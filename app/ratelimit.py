"""Rate limits with the `limits` library: Redis when RAPPORT_REDIS_URL is set, else memory."""

from __future__ import annotations

import time

from limits import RateLimitItem, parse
from limits.errors import ConfigurationError
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter


class RateLimited(Exception):
    """Too many attempts; retry_after is in whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many requests; retry in {retry_after} s")
        self.retry_after = retry_after


class RateLimitUnavailable(Exception):
    """The rate-limit store (Redis) cannot be reached."""


class RateLimiter:
    """Moving-window limits shared by every app process that uses the same store."""

    def __init__(self, uri: str) -> None:
        storage = storage_from_string(uri)
        assert isinstance(storage, Storage)  # the synchronous kind, for a synchronous limiter
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(self.storage)

    def hit(self, rule: str, *keys: str) -> None:
        """Count one attempt against rule for keys; raise RateLimited when over the limit."""
        item: RateLimitItem = parse(rule)
        try:
            if self.strategy.hit(item, *keys):
                return
            reset, _remaining = self.strategy.get_window_stats(item, *keys)
        except (ConfigurationError, ValueError):
            raise
        except Exception as exc:  # the store's own errors (e.g. Redis down) vary by backend
            raise RateLimitUnavailable(str(exc)) from exc
        raise RateLimited(max(1, int(reset - time.time()) + 1))

    def reset(self) -> None:
        """Forget every counter (tests, and an operator's escape hatch)."""
        self.storage.reset()


def make_limiter(redis_url: str | None) -> RateLimiter:
    """Redis-backed when a URL is given, so that limits hold across replicas."""
    return RateLimiter(redis_url if redis_url else "memory://")
