"""Upload and publishing JSON API under /api/v1/author, used by the lesson page and the CLI.

An upload: `POST /uploads` (declared kind, size and first bytes; 413/415 before any byte is
taken), then the bytes: in S3 mode `POST /uploads/{id}/parts` hands out presigned part URLs
(the app never sees the bytes; `GET /uploads/{id}/parts` lists what S3 has, for resuming),
in local mode `PUT /uploads/{id}/chunk?offset=N` appends chunks, then
`POST /uploads/{id}/complete`; processing runs as a job, `GET /uploads/{id}` tells its status.
`PUT /manifests/{slug}` publishes a course manifest whose files were uploaded that way.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlmodel import Session
from starlette.requests import ClientDisconnect

from app.authoring import uploads
from app.authoring.uploads import (
    CONTENT_TYPES,
    LESSON_UPLOAD_KIND,
    Kind,
    UploadError,
    chunking,
    is_local,
    kind_of,
    max_bytes,
)
from app.catalog.manifest import ManifestError, ProductSpec, parse_spec
from app.catalog.models import Asset, AssetStatus
from app.catalog.service import PublishReport, publish_spec
from app.config import Settings
from app.delivery.storage import Storage
from app.deps import AuthorUser, SessionDep
from app.web import gettext_for

router = APIRouter(prefix="/api/v1/author", tags=["authoring"])
AssetId = Annotated[int, Path(ge=1, le=2**31 - 1)]
LessonId = Annotated[int, Path(ge=1, le=2**31 - 1)]
# The one route that takes bodies over the 1 MiB cap of RequestGuard (see app/main.py).
CHUNK_PATH = r"/api/v1/author/uploads/\d+/chunk"
WRITE_BATCH = 1024 * 1024  # bytes gathered from the socket before one write to disk


class UploadCreate(BaseModel):
    kind: Kind
    filename: str = Field(min_length=1, max_length=255)
    size: int = Field(ge=1, le=5 * 1024**4)
    head: str = Field(
        max_length=200, description="the file's first 64 bytes (a shorter file whole), base64"
    )
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    lesson_id: int | None = Field(default=None, ge=1, le=2**31 - 1)


class UploadPublic(BaseModel):
    id: int
    status: str
    kind: str | None
    content_type: str
    filename: str
    size: int
    sha256: str
    mode: Literal["s3", "local"]
    part_size: int
    parts: int
    reused: bool = False
    reason: str = ""
    note: str = ""
    duration_seconds: float | None = None
    page_count: int | None = None
    poster_url: str | None = None
    lesson_id: int | None = None


class PartPublic(BaseModel):
    part_number: int
    size: int


class UploadProgress(BaseModel):
    mode: Literal["s3", "local"]
    received: int  # bytes the store has
    parts: list[PartPublic] = Field(default_factory=list)  # S3: the parts it has


class PartUrlsRequest(BaseModel):
    part_numbers: list[Annotated[int, Field(ge=1, le=10_000)]] = Field(min_length=1, max_length=100)


class PartUrl(BaseModel):
    part_number: int
    url: str


class PartUrls(BaseModel):
    urls: list[PartUrl]
    expires_in: int


class LessonMediaPublic(BaseModel):
    lesson_id: int
    lesson_kind: str
    upload_kind: str | None
    accept: list[str]
    max_size: int | None
    current: UploadPublic | None
    upload: UploadPublic | None


class ManifestPublish(BaseModel):
    manifest: dict[str, Any]
    assets: dict[str, int] = Field(
        default_factory=dict,
        description='asset ids by media key: "<lesson key>", "<lesson key>.captions.<lang>"',
    )
    texts: dict[str, str] = Field(
        default_factory=dict, description='Markdown by "<lesson key>.<lang>"'
    )


class PublishResult(BaseModel):
    slug: str
    created: bool
    lessons_added: int
    lessons_updated: int
    lessons_unchanged: int
    lessons_removed: int


def _refusal(exc: UploadError) -> JSONResponse:
    # Not raised on: a refused upload may have marked its asset failed, which must be kept.
    return JSONResponse({"detail": exc.message, "status": exc.status, **exc.extra}, exc.status)


def translated(message: str, gettext: Callable[[str], str]) -> str:
    """A stored reason or note in the reader's language: whole, or its fixed part before ": "."""
    if not message:
        return message
    whole = gettext(message)
    if whole != message or ": " not in message:
        return whole
    head, rest = message.split(": ", 1)
    return f"{gettext(head)}: {translated(rest, gettext)}"


