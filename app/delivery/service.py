"""Who may open which lesson, and the short-lived URLs that deliver its media."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple

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


# One round trip, by primary and unique keys: the lesson, its product's status (a hidden
# lesson or a draft module counts as a draft product), its asset,
# and the asking user's entitlement and session version. Written once, with placeholders
# filled in for each driver that runs it (SQLAlchemy here, sqlite3 and psycopg in the fast
# path), so that the route and the fast path can never ask different questions.
_GRANT_QUERY = """
    SELECT l.is_preview,
           CASE WHEN l.published AND m.status = 'published' THEN p.status ELSE 'draft' END
             AS status,
           a.storage_key, a.content_type, a.status AS asset_status,
           e.id AS entitlement_id, e.revoked_at, u.session_version, u.role, l.product_id,
           x.sid AS ended_sid
    FROM lesson l
    JOIN product p ON p.id = l.product_id
    JOIN module m ON m.id = l.module_id
    LEFT JOIN asset a ON a.id = l.asset_id
    LEFT JOIN "user" u ON u.id = {uid}
    LEFT JOIN entitlement e ON e.product_id = l.product_id AND e.user_id = {uid}
    LEFT JOIN ended_session x ON x.sid = {sid}
    WHERE l.id = {lid}
    """
_GRANT_SQL = text(_GRANT_QUERY.format(uid=":uid", lid=":lid", sid=":sid"))
GRANT_SQL_SQLITE = _GRANT_QUERY.format(uid=":uid", lid=":lid", sid=":sid")  # sqlite3's style
# The same query for many (lesson, user) pairs in one round trip, for the fast path on
# PostgreSQL: each pair's row behind its 1-based place in the arrays; no row for a pair
# whose lesson does not exist.
_GRANT_BATCH_QUERY = """
    SELECT q.n, g.*
    FROM unnest(%(lids)s::bigint[], %(uids)s::bigint[], %(sids)s::text[])
         WITH ORDINALITY AS q(lid, uid, sid, n)
    CROSS JOIN LATERAL ({grant}) AS g
    """
GRANT_BATCH_SQL_PSYCOPG = _GRANT_BATCH_QUERY.format(
    grant=_GRANT_QUERY.format(uid="q.uid", lid="q.lid", sid="q.sid")
)


class GrantRow(NamedTuple):
    """A row of the grant query, in its column order (drivers hand back plain tuples)."""

    is_preview: bool | int  # SQLite has no boolean: 0 or 1
    status: str
    storage_key: str | None
    content_type: str | None
    asset_status: str | None
    entitlement_id: int | None
    revoked_at: object  # only ever compared with None
    session_version: int | None
    role: str | None
    product_id: int
    ended_sid: str | None  # the session was signed out: its cookie signs nobody in


NO_USER = -1  # the user id asked about for an anonymous visitor: it matches no row


def grant_params(lesson_id: int, user_id: int | None, sid: str | None = None) -> dict[str, Any]:
    """The grant query's parameters."""
    return {"lid": lesson_id, "uid": user_id or NO_USER, "sid": sid or ""}


def media_grant(
    engine: Engine,
    *,
    lesson_id: int,
    user_id: int | None,
    session_version: int | None,
    sid: str | None = None,
) -> MediaGrant:
    """Decide whether this visitor may have the lesson's media, in one indexed query."""
    with engine.connect() as conn:
        found = conn.execute(_GRANT_SQL, grant_params(lesson_id, user_id, sid)).first()
    row = None if found is None else GrantRow(*found)
    return decide_grant(row, user_id=user_id, session_version=session_version)


def decide_grant(
    row: GrantRow | None, *, user_id: int | None, session_version: int | None
) -> MediaGrant:
    """The access rules, applied to the grant query's row (None: no such lesson)."""
    signed_in = (
        user_id is not None
        and row is not None
        and row.session_version == session_version
        and row.ended_sid is None
    )
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
