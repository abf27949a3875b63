"""Account operations: users, sign-in links, passwords, sessions, API tokens, companies."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, update
from sqlmodel import Session, col, func, select

from app.accounts.models import ApiToken, Company, LoginToken, Role, User
from app.accounts.security import (
    hash_password,
    needs_rehash,
    new_token,
    token_hash,
    verify_password,
)
from app.models_base import as_utc, utcnow

API_TOKEN_PREFIX = "rap_"  # noqa: S105 - a visible prefix, not a secret
PASSWORD_MIN = 10
PASSWORD_MAX = 256


class AccountError(ValueError):
    """A request about accounts that cannot be done as asked."""


class InvalidLink(AccountError):
    """A sign-in link that is unknown, used, expired or for someone else."""


def normalize_email(email: str) -> str:
    """Checked and lower-cased email address; AccountError when it is not one."""
    if len(email) > 320:
        raise AccountError("email address is too long")
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
    user = User(email=email, role=role, name=name[:200], locale=locale)
    session.add(user)
    session.flush()
    return user


# Sign-in links ------------------------------------------------------------------------------


_NEXT_PATH = re.compile(r"/[A-Za-z0-9/_.-]{0,299}")


def link_next(target: str | None, default: str = "/account") -> str:
    """Where a sign-in link may lead: a plain same-site path (letters, digits, `/_.-`; no
    query, no fragment, no scheme), else the default."""
    if not target or not _NEXT_PATH.fullmatch(target) or target.startswith("//"):
        return default
    return target


def create_login_link(
    *, session: Session, email: str, ttl_seconds: int, next_path: str | None = None
) -> str:
    """A single-use sign-in token for this email; only its hash is stored."""
    token = new_token()
    session.add(
        LoginToken(
            token_hash=token_hash(token),
            email=email.lower(),
            expires_at=utcnow() + timedelta(seconds=ttl_seconds),
            next_path=link_next(next_path) if next_path else None,
        )
    )
    session.flush()
    return token


def _live_link(session: Session, token: str) -> LoginToken:
    row = session.exec(select(LoginToken).where(LoginToken.token_hash == token_hash(token))).first()
    if row is None or row.used_at is not None or as_utc(row.expires_at) <= utcnow():
        raise InvalidLink("this sign-in link is invalid, used or expired")
    return row


def peek_login_link(*, session: Session, token: str) -> User:
    """The user a still-valid link would sign in, without using the link."""
    row = _live_link(session, token)
    user = get_user_by_email(session=session, email=row.email)
    if user is None:
        raise InvalidLink("this sign-in link is invalid, used or expired")
    return user


def login_link_next(*, session: Session, token: str) -> str:
    """Where a still-valid link leads after signing in (the account page by default)."""
    try:
        return link_next(_live_link(session, token).next_path)
    except InvalidLink:
        return "/account"


def consume_login_link(*, session: Session, token: str) -> User:
    """Use a sign-in link once and return its user; InvalidLink otherwise.

    The conditional UPDATE makes "once" hold even when two tabs race with the same link.
    """
    now = utcnow()
    hashed = token_hash(token)
    used = session.execute(
        update(LoginToken)
        .where(
            col(LoginToken.token_hash) == hashed,
            col(LoginToken.used_at).is_(None),
            col(LoginToken.expires_at) > now,
        )
        .values(used_at=now)
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidLink("this sign-in link is invalid, used or expired")
    row = session.exec(select(LoginToken).where(LoginToken.token_hash == hashed)).one()
    user = get_user_by_email(session=session, email=row.email)
    if user is None:
        raise InvalidLink("this sign-in link is invalid, used or expired")
    user.last_login_at = now
    session.add(user)
    return user


def authenticate_password(*, session: Session, email: str, password: str) -> User | None:
    """The user if the password is right; None for a wrong password or an unknown email."""
    if len(password) > PASSWORD_MAX:
        return None
    user = get_user_by_email(session=session, email=email)
    if not verify_password(user.password_hash if user else None, password) or user is None:
        return None
    if user.password_hash and needs_rehash(user.password_hash):
        # The argon2 parameters changed since this hash was made: store it anew, now that
        # the password is known.
        user.password_hash = hash_password(password)
    user.last_login_at = utcnow()
    session.add(user)
    return user


def set_password(*, session: Session, user: User, password: str) -> None:
    """Set or replace the user's password (argon2); AccountError when too weak."""
    if len(password) < PASSWORD_MIN:
        raise AccountError(f"the password needs at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise AccountError(f"the password may have at most {PASSWORD_MAX} characters")
    if password.lower() in user.email.lower() or len(set(password)) < 4:
        raise AccountError("the password is too easy to guess")
    user.password_hash = hash_password(password)
    session.add(user)


def remove_password(*, session: Session, user: User) -> None:
    """Sign in by email link only from now on."""
    user.password_hash = None
    session.add(user)


def sign_out_everywhere(*, session: Session, user: User) -> None:
    """Invalidate every session of the user at once."""
    user.session_version += 1
    session.add(user)


def change_role(*, session: Session, user: User, role: Role) -> None:
    """Give the user another role; their sessions end so that it applies at once."""
    if user.role != role:
        user.role = role
        sign_out_everywhere(session=session, user=user)


@dataclass
class Profile:
    name: str
    locale: str
    company_name: str
    company_country: str
    company_vat_id: str


def update_profile(*, session: Session, user: User, profile: Profile) -> None:
    """Save name, language and company details."""
    user.name = profile.name.strip()[:200]
    user.locale = profile.locale
    company = session.get(Company, user.company_id) if user.company_id else None
    if profile.company_name.strip():
        if company is None:
            company = Company(name="")
        company.name = profile.company_name.strip()[:200]
        company.country = profile.company_country.strip().upper()[:2]
        company.vat_id = profile.company_vat_id.strip().upper().replace(" ", "")[:32]
        session.add(company)
        session.flush()
        user.company_id = company.id
    elif company is not None:
        user.company_id = None
    session.add(user)


# API tokens ---------------------------------------------------------------------------------


def create_api_token(*, session: Session, user: User, name: str) -> tuple[ApiToken, str]:
    """A new API token; the plain token is returned once and never stored."""
    name = name.strip()
    if not name or len(name) > 100:
        raise AccountError("give the token a name of 1 to 100 characters")
    plain = new_token(API_TOKEN_PREFIX)
    token = ApiToken(
        user_id=user.id or 0, name=name, prefix=plain[:10], token_hash=token_hash(plain)
    )
    session.add(token)
    session.flush()
    return token, plain


def list_api_tokens(*, session: Session, user: User) -> list[ApiToken]:
    """The user's tokens, newest first, revoked ones included."""
    return list(
        session.exec(
            select(ApiToken)
            .where(ApiToken.user_id == user.id)
            .order_by(col(ApiToken.created_at).desc(), col(ApiToken.id).desc())
        )
    )


def revoke_api_token(*, session: Session, user: User, token_id: int) -> bool:
    """Revoke one of the user's own tokens; False when there is no such token of theirs."""
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != user.id:
        return False
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.add(token)
    return True


def user_for_api_token(*, session: Session, plain: str) -> User | None:
    """The owner of a live API token, or None."""
    if not plain.startswith(API_TOKEN_PREFIX) or len(plain) > 100:
        return None
    token = session.exec(select(ApiToken).where(ApiToken.token_hash == token_hash(plain))).first()
    if token is None or token.revoked_at is not None:
        return None
    user = session.get(User, token.user_id)
    if user is None or user.role not in (Role.author, Role.admin):
        return None
    token.last_used_at = utcnow()
    session.add(token)
    return user


# Personal data ------------------------------------------------------------------------------


def export_account(*, session: Session, user: User) -> dict[str, object]:
    """The account's own data: profile, company, API tokens (without secrets)."""
    company = session.get(Company, user.company_id) if user.company_id else None
    return {
        "profile": {
            "id": user.id,
            "email": user.email,
            "name": user.name,
            "role": user.role,
            "locale": user.locale,
            "has_password": user.password_hash is not None,
            "created_at": user.created_at.isoformat(),
            "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None,
        },
        "company": (
            {"name": company.name, "country": company.country, "vat_id": company.vat_id}
            if company
            else None
        ),
        "api_tokens": [
            {
                "name": t.name,
                "prefix": t.prefix,
                "created_at": t.created_at.isoformat(),
                "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
            }
            for t in list_api_tokens(session=session, user=user)
        ],
    }


def delete_account(*, session: Session, user: User) -> None:
    """Erase the account: the user row, their sign-in links, tokens, and a company left empty."""
    company_id = user.company_id
    session.execute(delete(LoginToken).where(func.lower(LoginToken.email) == user.email.lower()))
    session.execute(delete(ApiToken).where(col(ApiToken.user_id) == user.id))
    session.delete(user)
    session.flush()
    if company_id is not None:
        members = session.exec(
            select(func.count()).select_from(User).where(User.company_id == company_id)
        ).one()
        if members == 0:
            session.execute(delete(Company).where(col(Company.id) == company_id))
