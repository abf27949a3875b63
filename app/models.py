"""Every table, imported once so that metadata (and Alembic) sees them all."""

from app.accounts.models import ApiToken, Company, LoginToken, User
from app.admin.models import BuyerFunnel, Visit, VisitDay, VisitSalt
from app.catalog.models import (
    Asset,
    BundleItem,
    Lesson,
    Module,
    Price,
    Product,
    ReleaseNotice,
)
from app.checkout.models import Entitlement, Order, WebhookEvent
from app.delivery.models import StampedCopy
from app.engagement.models import BuyerEngagement, EngagementEvent, LessonProgress
from app.inquiries.models import Inquiry, InquiryChange

__all__ = [
    "ApiToken",
    "Asset",
    "BundleItem",
    "BuyerEngagement",
    "BuyerFunnel",
    "Company",
    "EngagementEvent",
    "Entitlement",
    "Inquiry",
    "InquiryChange",
    "Lesson",
    "LessonProgress",
    "LoginToken",
    "Module",
    "Order",
    "Price",
    "Product",
    "ReleaseNotice",
    "StampedCopy",
    "User",
    "Visit",
    "VisitDay",
    "VisitSalt",
    "WebhookEvent",
]
