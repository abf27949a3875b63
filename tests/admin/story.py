"""A known story for the dashboard: every number the tests expect is worked out by hand here.

Range 2026-03-01 .. 2026-04-30. Two products (trust-course, playbook), two sources (linkedin
by UTM, newsletter.example.com by referrer), two companies (Müller & Söhne GmbH, Beta AG).

    buyer  first paid   product   source      company  engaged     inquiry      won
    u1     03-02 10:00  course    linkedin    Müller   03-06 (+4)  03-12 (+10)  03-22 (+20)
    u2     03-03 10:00  course    linkedin    Müller   03-05 (+2)
    u3     03-04 10:00  course    linkedin    Müller
    u4     04-01 10:00  course    linkedin    Beta     04-07 (+6)  04-21 (+20)
    u5     03-10 10:00  course    newsletter  Beta     03-18 (+8)
    u6     04-02 10:00  course    newsletter  -
    u7     04-03 10:00  course    newsletter  -
    u8     03-05 10:00  playbook  linkedin    Müller   03-06 (+1)  03-09 (+4)   (lost)
    u9     04-10 10:00  playbook  linkedin    Beta     04-20 (+10)
    u10    04-11 10:00  playbook  linkedin    -        (pays in CHF)
    u11    03-20 10:00  playbook  newsletter  -
    u12    04-25 10:00  playbook  newsletter  -        (refunded in full: still a buyer)

Funnel: 40 visitors, 12 buyers, 6 engaged, 3 inquired, 1 client. Medians: engaged 1,2,4,6,8,10
-> 5; inquiry 4,10,20 -> 10; client 20 -> 20.

Not buyers of the range: u13 (first paid 02-20, again 03-10; asked 03-15), u14 (pending
order only), u16 (first paid 05-01). Inquiries without purchase in range: an anonymous one
03-20 from linkedin, an anonymous one 04-02 from the newsletter, won; one 05-05 is outside.

Leads (recency is 0 for everyone: last activity in spring): u17 65.0 and u18 16.2 of Gamma
GmbH (engaged, nobody there asked), u5 64.5, u9 55.0, u2 32.5. Müller and Beta are no company
leads (u1, u8, u4 asked).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from app.accounts.models import Company, Role, User
from app.admin.models import VisitKind
from app.admin.visits import record_counts
from app.catalog.models import Lesson, LessonKind, Module, Product, ProductKind, ProductStatus
from app.checkout.models import Order, OrderStatus
from app.engagement.models import BuyerEngagement, LessonProgress
from app.inquiries.models import Inquiry, InquiryChange, InquiryStatus

FROM, TO = "2026-03-01", "2026-04-30"
COURSE, EBOOK = "trust-course", "playbook"
LINKEDIN = {"utm_source": "LinkedIn", "utm_medium": "social", "landing": "/"}
NEWSLETTER = {"referrer": "https://www.newsletter.example.com/issue-3", "landing": "/"}
MUELLER, BETA, GAMMA = "Müller & Söhne GmbH", "Beta AG", "Gamma GmbH"


def at(month: int, day: int, hour: int = 10) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


@dataclass
class Story:
    users: dict[str, int] = field(default_factory=dict)
    products: dict[str, int] = field(default_factory=dict)
    companies: dict[str, int] = field(default_factory=dict)
    inquiries: dict[str, int] = field(default_factory=dict)
    lesson_id: int = 0


def build(engine: Engine) -> Story:
    story = Story()
    with Session(engine) as s:
        for slug, kind, title in (
            (
                COURSE,
                ProductKind.course,
                {"en": "Trust at a Distance", "de": "Vertrauen auf Distanz"},
            ),
            (EBOOK, ProductKind.ebook, {"en": "LinkedIn Playbook", "de": "LinkedIn-Playbook"}),
        ):
            product = Product(slug=slug, kind=kind, status=ProductStatus.published, title=title)
            s.add(product)
            s.flush()
            assert product.id is not None
            story.products[slug] = product.id
        module = Module(
            product_id=story.products[COURSE], key="m1", position=1, title={"en": "Basics"}
        )
        s.add(module)
        s.flush()
        assert module.id is not None
        lesson = Lesson(
            product_id=story.products[COURSE],
            module_id=module.id,
            key="welcome",
            position=1,
            kind=LessonKind.text,
            title={"en": "Welcome", "de": "Willkommen"},
        )
        s.add(lesson)
        for company_name in (MUELLER, BETA, GAMMA):
            company = Company(name=company_name)
            s.add(company)
            s.flush()
            assert company.id is not None
            story.companies[company_name] = company.id
        s.flush()
        assert lesson.id is not None
        story.lesson_id = lesson.id

        def user(key: str, company: str | None = None, name: str = "") -> int:
            u = User(
                email=f"{key}@example.com",
                name=name or key.upper(),
                role=Role.buyer,
                company_id=story.companies[company] if company else None,
                created_at=at(1, 1),
            )
            s.add(u)
            s.flush()
            assert u.id is not None
            story.users[key] = u.id
            return u.id

        number = iter(range(1, 1000))

        def order(
            key: str,
            slug: str,
            paid: datetime | None,
            attribution: dict[str, Any],
            *,
            amount: int | None = None,
            currency: str = "EUR",
            refunded: int = 0,
        ) -> None:
            n = next(number)
            status = OrderStatus.paid if paid else OrderStatus.pending
            if refunded:
                status = OrderStatus.refunded
            s.add(
                Order(
                    number=f"R-2026-{n:05d}",
                    user_id=story.users[key],
                    product_id=story.products[slug],
                    provider="test",
                    provider_session_id=f"test_cs_{n}",
                    status=status,
                    amount=amount or (14900 if slug == COURSE else 2900),
                    currency=currency,
                    amount_refunded=refunded,
                    email=f"{key}@example.com",
                    attribution=attribution,
                    checkout_key=f"key-{n}",
                    created_at=paid or at(3, 15),
                    paid_at=paid,
                    updated_at=at(4, 28) if refunded else (paid or at(3, 15)),
                )
            )

        def engagement(
            key: str,
            *,
            engaged: datetime | None,
            total: int = 10,
            done: int = 0,
            media: float = 0.0,
            pages: int = 0,
        ) -> None:
            s.add(
                BuyerEngagement(
                    user_id=story.users[key],
                    lessons_total=total,
                    lessons_completed=done,
                    media_seconds=media,
                    pages_read=pages,
                    first_active_at=at(3, 1),
                    last_active_at=at(4, 29),
                    engaged_at=engaged,
                )
            )

        def inquiry(
            key: str | None, created: datetime, source: str, status: InquiryStatus, **kw: Any
        ) -> int:
            uid = story.users[key] if key else None
            i = Inquiry(
                user_id=uid,
                name=(key or "visitor").upper(),
                email=f"{key or 'visitor'}@example.com",
                message="We would like to talk about our LinkedIn presence.",
                source=source,
                status=status,
                created_at=created,
                updated_at=kw.pop("updated_at", created),
                **kw,
            )
            s.add(i)
            s.flush()
            assert i.id is not None
            story.inquiries[key or source] = i.id
            return i.id

        rows = [
            ("u1", MUELLER, COURSE, at(3, 2), LINKEDIN),
            ("u2", MUELLER, COURSE, at(3, 3), LINKEDIN),
            ("u3", MUELLER, COURSE, at(3, 4), LINKEDIN),
            ("u4", BETA, COURSE, at(4, 1), LINKEDIN),
            ("u5", BETA, COURSE, at(3, 10), NEWSLETTER),
            ("u6", None, COURSE, at(4, 2), NEWSLETTER),
            ("u7", None, COURSE, at(4, 3), NEWSLETTER),
            ("u8", MUELLER, EBOOK, at(3, 5), LINKEDIN),
            ("u9", BETA, EBOOK, at(4, 10), LINKEDIN),
            ("u10", None, EBOOK, at(4, 11), LINKEDIN),
            ("u11", None, EBOOK, at(3, 20), NEWSLETTER),
            ("u12", None, EBOOK, at(4, 25), NEWSLETTER),
        ]
        for key, company_of, slug, paid, source in rows:
            user(key, company_of)
            if key == "u10":
                order(key, slug, paid, source, amount=3100, currency="CHF")
            elif key == "u12":
                order(key, slug, paid, source, refunded=2900)
            else:
                order(key, slug, paid, source)
        order("u1", EBOOK, at(4, 5), {})  # a second purchase: still one buyer, of the course

        engagement("u1", engaged=at(3, 6), done=9, media=3000)
        engagement("u2", engaged=at(3, 5), done=5, media=1800)
        engagement("u3", engaged=None, done=1)
        engagement("u4", engaged=at(4, 7), done=7, media=2400)
        engagement("u5", engaged=at(3, 18), done=8, media=3600, pages=20)
        engagement("u8", engaged=at(3, 6), total=1, done=1, pages=30)
        engagement("u9", engaged=at(4, 20), total=1, done=1, pages=40)
        engagement("u11", engaged=None, total=1, pages=3)

        won = inquiry("u1", at(3, 12), "buyer", InquiryStatus.won, won_at=at(3, 22))
        inquiry("u4", at(4, 21), "buyer", InquiryStatus.contacted)
        inquiry("u8", at(3, 9), "buyer", InquiryStatus.lost)
        s.add(InquiryChange(inquiry_id=won, from_status="new", to_status="contacted", at=at(3, 13)))
        s.add(
            InquiryChange(
                inquiry_id=won,
                from_status="contacted",
                to_status="won",
                note="Signed.",
                at=at(3, 22),
            )
        )
        s.add(
            LessonProgress(
                user_id=story.users["u1"],
                lesson_id=story.lesson_id,
                product_id=story.products[COURSE],
                opened_at=at(3, 3),
                completed_at=at(3, 4),
                last_active_at=at(3, 4),
            )
        )

        # Not buyers of the range.
        user("u13", MUELLER)
        order("u13", COURSE, at(2, 20), LINKEDIN)
        order("u13", COURSE, at(3, 10), LINKEDIN)
        inquiry("u13", at(3, 15), "buyer", InquiryStatus.new)
        user("u14")
        order("u14", COURSE, None, LINKEDIN)
        user("u16")
        order("u16", EBOOK, at(5, 1), LINKEDIN)

        # Inquiries from visitors without a purchase.
        inquiry(None, at(3, 20), "linkedin", InquiryStatus.new)
        inquiry(
            None, at(4, 2), "https://newsletter.example.com/x", InquiryStatus.won, won_at=at(4, 9)
        )
        inquiry(None, at(5, 5), "linkedin", InquiryStatus.new)

        # Leads of another company, engaged before the range.
        user("u17", GAMMA, name="Greta Gamma")
        order("u17", COURSE, at(1, 10), {})
        engagement("u17", engaged=at(1, 20), done=10, media=7200)
        user("u18", GAMMA, name="Gustav Gamma")
        order("u18", COURSE, at(1, 11), {})
        engagement("u18", engaged=at(1, 25), done=3, media=600)
        s.commit()

    site, page = VisitKind.site, VisitKind.product
    record_counts(
        engine,
        [
            (date(2026, 3, 10), site, "", "linkedin", 10),
            (date(2026, 3, 12), site, "", "newsletter.example.com", 15),
            (date(2026, 4, 15), site, "", "linkedin", 15),
            (date(2026, 3, 10), page, COURSE, "linkedin", 8),
            (date(2026, 3, 12), page, COURSE, "newsletter.example.com", 10),
            (date(2026, 4, 15), page, COURSE, "linkedin", 10),
            (date(2026, 3, 12), page, EBOOK, "newsletter.example.com", 6),
            (date(2026, 4, 15), page, EBOOK, "linkedin", 12),
            (date(2026, 3, 10), VisitKind.catalog, "", "linkedin", 9),
            # Outside the range.
            (date(2026, 2, 28), site, "", "linkedin", 7),
            (date(2026, 5, 1), site, "", "", 3),
            (date(2026, 5, 1), page, COURSE, "", 3),
        ],
    )
    return story