def public(
    asset: Asset,
    *,
    storage: Storage,
    settings: Settings,
    reused: bool = False,
    gettext: Callable[[str], str] = str,
) -> UploadPublic:
    """The JSON view of an asset and how its bytes are to be sent."""
    step, count = chunking(storage, settings, asset.size)
    poster = None
    if asset.poster_key:
        poster = storage.download_url(
            asset.poster_key, ttl=settings.download_url_ttl, content_type="image/jpeg"
        )
    return UploadPublic(
        id=asset.id or 0,
        status=asset.status,
        kind=kind_of(asset.content_type),
        content_type=asset.content_type,
        filename=asset.original_filename,
        size=asset.size,
        sha256=asset.sha256,
        mode="local" if is_local(storage) else "s3",
        part_size=step,
        parts=count,
        reused=reused,
        reason=translated(asset.failure_reason, gettext),
        note="; ".join(translated(n, gettext) for n in asset.processing_note.split("; ") if n),
        duration_seconds=asset.duration_seconds,
        page_count=asset.page_count,
        poster_url=poster,
        lesson_id=asset.lesson_id,
    )


def _state(request: Request) -> tuple[Storage, Settings]:
    return request.app.state.storage, request.app.state.settings


def _public(request: Request, asset: Asset, *, reused: bool = False) -> UploadPublic:
    storage, settings = _state(request)
    return public(
        asset, storage=storage, settings=settings, reused=reused, gettext=gettext_for(request)
    )


@router.post(
    "/uploads",
    response_model=UploadPublic,
    status_code=201,
    responses={404: {}, 413: {}, 415: {}, 422: {}},
)
def create_upload(
    request: Request, session: SessionDep, author: AuthorUser, data: UploadCreate
) -> Any:
    """Start an upload: refused with 413 (too large) or 415 (not that kind of file by its
    first bytes) before any byte is taken; a known sha256 reuses or resumes."""
    storage, settings = _state(request)
    try:
        head = base64.b64decode(data.head, validate=True)
    except (binascii.Error, ValueError):
        return _refusal(UploadError("head must be base64"))
    try:
        asset, reused = uploads.start_upload(
            session=session,
            storage=storage,
            settings=settings,
            kind=data.kind,
            filename=data.filename,
            size=data.size,
            head=head,
            sha256=data.sha256,
            lesson_id=data.lesson_id,
        )
    except UploadError as exc:
        return _refusal(exc)
    body = _public(request, asset, reused=reused)
    return JSONResponse(body.model_dump(), status_code=200 if reused else 201)


@router.get("/uploads/{asset_id}", response_model=UploadPublic, responses={404: {}})
def upload_status(
    request: Request, session: SessionDep, author: AuthorUser, asset_id: AssetId
) -> Any:
    """An upload's status (uploading, processing, ready, failed with the reason): polled."""
    try:
        asset = uploads.get_asset(session=session, asset_id=asset_id)
    except UploadError as exc:
        return _refusal(exc)
    return _public(request, asset)


@router.get(
    "/uploads/{asset_id}/parts", response_model=UploadProgress, responses={404: {}, 409: {}}
)
def upload_progress(
    request: Request, session: SessionDep, author: AuthorUser, asset_id: AssetId
) -> Any:
    """What the store already has of an unfinished upload: where a resumed upload goes on."""
    storage, _settings = _state(request)
    try:
        asset = uploads.get_asset(session=session, asset_id=asset_id)
        if is_local(storage):
            received = uploads.received_bytes(storage=storage, asset=asset)
            return UploadProgress(mode="local", received=received)
        parts = uploads.uploaded_parts(storage=storage, asset=asset)
    except UploadError as exc:
        return _refusal(exc)
    return UploadProgress(
        mode="s3",
        received=sum(p.size for p in parts),
        parts=[PartPublic(part_number=p.part_number, size=p.size) for p in parts],
    )


