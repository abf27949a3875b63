"""Account JSON API (session cookie or `Authorization: Bearer` token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.accounts.models import UserPublic
from app.deps import CurrentUser, SessionDep
from app.privacy import export_user_data

router = APIRouter(prefix="/api/v1", tags=["accounts"])


@router.get("/me", response_model=UserPublic)
def me(user: CurrentUser) -> Any:
    """The signed-in user."""
    return user


@router.get("/me/export")
def my_data(session: SessionDep, user: CurrentUser) -> dict[str, object]:
    """Everything Rapport holds about the signed-in user."""
    return export_user_data(session=session, user=user)
