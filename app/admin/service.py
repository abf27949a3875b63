"""Conversion dashboard, warm leads, one buyer's timeline and the CSV exports.

Every query reads rollups and small tables (`order`, `buyer_engagement`, `lesson_progress`,
`inquiry`, `visit_day`), never the raw `engagement_event` log. The stage definitions here are
the ones the page and the README state; change them together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    Date,
    Float,
    String,
    Table,
    and_,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlmodel import Session, SQLModel, col

from app.accounts.models import Company, Role, User
from app.admin.models import BuyerFunnel, VisitDay, VisitKind
from app.admin.visits import normalize_source
from app.catalog.models import Lesson, Product
from app.checkout import service as checkout
from app.checkout.models import Order
from app.config import Settings
from app.engagement.models import BuyerEngagement, LessonProgress
from app.engagement.score import Facts, Score, score
from app.inquiries.models import Inquiry, InquiryChange, InquiryStatus
from app.models_base import as_utc

DEFAULT_DAYS = 90
MAX_DAYS = 3653  # ten years
EARLIEST_YEAR = 2000
LATEST_YEAR = 2100
DIRECT = "direct"  # source of a purchase or visit without UTM source and outside referrer
TOP_COMPANIES = 20


def _table(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


# Core tables: the dashboard's queries are aggregates and joins, not objects.
ORDERS = _table(Order)
USERS = _table(User)
COMPANIES = _table(Company)
ENGAGEMENT = _table(BuyerEngagement)
INQUIRIES = _table(Inquiry)
OC, U, BE, INQ = ORDERS.c, USERS.c, ENGAGEMENT.c, INQUIRIES.c
VD = _table(VisitDay).c
FUNNEL = _table(BuyerFunnel)


# Date ranges -----------------------------------------------------------------------------------


class InvalidRange(ValueError):
    """A date range that cannot be reported on; `reason` names what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # malformed | reversed | too_long | out_of_bounds


@dataclass(frozen=True)
class DateRange:
    """Whole UTC days, both ends included."""

    start: date
    end: date

    @property
    def start_at(self) -> datetime:
        return datetime.combine(self.start, time(), tzinfo=UTC)

    @property
    def end_at(self) -> datetime:
        """The first moment after the range (midnight after the last day)."""
        return datetime.combine(self.end + timedelta(days=1), time(), tzinfo=UTC)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def _parse_day(raw: str) -> date:
    try:
        if len(raw) != 10:
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidRange("malformed") from None


def parse_range(raw_from: str | None, raw_to: str | None, *, today: date) -> DateRange:
    """The range of `?from=&to=` (YYYY-MM-DD, inclusive); default the last 90 days to today."""
    raw_from, raw_to = (raw_from or "").strip(), (raw_to or "").strip()
    end = _parse_day(raw_to) if raw_to else None
    start = _parse_day(raw_from) if raw_from else None
    if end is None:
        end = today if start is None or start <= today else start + timedelta(DEFAULT_DAYS - 1)
    if start is None:
        start = end - timedelta(days=DEFAULT_DAYS - 1)
    for day in (start, end):
        if not EARLIEST_YEAR <= day.year <= LATEST_YEAR:
            raise InvalidRange("out_of_bounds")
    if start > end:
        raise InvalidRange("reversed")
    if (end - start).days + 1 > MAX_DAYS:
        raise InvalidRange("too_long")
    return DateRange(start, end)


# Helpers ---------------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def source_of(attribution: dict[str, Any] | None) -> str:
    """The source a purchase is credited to: UTM source, else the referrer's host, else direct."""
    attribution = attribution or {}
    for key in ("utm_source", "referrer"):
        value = normalize_source(str(attribution.get(key) or ""))
        if value:
            return value
    return DIRECT


def rate(part: int, whole: int | None) -> float | None:
    """part / whole, or None when there is nothing to divide by."""
    if not whole:
        return None
    return part / whole


# The funnel ------------------------------------------------------------------------------------


