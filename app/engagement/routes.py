"""The events API: what the player and the reader report, checked and stored once."""

from __future__ import annotations

import json
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.deps import CurrentUser, SessionDep
from app.engagement import service

log = structlog.get_logger()
api = APIRouter(prefix="/api/v1", tags=["engagement"])


class EventsAccepted(BaseModel):
    accepted: int
    duplicate: int
    rejected: int
    reasons: dict[str, int]
    errors: list[dict[str, Any]]
    engaged: bool


class EventsBody(BaseModel):
    """`events`: a list of objects with id (UUID), kind, lesson_id, at (ISO 8601 or epoch ms),
    and per kind start/end/rate (video_progress) or page/seconds (page_viewed)."""

    events: list[dict[str, Any]]


@api.post(
    "/events",
    status_code=202,
    response_model=EventsAccepted,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EventsBody.model_json_schema()}},
        }
    },
    responses={400: {}, 401: {}, 413: {}, 422: {}, 503: {}},
)
async def post_events(request: Request, user: CurrentUser, session: SessionDep) -> JSONResponse:
    """Store a batch of engagement events; each is counted once however often it is sent."""
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, 'the body must be JSON: {"events": [...]}') from None
    events = body.get("events") if isinstance(body, dict) else None
    assert user.id is not None
    try:
        outcome = await run_in_threadpool(
            lambda: service.ingest(
                session.connection(),
                user_id=user.id or 0,
                batch=events,
                settings=request.app.state.settings,
            )
        )
    except service.BadBatch as exc:
        status = 413 if isinstance(events, list) else 422
        raise HTTPException(status, str(exc)) from None
    result = outcome.as_json()
    if outcome.rejected:
        log.info("events.rejected", user_id=user.id, **result["reasons"])
    return JSONResponse({**result, "engaged": outcome.engaged_now}, status_code=202)
