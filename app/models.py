"""Every table, imported once so that metadata (and Alembic) sees them all."""

from app.accounts.models import User
from app.catalog.models import Asset, Lesson, Module, Price, Product

__all__ = ["Asset", "Lesson", "Module", "Price", "Product", "User"]
