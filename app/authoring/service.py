"""Authoring: the author's products, prices, modules and lessons; releases; library marks.

Functions take a session and never commit (the request does). Each checks everything before
it changes anything, so a refused call (AuthoringError) leaves the database as it was.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.accounts.models import User
from app.authoring import schemas
from app.catalog.changes import catalog_changed
from app.catalog.models import (
    Asset,
    AssetStatus,
    BundleItem,
    Lesson,
    LessonKind,
    Module,
    ModuleStatus,
    Price,
    Product,
    ProductKind,
    ProductStatus,
)
from app.catalog.prices import below_minimum
from app.checkout.models import Entitlement
from app.models_base import utcnow

# Content types a lesson's file may have, per lesson kind (uploads check the bytes).
MEDIA_TYPES: dict[LessonKind, tuple[str, ...]] = {
    LessonKind.video: ("video/mp4", "video/webm", "application/vnd.apple.mpegurl"),
    LessonKind.pdf: ("application/pdf",),
    LessonKind.text: (),
}
CAPTION_TYPE = "text/vtt"
_UNSUBSCRIBE_SALT = "release-emails"


def _(message: str) -> str:
    """Mark a message for translation (gettext_noop): pages show it in the reader's language."""
    return message


class AuthoringError(ValueError):
    """Input refused as a whole; nothing was changed. `field` names the culprit.

    `message` is an English template with %(name)s placeholders filled from `params`.
    """

    status = 422

    def __init__(self, field: str, message: str, **params: object) -> None:
        self.field = field
        self.message = message
        self.params = params
        super().__init__(f"{field}: {self.text}")

    @property
    def text(self) -> str:
        return self.message % self.params if self.params else self.message


class Conflict(AuthoringError):
    """The input clashes with what exists (a slug or key in use, a visible item)."""

    status = 409


# Helpers --------------------------------------------------------------------------------------


def _clean(text: Mapping[Any, str]) -> dict[str, str]:
    """Drop empty translations: an empty German title means "show the English one"."""
    return {lang: value for lang, value in text.items() if value.strip()}


def _titled(field: str, text: Mapping[Any, str]) -> dict[str, str]:
    cleaned = _clean(text)
    if not cleaned:
        raise AuthoringError(field, _("Enter an English or a German text."))
    return cleaned


def slugify(text: str, fallback: str) -> str:
    """A URL-safe key from a title: 'Why trust?' -> 'why-trust'."""
    ascii_text = (
        unicodedata.normalize("NFKD", text.replace("ß", "ss"))
        .encode("ascii", "ignore")
        .decode()
        .lower()
    )
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")[:60].strip("-")
    return slug or fallback


def _changed(product: Product, session: Session) -> None:
    """Note an edit of the product; the cached catalog pages go when buyers could see it."""
    product.updated_at = utcnow()
    session.add(product)
    if product.status == ProductStatus.published:
        catalog_changed(session)


def visible(product: Product, module: Module, lesson: Lesson | None = None) -> bool:
    """Whether buyers and visitors can see the module (and lesson) now."""
    shown = product.status == ProductStatus.published and module.status == ModuleStatus.published
    return shown and (lesson is None or lesson.published)


def _product_of(session: Session, product_id: int) -> Product:
    product = session.get(Product, product_id)
    assert product is not None  # modules and lessons cascade with their product
    return product


def _module_of(session: Session, module_id: int) -> Module:
    module = session.get(Module, module_id)
    assert module is not None
    return module


def _modules(session: Session, product_id: int) -> list[Module]:
    return list(
        session.exec(
            select(Module)
            .where(Module.product_id == product_id)
            .order_by(col(Module.position), col(Module.id))
        )
    )


def _lessons(session: Session, module_id: int) -> list[Lesson]:
    return list(
        session.exec(
            select(Lesson)
            .where(Lesson.module_id == module_id)
            .order_by(col(Lesson.position), col(Lesson.id))
        )
    )


def _renumber(session: Session, product_id: int) -> None:
    """Lesson positions run through the whole product (module order, then lesson order)."""
    position = 0
    for module in _modules(session, product_id):
        for lesson in _lessons(session, module.id or 0):
            if lesson.position != position:
                lesson.position = position
                session.add(lesson)
            position += 1
    session.flush()


