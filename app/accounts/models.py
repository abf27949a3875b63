"""Account tables: users, companies, sign-in links and API tokens."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Column, DateTime, ForeignKey, Integer, String, true
from sqlmodel import Field, SQLModel

from app.models_base import created_at_field


class Role(StrEnum):
    buyer = "buyer"
    author = "author"
    admin = "admin"


class Company(SQLModel, table=True):
    """The B2B account a buyer belongs to (from checkout or the account page)."""

    __tablename__ = "company"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    country: str = Field(default="", max_length=2)
    vat_id: str = Field(default="", max_length=32)
    created_at: datetime = created_at_field()


class UserBase(SQLModel):
    email: str = Field(max_length=320, unique=True, index=False)
    name: str = Field(default="", max_length=200)
    role: Role = Field(default=Role.buyer, sa_type=String(16))
    locale: str = Field(default="en", max_length=8)


class User(UserBase, table=True):
    __tablename__ = "user"
    __table_args__ = (CheckConstraint("role IN ('buyer', 'author', 'admin')", name="role"),)

    id: int | None = Field(default=None, primary_key=True)
    password_hash: str | None = Field(default=None, max_length=255)
    # Sessions carry this number; raising it signs the user out everywhere at once.
    session_version: int = Field(default=1)
    company_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("company.id", ondelete="SET NULL"), nullable=True),
    )
    last_login_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    created_at: datetime = created_at_field()
    # Emails about new modules of products the user owns (account page, unsubscribe link).
    release_emails: bool = Field(default=True, sa_column_kwargs={"server_default": true()})


class UserPublic(UserBase):
    id: int


class LoginToken(SQLModel, table=True):
    """A single-use magic sign-in link; only its hash is stored."""

    __tablename__ = "login_token"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    email: str = Field(max_length=320, index=True)
    expires_at: datetime = Field(sa_type=DateTime(timezone=True))
    used_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    created_at: datetime = created_at_field()
    # Where the link leads after signing in: kept here, so the emailed link carries nothing
    # but the token (no visitor-chosen text reaches the mail, no parameter can be smuggled).
    next_path: str | None = Field(default=None, max_length=300)


class EndedSession(SQLModel, table=True):
    """A browser session that was signed out: its copied cookie no longer signs anyone in.

    Sessions stay stateless cookies; only the ended ones are remembered, by their random id,
    until the cookie would have expired anyway (each sign-out prunes older rows).
    """

    __tablename__ = "ended_session"

    sid: str = Field(sa_column=Column(String(32), primary_key=True, nullable=False))
    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("user.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    ended_at: datetime = created_at_field()


class ApiToken(SQLModel, table=True):
    """A bearer token for the JSON API; shown once, stored hashed."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("user.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    name: str = Field(max_length=100)
    prefix: str = Field(max_length=16)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = created_at_field()
    last_used_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    revoked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
