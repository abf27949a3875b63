"""Every table, imported once so that metadata (and Alembic) sees them all."""

from app.accounts.models import ApiToken, Company, LoginToken, User
from app.catalog.models import Asset, BundleItem, Lesson, Module, Price, Product
from app.checkout.models import Entitlement, Order, WebhookEvent
from app.delivery.models import StampedCopy

__all__ = [
    "ApiToken",
    "Asset",
    "BundleItem",
    "Company",
    "Entitlement",
    "Lesson",
    "LoginToken",
    "Module",
    "Order",
    "Price",
    "Product",
    "StampedCopy",
    "User",
    "WebhookEvent",
]