@router.post(
    "/uploads/{asset_id}/parts", response_model=PartUrls, responses={404: {}, 409: {}, 422: {}}
)
def part_urls(
    request: Request,
    session: SessionDep,
    author: AuthorUser,
    asset_id: AssetId,
    data: PartUrlsRequest,
) -> Any:
    """Presigned URLs to PUT these parts straight to the bucket (S3 mode)."""
    storage, settings = _state(request)
    try:
        asset = uploads.get_asset(session=session, asset_id=asset_id)
        urls = uploads.presign_parts(
            storage=storage, settings=settings, asset=asset, numbers=data.part_numbers
        )
    except UploadError as exc:
        return _refusal(exc)
    return PartUrls(
        urls=[PartUrl(part_number=n, url=u) for n, u in urls.items()],
        expires_in=settings.upload_url_ttl,
    )


class ChunkReceived(BaseModel):
    received: int


def _load(session: Session, asset_id: int) -> Asset:
    return uploads.get_asset(session=session, asset_id=asset_id)


@router.put(
    "/uploads/{asset_id}/chunk",
    response_model=ChunkReceived,
    responses={404: {}, 409: {}, 413: {}, 415: {}},
    openapi_extra={
        "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}
    },
)
async def upload_chunk(
    request: Request,
    session: SessionDep,
    author: AuthorUser,
    asset_id: AssetId,
    offset: Annotated[int, Query(ge=0, le=5 * 1024**4)],
) -> Response:
    """Local mode: append the body at offset, which must be the number of bytes the server
    has (409 tells it otherwise); streamed to disk, never held whole."""
    storage, _settings = _state(request)
    try:
        asset = await run_in_threadpool(_load, session, asset_id)
        writer = await run_in_threadpool(uploads.ChunkWriter, storage, asset, offset)
    except UploadError as exc:
        return _refusal(exc)
    # End the transaction before the body streams in: with SQLite, a token's last-used
    # update would otherwise hold the write lock for as long as the chunk takes to arrive.
    await run_in_threadpool(session.commit)
    batch = bytearray()
    try:
        try:
            async for data in request.stream():
                batch += data
                if len(batch) >= WRITE_BATCH:
                    await anyio.to_thread.run_sync(writer.write, bytes(batch))
                    batch.clear()
            if batch:
                await anyio.to_thread.run_sync(writer.write, bytes(batch))
        finally:
            received = await anyio.to_thread.run_sync(writer.close)
    except UploadError as exc:
        return _refusal(exc)
    except ClientDisconnect:
        # What arrived is kept; the client asks GET /uploads/{id}/parts and goes on from there.
        return Response(status_code=400)
    return JSONResponse({"received": received})


@router.post(
    "/uploads/{asset_id}/complete",
    response_model=UploadPublic,
    responses={404: {}, 409: {}, 415: {}},
)
def complete_upload(
    request: Request, session: SessionDep, author: AuthorUser, asset_id: AssetId
) -> Any:
    """All bytes are stored: join the parts, check the first bytes again from storage, and
    queue the processing (sha256, duration and poster, page count)."""
    storage, settings = _state(request)
    try:
        asset = uploads.get_asset(session=session, asset_id=asset_id)
        started = uploads.complete_upload(
            session=session, storage=storage, settings=settings, asset=asset
        )
    except UploadError as exc:
        return _refusal(exc)
    if started:
        request.app.state.jobs.enqueue_after_commit(session, "process_upload", asset_id=asset_id)
    return _public(request, asset)


@router.delete("/uploads/{asset_id}", status_code=204, responses={404: {}, 409: {}})
def cancel_upload(
    request: Request, session: SessionDep, author: AuthorUser, asset_id: AssetId
) -> Response:
    """Cancel an unfinished upload and drop what was stored of it."""
    storage, _settings = _state(request)
    try:
        asset = uploads.get_asset(session=session, asset_id=asset_id)
        uploads.abort_upload(session=session, storage=storage, asset=asset)
    except UploadError as exc:
        return _refusal(exc)
    return Response(status_code=204)


