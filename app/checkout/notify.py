"""Emails about purchases: written by a job after the transaction that caused them has committed."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import Engine
from sqlmodel import Session

from app.accounts import service as accounts
from app.accounts.models import User
from app.catalog.models import Product
from app.checkout.models import Order
from app.config import Settings
from app.jobs.base import JobsUnavailable, Runner
from app.mail import Mail, render_mail
from app.web import pick

log = structlog.get_logger()


def queue_purchase_email(jobs: Runner, order_id: int) -> None:
    """Queue the purchase email of a paid order (after its commit). Never raises."""
    try:
        jobs.enqueue("purchase_email", order_id=order_id)
    except JobsUnavailable as exc:
        # The purchase stands; the buyer can always request a sign-in link themselves.
        log.error("email.purchase_not_queued", order_id=order_id, error=str(exc))


def purchase_mail(*, engine: Engine, settings: Settings, order_id: int) -> Mail | None:
    """The buyer's thank-you email with a new sign-in link to their library (None: no buyer)."""
    with Session(engine) as session:
        order = session.get(Order, order_id)
        if order is None or order.user_id is None:
            return None
        user = session.get(User, order.user_id)
        product = session.get(Product, order.product_id)
        if user is None or product is None:
            return None
        # A day to click, since this email also greets people who never had an account.
        token = accounts.create_login_link(
            session=session, email=user.email, ttl_seconds=24 * 3600, next_path="/library"
        )
        session.commit()
        base = settings.base_url.rstrip("/")
        context: dict[str, Any] = {
            "buyer_name": user.name,
            "product_title": pick(product.title, user.locale),
            "order_number": order.number,
            "link": f"{base}/auth/magic?token={token}",
            "new_account": order.account_created,
        }
        return render_mail("purchase", to=user.email, locale=user.locale, **context)