def _free_key(
    session: Session, table: type[Module] | type[Lesson], product_id: int, base: str
) -> str:
    taken = set(session.exec(select(table.key).where(table.product_id == product_id)))
    key, n = base, 2
    while key in taken:
        suffix = f"-{n}"
        key, n = base[: 80 - len(suffix)] + suffix, n + 1
    return key


def _check_key(
    session: Session,
    table: type[Module] | type[Lesson],
    product_id: int,
    key: str,
    own_id: int | None,
) -> None:
    clash = session.exec(
        select(table.id).where(table.product_id == product_id, table.key == key)
    ).first()
    if clash is not None and clash != own_id:
        raise Conflict("key", _("The key %(key)s is already used in this product."), key=key)


def _check_order(field: str, wanted: list[int], current: list[int]) -> None:
    if len(set(wanted)) != len(wanted) or set(wanted) != set(current):
        raise AuthoringError(field, _("List every item exactly once, and no others."))


# Products -------------------------------------------------------------------------------------


def list_products(*, session: Session) -> list[schemas.ProductSummary]:
    """Every product, drafts included, most recently edited first."""
    products = list(
        session.exec(select(Product).order_by(col(Product.updated_at).desc(), col(Product.id)))
    )
    prices: dict[int, dict[str, int]] = {}
    for price in session.exec(select(Price)):
        prices.setdefault(price.product_id, {})[price.currency] = price.amount
    modules = dict(
        session.exec(select(Module.product_id, func.count()).group_by(col(Module.product_id))).all()
    )
    lessons = dict(
        session.exec(select(Lesson.product_id, func.count()).group_by(col(Lesson.product_id))).all()
    )
    return [
        schemas.ProductSummary(
            id=p.id or 0,
            slug=p.slug,
            kind=p.kind,
            status=p.status,
            title=p.title,
            prices=prices.get(p.id or 0, {}),
            modules=modules.get(p.id or 0, 0),
            lessons=lessons.get(p.id or 0, 0),
            updated_at=p.updated_at,
        )
        for p in products
    ]


def _check_slug(session: Session, slug: str, own_id: int | None) -> None:
    clash = session.exec(select(Product.id).where(Product.slug == slug)).first()
    if clash is not None and clash != own_id:
        raise Conflict("slug", _("The address %(slug)s is already taken."), slug=slug)


def create_product(*, session: Session, data: schemas.ProductCreate) -> Product:
    """A new draft product."""
    title = _titled("title", data.title)
    _check_slug(session, data.slug, None)
    product = Product(
        slug=data.slug,
        kind=data.kind,
        status=ProductStatus.draft,
        title=title,
        tagline=_clean(data.tagline),
        description=_clean(data.description),
    )
    try:
        with session.begin_nested():
            session.add(product)
    except IntegrityError as exc:  # the same slug, taken a moment ago by another request
        raise Conflict("slug", _("The address %(slug)s is already taken."), slug=data.slug) from exc
    return product


def _check_includes(session: Session, bundle: Product, ids: list[int]) -> None:
    if len(set(ids)) != len(ids):
        raise AuthoringError("includes", _("A product is listed twice."))
    for product_id in ids:
        included = session.get(Product, product_id)
        if included is None or included.id == bundle.id:
            raise AuthoringError("includes", _("There is no other product %(id)s."), id=product_id)
        if included.kind == ProductKind.bundle:
            raise AuthoringError("includes", _("A bundle cannot include another bundle."))


def _set_includes(session: Session, bundle: Product, ids: list[int]) -> None:
    current = {
        item.product_id: item
        for item in session.exec(select(BundleItem).where(BundleItem.bundle_id == bundle.id))
    }
    for product_id, item in current.items():
        if product_id not in ids:
            session.delete(item)
    for product_id in ids:
        if product_id not in current:
            session.add(BundleItem(bundle_id=bundle.id or 0, product_id=product_id))


