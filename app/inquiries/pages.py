"""The inquiry form for buyers and visitors, and the admin's pipeline board."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Annotated

import structlog
from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import RedirectResponse, Response

from app.accounts import service as accounts
from app.accounts.models import User
from app.checkout import service as checkout
from app.checkout.attribution import read_attribution
from app.deps import AdminUser, OptionalUser, SessionDep
from app.errors import NotFound
from app.inquiries import service
from app.inquiries.models import Inquiry, InquiryStatus
from app.mail import render_mail
from app.web import client_ip, flash, gettext_for, page, request_locale

log = structlog.get_logger()
router = APIRouter(include_in_schema=False)

MESSAGE_MIN = 10
Text200 = Annotated[str, Form(max_length=200)]


def _form(
    request: Request,
    session: SessionDep,
    user: User | None,
    *,
    status_code: int = 200,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
) -> Response:
    evidence = None
    if user is not None and checkout.library(session=session, user=user):
        evidence = service.evidence_for(
            session=session, user=user, settings=request.app.state.settings
        )
    prefill = values or {
        "name": user.name if user else "",
        "email": user.email if user else "",
        "company_name": service.company_name_of(session=session, user=user) if user else "",
        "phone": "",
        "message": "",
    }
    return page(
        request,
        "inquiries/form.html",
        status_code=status_code,
        values=prefill,
        errors=errors or {},
        evidence=evidence,
    )


@router.get("/inquiry")
def inquiry_form(request: Request, session: SessionDep, user: OptionalUser) -> Response:
    return _form(request, session, user)


@router.post("/inquiry")
def inquiry_submit(
    request: Request,
    session: SessionDep,
    user: OptionalUser,
    name: Text200 = "",
    email: Annotated[str, Form(max_length=320)] = "",
    company_name: Text200 = "",
    phone: Annotated[str, Form(max_length=60)] = "",
    message: Annotated[str, Form(max_length=5000)] = "",
    website: Text200 = "",  # the honeypot: hidden from people, filled in by bots
) -> Response:
    _ = gettext_for(request)
    settings = request.app.state.settings
    request.app.state.limiter.hit(settings.inquiry_rate_per_ip, "inquiry-ip", client_ip(request))
    if website:
        log.info("inquiry.honeypot", ip=client_ip(request))
        return RedirectResponse("/inquiry/thanks", status_code=303)  # nothing stored, no hint
    values = {
        "name": name.strip(),
        "email": email.strip(),
        "company_name": company_name.strip(),
        "phone": phone.strip(),
        "message": message.strip(),
    }
    errors: dict[str, str] = {}
    if not values["name"]:
        errors["name"] = _("Please tell us your name.")
    try:
        values["email"] = accounts.normalize_email(values["email"])
    except accounts.AccountError:
        errors["email"] = _("Please enter a valid email address.")
    if len(values["message"]) < MESSAGE_MIN:
        errors["message"] = _("Please write a few words about what you would like to discuss.")
    if errors:
        return _form(request, session, user, status_code=400, values=values, errors=errors)
    buyer = user if user is not None and checkout.library(session=session, user=user) else None
    evidence = service.evidence_for(session=session, user=buyer, settings=settings) if buyer else {}
    locale = request_locale(request)
    inquiry = service.create(
        session=session,
        user=user,
        locale=locale,
        attribution=read_attribution(request),
        evidence=evidence,
        **values,
    )
    _tell(request, session, inquiry)
    log.info("inquiry.received", inquiry_id=inquiry.id, source=inquiry.source)
    return RedirectResponse("/inquiry/thanks", status_code=303)


def _tell(request: Request, session: SessionDep, inquiry: Inquiry) -> None:
    """The admin hears of the inquiry and the sender gets a confirmation, once committed."""
    settings = request.app.state.settings
    base = settings.base_url.rstrip("/")
    admin = render_mail(
        "inquiry_admin",
        to=settings.admin_email,
        locale=settings.default_locale,
        inquiry=inquiry,
        link=f"{base}/admin/inquiries/{inquiry.id}",
    )
    confirm = render_mail(
        "inquiry_received", to=inquiry.email, locale=inquiry.locale, inquiry=inquiry
    )
    for mail in (admin, confirm):
        request.app.state.jobs.enqueue_after_commit(session, "send_mail", **asdict(mail))


@router.get("/inquiry/thanks")
def inquiry_thanks(request: Request) -> Response:
    return page(request, "inquiries/thanks.html")


# -- the admin's pipeline ----------------------------------------------------------------------


@router.get("/admin/inquiries")
def inquiry_board(request: Request, session: SessionDep, admin: AdminUser) -> Response:
    settings = request.app.state.settings
    columns = service.board(session=session)
    flagged = {
        i.id
        for column in columns
        for i in column.inquiries
        if service.waiting(i, settings=settings)
    }
    return page(request, "inquiries/board.html", columns=columns, flagged=flagged)


def _detail(
    request: Request,
    session: SessionDep,
    inquiry: Inquiry,
    *,
    status_code: int = 200,
    error: str = "",
) -> Response:
    return page(
        request,
        "inquiries/detail.html",
        status_code=status_code,
        inquiry=inquiry,
        steps=service.history(session=session, inquiry_id=inquiry.id or 0),
        waiting=service.waiting(inquiry, settings=request.app.state.settings),
        statuses=list(InquiryStatus),
        error=error,
        today=date.today().isoformat(),
    )


def _inquiry(session: SessionDep, inquiry_id: int) -> Inquiry:
    inquiry = session.get(Inquiry, inquiry_id)
    if inquiry is None:
        raise NotFound()
    return inquiry


InquiryId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/admin/inquiries/{inquiry_id}")
def inquiry_detail(
    request: Request, session: SessionDep, admin: AdminUser, inquiry_id: InquiryId
) -> Response:
    return _detail(request, session, _inquiry(session, inquiry_id))


@router.post("/admin/inquiries/{inquiry_id}")
def inquiry_change(
    request: Request,
    session: SessionDep,
    admin: AdminUser,
    inquiry_id: InquiryId,
    status: Annotated[str, Form(max_length=24)],
    note: Annotated[str, Form(max_length=2000)] = "",
    next_follow_up: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    _ = gettext_for(request)
    inquiry = _inquiry(session, inquiry_id)
    try:
        new_status = InquiryStatus(status)
    except ValueError:
        return _detail(request, session, inquiry, status_code=422, error=_("Unknown status."))
    follow_up: date | None = None
    if next_follow_up:
        try:
            follow_up = date.fromisoformat(next_follow_up)
        except ValueError:
            return _detail(
                request,
                session,
                inquiry,
                status_code=422,
                error=_("The follow-up date is not a date."),
            )
    try:
        service.change(
            session=session,
            inquiry=inquiry,
            actor=admin,
            status=new_status,
            note=note.strip(),
            next_follow_up=follow_up,
        )
    except service.InquiryError:
        return _detail(
            request,
            session,
            inquiry,
            status_code=422,
            error=_("Nothing to save: a won inquiry stays won, and an unchanged one needs a note."),
        )
    log.info("inquiry.changed", inquiry_id=inquiry.id, status=new_status.value, actor=admin.id)
    flash(request, _("Saved."), "success")
    return RedirectResponse(f"/admin/inquiries/{inquiry_id}", status_code=303)
