"""The learning pages: a lesson with its player, text or e-book reader, and the outline."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from app.catalog import service as catalog
from app.catalog.service import LessonView, ProductView
from app.delivery.service import Access, media_grant, stream_url
from app.deps import Forbidden, LoginRequired, OptionalUser, SessionDep
from app.errors import NotFound
from app.markdown import render_markdown
from app.web import page, pick, request_locale

router = APIRouter(include_in_schema=False)


def _find(product: ProductView, key: str) -> tuple[LessonView, int, list[LessonView]]:
    flat = [lesson for module in product.modules for lesson in module.lessons]
    for index, lesson in enumerate(flat):
        if lesson.key == key:
            return lesson, index, flat
    raise NotFound()


def _lesson_body(session: Session, lesson_id: int, locale: str) -> str:
    from app.catalog.models import Lesson

    lesson = session.get(Lesson, lesson_id)
    return render_markdown(pick(lesson.body, locale)) if lesson else ""


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
    if lesson.kind == "text":
        context["body_html"] = _lesson_body(session, lesson.id, request_locale(request))
    return page(request, "delivery/lesson.html", **context)
