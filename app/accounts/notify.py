"""The sign-in email, written by a job: the request that asks for it answers the same for every
address, at once, whether or not the address has an account or the mail server is up."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session

from app.accounts import service
from app.config import Settings
from app.mail import Mail, render_mail


def magic_link_mail(
    *, engine: Engine, settings: Settings, email: str, next_path: str
) -> Mail | None:
    """A sign-in link for the account with this address (None: there is none)."""
    with Session(engine) as session:
        user = service.get_user_by_email(session=session, email=email)
        if user is None:
            return None
        token = service.create_login_link(
            session=session,
            email=user.email,
            ttl_seconds=settings.magic_link_ttl,
            next_path=next_path,
        )
        session.commit()  # the link must exist before the email that carries it leaves
        # The link carries the token alone: where it leads is stored with the token.
        link = f"{settings.base_url.rstrip('/')}/auth/magic?token={token}"
        return render_mail(
            "magic_link",
            to=user.email,
            locale=user.locale,
            link=link,
            minutes=settings.magic_link_ttl // 60,
        )