@dataclass
class FunnelRow:
    """One group's funnel: counts of each stage, and the rates between them."""

    key: str
    label: str
    visitors: int | None = None  # None where visits cannot be split this way (companies)
    buyers: int = 0
    engaged: int = 0
    inquired: int = 0
    clients: int = 0
    visitor_inquiries: int = 0  # inquiries without a purchase (source split and total)

    @property
    def buy_rate(self) -> float | None:
        return rate(self.buyers, self.visitors)

    @property
    def engaged_rate(self) -> float | None:
        return rate(self.engaged, self.buyers)

    @property
    def inquired_rate(self) -> float | None:
        return rate(self.inquired, self.buyers)

    @property
    def client_rate(self) -> float | None:
        return rate(self.clients, self.buyers)

    @property
    def empty(self) -> bool:
        return not (self.visitors or self.buyers or self.visitor_inquiries)


@dataclass(frozen=True)
class Stage:
    """A step of the funnel: its count, its share of the step before and of all buyers."""

    key: str  # visitors | buyers | engaged | inquired | clients
    count: int
    of_previous: float | None
    of_buyers: float | None


@dataclass(frozen=True)
class Revenue:
    """Orders paid in a range in one currency; amounts in minor units."""

    currency: str
    orders: int
    gross: int  # minor units: what the provider charged (after discounts, with tax)
    refunded: int
    disputed: int = 0  # lost to disputes

    @property
    def net(self) -> int:
        return self.gross - self.refunded - self.disputed


@dataclass(frozen=True)
class Median:
    """Median days from the first purchase to a milestone, over the buyers who reached it."""

    key: str  # engaged | inquiry | client
    days: float | None
    buyers: int  # how many buyers the median is over


@dataclass
class Dashboard:
    """Everything the dashboard page shows for one range."""

    range: DateRange
    total: FunnelRow
    stages: list[Stage]
    by_product: list[FunnelRow]
    by_cohort: list[FunnelRow]
    by_source: list[FunnelRow]
    by_company: list[FunnelRow]
    companies_total: int  # companies with buyers in the range (the table shows the top ones)
    visitor_inquiries: int
    visitor_clients: int
    revenue: list[Revenue]
    medians: list[Median]


# Every split comes from one statement: the range's buyers are read once from the buyer_funnel
# rollup (a CTE) and counted by product, month, source and company in the database, so the
# page's cost grows with the buyers of the range only, at a narrow row each.
MEDIANS = (("engaged", "engaged_at"), ("inquiry", "inquired_at"), ("client", "won_at"))


def _month(dialect: str, column: Any) -> Any:
    """The month of a UTC timestamp or date column; as text it starts with 'YYYY-MM'."""
    if dialect == "postgresql":
        # date_trunc is several times cheaper than to_char, and this runs once per buyer.
        if isinstance(column.type, Date):
            return func.date_trunc("month", column)
        return func.date_trunc("month", func.timezone("UTC", column))
    return func.strftime("%Y-%m", column)


def _days(dialect: str, start: Any, end: Any) -> Any:
    """Days from start to end, at least 0 (asked before buying counts as 0)."""
    if dialect == "postgresql":
        days = func.extract("epoch", end - start) / 86400.0
    else:
        days = func.julianday(end) - func.julianday(start)
    return case((days < 0, 0.0), else_=days)


def _buyers_cte(period: DateRange) -> Any:
    """The range's buyers from the rollup: one index range scan on first_paid_at."""
    f = FUNNEL.c
    return (
        select(
            f.user_id,
            f.product_id,
            f.utm_source.label("utm"),
            f.referrer,
            f.company_id,
            f.engaged_at,
            f.inquired_at,
            f.won_at,
            f.first_paid_at,
        )
        .where(f.first_paid_at >= period.start_at, f.first_paid_at < period.end_at)
        .cte("buyers")
    )