def update_product(*, session: Session, product: Product, data: schemas.ProductUpdate) -> None:
    """Change the fields that were sent."""
    sent = data.model_fields_set
    values: dict[str, Any] = {}
    if "slug" in sent and data.slug is not None and data.slug != product.slug:
        _check_slug(session, data.slug, product.id)
        values["slug"] = data.slug
    if "kind" in sent and data.kind is not None:
        if product.status == ProductStatus.published and data.kind != product.kind:
            raise Conflict("kind", _("Unpublish the product before changing its kind."))
        values["kind"] = data.kind
    if "title" in sent and data.title is not None:
        values["title"] = _titled("title", data.title)
    if "tagline" in sent and data.tagline is not None:
        values["tagline"] = _clean(data.tagline)
    if "description" in sent and data.description is not None:
        values["description"] = _clean(data.description)
    kind = values.get("kind", product.kind)
    includes = data.includes if "includes" in sent else None
    if includes is not None:
        if kind != ProductKind.bundle:
            raise AuthoringError("includes", _("Only a bundle includes other products."))
        _check_includes(session, product, includes)
    # Everything is checked: from here on nothing is refused.
    for name, value in values.items():
        setattr(product, name, value)
    if kind != ProductKind.bundle:
        session.execute(delete(BundleItem).where(col(BundleItem.bundle_id) == product.id))
    elif includes is not None:
        _set_includes(session, product, includes)
    _changed(product, session)
    session.flush()


def set_prices(*, session: Session, product: Product, prices: dict[str, int]) -> None:
    """Replace the product's prices (minor units per currency)."""
    for currency, amount in prices.items():
        if currency not in schemas.CURRENCIES:
            raise AuthoringError(
                "prices", _("Prices are in EUR, AUD or USD, not %(currency)s."), currency=currency
            )
        if not 0 < amount <= schemas.MAX_PRICE:
            raise AuthoringError(
                f"prices.{currency}", _("Enter an amount above 0 and up to 100,000.")
            )
        minimum = below_minimum(currency, amount)
        if minimum is not None:
            raise AuthoringError(
                f"prices.{currency}",
                _("The lowest price the payment provider accepts is %(minimum)s %(currency)s."),
                minimum=f"{minimum // 100}.{minimum % 100:02d}",
                currency=currency,
            )
    if not prices and product.status == ProductStatus.published:
        raise AuthoringError("prices", _("A published product needs at least one price."))
    current = {
        p.currency: p for p in session.exec(select(Price).where(Price.product_id == product.id))
    }
    for currency, price in current.items():
        if currency not in prices:
            session.delete(price)
    for currency, amount in prices.items():
        price = current.get(currency) or Price(
            product_id=product.id or 0, currency=currency, amount=amount
        )
        price.amount = amount
        session.add(price)
    _changed(product, session)
    session.flush()


def publish_problems(*, session: Session, product: Product) -> list[tuple[str, str]]:
    """What keeps the product from being published, as (field, message) pairs."""
    problems: list[tuple[str, str]] = []
    if not _clean(product.title):
        problems.append(("title", _("Enter an English or a German title.")))
    if session.exec(select(Price.id).where(Price.product_id == product.id)).first() is None:
        problems.append(("prices", _("Add at least one price.")))
    if product.kind == ProductKind.bundle:
        included = session.exec(select(BundleItem.id).where(BundleItem.bundle_id == product.id))
        if included.first() is None:
            problems.append(("includes", _("Choose the products this bundle includes.")))
    return problems


def set_status(*, session: Session, product: Product, status: ProductStatus) -> None:
    """Publish or unpublish a product; the cached catalog pages are replaced either way."""
    if status == product.status:
        return
    if status == ProductStatus.published:
        problems = publish_problems(session=session, product=product)
        if problems:
            raise AuthoringError(*problems[0])
    product.status = status
    product.updated_at = utcnow()
    session.add(product)
    session.flush()
    catalog_changed(session)


