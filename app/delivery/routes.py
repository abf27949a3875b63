"""Serving media in local mode: HMAC-signed, expiring links answered with Range support."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse

from app.delivery.storage import InvalidKey, LocalStorage

router = APIRouter()


@router.get("/media/{key:path}", include_in_schema=False)
def media(
    request: Request,
    key: str,
    exp: Annotated[int, Query(ge=0, le=2**40)],
    sig: Annotated[str, Query(max_length=128)],
    disp: Annotated[str, Query(max_length=600)] = "inline",
    type: Annotated[str, Query(max_length=120)] = "application/octet-stream",
) -> FileResponse:
    storage = request.app.state.storage
    if not isinstance(storage, LocalStorage):
        raise HTTPException(404)
    try:
        path = storage.path(key)
    except InvalidKey as exc:
        raise HTTPException(403, "invalid link") from exc
    if not storage.verify(key, exp, disp, type, sig):
        raise HTTPException(403, "this link is invalid or has expired")
    if not path.is_file():
        raise HTTPException(404)
    # FileResponse answers Range itself (206 / 416) and streams with sendfile where possible.
    return FileResponse(
        path,
        media_type=type,
        headers={
            "Content-Disposition": disp,
            "Cache-Control": "private, max-age=300",
        },
    )