def rebuild_funnel(session: Session) -> int:
    """Make `buyer_funnel` again from orders, engagement and inquiries; the number of buyers.

    PostgreSQL's triggers keep the table current (migration 0007); this is for SQLite, where
    the dashboard calls it, and for data loaded around the triggers (bench-data's COPY).
    """
    session.execute(delete(FUNNEL))
    ranked = (
        select(
            OC.id,
            OC.user_id,
            OC.paid_at,
            OC.product_id,
            OC.attribution,
            func.row_number()
            .over(partition_by=OC.user_id, order_by=(OC.paid_at, OC.id))
            .label("nth"),
        )
        .where(OC.paid_at.is_not(None), OC.user_id.is_not(None))
        .subquery("ranked")
    )
    inq = INQUIRIES.alias("inq")
    inquired_at = (
        select(func.min(inq.c.created_at)).where(inq.c.user_id == ranked.c.user_id)
    ).scalar_subquery()
    won_at = (
        select(func.min(func.coalesce(inq.c.won_at, inq.c.updated_at))).where(
            inq.c.user_id == ranked.c.user_id, inq.c.status == InquiryStatus.won.value
        )
    ).scalar_subquery()
    rows = (
        select(
            ranked.c.user_id,
            ranked.c.paid_at,
            ranked.c.product_id,
            func.substr(func.coalesce(ranked.c.attribution["utm_source"].as_string(), ""), 1, 200),
            func.substr(func.coalesce(ranked.c.attribution["referrer"].as_string(), ""), 1, 300),
            U.company_id,
            BE.engaged_at,
            inquired_at,
            won_at,
        )
        .select_from(
            ranked.join(USERS, U.id == ranked.c.user_id).outerjoin(
                ENGAGEMENT, BE.user_id == ranked.c.user_id
            )
        )
        .where(ranked.c.nth == 1)
        # In time order, as the triggers would have added them: a range of days is then a
        # range of pages (PostgreSQL keeps a fresh table's rows in insertion order).
        .order_by(ranked.c.paid_at)
    )
    columns = [
        "user_id",
        "first_paid_at",
        "product_id",
        "utm_source",
        "referrer",
        "company_id",
        "engaged_at",
        "inquired_at",
        "won_at",
    ]
    session.execute(insert(FUNNEL).from_select(columns, rows))
    return int(session.execute(select(func.count()).select_from(FUNNEL)).scalar_one())


