"""Account tables."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, String
from sqlmodel import Field, SQLModel

from app.models_base import created_at_field


class Role(StrEnum):
    buyer = "buyer"
    author = "author"
    admin = "admin"


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
    created_at: datetime = created_at_field()


class UserPublic(UserBase):
    id: int
