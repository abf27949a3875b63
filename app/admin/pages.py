"""Admin pages: the people with access, and their roles."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import col, select

from app.accounts import service as accounts
from app.accounts.models import Role, User
from app.deps import AdminUser, SessionDep
from app.errors import NotFound
from app.web import flash, gettext_for, page

router = APIRouter(include_in_schema=False)
log = structlog.get_logger()


@router.get("/admin/users")
def users(request: Request, session: SessionDep, admin: AdminUser, q: str = "") -> Response:
    query = select(User).order_by(col(User.created_at).desc(), col(User.id).desc()).limit(200)
    if q.strip():
        query = query.where(col(User.email).contains(q.strip().lower()[:100]))
    return page(
        request, "admin/users.html", people=list(session.exec(query)), q=q[:100], roles=list(Role)
    )


@router.post("/admin/users/{user_id}/role")
def set_role(
    request: Request,
    session: SessionDep,
    admin: AdminUser,
    user_id: int,
    role: Annotated[Role, Form()],
) -> Response:
    person = session.get(User, user_id)
    if person is None:
        raise NotFound()
    _ = gettext_for(request)
    if person.id == admin.id and role != Role.admin:
        flash(request, _("You cannot take the admin role from yourself."), "error")
        return RedirectResponse("/admin/users", status_code=303)
    accounts.change_role(session=session, user=person, role=role)
    log.info("admin.role_changed", user_id=person.id, role=role, by=admin.id)
    flash(request, _("Role changed; that person's sessions have ended."))
    return RedirectResponse("/admin/users", status_code=303)