def _funnel_query(dialect: str, period: DateRange) -> Any:
    """(group, k1, k2, k3, k4, buyers, engaged, inquired, clients, value) rows: the buyers of
    the range counted by product, month, source and having a company at once ("mix", a few
    hundred groups at most, summed up per split by the caller), the top companies, and the
    medians. One pass over the range's rows does the work of five."""
    b = _buyers_cte(period)
    month = _month(dialect, b.c.first_paid_at)
    no_company = b.c.company_id.is_(None)
    stages = (
        func.count(),
        func.count(b.c.engaged_at),
        func.count(b.c.inquired_at),
        func.count(b.c.won_at),
    )
    none = cast(null(), String)
    mix = select(
        literal("mix"),
        cast(b.c.product_id, String),
        cast(month, String),  # made text once per group rather than once per buyer
        b.c.utm,
        b.c.referrer,
        *stages,
        cast(case((no_company, 1.0), else_=0.0), Float),
    ).group_by(b.c.product_id, month, b.c.utm, b.c.referrer, no_company)
    by_company = (
        select(
            b.c.company_id,
            *(s.label(f"s{i}") for i, s in enumerate(stages)),
            # Over the groups, before LIMIT: how many companies there are, in the same pass.
            func.count().over().label("companies"),
        )
        .where(b.c.company_id.is_not(None))
        .group_by(b.c.company_id)
        .order_by(func.count().desc(), b.c.company_id)
        .limit(TOP_COMPANIES)
        .subquery("top")
    )
    parts = [
        mix,
        select(
            literal("company"),
            cast(by_company.c.company_id, String),
            none,
            none,
            none,
            *(by_company.c[f"s{i}"] for i in range(4)),
            cast(by_company.c.companies, Float),
        ),
    ]
    for key, column in MEDIANS:
        # Ranked by the raw difference (cheap to compare); days, clamped at 0, are computed
        # for the middle rows only: clamping keeps the order, so the median is the same.
        raw = (
            b.c[column] - b.c.first_paid_at
            if dialect == "postgresql"
            else func.julianday(b.c[column]) - func.julianday(b.c.first_paid_at)
        )
        ranked = (
            select(
                b.c.first_paid_at.label("start"),
                b.c[column].label("end"),
                func.row_number().over(order_by=raw).label("rn"),
                func.count().over().label("n"),
            )
            .where(b.c[column].is_not(None))
            .subquery(f"ranked_{key}")
        )
        # The middle value, or the mean of the two middle ones: a median in portable SQL.
        middle = or_(ranked.c.rn == (ranked.c.n + 1) // 2, ranked.c.rn == (ranked.c.n + 2) // 2)
        parts.append(
            select(
                literal("median"),
                literal(key),
                none,
                none,
                none,
                func.coalesce(func.max(ranked.c.n), 0),
                literal(0),
                literal(0),
                literal(0),
                cast(func.avg(_days(dialect, ranked.c.start, ranked.c.end)), Float),
            ).where(middle)
        )
    return union_all(*parts)


def _visits_query(dialect: str, period: DateRange) -> Any:
    """(group, key, visitors): visitor-days by source and by month, product-page visitors."""
    in_range = and_(VD.day >= period.start, VD.day <= period.end)
    site = and_(in_range, VD.kind == VisitKind.site)
    month = cast(_month(dialect, VD.day), String)
    return union_all(
        select(literal("source"), VD.source, func.sum(VD.visitors)).where(site).group_by(VD.source),
        select(literal("cohort"), month, func.sum(VD.visitors)).where(site).group_by(month),
        select(literal("product"), VD.product_slug, func.sum(VD.visitors))
        .where(in_range, VD.kind == VisitKind.product)
        .group_by(VD.product_slug),
    )


def _visitor_inquiries(session: Session, period: DateRange) -> list[tuple[str, int, int]]:
    """(source, inquiries, won) of inquiries in the range from people without a paid order
    before it (anonymous, or an account that had not bought yet)."""
    bought_before = exists().where(
        OC.user_id == INQ.user_id, OC.paid_at.is_not(None), OC.paid_at <= INQ.created_at
    )
    won = func.sum(case((INQ.status == InquiryStatus.won.value, 1), else_=0))
    query = (
        select(INQ.source, func.count(), won)
        .where(
            INQ.created_at >= period.start_at,
            INQ.created_at < period.end_at,
            or_(INQ.user_id.is_(None), ~bought_before),
        )
        .group_by(INQ.source)
    )
    return [
        (normalize_source(r[0] or "") or DIRECT, int(r[1]), int(r[2] or 0))
        for r in session.execute(query)
    ]


def _set_stages(row: FunnelRow, counts: Sequence[Any]) -> None:
    row.buyers += int(counts[0])
    row.engaged += int(counts[1])
    row.inquired += int(counts[2])
    row.clients += int(counts[3])


def dashboard(session: Session, *, period: DateRange, locale: str) -> Dashboard:
    """Everything the dashboard shows for one date range."""
    dialect = session.get_bind().dialect.name
    if dialect != "postgresql":
        rebuild_funnel(session)  # no triggers there (see migration 0007); small data
    total = FunnelRow("total", "all", visitors=0)
    by_product: dict[str, FunnelRow] = {}
    by_cohort: dict[str, FunnelRow] = {}
    by_source: dict[str, FunnelRow] = {}
    by_company: list[FunnelRow] = []
    companies_total = 0
    found_medians: dict[str, Median] = {}

    products = {
        str(r[0]): (r[1], r[2])
        for r in session.execute(select(col(Product.id), col(Product.slug), col(Product.title)))
    }

    def product_row(slug: str) -> FunnelRow:
        if slug not in by_product:
            titles = {s: t for s, t in products.values()}
            title = titles.get(slug) or {}
            label = title.get(locale) or title.get("en") or slug
            by_product[slug] = FunnelRow(slug, label, visitors=0)
        return by_product[slug]

    def keyed(rows: dict[str, FunnelRow], key: str) -> FunnelRow:
        return rows.setdefault(key, FunnelRow(key, key, visitors=0))

    no_company = FunnelRow("", "", visitors=None)
    for grp, k1, k2, utm, referrer, *counts, value in session.execute(
        _funnel_query(dialect, period)
    ):
        if grp == "mix":
            _set_stages(total, counts)
            _set_stages(product_row(products.get(k1, (k1, None))[0]), counts)
            _set_stages(keyed(by_cohort, k2[:7]), counts)
            _set_stages(
                keyed(by_source, source_of({"utm_source": utm, "referrer": referrer})), counts
            )
            if value:
                _set_stages(no_company, counts)
        elif grp == "company":
            row = FunnelRow(k1, "", visitors=None)
            _set_stages(row, counts)
            by_company.append(row)
            companies_total = int(value or 0)
        elif grp == "median":
            days = None if value is None else float(value)
            found_medians[k1] = Median(k1, days, int(counts[0]))
    if no_company.buyers:
        by_company.append(no_company)

    for grp, key, visitors in session.execute(_visits_query(dialect, period)):
        n = int(visitors or 0)
        if grp == "source":
            total.visitors = (total.visitors or 0) + n
            row = keyed(by_source, key or DIRECT)
        elif grp == "cohort":
            row = keyed(by_cohort, key[:7])
        else:
            row = product_row(key)
        row.visitors = (row.visitors or 0) + n

    visitor_inquiries = _visitor_inquiries(session, period)
    for source, asked, _won in visitor_inquiries:
        keyed(by_source, source).visitor_inquiries += asked
        total.visitor_inquiries += asked

    named = [r for r in by_company if r.key]
    names: dict[int, str] = {
        r[0]: r[1]
        for r in session.execute(
            select(col(Company.id), col(Company.name)).where(
                col(Company.id).in_([int(r.key) for r in named])
            )
        )
    }
    for row in named:
        row.label = names.get(int(row.key), row.key)
    company_rows = sorted(
        named, key=lambda r: (-r.buyers, -r.clients, -r.inquired, -r.engaged, r.label)
    ) + [r for r in by_company if not r.key]

    return Dashboard(
        range=period,
        total=total,
        stages=stages_of(total),
        by_product=sorted(
            by_product.values(), key=lambda r: (-r.buyers, -(r.visitors or 0), r.label)
        ),
        by_cohort=[by_cohort[k] for k in sorted(by_cohort)],
        by_source=sorted(
            by_source.values(), key=lambda r: (-r.buyers, -(r.visitors or 0), r.label)
        ),
        by_company=company_rows,
        companies_total=companies_total,
        visitor_inquiries=total.visitor_inquiries,
        visitor_clients=sum(won for _s, _a, won in visitor_inquiries),
        revenue=revenue(session, period),
        medians=[found_medians.get(k, Median(k, None, 0)) for k, _ in MEDIANS],
    )


def stages_of(row: FunnelRow) -> list[Stage]:
    """The five stages of a funnel row with their rates."""
    counts = [
        ("visitors", row.visitors or 0),
        ("buyers", row.buyers),
        ("engaged", row.engaged),
        ("inquired", row.inquired),
        ("clients", row.clients),
    ]
    stages = []
    previous: int | None = None
    for key, count in counts:
        stages.append(
            Stage(
                key,
                count,
                rate(count, previous),
                rate(count, row.buyers) if key != "visitors" else None,
            )
        )
        previous = count
    return stages


def revenue(session: Session, period: DateRange) -> list[Revenue]:
    """Per currency: orders paid in the range, what was charged for them, what was refunded
    of them and what lost disputes took back: the money that moved."""
    lost = case((OC.dispute_status == "lost", OC.amount_disputed), else_=0)
    query = (
        select(
            OC.currency,
            func.count(),
            func.sum(func.coalesce(OC.amount_total, OC.amount)),
            func.sum(OC.amount_refunded),
            func.sum(lost),
        )
        .where(OC.paid_at >= period.start_at, OC.paid_at < period.end_at)
        .group_by(OC.currency)
        .order_by(OC.currency)
    )
    return [
        Revenue(r[0], int(r[1]), int(r[2] or 0), int(r[3] or 0), int(r[4] or 0))
        for r in session.execute(query)
    ]


# Leads -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """The facts behind a lead's score."""

    lessons_completed: int
    lessons_total: int
    media_minutes: float
    pages_read: int
    last_active_at: datetime | None


@dataclass(frozen=True)
class BuyerLead:
    """An engaged buyer who has not asked yet."""

    user_id: int
    name: str
    email: str
    company: str
    engaged_at: datetime | None
    score: Score
    evidence: Evidence


@dataclass
class CompanyLead:
    """A company with engaged people, none of whom has asked yet."""

    company_id: int
    name: str
    score: float  # the highest member score
    members: list[BuyerLead] = field(default_factory=list)  # engaged members, best first

    @property
    def engaged_members(self) -> int:
        return len(self.members)

    @property
    def emails(self) -> list[str]:
        return [m.email for m in self.members]

    @property
    def evidence(self) -> Evidence:
        """The members' facts added up (last activity: the latest)."""
        actives = [m.evidence.last_active_at for m in self.members if m.evidence.last_active_at]
        return Evidence(
            lessons_completed=sum(m.evidence.lessons_completed for m in self.members),
            lessons_total=sum(m.evidence.lessons_total for m in self.members),
            media_minutes=sum(m.evidence.media_minutes for m in self.members),
            pages_read=sum(m.evidence.pages_read for m in self.members),
            last_active_at=max(actives) if actives else None,
        )


@dataclass
class Leads:
    """The leads page: buyers and companies, best first."""

    buyers: list[BuyerLead]
    companies: list[CompanyLead]


def leads(
    session: Session, *, settings: Settings, now: datetime, engaged: DateRange | None = None
) -> Leads:
    """Engaged buyers without an inquiry, and companies none of whose people has inquired."""
    asked = exists().where(INQ.user_id == BE.user_id)
    query = (
        select(
            BE.user_id,
            U.name,
            U.email,
            U.company_id,
            COMPANIES.c.name,
            BE.engaged_at,
            BE.lessons_total,
            BE.lessons_completed,
            BE.media_seconds,
            BE.pages_read,
            BE.last_active_at,
        )
        .select_from(
            ENGAGEMENT.join(USERS, U.id == BE.user_id).outerjoin(
                COMPANIES, COMPANIES.c.id == U.company_id
            )
        )
        .where(BE.engaged_at.is_not(None), U.role == Role.buyer.value, ~asked)
    )
    if engaged is not None:
        query = query.where(BE.engaged_at >= engaged.start_at, BE.engaged_at < engaged.end_at)
    buyers: list[BuyerLead] = []
    company_of: dict[int, tuple[int, str]] = {}
    for r in session.execute(query):
        last_active = as_utc(r[10])
        facts = Facts(
            lessons_total=r[6],
            lessons_completed=r[7],
            media_seconds=r[8],
            pages_read=r[9],
            last_active_at=last_active,
        )
        lead = BuyerLead(
            user_id=r[0],
            name=r[1] or "",
            email=r[2],
            company=r[4] or "",
            engaged_at=as_utc(r[5]),
            score=score(facts, settings, now=now),
            evidence=Evidence(r[7], r[6], round(r[8] / 60, 1), r[9], last_active),
        )
        buyers.append(lead)
        if r[3] is not None:
            company_of[lead.user_id] = (r[3], r[4] or "")
    buyers.sort(key=lambda b: (-b.score.total, b.email))

    # A company is no lead once anyone of it asked (as a member, or naming the company).
    asked_companies = {
        r[0]
        for r in session.execute(
            select(U.company_id)
            .join(INQUIRIES, INQ.user_id == U.id)
            .where(U.company_id.is_not(None))
            .union(select(INQ.company_id).where(INQ.company_id.is_not(None)))
        )
    }
    companies: dict[int, CompanyLead] = {}
    for lead in buyers:  # best first, so each company's first member is its best
        if lead.user_id not in company_of:
            continue
        company_id, name = company_of[lead.user_id]
        if company_id in asked_companies:
            continue
        company = companies.setdefault(
            company_id, CompanyLead(company_id, name, score=lead.score.total)
        )
        company.members.append(lead)
    ranked = sorted(companies.values(), key=lambda c: (-c.score, -c.engaged_members, c.name))
    return Leads(buyers=buyers, companies=ranked)


# One buyer -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One line of a buyer's timeline; the page words it by `kind`."""

    at: datetime
    kind: str  # order_paid | order_refunded | lesson_opened | lesson_completed | engaged |
    # inquiry | inquiry_change
    subject: str = ""  # product or lesson title, inquiry number
    detail: str = ""  # amount, status change, note
    status_from: str = ""
    status_to: str = ""


@dataclass
class BuyerView:
    """One buyer's page: who, their score and evidence, and the timeline."""

    user: User
    company: str
    engagement: BuyerEngagement | None
    score: Score | None
    evidence: Evidence | None
    timeline: list[Entry]


def _title(title: dict[str, str] | None, locale: str, fallback: str) -> str:
    title = title or {}
    return title.get(locale) or title.get("en") or next(iter(title.values()), fallback)


def buyer_view(
    session: Session, *, user_id: int, settings: Settings, now: datetime, locale: str
) -> BuyerView | None:
    """A buyer's purchases, learning, engagement and inquiries on one timeline, newest first."""
    user = session.get(User, user_id)
    if user is None:
        return None
    company = session.get(Company, user.company_id) if user.company_id else None
    entries: list[Entry] = []
    orders = session.execute(
        select(Order, col(Product.title), col(Product.slug))
        .join(Product, col(Product.id) == col(Order.product_id))
        .where(col(Order.user_id) == user_id)
    ).all()
    for order, title, slug in orders:
        name = _title(title, locale, slug)
        charged = order.amount_total if order.amount_total is not None else order.amount
        paid = f"{order.number} · {charged / 100:.2f} {order.currency}"
        if order.paid_at is not None:
            entries.append(Entry(_utc(order.paid_at), "order_paid", name, paid))
        if order.amount_refunded:
            refunded = f"{order.number} · {order.amount_refunded / 100:.2f} {order.currency}"
            entries.append(Entry(_utc(order.updated_at), "order_refunded", name, refunded))
        if order.dispute_status:
            disputed = f"{order.number} · {order.dispute_status}"
            entries.append(Entry(_utc(order.updated_at), "order_disputed", name, disputed))
    progress = session.execute(
        select(LessonProgress, col(Lesson.title), col(Lesson.key))
        .join(Lesson, col(Lesson.id) == col(LessonProgress.lesson_id))
        .where(col(LessonProgress.user_id) == user_id)
    ).all()
    for lp, title, key in progress:
        name = _title(title, locale, key)
        if lp.opened_at is not None:
            entries.append(Entry(_utc(lp.opened_at), "lesson_opened", name))
        if lp.completed_at is not None:
            entries.append(Entry(_utc(lp.completed_at), "lesson_completed", name))
    engagement = session.get(BuyerEngagement, user_id)
    result_score: Score | None = None
    evidence: Evidence | None = None
    if engagement is not None:
        last_active = as_utc(engagement.last_active_at)
        result_score = score(
            Facts(
                lessons_total=engagement.lessons_total,
                lessons_completed=engagement.lessons_completed,
                media_seconds=engagement.media_seconds,
                pages_read=engagement.pages_read,
                last_active_at=last_active,
            ),
            settings,
            now=now,
        )
        evidence = Evidence(
            engagement.lessons_completed,
            engagement.lessons_total,
            round(engagement.media_seconds / 60, 1),
            engagement.pages_read,
            last_active,
        )
        if engagement.engaged_at is not None:
            entries.append(Entry(_utc(engagement.engaged_at), "engaged"))
    inquiries = list(
        session.execute(select(Inquiry).where(col(Inquiry.user_id) == user_id)).scalars()
    )
    by_id = {i.id: i for i in inquiries}
    for inquiry in inquiries:
        entries.append(
            Entry(_utc(inquiry.created_at), "inquiry", f"#{inquiry.id}", inquiry.message[:200])
        )
    if by_id:
        changes = session.execute(
            select(InquiryChange).where(col(InquiryChange.inquiry_id).in_(list(by_id)))
        ).scalars()
        for change in changes:
            entries.append(
                Entry(
                    _utc(change.at),
                    "inquiry_change",
                    f"#{change.inquiry_id}",
                    change.note[:300],
                    status_from=change.from_status or "",
                    status_to=change.to_status,
                )
            )
    entries.sort(key=lambda e: e.at, reverse=True)
    return BuyerView(
        user=user,
        company=company.name if company else "",
        engagement=engagement,
        score=result_score,
        evidence=evidence,
        timeline=entries,
    )


# Exports ---------------------------------------------------------------------------------------

Rows = tuple[list[str], list[list[Any]]]  # header, rows


def _iso(moment: datetime | None) -> str:
    moment = as_utc(moment)
    return moment.isoformat(timespec="seconds") if moment else ""


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f}"


