"""A person's data across domains: export it all, or erase it all (orders stay, anonymous)."""

from __future__ import annotations

from sqlmodel import Session

from app.accounts import service as accounts
from app.accounts.models import User
from app.checkout import service as checkout
from app.engagement import service as engagement
from app.inquiries import service as inquiries
from app.models_base import utcnow


def export_user_data(*, session: Session, user: User) -> dict[str, object]:
    """Everything Rapport holds about the user, as JSON-ready data."""
    data: dict[str, object] = {"exported_at": utcnow().isoformat()}
    data.update(accounts.export_account(session=session, user=user))
    data.update(checkout.export_orders(session=session, user=user))
    data.update(engagement.export_engagement(session=session, user=user))
    data.update(inquiries.export_inquiries(session=session, user=user))
    return data


def delete_user_data(*, session: Session, user: User) -> None:
    """Erase the user's personal data in every domain, then the account itself."""
    checkout.anonymise_orders(session=session, user=user)
    engagement.erase_engagement(session=session, user=user)
    inquiries.erase_inquiries(session=session, user=user)
    accounts.delete_account(session=session, user=user)