def product_out(*, session: Session, product: Product) -> schemas.ProductOut:
    """The product as the editor and the JSON API show it: everything, drafts included."""
    prices = {
        p.currency: p.amount
        for p in session.exec(select(Price).where(Price.product_id == product.id))
    }
    includes = list(
        session.exec(
            select(BundleItem.product_id)
            .where(BundleItem.bundle_id == product.id)
            .order_by(col(BundleItem.id))
        )
    )
    # All lessons of the product in one query, not one query a module.
    lessons: dict[int, list[Lesson]] = {}
    for lesson in session.exec(
        select(Lesson)
        .where(Lesson.product_id == product.id)
        .order_by(col(Lesson.position), col(Lesson.id))
    ):
        lessons.setdefault(lesson.module_id, []).append(lesson)
    modules = [
        module_out(session=session, module=module, lessons=lessons.get(module.id or 0, []))
        for module in _modules(session, product.id or 0)
    ]
    return schemas.ProductOut(
        id=product.id or 0,
        slug=product.slug,
        kind=product.kind,
        status=product.status,
        title=product.title,
        tagline=product.tagline,
        description=product.description,
        prices=prices,
        includes=includes,
        modules=modules,
        updated_at=product.updated_at,
    )


def module_out(
    *, session: Session, module: Module, lessons: list[Lesson] | None = None
) -> schemas.ModuleOut:
    """One module with its lessons (read when not given), as the editor shows it."""
    return schemas.ModuleOut(
        id=module.id or 0,
        key=module.key,
        position=module.position,
        status=module.status,
        published_at=module.published_at,
        title=module.title,
        release_notes=module.release_notes,
        lessons=[
            lesson_out(lesson)
            for lesson in (lessons if lessons is not None else _lessons(session, module.id or 0))
        ],
    )


def lesson_out(lesson: Lesson) -> schemas.LessonOut:
    """One lesson, as the editor shows it."""
    return schemas.LessonOut(
        id=lesson.id or 0,
        key=lesson.key,
        kind=lesson.kind,
        position=lesson.position,
        title=lesson.title,
        body=lesson.body,
        captions=lesson.captions,
        is_preview=lesson.is_preview,
        published=lesson.published,
        asset_id=lesson.asset_id,
    )


# Modules --------------------------------------------------------------------------------------


def add_module(*, session: Session, product: Product, data: schemas.ModuleCreate) -> Module:
    """A new module at the end of the product.

    In a product buyers already see, it starts as a draft, to be released (and announced)
    when it is ready; in a draft product it simply goes live with the product.
    """
    title = _titled("title", data.title)
    pid = product.id or 0
    if data.key:
        _check_key(session, Module, pid, data.key, None)
        key = data.key
    else:
        key = _free_key(session, Module, pid, slugify(next(iter(title.values())), "module"))
    last = session.exec(select(func.max(Module.position)).where(Module.product_id == pid)).one()
    live = product.status == ProductStatus.published
    module = Module(
        product_id=pid,
        key=key,
        position=(last if last is not None else -1) + 1,
        title=title,
        status=ModuleStatus.draft if live else ModuleStatus.published,
    )
    session.add(module)
    _changed(product, session)
    session.flush()
    return module


def update_module(*, session: Session, module: Module, data: schemas.ModuleUpdate) -> None:
    """Change the module's title or key."""
    sent = data.model_fields_set
    title = _titled("title", data.title) if "title" in sent and data.title is not None else None
    if "key" in sent and data.key is not None and data.key != module.key:
        _check_key(session, Module, module.product_id, data.key, module.id)
        module.key = data.key
    if title is not None:
        module.title = title
    session.add(module)
    _changed(_product_of(session, module.product_id), session)
    session.flush()


def release_module(*, session: Session, module: Module, data: schemas.ModuleRelease) -> bool:
    """Publish a draft module; True when its buyers are to be emailed (the caller queues it)."""
    if module.status == ModuleStatus.published:
        raise Conflict("status", _("The module is already published."))
    product = _product_of(session, module.product_id)
    module.status = ModuleStatus.published
    module.published_at = utcnow()
    module.release_notes = _clean(data.notes)
    session.add(module)
    _changed(product, session)
    session.flush()
    # Nobody is told about a module of a product that buyers cannot see at the moment.
    return data.notify and product.status == ProductStatus.published


def withdraw_module(*, session: Session, module: Module) -> None:
    """Make a module a draft again: hidden from buyers, lessons and progress kept."""
    if module.status == ModuleStatus.draft:
        return
    module.status = ModuleStatus.draft
    session.add(module)
    _changed(_product_of(session, module.product_id), session)
    session.flush()


