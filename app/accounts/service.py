"""Account operations."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, func, select

from app.accounts.models import Role, User


class AccountError(ValueError):
    """A request about accounts that cannot be done as asked."""


def normalize_email(email: str) -> str:
    """Checked and lower-cased email address; AccountError when it is not one."""
    try:
        info = validate_email(email.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise AccountError(f"not a valid email address: {email!r} ({exc})") from exc
    return info.normalized.lower()


def get_user_by_email(*, session: Session, email: str) -> User | None:
    """The user with this email (case-insensitive), if any."""
    return session.exec(select(User).where(func.lower(User.email) == email.lower())).first()


def create_user(
    *, session: Session, email: str, role: Role, name: str = "", locale: str = "en"
) -> User:
    """A new user; AccountError if the email is invalid or taken."""
    email = normalize_email(email)
    if get_user_by_email(session=session, email=email):
        raise AccountError(f"a user with email {email} already exists")
    user = User(email=email, role=role, name=name, locale=locale)
    session.add(user)
    session.flush()
    return user
