"""Sign-in, sign-out and the account page."""

from __future__ import annotations

import json
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.accounts import service
from app.accounts.models import Role
from app.deps import (
    CurrentUser,
    OptionalUser,
    SessionDep,
    SettingsDep,
    recently_proven,
    sign_in,
    sign_out,
)
from app.jobs.base import JobsUnavailable
from app.privacy import export_user_data
from app.web import LOCALES, client_ip, flash, gettext_for, page, request_locale, safe_next

router = APIRouter(include_in_schema=False)
log = structlog.get_logger()

Email = Annotated[str, Form(max_length=320)]
Next = Annotated[str, Form(max_length=2000)]


def _limit(request: Request, email: str | None) -> None:
    settings = request.app.state.settings
    limiter = request.app.state.limiter
    limiter.hit(settings.login_rate_per_ip, "login-ip", client_ip(request))
    if email:
        limiter.hit(settings.login_rate_per_email, "login-email", email.lower())


def _login_again(request: Request, next: str, email: str, **error: Any) -> Response:
    """The sign-in form once more, with what was typed and what was wrong (400)."""
    return page(
        request,
        "accounts/login.html",
        status_code=400,
        next=safe_next(next, "/account"),
        email=email,
        **error,
    )


@router.get("/auth/login")
def login_form(request: Request, user: OptionalUser, next: str = "/account") -> Response:
    if user is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return page(request, "accounts/login.html", next=safe_next(next, "/account"), email="")


@router.post("/auth/magic-link")
async def request_magic_link(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    email: Email,
    next: Next = "/account",
) -> Response:
    _ = gettext_for(request)
    try:
        address = service.normalize_email(email)
    except service.AccountError:
        return _login_again(request, next, email, error=_("Please enter a valid email address."))
    _limit(request, address)
    # Known or not, the request does the same: queue a job (which writes the link only for
    # an account). So the answer, and its time, tell nothing, and a mail server outage is
    # ridden out by the job's retries instead of failing the form.
    try:
        request.app.state.jobs.enqueue(
            "magic_link_email", email=address, next_path=service.link_next(next)
        )
    except JobsUnavailable as exc:
        log.error("auth.magic_link_not_queued", error=str(exc))
    # The same answer whether or not the address has an account.
    return RedirectResponse("/auth/check-email", status_code=303)


@router.get("/auth/check-email")
def check_email(request: Request) -> Response:
    return page(request, "accounts/check_email.html")


@router.get("/auth/magic")
def magic_confirm(
    request: Request,
    session: SessionDep,
    user: OptionalUser,
    token: str = "",
    next: str = "/account",
) -> Response:
    """Show a button rather than signing in on GET: mail scanners open links too."""
    _ = gettext_for(request)
    try:
        target = service.peek_login_link(session=session, token=token[:100])
    except service.InvalidLink:
        return page(request, "accounts/link_invalid.html", status_code=400)
    if user is not None and user.id != target.id:
        return page(
            request,
            "accounts/link_invalid.html",
            status_code=409,
            message=_(
                "You are signed in as another user. Sign out first, then open the link again."
            ),
        )
    return page(
        request,
        "accounts/magic_confirm.html",
        token=token,
        next=service.login_link_next(session=session, token=token[:100]),
        email=target.email,
    )


@router.post("/auth/magic")
def magic_sign_in(
    request: Request,
    session: SessionDep,
    user: OptionalUser,
    token: Annotated[str, Form(max_length=100)],
    next: Next = "/account",
) -> Response:
    _ = gettext_for(request)
    try:
        target = service.peek_login_link(session=session, token=token)
        if user is not None and user.id != target.id:
            return page(
                request,
                "accounts/link_invalid.html",
                status_code=409,
                message=_(
                    "You are signed in as another user. Sign out first, then open the link again."
                ),
            )
        target_path = service.login_link_next(session=session, token=token)
        signed_in = service.consume_login_link(session=session, token=token)
    except service.InvalidLink:
        return page(request, "accounts/link_invalid.html", status_code=400)
    sign_in(request, signed_in)
    log.info("auth.signed_in", user_id=signed_in.id, method="magic_link")
    return RedirectResponse(target_path, status_code=303)


@router.post("/auth/login")
def password_sign_in(
    request: Request,
    session: SessionDep,
    email: Email,
    password: Annotated[str, Form(max_length=service.PASSWORD_MAX)],
    next: Next = "/account",
) -> Response:
    _ = gettext_for(request)
    address = email.strip().lower()
    _limit(request, address)
    user = service.authenticate_password(session=session, email=address, password=password)
    if user is None:
        return _login_again(
            request, next, email, password_error=_("Email or password is incorrect.")
        )
    sign_in(request, user)
    log.info("auth.signed_in", user_id=user.id, method="password")
    return RedirectResponse(safe_next(next, "/account"), status_code=303)