def delete_module(*, session: Session, module: Module) -> None:
    """Delete a module that buyers cannot see, with its lessons."""
    product = _product_of(session, module.product_id)
    if visible(product, module):
        raise Conflict("status", _("Buyers can see this module: unpublish it first."))
    session.execute(delete(Lesson).where(col(Lesson.module_id) == module.id))
    session.execute(delete(Module).where(col(Module.id) == module.id))
    session.expunge(module)
    _changed(product, session)
    _renumber(session, product.id or 0)


def reorder_modules(*, session: Session, product: Product, ids: list[int]) -> None:
    """Put the product's modules in the given order (every module id, each once)."""
    modules = {m.id: m for m in _modules(session, product.id or 0)}
    _check_order("ids", ids, [i for i in modules if i is not None])
    for position, module_id in enumerate(ids):
        module = modules[module_id]
        if module.position != position:
            module.position = position
            session.add(module)
    session.flush()
    _renumber(session, product.id or 0)
    _changed(product, session)


# Lessons --------------------------------------------------------------------------------------


def add_lesson(*, session: Session, module: Module, data: schemas.LessonCreate) -> Lesson:
    """A new lesson at the end of the module; hidden while buyers can see the module."""
    title = _titled("title", data.title)
    product = _product_of(session, module.product_id)
    pid = product.id or 0
    if data.key:
        _check_key(session, Lesson, pid, data.key, None)
        key = data.key
    else:
        key = _free_key(session, Lesson, pid, slugify(next(iter(title.values())), "lesson"))
    lesson = Lesson(
        product_id=pid,
        module_id=module.id or 0,
        key=key,
        position=2**31 - 1,  # last; _renumber makes it contiguous
        kind=data.kind,
        title=title,
        body={},
        captions={},
        published=not visible(product, module),
    )
    session.add(lesson)
    session.flush()
    _renumber(session, pid)
    _changed(product, session)
    return lesson


def _check_asset(session: Session, field: str, asset_id: int, types: tuple[str, ...]) -> None:
    asset = session.get(Asset, asset_id)
    if asset is None or asset.status == AssetStatus.failed:
        raise AuthoringError(field, _("There is no usable file %(id)s."), id=asset_id)
    if asset.content_type not in types:
        raise AuthoringError(
            field,
            _("A %(type)s file does not suit this kind of lesson."),
            type=asset.content_type,
        )


def update_lesson(*, session: Session, lesson: Lesson, data: schemas.LessonUpdate) -> None:
    """Change the fields that were sent; a file or captions must suit the lesson's kind."""
    sent = data.model_fields_set
    values: dict[str, Any] = {}
    if "title" in sent and data.title is not None:
        values["title"] = _titled("title", data.title)
    if "key" in sent and data.key is not None and data.key != lesson.key:
        _check_key(session, Lesson, lesson.product_id, data.key, lesson.id)
        values["key"] = data.key
    kind = data.kind if "kind" in sent and data.kind is not None else lesson.kind
    values["kind"] = kind
    for name in ("is_preview", "published"):
        value = getattr(data, name)
        if name in sent and value is not None:
            values[name] = value
    if "body" in sent and data.body is not None:
        values["body"] = _clean(data.body)
    if "asset_id" in sent:
        if data.asset_id is not None:
            _check_asset(session, "asset_id", data.asset_id, MEDIA_TYPES[kind])
        values["asset_id"] = data.asset_id
    elif lesson.asset_id is not None and kind != lesson.kind:
        # A kind change leaves a file that no longer fits: detach it (the asset stays).
        asset = session.get(Asset, lesson.asset_id)
        if asset is None or asset.content_type not in MEDIA_TYPES[kind]:
            values["asset_id"] = None
    captions = dict(data.captions) if "captions" in sent and data.captions is not None else None
    if captions is not None:
        if captions and kind != LessonKind.video:
            raise AuthoringError("captions", _("Only video lessons have captions."))
        for lang, caption_id in captions.items():
            _check_asset(session, f"captions.{lang}", caption_id, (CAPTION_TYPE,))
        values["captions"] = captions
    elif kind != LessonKind.video and lesson.captions:
        values["captions"] = {}
    for name, value in values.items():
        setattr(lesson, name, value)
    session.add(lesson)
    _changed(_product_of(session, lesson.product_id), session)
    session.flush()