def funnel_table(board: Dashboard) -> Rows:
    """The dashboard's numbers as one table: the total, then each split."""
    header = [
        "split",
        "group",
        "visitors",
        "buyers",
        "engaged",
        "inquired",
        "clients",
        "inquiries_without_purchase",
        "buyers_per_visitor_pct",
        "engaged_pct",
        "inquired_pct",
        "clients_pct",
    ]
    rows: list[list[Any]] = []

    def emit(split: str, items: Iterable[FunnelRow]) -> None:
        for r in items:
            if r.empty:
                continue  # so that an empty range gives the header alone
            rows.append(
                [
                    split,
                    r.label or r.key or "(none)",
                    "" if r.visitors is None else r.visitors,
                    r.buyers,
                    r.engaged,
                    r.inquired,
                    r.clients,
                    r.visitor_inquiries,
                    _pct(r.buy_rate),
                    _pct(r.engaged_rate),
                    _pct(r.inquired_rate),
                    _pct(r.client_rate),
                ]
            )

    emit("total", [board.total])
    emit("product", board.by_product)
    emit("cohort", board.by_cohort)
    emit("source", board.by_source)
    emit("company", board.by_company)
    return header, rows


def leads_table(found: Leads) -> Rows:
    """Every lead, buyers then companies, with the evidence behind the score."""
    header = [
        "kind",
        "name",
        "email",
        "company",
        "score",
        "engaged_members",
        "lessons_completed",
        "lessons_total",
        "media_minutes",
        "pages_read",
        "last_active_at",
        "engaged_at",
    ]
    rows: list[list[Any]] = []
    for b in found.buyers:
        e = b.evidence
        rows.append(
            [
                "buyer",
                b.name,
                b.email,
                b.company,
                b.score.total,
                1,
                e.lessons_completed,
                e.lessons_total,
                e.media_minutes,
                e.pages_read,
                _iso(e.last_active_at),
                _iso(b.engaged_at),
            ]
        )
    for c in found.companies:
        e = c.evidence
        rows.append(
            [
                "company",
                c.name,
                " ".join(c.emails),
                c.name,
                c.score,
                c.engaged_members,
                e.lessons_completed,
                e.lessons_total,
                round(e.media_minutes, 1),
                e.pages_read,
                _iso(e.last_active_at),
                _iso(min((m.engaged_at for m in c.members if m.engaged_at), default=None)),
            ]
        )
    return header, rows


