"""The events API: what the player and the reader report, checked and stored once.

On PostgreSQL, batches from a signed-in browser go through `fastpath.EventWriter` on the event
loop; everything else (SQLite, API tokens, an app started without its lifespan) through
`service.ingest` in the thread pool. Both give the same answers and store the same rows.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlmodel import Session

from app.deps import SESSION_KEY, LoginRequired, get_optional_user
from app.engagement import service
from app.engagement.fastpath import EventWriter, Unavailable, as_json
from app.errors import error_response
from app.models_base import utcnow

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


class _BadBody(Exception):
    """The body is not JSON (400)."""


def _events_of(body: bytes) -> object:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nested deeper than the interpreter's recursion limit (~1,000 levels);
        # no event has more than one level, so such a body is malformed, not a server fault.
        raise _BadBody() from None
    return data.get("events") if isinstance(data, dict) else None


def _refusal(exc: Exception, events: object) -> HTTPException:
    if isinstance(exc, _BadBody):
        return HTTPException(400, 'the body must be JSON: {"events": [...]}')
    return HTTPException(413 if isinstance(events, list) else 422, str(exc))


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
async def post_events(request: Request) -> Response:
    """Store a batch of engagement events; each is counted once however often it is sent.

    The checks answer in this order: sign-in (401), the body (400, 413, 422), then each event.
    """
    writer: EventWriter | None = request.app.state.event_writer
    bearer = request.headers.get("authorization", "")[:7].lower() == "bearer "
    if writer is not None and not bearer and writer.ready():
        return await _fast(request, writer)
    return await _slow(request)


async def _fast(request: Request, writer: EventWriter) -> Response:
    # The signed session cookie, read by SessionMiddleware; the version is checked against
    # the user row in the batch's first round trip (as deps.get_optional_user does).
    data = request.session.get(SESSION_KEY) if "session" in request.scope else None
    if not isinstance(data, dict) or not isinstance(data.get("uid"), int):
        raise LoginRequired()
    user_id: int = data["uid"]
    version = data.get("ver")
    raw_sid = data.get("sid")
    sid: str = raw_sid if isinstance(raw_sid, str) else ""
    body = await request.body()
    settings = request.app.state.settings
    now = utcnow()
    events: object = None
    try:
        try:
            events = _events_of(body)
            outcome, parsed = service.read_batch(events, settings=settings, now=now)
        except (_BadBody, service.BadBatch) as exc:
            if not await writer.signed_in(user_id, version, sid):
                request.session.pop(SESSION_KEY, None)
                raise LoginRequired() from None
            raise _refusal(exc, events) from None
        result = await writer.ingest(
            user_id=user_id,
            session_version=version,
            outcome=outcome,
            events=parsed,
            settings=settings,
            now=now,
            sid=sid,
        )
    except Unavailable as exc:
        log.warning("events.unavailable", error=str(exc)[:200])
        return error_response(request, 503, None, {"Retry-After": "5"})
    if result is None:  # signed out elsewhere (session version moved) or the user is gone
        request.session.pop(SESSION_KEY, None)
        raise LoginRequired()
    return _accepted(user_id, result)


async def _slow(request: Request) -> Response:
    body = await request.body()
    settings = request.app.state.settings

    def work() -> tuple[int, service.Outcome]:
        # The request's own session: commit when the batch went through, else roll back
        # (as the SessionDep dependency does).
        with Session(request.app.state.engine) as session:
            user = get_optional_user(request, session)
            if user is None or user.id is None:
                raise LoginRequired()
            events: object = None
            try:
                events = _events_of(body)
                outcome = service.ingest(
                    session.connection(), user_id=user.id, batch=events, settings=settings
                )
            except (_BadBody, service.BadBatch) as exc:
                raise _refusal(exc, events) from None
            session.commit()
            return user.id, outcome

    user_id, outcome = await run_in_threadpool(work)
    return _accepted(user_id, outcome)


def _accepted(user_id: int, outcome: service.Outcome) -> JSONResponse:
    result = as_json(outcome)
    if outcome.rejected:
        log.info("events.rejected", user_id=user_id, **result["reasons"])
    return JSONResponse(result, status_code=202)
