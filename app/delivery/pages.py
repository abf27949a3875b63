"""The learning pages: a lesson with its player, text or e-book reader, and the outline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from app.accounts.models import User
from app.authoring import service as authoring
from app.catalog import service as catalog
from app.catalog.models import Asset, Lesson
from app.catalog.service import LessonView, ProductView
from app.checkout import service as checkout
from app.delivery import hls
from app.delivery.service import Access, MediaGrant, media_grant, stream_url
from app.deps import Forbidden, LoginRequired, OptionalUser, SessionDep
from app.engagement import service as engagement
from app.errors import NotFound
from app.inquiries import service as inquiries
from app.markdown import render_markdown
from app.web import page, pick, request_locale

router = APIRouter(include_in_schema=False)
log = structlog.get_logger()


def _find(product: ProductView, key: str) -> tuple[LessonView, int, list[LessonView]]:
    flat = [lesson for module in product.modules for lesson in module.lessons]
    for index, lesson in enumerate(flat):
        if lesson.key == key:
            return lesson, index, flat
    raise NotFound()


@dataclass
class Opened:
    """A lesson a visitor asked for, where it sits in its product, and their access to it."""

    product: ProductView
    lesson: LessonView
    index: int
    flat: list[LessonView]
    grant: MediaGrant


def _open(request: Request, session: Session, user: User | None, slug: str, key: str) -> Opened:
    """Find the published lesson and decide access; sign-in, revoked and foreign raise here."""
    product = catalog.get_published(session=session, slug=slug[:80])
    if product is None:
        raise NotFound()
    lesson, index, flat = _find(product, key[:80])
    grant = media_grant(
        request.app.state.engine,
        lesson_id=lesson.id,
        user_id=user.id if user else None,
        session_version=user.session_version if user else None,
    )
    if grant.access is Access.sign_in:
        raise LoginRequired()
    if grant.access is Access.revoked:
        raise Forbidden()
    if grant.access is Access.not_found:
        raise NotFound()
    return Opened(product, lesson, index, flat, grant)


def _caption_tracks(
    request: Request, session: Session, row: Lesson, ttl: int
) -> list[dict[str, Any]]:
    from app.catalog.models import Asset, AssetStatus
    from app.web import LOCALE_NAMES

    locale = request_locale(request)
    tracks = []
    for lang, asset_id in sorted(row.captions.items()):
        asset = session.get(Asset, asset_id)
        if asset is None or asset.status != AssetStatus.ready:
            continue
        url = request.app.state.storage.download_url(
            asset.storage_key, ttl=ttl, content_type="text/vtt"
        )
        tracks.append(
            {
                "lang": lang,
                "label": LOCALE_NAMES.get(lang, lang),
                "url": url,
                "default": lang == locale,
            }
        )
    return tracks


@router.get("/learn/{slug}")
def course_start(session: SessionDep, user: OptionalUser, slug: str) -> Response:
    product = catalog.get_published(session=session, slug=slug[:80])
    if product is None or not product.modules or not product.modules[0].lessons:
        raise NotFound()
    first = product.modules[0].lessons[0]
    return RedirectResponse(f"/learn/{product.slug}/{first.key}", status_code=303)


@router.get("/learn/{slug}/{key}")
def lesson_page(
    request: Request, session: SessionDep, user: OptionalUser, slug: str, key: str
) -> Response:
    opened = _open(request, session, user, slug, key)
    product, lesson, index, flat, grant = (
        opened.product,
        opened.lesson,
        opened.index,
        opened.flat,
        opened.grant,
    )
    row = session.get(Lesson, lesson.id)
    if row is None:
        raise NotFound()
    if user is not None:  # the library's "new" marks count from the buyer's last visit
        authoring.mark_seen(session=session, user_id=user.id or 0, product_id=product.id)
    context: dict[str, Any] = {
        "product": product,
        "lesson": lesson,
        "previous": flat[index - 1] if index > 0 else None,
        "next": flat[index + 1] if index + 1 < len(flat) else None,
        "position": index + 1,
        "total": len(flat),
        "media_url": None,
        "body_html": "",
    }
    if grant.access is Access.granted:
        ttl = request.app.state.settings.download_url_ttl
        context["media_url"], _ = stream_url(request.app.state.storage, grant, ttl=ttl)
        context["content_type"] = grant.content_type
        if lesson.kind == "video":
            context["tracks"] = _caption_tracks(request, session, row, ttl)
            asset = session.get(Asset, row.asset_id) if row.asset_id else None
            if asset is not None and asset.hls_key:
                context["hls_url"] = f"/learn/{product.slug}/{lesson.key}/hls.m3u8"
    if lesson.kind == "text":
        context["body_html"] = render_markdown(pick(row.body, request_locale(request)))
    context.update(_learning(request, session, user, product, lesson))
    return page(request, "delivery/lesson.html", **context)


def _learning(
    request: Request, session: Session, user: User | None, product: ProductView, lesson: LessonView
) -> dict[str, Any]:
    """For a buyer: where they are in the product, and whether to invite them to talk."""
    if user is None or user.id is None:
        return {"tracking": False, "completed_ids": set()}
    if checkout.active_entitlement(session=session, user_id=user.id, product_id=product.id) is None:
        # previews and staff visits are not engagement
        return {"tracking": False, "completed_ids": set()}
    conn = session.connection()
    rows = engagement.progress_of(conn, user_id=user.id, product_id=product.id)
    here = rows.get(lesson.id)
    standing = engagement.standing(conn, user_id=user.id, settings=request.app.state.settings)
    return {
        "tracking": True,
        "completed_ids": {lid for lid, row in rows.items() if row.completed_at is not None},
        "resume_at": here.position if here is not None else 0,
        "show_invitation": standing.engaged
        and inquiries.latest_of(session=session, user_id=user.id) is None,
    }


@router.get("/learn/{slug}/{key}/hls.m3u8")
def lesson_playlist(
    request: Request, session: SessionDep, user: OptionalUser, slug: str, key: str
) -> Response:
    """The lesson's HLS playlist, each segment a signed URL that expires like a stream URL."""
    opened = _open(request, session, user, slug, key)
    row = session.get(Lesson, opened.lesson.id)
    asset = session.get(Asset, row.asset_id) if row is not None and row.asset_id else None
    if opened.grant.access is not Access.granted or asset is None or not asset.hls_key:
        raise NotFound()
    ttl = request.app.state.settings.download_url_ttl
    try:
        body = hls.signed_playlist(request.app.state.storage, playlist_key=asset.hls_key, ttl=ttl)
    except hls.RenditionError:
        raise NotFound() from None
    return Response(
        body,
        media_type="application/vnd.apple.mpegurl",
        headers={"Cache-Control": "private, no-store"},
    )


