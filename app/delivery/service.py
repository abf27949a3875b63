"""Who may open which lesson, and the short-lived URLs that deliver its media."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import Engine, text

from app.delivery.storage import Disposition, Storage


class Access(Enum):
    granted = "granted"
    sign_in = "sign_in"  # anonymous and not a free preview
    not_found = "not_found"  # unknown, unpublished, or never bought: no hint that it exists
    revoked = "revoked"  # bought, then refunded or disputed
    no_media = "no_media"  # a text lesson, or media that is not ready


@dataclass(frozen=True)
class MediaGrant:
    access: Access
    storage_key: str | None = None
    content_type: str | None = None
    product_id: int | None = None


# One round trip, by primary and unique keys: the lesson, its product's status, its asset,
# and the asking user's entitlement and session version.
_GRANT_SQL = text(
    """
    SELECT l.is_preview, p.status, a.storage_key, a.content_type, a.status AS asset_status,
           e.id AS entitlement_id, e.revoked_at, u.session_version, u.role, l.product_id
    FROM lesson l
    JOIN product p ON p.id = l.product_id
    LEFT JOIN asset a ON a.id = l.asset_id
    LEFT JOIN "user" u ON u.id = :uid
    LEFT JOIN entitlement e ON e.product_id = l.product_id AND e.user_id = :uid
    WHERE l.id = :lid
    """
)


def media_grant(
    engine: Engine, *, lesson_id: int, user_id: int | None, session_version: int | None
) -> MediaGrant:
    """Decide whether this visitor may have the lesson's media, in one indexed query."""
    with engine.connect() as conn:
        row = conn.execute(_GRANT_SQL, {"lid": lesson_id, "uid": user_id or -1}).first()
    signed_in = user_id is not None and row is not None and row.session_version == session_version
    staff = signed_in and row is not None and row.role in ("author", "admin")
    if row is not None and staff:
        pass  # the author and the admin see every lesson, drafts included
    elif row is None or row.status != "published":
        return MediaGrant(Access.sign_in if not signed_in and user_id is None else Access.not_found)
    if not row.is_preview and not staff:
        if not signed_in:
            return MediaGrant(Access.sign_in)
        if row.entitlement_id is None:
            return MediaGrant(Access.not_found)
        if row.revoked_at is not None:
            return MediaGrant(Access.revoked)
    if row.storage_key is None or row.asset_status != "ready":
        return MediaGrant(Access.no_media)
    return MediaGrant(Access.granted, row.storage_key, row.content_type, row.product_id)


def stream_url(
    storage: Storage, grant: MediaGrant, *, ttl: int, disposition: Disposition = "inline"
) -> tuple[str, int]:
    """A URL for the granted media that stops working after ttl seconds; and its expiry."""
    assert grant.storage_key and grant.content_type
    url = storage.download_url(
        grant.storage_key, ttl=ttl, content_type=grant.content_type, disposition=disposition
    )
    return url, int(time.time()) + ttl
