"""Admin pages: the people with access and their roles; conversion dashboard, leads, exports."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import col, select

from app.accounts import service as accounts
from app.accounts.models import Role, User
from app.admin import charts, exports, service
from app.admin.formats import Formats
from app.admin.service import DateRange
from app.deps import AdminUser, SessionDep, SettingsDep
from app.errors import NotFound
from app.models_base import utcnow
from app.web import flash, gettext_for, page, request_locale

LEADS_SHOWN = 100  # per list on the page; the exports have them all

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


# Conversion dashboard, leads, buyer timeline, exports -----------------------------------------


def _range_or_422(request: Request, raw_from: str | None, raw_to: str | None) -> DateRange:
    """The requested date range, or a 422 that says what is wrong with it."""
    _ = gettext_for(request)
    messages = {
        "malformed": _("Dates must be written as YYYY-MM-DD, for example 2026-03-31."),
        "reversed": _("The start date (from) is after the end date (to)."),
        "too_long": _("A date range may span at most ten years."),
        "out_of_bounds": _("Dates must lie between the years 2000 and 2100."),
    }
    try:
        return service.parse_range(raw_from, raw_to, today=utcnow().date())
    except service.InvalidRange as exc:
        raise HTTPException(status_code=422, detail=messages[exc.reason]) from None


FromQuery = Annotated[str | None, Query(alias="from", max_length=40)]
ToQuery = Annotated[str | None, Query(alias="to", max_length=40)]


@router.get("/admin")
def dashboard(
    request: Request,
    session: SessionDep,
    admin: AdminUser,
    raw_from: FromQuery = None,
    raw_to: ToQuery = None,
) -> Response:
    period = _range_or_422(request, raw_from, raw_to)
    locale = request_locale(request)
    board = service.dashboard(session, period=period, locale=locale)
    _ = gettext_for(request)
    return page(
        request,
        "admin/dashboard.html",
        board=board,
        charts=charts.chart_data(board, _),
        query=urlencode({"from": period.start.isoformat(), "to": period.end.isoformat()}),
        presets=charts.presets(utcnow().date()),
        fmt=Formats(locale),
    )


@router.get("/admin/leads")
def leads_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminUser,
    raw_from: FromQuery = None,
    raw_to: ToQuery = None,
) -> Response:
    # Without a range, every engaged buyer who has not asked yet; with one, those engaged in it.
    period = _range_or_422(request, raw_from, raw_to) if raw_from or raw_to else None
    found = service.leads(session, settings=settings, now=utcnow(), engaged=period)
    _ = gettext_for(request)
    return page(
        request,
        "admin/leads.html",
        buyers=found.buyers[:LEADS_SHOWN],
        companies=found.companies[:LEADS_SHOWN],
        buyers_total=len(found.buyers),
        companies_total=len(found.companies),
        period=period,
        mail_subject=_("Your learning with Rapport: shall we talk?"),
        threshold=settings.engaged_threshold,
        fmt=Formats(request_locale(request)),
    )


@router.get("/admin/buyers/{user_id}")
def buyer_page(
    request: Request, session: SessionDep, settings: SettingsDep, admin: AdminUser, user_id: int
) -> Response:
    view = service.buyer_view(
        session,
        user_id=user_id,
        settings=settings,
        now=utcnow(),
        locale=request_locale(request),
    )
    if view is None:
        raise NotFound()
    return page(
        request,
        "admin/buyer.html",
        view=view,
        threshold=settings.engaged_threshold,
        fmt=Formats(request_locale(request)),
    )


EXPORTS = ("funnel", "leads", "inquiries", "orders")


def _export_table(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    name: str,
    raw_from: str | None,
    raw_to: str | None,
) -> tuple[service.Rows, str]:
    """The table of an export and the range its file name gives."""
    if name not in EXPORTS:
        raise NotFound()
    if name == "leads":
        # As on the leads page: without a range every current lead, with one those engaged in it.
        engaged = _range_or_422(request, raw_from, raw_to) if raw_from or raw_to else None
        table = service.leads_table(
            service.leads(session, settings=settings, now=utcnow(), engaged=engaged)
        )
        span = f"{engaged.start.isoformat()}-{engaged.end.isoformat()}" if engaged else "all"
    else:
        period = _range_or_422(request, raw_from, raw_to)
        if name == "funnel":
            board = service.dashboard(session, period=period, locale=request_locale(request))
            table = service.funnel_table(board)
        elif name == "inquiries":
            table = service.inquiries_table(session, period)
        else:
            table = service.orders_table(session, period)
        span = f"{period.start.isoformat()}-{period.end.isoformat()}"
    return table, span


@router.get("/admin/exports/{name}.csv")
def export_csv(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminUser,
    name: str,
    raw_from: FromQuery = None,
    raw_to: ToQuery = None,
) -> Response:
    table, span = _export_table(request, session, settings, name, raw_from, raw_to)
    log.info("admin.export", name=name, format="csv", rows=len(table[1]), by=admin.id)
    return _download(exports.csv_bytes(table), exports.CSV_TYPE, f"rapport-{name}-{span}.csv")


@router.get("/admin/exports/{name}.xlsx")
def export_xlsx(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminUser,
    name: str,
    raw_from: FromQuery = None,
    raw_to: ToQuery = None,
) -> Response:
    table, span = _export_table(request, session, settings, name, raw_from, raw_to)
    log.info("admin.export", name=name, format="xlsx", rows=len(table[1]), by=admin.id)
    body = exports.xlsx_bytes(table, title=name)
    return _download(body, exports.XLSX_TYPE, f"rapport-{name}-{span}.xlsx")


def _download(body: bytes, media_type: str, filename: str) -> Response:
    return Response(
        body,
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )
