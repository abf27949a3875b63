"""Buying: the checkout form, the test-mode payment page, success, orders, library, admin."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session, col, select

from app.authoring import service as authoring
from app.catalog import service as catalog
from app.catalog.models import Product
from app.checkout import service
from app.checkout.attribution import read_attribution
from app.checkout.models import Order, OrderStatus
from app.checkout.notify import queue_purchase_email
from app.checkout.providers import (
    CheckoutDetails,
    CheckoutRequest,
    PaymentError,
    PaymentUnavailable,
    TestModeProvider,
)
from app.deps import AdminUser, CurrentUser, OptionalUser, SessionDep, SettingsDep
from app.engagement import service as engagement
from app.errors import NotFound
from app.inquiries import service as inquiries
from app.web import flash, gettext_for, page, pick, request_locale

router = APIRouter(include_in_schema=False)
log = structlog.get_logger()
CURRENCIES = ("EUR", "AUD", "USD")
KEY_PATTERN = r"^[0-9a-f]{32}$"
RECENT_CHECKOUTS = "checkouts"


def default_currency(request: Request, available: list[str]) -> str:
    """EUR for Europe, AUD for Australia, USD for the US; from the browser's languages."""
    header = request.headers.get("accept-language", "").upper()
    wanted = "EUR"
    for part in header.split(","):
        region = part.split(";")[0].strip()[3:5]
        if region == "AU":
            wanted = "AUD"
            break
        if region == "US":
            wanted = "USD"
            break
        if region:
            break
    return wanted if wanted in available else (available[0] if available else "EUR")


def _remember_checkout(request: Request, key: str) -> None:
    keys = [k for k in request.session.get(RECENT_CHECKOUTS, []) if k != key]
    request.session[RECENT_CHECKOUTS] = [*keys[-4:], key]


def _form(
    request: Request, session: Session, slug: str, *, status_code: int = 200, **extra: Any
) -> Response:
    product = catalog.get_published(session=session, slug=slug)
    if product is None:
        raise NotFound()
    currencies = [c for c in CURRENCIES if c in product.prices] or sorted(product.prices)
    values = {
        "currency": default_currency(request, currencies),
        "email": "",
        "business": False,
        "company_name": "",
        "vat_id": "",
        **extra.pop("values", {}),
    }
    return page(
        request,
        "checkout/checkout.html",
        status_code=status_code,
        product=product,
        currencies=currencies,
        values=values,
        checkout_key=uuid.uuid4().hex,
        test_mode=isinstance(request.app.state.payments, TestModeProvider),
        consent_text=service.CONSENT_TEXT[request_locale(request)],
        **extra,
    )


def _after_paid(request: Request, order: Order, outcome: service.Outcome) -> None:
    """Queue the purchase email; called after the commit that granted access."""
    if outcome.granted and order.id is not None:
        queue_purchase_email(request.app.state.jobs, order.id)


@router.get("/checkout/success")
async def success(
    request: Request, session: SessionDep, user: OptionalUser, session_id: str = "", order: str = ""
) -> Response:
    provider = request.app.state.payments
    found: Order | None = None
    if session_id and not isinstance(provider, TestModeProvider):
        try:
            details = await run_in_threadpool(provider.retrieve, session_id[:255])
        except PaymentUnavailable:
            details = None  # the webhook will still fulfil; show the order as it stands
        except PaymentError as exc:
            raise NotFound() from exc
        if details is not None:
            outcome = service.apply_checkout(
                session=session, provider=provider.name, details=details, event="success_page"
            )
            found = outcome.order
            if found is not None:
                session.commit()
                _after_paid(request, found, outcome)
        if found is None:
            found = session.exec(
                select(Order).where(Order.provider_session_id == session_id[:255])
            ).first()
    elif order:
        found = session.exec(select(Order).where(Order.number == order[:24])).first()
    if found is None:
        raise NotFound()
    # Only the browser that checked out (or the buyer) may see the order.
    mine = found.checkout_key in request.session.get(RECENT_CHECKOUTS, []) or (
        user is not None and user.id == found.user_id
    )
    if not mine:
        raise NotFound()
    product = session.get(Product, found.product_id)
    return page(request, "checkout/success.html", order=found, product=product)


@router.get("/checkout/cancel")
def cancel(request: Request, session: SessionDep, user: OptionalUser, order: str = "") -> Response:
    found = session.exec(select(Order).where(Order.number == order[:24])).first()
    # Order numbers are sequential: only the browser that started the order (or its buyer)
    # learns which product it was for.
    if found is not None and not (
        found.checkout_key in request.session.get(RECENT_CHECKOUTS, [])
        or (user is not None and user.id == found.user_id)
    ):
        found = None
    product = session.get(Product, found.product_id) if found else None
    return page(request, "checkout/cancel.html", product=product)


# Test mode ------------------------------------------------------------------------------------