def inquiries_table(session: Session, period: DateRange) -> Rows:
    """Inquiries received in the range."""
    header = [
        "id",
        "created_at",
        "status",
        "name",
        "email",
        "company",
        "source",
        "user_id",
        "won_at",
        "updated_at",
    ]
    query = (
        select(Inquiry)
        .where(col(Inquiry.created_at) >= period.start_at, col(Inquiry.created_at) < period.end_at)
        .order_by(col(Inquiry.created_at), col(Inquiry.id))
    )
    rows = [
        [
            i.id,
            _iso(i.created_at),
            i.status,
            i.name,
            i.email,
            i.company_name,
            i.source,
            i.user_id or "",
            _iso(i.won_at),
            _iso(i.updated_at),
        ]
        for i in session.execute(query).scalars()
    ]
    return header, rows


def orders_table(session: Session, period: DateRange) -> Rows:
    """Orders started in the range, with what was paid and refunded."""
    header = [
        "number",
        "created_at",
        "paid_at",
        "status",
        "product",
        "amount",
        "discount",
        "promotion_code",
        "tax",
        "amount_paid",
        "amount_refunded",
        "amount_disputed_lost",
        "net",
        "currency",
        "email",
        "company",
        "source",
        "user_id",
    ]
    query = (
        select(Order, col(Product.slug))
        .join(Product, col(Product.id) == col(Order.product_id))
        .where(col(Order.created_at) >= period.start_at, col(Order.created_at) < period.end_at)
        .order_by(col(Order.created_at), col(Order.id))
    )
    rows = [
        [
            o.number,
            _iso(o.created_at),
            _iso(o.paid_at),
            o.status,
            slug,
            f"{o.amount / 100:.2f}",
            f"{o.amount_discount / 100:.2f}",
            o.promotion_code or "",
            f"{o.amount_tax / 100:.2f}",
            f"{checkout.charged(o) / 100:.2f}" if o.paid_at else "",
            f"{o.amount_refunded / 100:.2f}",
            f"{(o.amount_disputed if o.dispute_status == 'lost' else 0) / 100:.2f}",
            f"{checkout.net_amount(o) / 100:.2f}",
            o.currency,
            o.email or "",
            o.company_name or "",
            source_of(o.attribution),
            o.user_id or "",
        ]
        for o, slug in session.execute(query)
    ]
    return header, rows
