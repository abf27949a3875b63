"""Every table, imported once so that metadata (and Alembic) sees them all."""

from app.accounts.models import ApiToken, Company, LoginToken, User
from app.catalog.models import Asset, Lesson, Module, Price, Product

__all__ = [
    "ApiToken",
    "Asset",
    "Company",
    "Lesson",
    "LoginToken",
    "Module",
    "Price",
    "Product",
    "User",
]
