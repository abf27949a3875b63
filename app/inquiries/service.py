"""Consulting inquiries: taken with the buyer's evidence, then worked through a pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from app.accounts.models import Company, User
from app.catalog.models import Lesson, Product
from app.config import Settings
from app.engagement import service as engagement
from app.inquiries.models import OPEN_STATUSES, Inquiry, InquiryChange, InquiryStatus
from app.models_base import as_utc, utcnow


class InquiryError(ValueError):
    """A change the pipeline does not allow."""


def evidence_for(*, session: Session, user: User, settings: Settings) -> dict[str, Any]:
    """A snapshot of what the buyer studied: score with its parts, and progress per product."""
    assert user.id is not None
    conn = session.connection()
    standing = engagement.standing(conn, user_id=user.id, settings=settings)
    rows = engagement.progress_of(conn, user_id=user.id)
    lessons = {
        lesson.id: lesson
        for lesson in session.exec(select(Lesson).where(col(Lesson.id).in_(list(rows))))
    }
    products: dict[int, dict[str, Any]] = {}
    for lesson_id, row in sorted(rows.items()):
        lesson = lessons.get(lesson_id)
        if lesson is None:
            continue
        entry = products.setdefault(
            row.product_id, {"product_id": row.product_id, "completed": [], "started": []}
        )
        title = lesson.title.get(user.locale) or lesson.title.get("en") or lesson.key
        (entry["completed"] if row.completed_at else entry["started"]).append(title)
    for product in session.exec(select(Product).where(col(Product.id).in_(list(products)))):
        products[product.id or 0]["title"] = product.title
    facts = standing.facts
    return {
        "taken_at": utcnow().isoformat(),
        "score": standing.score.total,
        "engaged": standing.engaged,
        "engaged_at": standing.engaged_at.isoformat() if standing.engaged_at else None,
        "parts": {p.name: p.points for p in standing.score.parts},
        "lessons_completed": facts.lessons_completed,
        "lessons_total": facts.lessons_total,
        "media_minutes": round(facts.media_seconds / 60, 1),
        "pages_read": facts.pages_read,
        "downloads": standing.downloads,
        "last_active_at": facts.last_active_at.isoformat() if facts.last_active_at else None,
        "products": list(products.values()),
    }


def source_of(attribution: dict[str, Any], *, buyer: bool) -> str:
    """Where an inquiry came from, for the pipeline and the dashboard's split by source."""
    if buyer:
        return "buyer"
    if attribution.get("utm_source"):
        return str(attribution["utm_source"])[:200]
    if attribution.get("referrer"):
        return str(attribution["referrer"])[:200]
    return "direct"


def create(
    *,
    session: Session,
    user: User | None,
    name: str,
    email: str,
    company_name: str,
    phone: str,
    message: str,
    locale: str,
    attribution: dict[str, Any],
    evidence: dict[str, Any],
) -> Inquiry:
    """Store a new inquiry and the first step of its history."""
    inquiry = Inquiry(
        user_id=user.id if user else None,
        company_id=user.company_id if user else None,
        name=name,
        email=email,
        company_name=company_name,
        phone=phone,
        message=message,
        locale=locale,
        source=source_of(attribution, buyer=bool(evidence)),
        attribution=attribution,
        evidence=evidence,
    )
    session.add(inquiry)
    session.flush()
    assert inquiry.id is not None
    session.add(
        InquiryChange(inquiry_id=inquiry.id, actor_id=inquiry.user_id, to_status=InquiryStatus.new)
    )
    return inquiry


def change(
    *,
    session: Session,
    inquiry: Inquiry,
    actor: User,
    status: InquiryStatus,
    note: str = "",
    next_follow_up: date | None = None,
) -> InquiryChange:
    """Move an inquiry (or add a note or follow-up date); every step is kept with its actor."""
    assert inquiry.id is not None
    if inquiry.status == InquiryStatus.won and status != InquiryStatus.won:
        raise InquiryError("a won inquiry stays won: the buyer is a client")
    if status == inquiry.status and not note and next_follow_up == inquiry.next_follow_up:
        raise InquiryError("nothing changed: choose another status, a note or a follow-up date")
    now = utcnow()
    step = InquiryChange(
        inquiry_id=inquiry.id,
        actor_id=actor.id,
        from_status=inquiry.status,
        to_status=status,
        note=note,
        next_follow_up=next_follow_up,
        at=now,
    )
    if status == InquiryStatus.won and inquiry.won_at is None:
        inquiry.won_at = now
    inquiry.status = status
    inquiry.next_follow_up = next_follow_up
    inquiry.updated_at = now
    session.add(inquiry)
    session.add(step)
    return step


