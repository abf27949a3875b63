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


@router.get("/readyz", responses={503: {"description": "a dependency is unreachable"}})
async def readyz(request: Request) -> JSONResponse:
    """Database and storage reachable now; 503 names what is not."""
    checks: dict[str, Any] = {}
    failing: list[str] = []
    for name, check in (("database", _check_database), ("storage", _check_storage)):
        error = await run_in_threadpool(check, request)
        checks[name] = "ok" if error is None else f"unreachable: {error}"
        if error is not None:
            failing.append(name)
    if failing:
        return JSONResponse(
            {"status": "unavailable", "failing": failing, "checks": checks},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    return JSONResponse({"status": "ok", "checks": checks})
