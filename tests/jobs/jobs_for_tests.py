"""Jobs registered for the runner tests; each run is recorded under the token it was given."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

from app.jobs.base import JobContext, job

RUNS: dict[str, list[float]] = defaultdict(list)  # token -> monotonic time of each attempt
FAILED: dict[str, str] = {}  # token -> the reason given to the failure hook


def token() -> str:
    """A fresh token, so that a test sees only its own runs."""
    return uuid.uuid4().hex


def _record_failure(ctx: JobContext, reason: str, *, token: str, fail_times: int = 0) -> None:
    FAILED[token] = reason


@job("test_flaky", on_failure=_record_failure)
def flaky(ctx: JobContext, *, token: str, fail_times: int = 0) -> None:
    """Fail the first fail_times attempts, then succeed."""
    RUNS[token].append(time.monotonic())
    attempt = len(RUNS[token])
    if attempt <= fail_times:
        raise RuntimeError(f"attempt {attempt} fails on purpose")


@job("test_once", unique_by=("token",), on_failure=_record_failure)
def once(ctx: JobContext, *, token: str, fail_times: int = 0) -> None:
    """Like test_flaky, but never queued twice at the same time."""
    flaky(ctx, token=token, fail_times=fail_times)