@router.get("/lessons/{lesson_id}/media", response_model=LessonMediaPublic, responses={404: {}})
def lesson_media(
    request: Request, session: SessionDep, author: AuthorUser, lesson_id: LessonId
) -> Any:
    """The lesson's file and its latest unfinished or failed upload (the upload panel)."""
    settings: Settings = request.app.state.settings
    try:
        media = uploads.lesson_media(session=session, lesson_id=lesson_id)
    except UploadError as exc:
        return _refusal(exc)
    kind = LESSON_UPLOAD_KIND.get(media.lesson.kind)
    return LessonMediaPublic(
        lesson_id=lesson_id,
        lesson_kind=media.lesson.kind,
        upload_kind=kind,
        accept=list(CONTENT_TYPES[kind]) if kind else [],
        max_size=max_bytes(settings, kind) if kind else None,
        current=_public(request, media.current) if media.current else None,
        upload=_public(request, media.upload) if media.upload else None,
    )


# Publishing a manifest (rapport publish --server) -------------------------------------------


def _manifest_refusal(field: str, message: str) -> JSONResponse:
    detail = [
        {"loc": ["body", "manifest", *field.split(".")], "msg": message, "type": "value_error"}
    ]
    return JSONResponse({"detail": detail, "status": 422}, 422)


def _media_keys(spec: ProductSpec) -> dict[str, tuple[str, str]]:
    """Every file the manifest names: media key -> (field, upload kind)."""
    keys: dict[str, tuple[str, str]] = {}
    for mi, module in enumerate(spec.modules):
        for li, lesson in enumerate(module.lessons):
            base = f"modules[{mi}].lessons[{li}]"
            if lesson.file:
                kind = LESSON_UPLOAD_KIND.get(lesson.kind, "")
                keys[lesson.key] = (f"{base}.file", kind)
            for lang in lesson.captions.as_dict() if lesson.captions else {}:
                keys[f"{lesson.key}.captions.{lang}"] = (f"{base}.captions.{lang}", "captions")
    return keys


@router.put("/manifests/{slug}", response_model=PublishResult, responses={409: {}, 422: {}})
def publish_manifest(
    session: SessionDep,
    author: AuthorUser,
    slug: Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,79}$")],
    data: ManifestPublish,
) -> Any:
    """Create or update a product from its manifest (course.toml as JSON), with the assets
    of its files uploaded before and its Markdown texts; checked whole, idempotent."""
    source = FilePath(slug) / "course.toml"
    try:
        spec = parse_spec(data.manifest, source)
    except ManifestError as exc:
        return _manifest_refusal(exc.field, exc.message)
    if spec.slug != slug:
        return _manifest_refusal("slug", f"{spec.slug!r} must equal the URL's {slug!r}")
    ids: dict[str, int] = {}
    for key, (field, kind) in _media_keys(spec).items():
        asset = session.get(Asset, data.assets.get(key, 0))
        if not kind:
            return _manifest_refusal(field, "this lesson kind has no file")
        if asset is None:
            return _manifest_refusal(field, f"no uploaded asset for {key!r}")
        if asset.status != AssetStatus.ready or kind_of(asset.content_type) != kind:
            return _manifest_refusal(field, f"asset {asset.id} is not a ready {kind} file")
        ids[key] = asset.id or 0
    for mi, module in enumerate(spec.modules):
        for li, lesson in enumerate(module.lessons):
            for lang in lesson.body.as_dict() if lesson.body else {}:
                if f"{lesson.key}.{lang}" not in data.texts:
                    field = f"modules[{mi}].lessons[{li}].body.{lang}"
                    return _manifest_refusal(field, "the Markdown text is missing")
    try:
        report: PublishReport = publish_spec(
            session=session,
            spec=spec,
            texts=data.texts,
            asset_id=ids.__getitem__,
            source=source,
        )
    except ManifestError as exc:
        # E.g. a bundle naming an unknown product: undo what was written so far.
        session.rollback()
        return _manifest_refusal(exc.field, exc.message)
    return PublishResult(
        slug=report.slug,
        created=report.created,
        lessons_added=report.lessons_added,
        lessons_updated=report.lessons_updated,
        lessons_unchanged=report.lessons_unchanged,
        lessons_removed=report.lessons_removed,
    )