def _test_order(request: Request, session: Session, session_id: str) -> Order:
    if not isinstance(request.app.state.payments, TestModeProvider):
        raise NotFound()
    order = session.exec(
        select(Order).where(Order.provider == "test", Order.provider_session_id == session_id[:255])
    ).first()
    if order is None or order.checkout_key not in request.session.get(RECENT_CHECKOUTS, []):
        raise NotFound()
    return order


@router.get("/checkout/test/{session_id}")
def test_payment_page(request: Request, session: SessionDep, session_id: str) -> Response:
    order = _test_order(request, session, session_id)
    product = session.get(Product, order.product_id)
    return page(
        request, "checkout/test_pay.html", order=order, product=product, session_id=session_id
    )


@router.post("/checkout/test/{session_id}")
def test_payment(
    request: Request,
    session: SessionDep,
    user: OptionalUser,
    session_id: str,
    action: Annotated[str, Form(pattern=r"^(pay|cancel)$")],
    name: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    order = _test_order(request, session, session_id)
    if action == "cancel":
        return RedirectResponse(f"/checkout/cancel?order={order.number}", status_code=303)
    details = CheckoutDetails(
        session_id=session_id,
        status="complete",
        payment_status="paid",
        payment_intent=f"test_pi_{order.checkout_key}",
        order_number=order.number,
        email=order.email,
        name=name.strip() or None,
        business_name=order.company_name,
        tax_id=order.vat_id,
        currency=order.currency.lower(),
        amount_subtotal=order.amount,
        amount_total=order.amount,
    )
    outcome = service.apply_checkout(
        session=session, provider="test", details=details, event="completed"
    )
    session.commit()
    if outcome.order is not None:
        _after_paid(request, outcome.order, outcome)
    return RedirectResponse(f"/checkout/success?order={order.number}", status_code=303)


# The product's checkout form: registered after the fixed /checkout/... paths above.


@router.get("/checkout/{slug}")
def checkout_form(
    request: Request, session: SessionDep, user: OptionalUser, slug: str, currency: str = ""
) -> Response:
    extra: dict[str, Any] = {}
    if currency.upper() in CURRENCIES:
        extra["values"] = {"currency": currency.upper()}
    return _form(request, session, slug[:80], **extra)


@router.post("/checkout/{slug}")
async def start_checkout(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    user: OptionalUser,
    slug: str,
    checkout_key: Annotated[str, Form(pattern=KEY_PATTERN)],
    currency: Annotated[str, Form(max_length=3)],
    email: Annotated[str, Form(max_length=320)] = "",
    business: Annotated[bool, Form()] = False,
    company_name: Annotated[str, Form(max_length=200)] = "",
    vat_id: Annotated[str, Form(max_length=32, pattern=r"^[A-Za-z0-9 .-]*$")] = "",
    consent: Annotated[bool, Form()] = False,
) -> Response:
    from app.accounts import service as accounts

    _ = gettext_for(request)
    values = {
        "currency": currency.upper(),
        "email": email,
        "business": business,
        "company_name": company_name,
        "vat_id": vat_id,
    }
    errors: dict[str, str] = {}
    address: str | None = None
    if user is None:
        try:
            address = accounts.normalize_email(email)
        except accounts.AccountError:
            errors["email"] = _("Please enter a valid email address.")
    if business and not company_name.strip():
        errors["company_name"] = _("Please enter the company name.")
    if not business and not consent:
        errors["consent"] = _("Please confirm that you want immediate access.")
    if currency.upper() not in CURRENCIES:
        errors["currency"] = _("Please choose a currency.")
    if errors:
        return _form(request, session, slug[:80], status_code=422, errors=errors, values=values)
    provider = request.app.state.payments
    locale = request_locale(request)
    try:
        order, product = service.start_order(
            session=session,
            product_slug=slug[:80],
            currency=currency,
            checkout_key=checkout_key,
            provider=provider.name,
            user=user,
            email=address,
            business=business,
            company_name=company_name.strip(),
            vat_id=vat_id.strip().upper().replace(" ", ""),
            consent_locale=None if business else locale,
            attribution=read_attribution(request),
        )
    except service.CheckoutError as exc:
        if "unknown product" in str(exc):
            return page(
                request,
                "errors/error.html",
                status_code=422,
                status=422,
                title=_("Invalid input"),
                message=_("This product is not for sale."),
                request_id="",
            )
        return _form(
            request,
            session,
            slug[:80],
            status_code=422,
            errors={"currency": str(exc)},
            values=values,
        )
    if order.status != OrderStatus.pending:
        return RedirectResponse(f"/checkout/success?order={order.number}", status_code=303)
    session.commit()  # the order exists (pending) whatever the provider answers
    _remember_checkout(request, checkout_key)
    base = settings.base_url.rstrip("/")
    checkout = CheckoutRequest(
        order_number=order.number,
        order_id=order.id or 0,
        checkout_key=checkout_key,
        product_name=pick(product.title, locale),
        amount=order.amount,
        currency=order.currency,
        success_url=f"{base}/checkout/success?session_id={{CHECKOUT_SESSION_ID}}",
        cancel_url=f"{base}/checkout/cancel?order={order.number}",
        customer_email=order.email,
        locale=locale,
        business=business,
        company_name=order.company_name,
        vat_id=order.vat_id,
        attempt=order.checkout_attempt,
    )
    try:
        session_id, url = await run_in_threadpool(provider.create_checkout, checkout)
    except PaymentUnavailable as exc:
        log.warning("checkout.provider_unavailable", order=order.number, error=str(exc))
        if exc.server_error:
            # Stripe keeps a 500 under its idempotency key for a day: the next try needs another.
            order.checkout_attempt += 1
            session.add(order)
            session.commit()
        return page(
            request,
            "checkout/unavailable.html",
            status_code=503,
            headers={"Retry-After": "30"},
            order=order,
            product=product,
            slug=slug,
            values=values,
            checkout_key=checkout_key,
        )
    except PaymentError as exc:
        log.error("checkout.provider_refused", order=order.number, error=str(exc))
        return page(
            request,
            "checkout/unavailable.html",
            status_code=502,
            order=order,
            product=product,
            slug=slug,
            values=values,
            checkout_key=checkout_key,
        )
    service.attach_session(session=session, order=order, session_id=session_id)
    log.info("checkout.started", order=order.number, provider=provider.name)
    return RedirectResponse(url, status_code=303)


# Buyer pages ----------------------------------------------------------------------------------


@router.get("/library")
def library(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    products = service.library(session=session, user=user)
    views = [v for p in products if (v := catalog.get_published(session=session, slug=p.slug))]
    assert user.id is not None
    conn = session.connection()
    rows = engagement.progress_of(conn, user_id=user.id)
    progress = {
        v.id: engagement.course_progress(
            rows, [(lesson.id, lesson.key) for m in v.modules for lesson in m.lessons]
        )
        for v in views
    }
    standing = engagement.standing(conn, user_id=user.id, settings=request.app.state.settings)
    return page(
        request,
        "checkout/library.html",
        products=views,
        new=authoring.whats_new(
            session=session, user_id=user.id, days=request.app.state.settings.release_new_days
        ),
        progress=progress,
        show_invitation=standing.engaged
        and inquiries.latest_of(session=session, user_id=user.id) is None,
    )


@router.get("/orders")
def orders(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    return page(
        request, "checkout/orders.html", orders=service.orders_of(session=session, user=user)
    )


# Admin ------------------------------------------------------------------------------------------


@router.get("/admin/orders")
def admin_orders(
    request: Request, session: SessionDep, admin: AdminUser, status: str = ""
) -> Response:
    query = select(Order, Product).join(Product, col(Product.id) == col(Order.product_id))
    if status in {s.value for s in OrderStatus}:
        query = query.where(Order.status == status)
    rows = list(
        session.exec(query.order_by(col(Order.created_at).desc(), col(Order.id).desc()).limit(200))
    )
    return page(
        request,
        "checkout/admin_orders.html",
        rows=rows,
        status=status,
        statuses=[s.value for s in OrderStatus],
        attention=service.needs_attention(session=session),
    )


@router.post("/admin/orders/{order_id}/refund")
async def refund(
    request: Request, session: SessionDep, admin: AdminUser, order_id: int
) -> Response:
    _ = gettext_for(request)
    order = session.get(Order, order_id)
    if order is None:
        raise NotFound()
    if order.status != OrderStatus.paid or not order.payment_intent:
        flash(request, _("Only paid orders can be refunded."), "error")
        return RedirectResponse("/admin/orders", status_code=303)
    provider = request.app.state.payments
    if isinstance(provider, TestModeProvider) or order.provider == "test":
        service.apply_refund(
            session=session,
            payment_intent=order.payment_intent,
            amount_refunded=order.amount_total if order.amount_total is not None else order.amount,
            fully=True,
        )
    else:
        try:
            await run_in_threadpool(
                provider.refund,
                payment_intent=order.payment_intent,
                idempotency_key=f"refund-{order.number}",
            )
        except PaymentUnavailable:
            flash(
                request,
                _("Stripe is not reachable right now. Nothing was refunded; please try again."),
                "error",
            )
            return RedirectResponse("/admin/orders", status_code=303)
        except PaymentError as exc:
            flash(request, _("Stripe refused the refund; see the log for the reason."), "error")
            log.error("refund.refused", order=order.number, error=str(exc))
            return RedirectResponse("/admin/orders", status_code=303)
    log.info("refund.requested", order=order.number, by=admin.id)
    if order.provider == "stripe":
        message = _("Refund requested for order %(number)s. Access ends when Stripe confirms it.")
    else:
        message = _("Order %(number)s refunded; access revoked.")
    flash(request, message % {"number": order.number})
    return RedirectResponse("/admin/orders", status_code=303)
