"""`make bench-data`: PostgreSQL databases for the dashboard benchmark, filled as the app would.

    .venv/bin/python bench/data.py            # rapport_bench (100k buyers) and rapport_bench_10k
    .venv/bin/python bench/data.py --only rapport_bench_10k

Each database is dropped, made again on BENCH_PG_URL's server, migrated, and filled with COPY:
companies, buyers, orders over the last two years (a fifth buy twice, some refunded, some
pending), entitlements, 50 engagement events per buyer (5M at 100k) and the rollups that
ingestion keeps beside them (lesson_progress, buyer_engagement), inquiries with their
history, the visit counters, and the dashboard's buyer_funnel (rebuilt at the end: COPY does
not fire the triggers that keep it current). The same seed gives the same data, except that
the two years end today, so the dashboard's default range (the last 90 days) always has data.
Both databases span the same two years: the 100k one holds ten times as many buyers per day.

Foreign keys are not checked while loading (session_replication_role = replica; the data is
consistent by construction), which needs a superuser: the trust-auth `postgres` of FACTS.md.
A comment on the database marks it complete; `bench/dashboard.py` reads it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from sqlalchemy import make_url  # noqa: E402

PG_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DATABASES = {"rapport_bench": 100_000, "rapport_bench_10k": 10_000}
EVENTS_PER_BUYER = 50
DAYS = 730
ADMIN = "admin@example.com"
SEED = 20261130
MARK = "rapport bench data v1"

SOURCES = [
    ({"utm_source": "linkedin", "utm_medium": "social"}, 25),
    ({"utm_source": "newsletter", "utm_medium": "email"}, 10),
    ({"utm_source": "podcast"}, 5),
    ({"referrer": "https://www.google.com/"}, 15),
    ({"referrer": "https://www.xing.com/news/articles/trust"}, 5),
    ({"referrer": "https://t3n.de/news/b2b-social"}, 3),
    ({}, 37),
]
CURRENCIES = [("EUR", 85), ("CHF", 10), ("USD", 5)]
STATUSES = [
    ("new", 15),
    ("contacted", 20),
    ("call_scheduled", 10),
    ("proposal_sent", 10),
    ("won", 20),
    ("lost", 15),
    ("no_response", 10),
]
PATH = {
    "new": [],
    "contacted": ["contacted"],
    "call_scheduled": ["contacted", "call_scheduled"],
    "proposal_sent": ["contacted", "call_scheduled", "proposal_sent"],
    "won": ["contacted", "call_scheduled", "proposal_sent", "won"],
    "lost": ["contacted", "lost"],
    "no_response": ["contacted", "no_response"],
}


def log(message: str) -> None:
    print(f"[bench-data] {message}", file=sys.stderr, flush=True)


def libpq_url(url: str, database: str | None = None) -> str:
    """A psycopg (libpq) connection string for the server of `url`, or one of its databases."""
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def app_url(database: str) -> str:
    return make_url(PG_URL).set(database=database).render_as_string(hide_password=False)


def weighted(rng: random.Random, choices: Sequence[tuple[Any, int]]) -> Any:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


@dataclass(frozen=True)
class Product:
    id: int
    slug: str
    kind: str  # course | ebook
    lessons: list[int]
    durations: list[float]  # seconds of each video lesson (courses)
    pages: int  # the e-book's pages
    prices: dict[str, int]


@dataclass
class Buyer:
    id: int
    company_id: int | None
    first_paid: datetime
    products: list[int] = field(default_factory=list)
    engaged_at: datetime | None = None
    last_active: datetime | None = None


class Loader:
    """COPY rows into one database's tables, one table at a time."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    @contextmanager
    def without_indexes(self, table: str) -> Iterator[None]:
        """Drop the table's unique constraints and secondary indexes, and make them again after:
        building an index once is several times faster than keeping it up to date row by row."""
        constraints = self.conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'u'",
            (f'"{table}"',),
        ).fetchall()
        indexes = self.conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
            "(SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)",
            (table, f'"{table}"'),
        ).fetchall()
        for name, _definition in constraints:
            self.conn.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
        for name, _definition in indexes:
            self.conn.execute(f'DROP INDEX "{name}"')
        yield
        for name, definition in constraints:
            self.conn.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')
        for _name, definition in indexes:
            self.conn.execute(definition)

    def copy(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        cols = ", ".join(f'"{c}"' for c in columns)
        n = 0
        with self.conn.cursor() as cur, cur.copy(f'COPY "{table}" ({cols}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)
                n += 1
        return n


def _products(loader: Loader, now: datetime) -> list[Product]:
    """Four courses and two e-books, with modules and lessons."""
    specs = [
        ("trust-at-a-distance", "course", 24, {"EUR": 14900, "CHF": 15900, "USD": 16900}),
        ("linkedin-for-consultants", "course", 18, {"EUR": 9900, "CHF": 10900, "USD": 11900}),
        ("social-selling-bootcamp", "course", 30, {"EUR": 29900, "CHF": 31900, "USD": 33900}),
        ("content-in-30-minutes", "course", 12, {"EUR": 4900, "CHF": 5400, "USD": 5900}),
        ("linkedin-playbook", "ebook", 1, {"EUR": 2900, "CHF": 3100, "USD": 3400}),
        ("b2b-trust-checklist", "ebook", 1, {"EUR": 1900, "CHF": 2100, "USD": 2200}),
    ]
    products: list[Product] = []
    product_rows, module_rows, lesson_rows, price_rows = [], [], [], []
    lesson_id = 0
    for pid, (slug, kind, count, prices) in enumerate(specs, start=1):
        title = json.dumps({"en": slug.replace("-", " ").title()})
        product_rows.append((pid, slug, kind, "published", title, "{}", "{}", now, now))
        module_rows.append((pid, pid, "main", 1, json.dumps({"en": "Main"})))
        lessons, durations = [], []
        for position in range(1, count + 1):
            lesson_id += 1
            lessons.append(lesson_id)
            durations.append(float(300 + (lesson_id * 37) % 900))
            lesson_kind = "video" if kind == "course" else "pdf"
            lesson_title = json.dumps({"en": f"Lesson {position}"})
            lesson_rows.append(
                (
                    lesson_id,
                    pid,
                    pid,
                    f"l{position}",
                    position,
                    lesson_kind,
                    lesson_title,
                    "{}",
                    False,
                )
            )
        for i, (currency, amount) in enumerate(prices.items()):
            price_rows.append((pid * 10 + i, pid, currency, amount))
        products.append(Product(pid, slug, kind, lessons, durations, 80 + pid * 10, prices))
    loader.copy(
        "product",
        (
            "id",
            "slug",
            "kind",
            "status",
            "title",
            "tagline",
            "description",
            "created_at",
            "updated_at",
        ),
        product_rows,
    )
    loader.copy("module", ("id", "product_id", "key", "position", "title"), module_rows)
    loader.copy(
        "lesson",
        ("id", "product_id", "module_id", "key", "position", "kind", "title", "body", "is_preview"),
        lesson_rows,
    )
    loader.copy("price", ("id", "product_id", "currency", "amount"), price_rows)
    return products


def fill(dsn: str, buyers_total: int, *, now: datetime) -> dict[str, int]:
    """Load one database; the row count of each table."""
    rng = random.Random(SEED + buyers_total)
    start = now - timedelta(days=DAYS)
    counts: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        conn.execute("SET session_replication_role = replica")  # no FK triggers during COPY
        conn.execute("SET maintenance_work_mem = '256MB'")  # for the index builds at the end
        loader = Loader(conn)
        products = _products(loader, now)
        courses = [p for p in products if p.kind == "course"]
        weights = [30, 25, 10, 15, 12, 8]

        companies = max(1, buyers_total // 8)
        counts["company"] = loader.copy(
            "company",
            ("id", "name", "country", "vat_id", "created_at"),
            (
                (i, f"Company {i} GmbH", rng.choice(["DE", "AT", "CH"]), "", start)
                for i in range(1, companies + 1)
            ),
        )

        # Rows in the order a live shop writes them (accounts, orders and inquiries over time),
        # so that a range of days sits on a range of pages, as in production.
        firsts = sorted(
            start + timedelta(seconds=rng.uniform(0, DAYS * 86400)) for _ in range(buyers_total)
        )
        people: list[Buyer] = []
        for i, first in enumerate(firsts, start=2):  # id 1 is the admin
            company = rng.randint(1, companies) if rng.random() < 0.6 else None
            people.append(Buyer(i, company, first))
        counts["user"] = loader.copy(
            "user",
            (
                "id",
                "email",
                "name",
                "role",
                "locale",
                "company_id",
                "session_version",
                "created_at",
            ),
            [(1, ADMIN, "Bench Admin", "admin", "en", None, 1, start)]
            + [
                (
                    b.id,
                    f"buyer{b.id}@bench.example",
                    f"Buyer {b.id}",
                    "buyer",
                    "de" if b.id % 3 == 0 else "en",
                    b.company_id,
                    1,
                    b.first_paid - timedelta(minutes=5),
                )
                for b in people
            ],
        )

        drafts: list[
            tuple[datetime, Buyer, Product, datetime | None, dict[str, Any], str, bool]
        ] = []

        def order(
            b: Buyer, product: Product, paid: datetime | None, attribution: dict[str, Any]
        ) -> None:
            currency = weighted(rng, CURRENCIES)
            refunded = paid is not None and rng.random() < 0.03
            created = (paid or b.first_paid) - timedelta(minutes=3)
            drafts.append((created, b, product, paid, attribution, currency, refunded))
            if paid is not None:
                b.products.append(product.id)

        for b in people:
            bought = rng.choices(products, weights=weights)[0]
            order(b, bought, b.first_paid, weighted(rng, SOURCES))
            if rng.random() < 0.2:
                second = rng.choice([p for p in products if p.id != bought.id])
                later = b.first_paid + timedelta(
                    seconds=rng.uniform(0, (now - b.first_paid).total_seconds())
                )
                order(b, second, later, {})
            if rng.random() < 0.05:
                order(b, rng.choice(courses), None, weighted(rng, SOURCES))

        order_rows: list[tuple[Any, ...]] = []
        entitlement_rows: list[tuple[Any, ...]] = []
        drafts.sort(key=lambda d: d[0])
        for oid, (created, b, product, paid, attribution, currency, refunded) in enumerate(
            drafts, start=1
        ):
            amount = product.prices[currency]
            status = "refunded" if refunded else ("paid" if paid else "pending")
            order_rows.append(
                (
                    oid,
                    f"B-{oid:08d}",
                    b.id,
                    product.id,
                    "test",
                    f"bench_cs_{oid}",
                    f"bench_pi_{oid}" if paid else None,
                    status,
                    amount,
                    currency,
                    amount if refunded else 0,
                    f"buyer{b.id}@bench.example",
                    json.dumps(attribution),
                    f"bench-{oid}",
                    False,
                    False,
                    False,
                    created,
                    paid,
                    paid or created,
                )
            )
            if paid is not None:
                entitlement_rows.append(
                    (
                        len(entitlement_rows) + 1,
                        b.id,
                        product.id,
                        oid,
                        paid,
                        paid + timedelta(days=2) if refunded else None,
                    )
                )
        counts["order"] = loader.copy(
            "order",
            (
                "id", "number", "user_id", "product_id", "provider", "provider_session_id",
                "payment_intent", "status", "amount", "currency", "amount_refunded", "email",
                "attribution", "checkout_key", "business", "flagged", "account_created",
                "created_at", "paid_at", "updated_at",
            ),
            order_rows,
        )  # fmt: skip
        counts["entitlement"] = loader.copy(
            "entitlement",
            ("id", "user_id", "product_id", "order_id", "granted_at", "revoked_at"),
            entitlement_rows,
        )
        log(f"  {counts['user'] - 1} buyers, {counts['order']} orders")

        by_id = {p.id: p for p in products}
        progress_rows: list[tuple[Any, ...]] = []
        engagement_rows: list[tuple[Any, ...]] = []
        event_id = 0

        def events() -> Iterator[tuple[Any, ...]]:
            nonlocal event_id
            for b in people:
                owned = [by_id[p] for p in b.products] or [by_id[1]]
                # A third of the buyers become engaged, most within the first weeks.
                span = max(60.0, (now - b.first_paid).total_seconds())
                if rng.random() < 0.33:
                    b.engaged_at = b.first_paid + timedelta(
                        seconds=min(span * 0.9, rng.expovariate(1 / (12 * 86400)))
                    )
                n = rng.randint(10, 90)
                touched: dict[int, list[Any]] = {}
                last = b.first_paid
                for k in range(n):
                    product = owned[k % len(owned)]
                    index = rng.randrange(len(product.lessons))
                    lesson = product.lessons[index]
                    at = b.first_paid + timedelta(seconds=rng.uniform(30, span))
                    last = max(last, at)
                    event_id += 1
                    client = uuid.UUID(int=event_id)
                    if product.kind == "course":
                        begin = rng.uniform(0, product.durations[index] - 30)
                        row: tuple[Any, ...] = (
                            event_id, b.id, client, product.id, lesson, "video_progress",
                            begin, begin + 30, 1.0, None, None, at, at,
                        )  # fmt: skip
                    else:
                        page = rng.randint(1, product.pages)
                        row = (
                            event_id, b.id, client, product.id, lesson, "page_viewed",
                            None, None, None, page, 40.0, at, at,
                        )  # fmt: skip
                    seen = touched.setdefault(lesson, [product, index, at, at, 0.0, set()])
                    seen[2], seen[3] = min(seen[2], at), max(seen[3], at)
                    if product.kind == "course":
                        seen[4] += 30.0
                    else:
                        seen[5].add(row[9])
                    yield row
                b.last_active = last
                completed = media = pages = 0.0
                for lesson, (product, index, opened, active, covered, read) in touched.items():
                    duration: float | None = (
                        product.durations[index] if product.kind == "course" else None
                    )
                    done = (duration is not None and covered >= duration * 0.9) or len(read) > 10
                    completed += done
                    media += min(covered, duration or 0.0)
                    pages += len(read)
                    progress_rows.append(
                        (
                            b.id, lesson, product.id,
                            json.dumps([[0.0, min(covered, duration)]] if duration else []),
                            min(covered, duration or 0.0), duration, min(covered, duration or 0.0),
                            json.dumps(sorted(read)), 40.0 * len(read),
                            opened, active if done else None, active,
                        )
                    )  # fmt: skip
                total_lessons = sum(len(p.lessons) for p in owned)
                score = 60.0 if b.engaged_at else rng.uniform(5, 45)
                engagement_rows.append(
                    (b.id, total_lessons, int(completed), media, int(pages), 40.0 * pages, 0,
                     b.first_paid, last, b.engaged_at, score)
                )  # fmt: skip

        t0 = time.monotonic()
        with loader.without_indexes("engagement_event"):
            counts["engagement_event"] = loader.copy(
                "engagement_event",
                ("id", "user_id", "client_id", "product_id", "lesson_id", "kind", "start", "end",
                 "rate", "page", "seconds", "occurred_at", "received_at"),
                events(),
            )  # fmt: skip
        log(f"  {counts['engagement_event']} events in {time.monotonic() - t0:.0f} s")
        counts["lesson_progress"] = loader.copy(
            "lesson_progress",
            ("user_id", "lesson_id", "product_id", "intervals", "covered_seconds",
             "duration_seconds", "position", "pages", "reading_seconds", "opened_at",
             "completed_at", "last_active_at"),
            progress_rows,
        )  # fmt: skip
        counts["buyer_engagement"] = loader.copy(
            "buyer_engagement",
            ("user_id", "lessons_total", "lessons_completed", "media_seconds", "pages_read",
             "reading_seconds", "downloads", "first_active_at", "last_active_at", "engaged_at",
             "score_at_last_event"),
            engagement_rows,
        )  # fmt: skip

        inquiry_rows: list[tuple[Any, ...]] = []
        change_rows: list[tuple[Any, ...]] = []
        asked: list[tuple[datetime, Buyer | None, str]] = []
        for b in people:
            if b.engaged_at is not None and rng.random() < 0.1:
                created = b.engaged_at + timedelta(days=rng.uniform(0, 20))
                if created < now:
                    asked.append((created, b, "buyer"))
        for _ in range(buyers_total // 200):
            source = weighted(rng, SOURCES)
            label = source.get("utm_source") or source.get("referrer") or ""
            asked.append((start + timedelta(seconds=rng.uniform(0, DAYS * 86400)), None, label))
        asked.sort(key=lambda a: a[0])

        def inquiry(b: Buyer | None, created: datetime, source: str) -> None:
            iid = len(inquiry_rows) + 1
            status = weighted(rng, STATUSES)
            at = created
            won_at = None
            previous = "new"
            change_rows.append((len(change_rows) + 1, iid, None, None, "new", "", at))
            for step in PATH[status]:
                at = min(now, at + timedelta(days=rng.uniform(0.5, 10)))
                change_rows.append((len(change_rows) + 1, iid, 1, previous, step, "", at))
                previous = step
                if step == "won":
                    won_at = at
            who = f"buyer{b.id}" if b else f"visitor{iid}"
            inquiry_rows.append(
                (iid, b.id if b else None, b.company_id if b else None, who.title(),
                 f"{who}@bench.example", "", "", "We would like to talk.", "en", source, "{}",
                 "{}", status, created, at, won_at)
            )  # fmt: skip

        for created, asker, source_label in asked:
            inquiry(asker, created, source_label)
        counts["inquiry"] = loader.copy(
            "inquiry",
            ("id", "user_id", "company_id", "name", "email", "company_name", "phone", "message",
             "locale", "source", "attribution", "evidence", "status", "created_at", "updated_at",
             "won_at"),
            inquiry_rows,
        )  # fmt: skip
        counts["inquiry_change"] = loader.copy(
            "inquiry_change",
            ("id", "inquiry_id", "actor_id", "from_status", "to_status", "note", "at"),
            change_rows,
        )

        # About 25 counted visitors per buyer, spread over the days and sources.
        visit_rows = []
        per_day = buyers_total * 25 / DAYS
        for d in range(DAYS + 1):
            day = (start + timedelta(days=d)).date()
            for source, weight in SOURCES:
                label = source.get("utm_source") or (
                    source["referrer"].split("/")[2].removeprefix("www.")
                    if "referrer" in source
                    else ""
                )
                site = max(0, int(rng.gauss(per_day * weight / 100, 2)))
                visit_rows.append((day, "site", "", label, site))
                visit_rows.append((day, "catalog", "", label, int(site * 0.7)))
                for product, share in zip(products, weights, strict=True):
                    visit_rows.append((day, "product", product.slug, label, int(site * share / 80)))
        counts["visit_day"] = loader.copy(
            "visit_day", ("day", "kind", "product_slug", "source", "visitors"), visit_rows
        )

        for table in ("user", "company", "order", "entitlement", "engagement_event", "inquiry",
                      "inquiry_change", "product", "module", "lesson", "price"):  # fmt: skip
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
                f'(SELECT max(id) FROM "{table}"))'
            )
        conn.commit()
    return counts


def rollup(database: str) -> int:
    """Fill the dashboard's buyer_funnel: COPY ran without triggers, so they did not."""
    from sqlmodel import Session

    import app.models  # noqa: F401 - every table, for the rebuild's joins
    from app.admin.service import rebuild_funnel
    from app.db import make_engine

    engine = make_engine(app_url(database))
    try:
        with Session(engine) as session:
            n = rebuild_funnel(session)
            session.commit()
        return n
    finally:
        engine.dispose()


def build(database: str, buyers: int) -> None:
    """Drop, create, migrate and fill one database; mark it complete."""
    from app import migrate

    admin = psycopg.connect(libpq_url(PG_URL), autocommit=True)
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{database}"')
    log(f"{database}: migrating")
    migrate.upgrade(app_url(database))
    t0 = time.monotonic()
    now = datetime.now(UTC)
    counts = fill(libpq_url(PG_URL, database), buyers, now=now)
    counts["buyer_funnel"] = rollup(database)
    with psycopg.connect(libpq_url(PG_URL, database), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute(
            f'COMMENT ON DATABASE "{database}" IS \'{MARK} buyers={buyers} '
            f"events={counts['engagement_event']} made={now.date().isoformat()}'"
        )
    summary = ", ".join(f"{k} {v}" for k, v in counts.items())
    log(f"{database}: done in {time.monotonic() - t0:.0f} s: {summary}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(DATABASES), help="build only this database")
    args = parser.parse_args(argv)
    try:
        psycopg.connect(libpq_url(PG_URL), connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        log(f"cannot reach PostgreSQL at {make_url(PG_URL).render_as_string()}: {exc}")
        log("start a server, or set BENCH_PG_URL to a superuser connection URL")
        return 2
    for database, buyers in DATABASES.items():
        if args.only in (None, database):
            build(database, buyers)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