def waiting(inquiry: Inquiry, *, settings: Settings, now: datetime | None = None) -> bool:
    """An open inquiry nobody has touched for the configured days, or past its follow-up date."""
    if inquiry.status not in OPEN_STATUSES:
        return False
    now = now or utcnow()
    if inquiry.next_follow_up is not None:
        return inquiry.next_follow_up <= now.date()
    return now - as_utc(inquiry.updated_at) > timedelta(days=settings.inquiry_waiting_days)


@dataclass
class Column:
    status: InquiryStatus
    inquiries: list[Inquiry]


def board(*, session: Session) -> list[Column]:
    """Every inquiry, by status in pipeline order, the oldest untouched first."""
    rows = session.exec(select(Inquiry).order_by(col(Inquiry.updated_at))).all()
    return [Column(s, [i for i in rows if i.status == s]) for s in InquiryStatus]


def history(*, session: Session, inquiry_id: int) -> list[tuple[InquiryChange, str | None]]:
    """The inquiry's steps, oldest first, with the email of whoever took each."""
    rows = session.exec(
        select(InquiryChange, User.email)
        .join(User, col(User.id) == col(InquiryChange.actor_id), isouter=True)
        .where(InquiryChange.inquiry_id == inquiry_id)
        .order_by(col(InquiryChange.at), col(InquiryChange.id))
    ).all()
    return [(step, email) for step, email in rows]


def is_client(*, session: Session, user_id: int) -> bool:
    """A buyer with a won inquiry is a client."""
    return (
        session.exec(
            select(Inquiry.id).where(Inquiry.user_id == user_id, Inquiry.status == "won")
        ).first()
        is not None
    )


def latest_of(*, session: Session, user_id: int) -> Inquiry | None:
    """The buyer's most recent inquiry, if any (the invitation is not shown twice)."""
    return session.exec(
        select(Inquiry).where(Inquiry.user_id == user_id).order_by(col(Inquiry.id).desc())
    ).first()


def company_name_of(*, session: Session, user: User) -> str:
    """The name of the buyer's company, for pre-filling the form."""
    company = session.get(Company, user.company_id) if user.company_id else None
    return company.name if company else ""


# -- a person's data -------------------------------------------------------------------------


def export_inquiries(*, session: Session, user: User) -> dict[str, object]:
    """The user's inquiries with their evidence and history, and their engagement rollups."""
    assert user.id is not None
    inquiries = session.exec(select(Inquiry).where(Inquiry.user_id == user.id)).all()
    return {
        "inquiries": [
            {
                **i.model_dump(mode="json", warnings=False, exclude={"user_id", "company_id"}),
                "history": [
                    {"at": s.at.isoformat(), "from": s.from_status, "to": s.to_status}
                    for s, _email in history(session=session, inquiry_id=i.id or 0)
                ],
            }
            for i in inquiries
        ]
    }


def erase_inquiries(*, session: Session, user: User) -> None:
    """Remove the person from their inquiries; status and dates stay for the conversion figures."""
    for inquiry in session.exec(select(Inquiry).where(Inquiry.user_id == user.id)).all():
        inquiry.name = ""
        inquiry.email = ""
        inquiry.phone = ""
        inquiry.company_name = ""
        inquiry.message = ""
        inquiry.evidence = {}
        inquiry.attribution = {}
        inquiry.user_id = None
        session.add(inquiry)
    for step in session.exec(select(InquiryChange).where(InquiryChange.actor_id == user.id)):
        step.actor_id = None
        session.add(step)
    if user.email:
        # Inquiries sent while signed out, from the same address.
        for inquiry in session.exec(select(Inquiry).where(Inquiry.email == user.email)).all():
            inquiry.name = inquiry.email = inquiry.phone = inquiry.message = ""
            inquiry.evidence = {}
            session.add(inquiry)