@router.post("/auth/logout")
def logout(request: Request, session: SessionDep) -> Response:
    sign_out(request, session)
    _ = gettext_for(request)
    flash(request, _("You are signed out."))
    return RedirectResponse("/", status_code=303)


# The account page ---------------------------------------------------------------------------


def _account_page(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    status_code: int = 200,
    **extra: Any,
) -> Response:
    company = None
    if user.company_id:
        from app.accounts.models import Company

        company = session.get(Company, user.company_id)
    tokens = service.list_api_tokens(session=session, user=user) if user.role != Role.buyer else []
    return page(
        request,
        "accounts/account.html",
        status_code=status_code,
        company=company,
        tokens=tokens,
        **extra,
    )


@router.get("/account")
def account(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    return _account_page(request, session, user)


@router.post("/account/profile")
def save_profile(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    name: Annotated[str, Form(max_length=200)] = "",
    locale: Annotated[str, Form(max_length=8)] = "en",
    company_name: Annotated[str, Form(max_length=200)] = "",
    company_country: Annotated[str, Form(max_length=2, pattern=r"^([A-Za-z]{2})?$")] = "",
    company_vat_id: Annotated[str, Form(max_length=32, pattern=r"^[A-Za-z0-9 .-]*$")] = "",
) -> Response:
    if locale not in LOCALES:
        locale = "en"
    service.update_profile(
        session=session,
        user=user,
        profile=service.Profile(name, locale, company_name, company_country, company_vat_id),
    )
    response = RedirectResponse("/account", status_code=303)
    response.delete_cookie("lang")  # the saved language wins from now on
    _ = gettext_for(request)
    flash(request, _("Your details are saved."))
    return response


@router.post("/account/password")
def save_password(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    password: Annotated[str, Form(max_length=service.PASSWORD_MAX)] = "",
    remove: Annotated[bool, Form()] = False,
) -> Response:
    _ = gettext_for(request)
    if not recently_proven(request, request.app.state.settings.reauth_seconds):
        sign_out(request)
        flash(request, _("Please sign in again to change your password."), "error")
        return RedirectResponse("/auth/login?next=/account", status_code=303)
    if remove:
        service.remove_password(session=session, user=user)
        flash(request, _("Password removed: you sign in with an email link."))
        return RedirectResponse("/account", status_code=303)
    try:
        service.set_password(session=session, user=user, password=password)
    except service.AccountError:
        return _account_page(
            request,
            session,
            user,
            status_code=400,
            password_error=_("Choose a password of at least 10 characters that is hard to guess."),
        )
    flash(request, _("Your password is set."))
    return RedirectResponse("/account", status_code=303)


@router.post("/account/sign-out-everywhere")
def sign_out_everywhere(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    service.sign_out_everywhere(session=session, user=user)
    sign_out(request)
    _ = gettext_for(request)
    flash(request, _("You are signed out on every device."))
    return RedirectResponse("/auth/login", status_code=303)


@router.post("/account/tokens")
def create_token(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    name: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    from app.deps import Forbidden

    if user.role == Role.buyer:
        raise Forbidden()
    _ = gettext_for(request)
    try:
        _token, plain = service.create_api_token(session=session, user=user, name=name)
    except service.AccountError:
        return _account_page(
            request,
            session,
            user,
            status_code=400,
            token_error=_("Give the token a name."),
        )
    return _account_page(request, session, user, status_code=201, new_token=plain)


@router.post("/account/tokens/{token_id}/revoke")
def revoke_token(
    request: Request, session: SessionDep, user: CurrentUser, token_id: int
) -> Response:
    from app.deps import Forbidden
    from app.errors import NotFound

    if user.role == Role.buyer:
        raise Forbidden()
    if not service.revoke_api_token(session=session, user=user, token_id=token_id):
        raise NotFound()
    _ = gettext_for(request)
    flash(request, _("The token is revoked."))
    return RedirectResponse("/account", status_code=303)


@router.get("/account/export")
def export(session: SessionDep, user: CurrentUser) -> Response:
    data = export_user_data(session=session, user=user)
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False, default=str),
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="rapport-my-data.json"'},
    )


@router.get("/account/delete")
def delete_confirm(request: Request, user: CurrentUser) -> Response:
    return page(request, "accounts/delete.html")


@router.post("/account/delete")
def delete_account(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    confirm_email: Annotated[str, Form(max_length=320)] = "",
) -> Response:
    _ = gettext_for(request)
    if confirm_email.strip().lower() != user.email.lower():
        return page(
            request,
            "accounts/delete.html",
            status_code=400,
            error=_("Type your email address exactly to confirm."),
        )
    from app.privacy import delete_user_data

    user_id = user.id
    delete_user_data(session=session, user=user)
    sign_out(request)
    log.info("account.deleted", user_id=user_id)
    flash(request, _("Your account is deleted."))
    request.state.user = None
    locale = request_locale(request)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie("lang", locale, samesite="lax", httponly=True)
    return response