@router.get("/learn/{slug}/{key}/download")
def download_copy(
    request: Request, session: SessionDep, user: OptionalUser, slug: str, key: str
) -> Response:
    """The buyer's personalised copy of an e-book: made once, then counted per download."""
    from app.delivery.copies import copy_for
    from app.delivery.models import CopyStatus

    if user is None:
        raise LoginRequired()
    opened = _open(request, session, user, slug, key)
    product, lesson = opened.product, opened.lesson
    # no_media: the file failed or is being replaced; the copy's own state tells the buyer.
    if lesson.kind != "pdf":
        raise NotFound()
    row = session.get(Lesson, lesson.id)
    if row is None or row.asset_id is None:
        raise NotFound()
    copy, created = copy_for(
        session=session, user=user, asset_id=row.asset_id, product_id=product.id
    )
    state = request.app.state
    if copy.status == CopyStatus.ready and not state.storage.exists(copy.storage_key or ""):
        # The stamped file is gone from storage: make it again rather than hand out (and
        # count) a link to nothing. Storage that does not answer raises: a 503, nothing counted.
        log.warning("copy.missing", copy_id=copy.id, key=copy.storage_key)
        copy.status = CopyStatus.pending
        session.add(copy)
    if created or copy.status == CopyStatus.pending:
        # Queued again on each visit while pending: the runner keeps one job per copy, and a
        # job lost to a restart is made up for by the buyer's next visit.
        state.jobs.enqueue_after_commit(session, "stamp_copy", copy_id=copy.id)
    if copy.status != CopyStatus.ready:
        failed = copy.status == CopyStatus.failed
        return page(
            request,
            "delivery/preparing.html",
            status_code=409 if failed else 202,
            failed=failed,
            product=product,
            lesson=lesson,
        )
    limit = state.settings.download_limit
    if copy.downloads >= limit:
        return page(
            request,
            "delivery/preparing.html",
            status_code=429,
            limit_reached=True,
            limit=limit,
            product=product,
            lesson=lesson,
        )
    filename = f"{pick(product.title, request_locale(request))} - {user.name or user.email}.pdf"
    url = state.storage.download_url(
        copy.storage_key,
        ttl=state.settings.download_url_ttl,
        content_type="application/pdf",
        filename=filename,
        disposition="attachment",
    )
    # Counted once the file is known to be there and its link is made: a failure before
    # this point (stamping, storage) costs the buyer none of their downloads.
    copy.downloads += 1
    session.add(copy)
    assert user.id is not None
    engagement.record_download(
        session.connection(), user_id=user.id, product_id=product.id, lesson_id=lesson.id
    )
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "private, no-store"})