def reorder_lessons(*, session: Session, module: Module, ids: list[int]) -> None:
    """Put the module's lessons in the given order (every lesson id of the module, each once)."""
    lessons = {ls.id: ls for ls in _lessons(session, module.id or 0)}
    _check_order("ids", ids, [i for i in lessons if i is not None])
    for rank, lesson_id in enumerate(ids):
        lessons[lesson_id].position = rank
        session.add(lessons[lesson_id])
    session.flush()
    _renumber(session, module.product_id)
    _changed(_product_of(session, module.product_id), session)


def delete_lesson(*, session: Session, lesson: Lesson) -> None:
    """Delete a lesson that buyers cannot see (its file stays in storage)."""
    module = _module_of(session, lesson.module_id)
    product = _product_of(session, lesson.product_id)
    if visible(product, module, lesson):
        raise Conflict("published", _("Buyers can see this lesson: hide it first."))
    session.execute(delete(Lesson).where(col(Lesson.id) == lesson.id))
    session.expunge(lesson)
    _changed(product, session)
    _renumber(session, product.id or 0)


def attachable_assets(*, session: Session, types: tuple[str, ...]) -> list[Asset]:
    """Files already uploaded that a lesson of this kind could use, newest first."""
    if not types:
        return []
    return list(
        session.exec(
            select(Asset)
            # only finished files: one still uploading or processing may never arrive
            .where(col(Asset.content_type).in_(types), Asset.status == AssetStatus.ready)
            .order_by(col(Asset.created_at).desc(), col(Asset.id).desc())
            .limit(200)
        )
    )


# Buyers: what is new, release emails ------------------------------------------------------------


@dataclass(frozen=True)
class NewModule:
    product_id: int
    module_id: int
    title: dict[str, str]
    published_at: Any


def whats_new(*, session: Session, user_id: int, days: int) -> dict[int, list[NewModule]]:
    """Modules released since the buyer last opened each product (at most `days` ago)."""
    floor = utcnow() - timedelta(days=days)
    since = func.coalesce(Entitlement.seen_at, Entitlement.granted_at)
    rows = session.exec(
        select(Module)
        .join(Entitlement, col(Entitlement.product_id) == col(Module.product_id))
        .join(Product, col(Product.id) == col(Module.product_id))
        .where(
            Entitlement.user_id == user_id,
            col(Entitlement.revoked_at).is_(None),
            Product.status == ProductStatus.published,
            Module.status == ModuleStatus.published,
            col(Module.published_at) > floor,
            col(Module.published_at) > since,
        )
        .order_by(col(Module.position))
    )
    found: dict[int, list[NewModule]] = {}
    for module in rows:
        found.setdefault(module.product_id, []).append(
            NewModule(module.product_id, module.id or 0, module.title, module.published_at)
        )
    return found


def mark_seen(*, session: Session, user_id: int, product_id: int) -> None:
    """Remember that the buyer opened the product now (what is new is counted from here)."""
    session.execute(
        update(Entitlement)
        .where(
            col(Entitlement.user_id) == user_id,
            col(Entitlement.product_id) == product_id,
            col(Entitlement.revoked_at).is_(None),
        )
        .values(seen_at=utcnow())
    )


def unsubscribe_token(*, secret: str, user_id: int) -> str:
    """A link token that turns off release emails for one user, without signing in."""
    return str(URLSafeSerializer(secret, salt=_UNSUBSCRIBE_SALT).dumps(user_id))


def unsubscribe_user(*, secret: str, token: str) -> int | None:
    """The user id in a valid unsubscribe token, else None."""
    try:
        user_id = URLSafeSerializer(secret, salt=_UNSUBSCRIBE_SALT).loads(token[:200])
    except BadSignature:
        return None
    return user_id if isinstance(user_id, int) else None


def set_release_emails(*, session: Session, user: User, wanted: bool) -> None:
    """Turn emails about new modules on or off for the user."""
    user.release_emails = wanted
    session.add(user)
