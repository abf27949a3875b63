"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.delivery.storage import StorageError

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


def _check_database(request: Request) -> str | None:
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not ready"; the message says which
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return None


def _check_storage(request: Request) -> str | None:
    try:
        request.app.state.storage.ping()
    except StorageError as exc:
        return str(exc)[:300]
    return None


def _check_redis(request: Request) -> str | None:
    url = request.app.state.settings.redis_url
    if not url:
        return None
    from app.integrations.queue import redis_problem

    problem = redis_problem(url)
    held = getattr(request.app.state.jobs, "held", None)  # the Redis runner's, if it is one
    count = held() if callable(held) else 0
    if problem is not None and count:
        problem += f"; {count} job(s) held in memory until it is back"
    return problem


@router.get("/readyz", responses={503: {"description": "a dependency is unreachable"}})
async def readyz(request: Request) -> JSONResponse:
    """Database and storage reachable now; 503 names what is not.

    Redis (when configured) is named too, but does not make the app unready: while it is away
    rate limits are counted in memory and jobs are held until it is back, so taking every
    replica out of the load balancer would only turn a degraded service into none.
    """
    checks: dict[str, Any] = {}
    failing: list[str] = []
    for name, check in (("database", _check_database), ("storage", _check_storage)):
        error = await run_in_threadpool(check, request)
        checks[name] = "ok" if error is None else f"unreachable: {error}"
        if error is not None:
            failing.append(name)
    degraded: list[str] = []
    if request.app.state.settings.redis_url:
        error = await run_in_threadpool(_check_redis, request)
        checks["redis"] = "ok" if error is None else f"unreachable: {error}"
        if error is not None:
            degraded.append("redis")
    if failing:
        body: dict[str, Any] = {"status": "unavailable", "failing": failing, "checks": checks}
        if degraded:
            body["degraded"] = degraded
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    if degraded:
        return JSONResponse({"status": "degraded", "degraded": degraded, "checks": checks})
    return JSONResponse({"status": "ok", "checks": checks})
