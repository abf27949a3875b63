"""Dependency aliases: endpoints read like their signature."""

from __future__ import annotations

import secrets
import time
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import delete
from sqlmodel import Session, col

from app.accounts import service as accounts
from app.accounts.models import EndedSession, Role, User
from app.config import Settings
from app.db import get_session
from app.models_base import utcnow

SESSION_KEY = "auth"


class LoginRequired(Exception):
    """No signed-in user: pages redirect to sign-in, the API answers 401."""


class Forbidden(Exception):
    """Signed in, but this role may not pass."""


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# "function" scope: the commit happens before the response leaves, so the page a redirect
# leads to always sees what the previous request wrote.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_optional_user(request: Request, session: SessionDep) -> User | None:
    """The user of a valid bearer token (API) or of the signed session cookie, else None."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        if not request.url.path.startswith("/api/"):
            return None  # tokens are for the JSON API only
        user = accounts.user_for_api_token(session=session, plain=auth[7:].strip())
        if user is None:
            raise LoginRequired()
        request.state.user = user
        return user
    data = request.session.get(SESSION_KEY) if "session" in request.scope else None
    if not isinstance(data, dict):
        return None
    user = session.get(User, data.get("uid"))
    sid = data.get("sid")
    if (
        user is None
        or user.session_version != data.get("ver")
        or (isinstance(sid, str) and session.get(EndedSession, sid) is not None)
    ):
        request.session.pop(SESSION_KEY, None)
        return None
    request.state.user = user
    return user


OptionalUser = Annotated[User | None, Depends(get_optional_user)]


def get_current_user(user: OptionalUser) -> User:
    if user is None:
        raise LoginRequired()
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_author(user: CurrentUser) -> User:
    if user.role not in (Role.author, Role.admin):
        raise Forbidden()
    return user


def get_admin(user: CurrentUser) -> User:
    if user.role != Role.admin:
        raise Forbidden()
    return user


AuthorUser = Annotated[User, Depends(get_author)]
AdminUser = Annotated[User, Depends(get_admin)]


def sign_in(request: Request, user: User) -> None:
    """Bind the browser session to the user and their current session version; `at` is when
    the address (or password) was last proven, for the changes that need a recent proof."""
    request.session.clear()
    request.session[SESSION_KEY] = {
        "uid": user.id,
        "ver": user.session_version,
        "at": int(time.time()),
        "sid": secrets.token_hex(16),  # named when the session is ended on sign-out
    }


def session_id(request: Request) -> str | None:
    """The random id of this browser session (None for sessions from before ids)."""
    data = request.session.get(SESSION_KEY) if "session" in request.scope else None
    sid = data.get("sid") if isinstance(data, dict) else None
    return sid if isinstance(sid, str) else None


def recently_proven(request: Request, seconds: int) -> bool:
    """Whether this session's sign-in is at most `seconds` old."""
    data = request.session.get(SESSION_KEY) if "session" in request.scope else None
    at = data.get("at") if isinstance(data, dict) else None
    return isinstance(at, int) and time.time() - at < seconds


def sign_out(request: Request, db: Session | None = None) -> None:
    """Forget the session in this browser and, given the database, end it on the server too:
    a copy of the cookie then signs nobody in."""
    data = request.session.get(SESSION_KEY) if "session" in request.scope else None
    sid = session_id(request)
    if db is not None and sid is not None and isinstance(data, dict):
        uid = data.get("uid")
        if isinstance(uid, int) and db.get(EndedSession, sid) is None:
            db.add(EndedSession(sid=sid, user_id=uid))
            max_age = request.app.state.settings.session_max_age
            cutoff = utcnow() - timedelta(seconds=max_age)
            db.execute(delete(EndedSession).where(col(EndedSession.ended_at) < cutoff))
    request.session.clear()
