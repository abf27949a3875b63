"""Catalog reads for the pages, and publishing a course folder."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import delete
from sqlmodel import Session, col, select

from app.catalog.changes import catalog_changed
from app.catalog.manifest import ManifestError, ProductSpec, load_manifest
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
from app.delivery.media_info import mp4_duration, pdf_pages
from app.delivery.storage import Storage, new_key
from app.models_base import utcnow

log = structlog.get_logger()

# File signatures we accept per lesson kind: checked on the bytes, not the name.
_SIGNATURES: dict[str, list[tuple[int, bytes, str]]] = {
    "video": [(4, b"ftyp", "video/mp4"), (0, b"\x1a\x45\xdf\xa3", "video/webm")],
    "pdf": [(0, b"%PDF-", "application/pdf")],
    "captions": [(0, b"WEBVTT", "text/vtt"), (3, b"WEBVTT", "text/vtt")],  # with or without BOM
}


@dataclass
class LessonView:
    id: int
    key: str
    kind: str
    title: dict[str, str]
    is_preview: bool
    duration_seconds: float | None
    published: bool = True


@dataclass
class ModuleView:
    key: str
    title: dict[str, str]
    lessons: list[LessonView] = field(default_factory=list)
    id: int = 0
    published: bool = True


@dataclass
class ProductView:
    id: int
    slug: str
    kind: str
    title: dict[str, str]
    tagline: dict[str, str]
    description: dict[str, str]
    prices: dict[str, int]
    modules: list[ModuleView] = field(default_factory=list)

    @property
    def lesson_count(self) -> int:
        return sum(len(m.lessons) for m in self.modules)

    @property
    def preview_count(self) -> int:
        return sum(1 for m in self.modules for lesson in m.lessons if lesson.is_preview)

    @property
    def total_seconds(self) -> float:
        return sum(ls.duration_seconds or 0 for m in self.modules for ls in m.lessons)


def _views(session: Session, products: list[Product], *, drafts: bool = False) -> list[ProductView]:
    """Product views; draft modules and hidden lessons only with drafts=True (author preview)."""
    if not products:
        return []
    ids = [p.id for p in products]
    prices: dict[int, dict[str, int]] = {}
    for pr in session.exec(select(Price).where(col(Price.product_id).in_(ids))):
        prices.setdefault(pr.product_id, {})[pr.currency] = pr.amount
    module_query = select(Module).where(col(Module.product_id).in_(ids))
    lesson_query = (
        select(Lesson, Asset.duration_seconds)
        .join(Asset, col(Lesson.asset_id) == col(Asset.id), isouter=True)
        .where(col(Lesson.product_id).in_(ids))
    )
    if not drafts:
        module_query = module_query.where(Module.status == ModuleStatus.published)
        lesson_query = lesson_query.where(col(Lesson.published).is_(True))
    modules: dict[int, list[Module]] = {}
    for m in session.exec(module_query.order_by(col(Module.position))):
        modules.setdefault(m.product_id, []).append(m)
    rows = session.exec(lesson_query.order_by(col(Lesson.position)))
    lessons: dict[int, list[LessonView]] = {}
    for lesson, duration in rows:
        lessons.setdefault(lesson.module_id, []).append(
            LessonView(
                id=lesson.id or 0,
                key=lesson.key,
                kind=lesson.kind,
                title=lesson.title,
                is_preview=lesson.is_preview,
                duration_seconds=duration,
                published=lesson.published,
            )
        )
    return [
        ProductView(
            id=p.id or 0,
            slug=p.slug,
            kind=p.kind,
            title=p.title,
            tagline=p.tagline,
            description=p.description,
            prices=prices.get(p.id or 0, {}),
            modules=[
                ModuleView(
                    key=m.key,
                    title=m.title,
                    lessons=lessons.get(m.id or 0, []),
                    id=m.id or 0,
                    published=m.status == ModuleStatus.published,
                )
                for m in modules.get(p.id or 0, [])
            ],
        )
        for p in products
    ]


def list_published(*, session: Session) -> list[ProductView]:
    """Published products with prices and outline, newest first."""
    products = list(
        session.exec(
            select(Product)
            .where(Product.status == ProductStatus.published)
            .order_by(col(Product.created_at).desc(), col(Product.id).desc())
        )
    )
    return _views(session, products)


def get_published(*, session: Session, slug: str) -> ProductView | None:
    """One published product by slug, or None (drafts are invisible)."""
    product = session.exec(
        select(Product).where(Product.slug == slug, Product.status == ProductStatus.published)
    ).first()
    return _views(session, [product])[0] if product else None


def get_preview(*, session: Session, product_id: int) -> ProductView | None:
    """Any product by id with its draft modules and hidden lessons: the author's preview."""
    product = session.get(Product, product_id)
    return _views(session, [product], drafts=True)[0] if product else None


# Publishing ---------------------------------------------------------------------------------


@dataclass
class PublishReport:
    slug: str
    created: bool = False
    uploaded: list[str] = field(default_factory=list)
    uploaded_bytes: int = 0
    reused: int = 0
    lessons_added: int = 0
    lessons_updated: int = 0
    lessons_unchanged: int = 0
    lessons_removed: int = 0


@dataclass
class MediaFile:
    field: str
    path: Path
    sha256: str
    size: int
    content_type: str
    duration: float | None = None
    pages: int | None = None


UploadProgress = Callable[[str, int, int], Callable[[int], None]]
"""Given (name, size, index) returns a per-chunk callback; lets the CLI draw progress bars."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def _content_type(manifest: Path, field_name: str, kind: str, path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(16)
    for offset, magic, ctype in _SIGNATURES[kind]:
        if head[offset : offset + len(magic)] == magic:
            return ctype
    raise ManifestError(manifest, field_name, f"{path.name} is not a {kind} file (by its content)")


def inspect_folder(folder: Path) -> tuple[ProductSpec, dict[str, MediaFile], dict[str, str]]:
    """Validate a course folder fully (manifest, files, signatures) without touching anything."""
    spec, files = load_manifest(folder)
    manifest = folder / "course.toml"
    media: dict[str, MediaFile] = {}
    texts: dict[str, str] = {}
    for mi, module in enumerate(spec.modules):
        for li, lesson in enumerate(module.lessons):
            base = f"modules[{mi}].lessons[{li}]"
            if lesson.file and lesson.kind in _SIGNATURES:
                path = files[f"{base}.file"]
                ctype = _content_type(manifest, f"{base}.file", lesson.kind, path)
                media[lesson.key] = MediaFile(
                    f"{base}.file",
                    path,
                    _sha256(path),
                    path.stat().st_size,
                    ctype,
                    mp4_duration(path) if ctype == "video/mp4" else None,
                    pdf_pages(path) if ctype == "application/pdf" else None,
                )
            elif lesson.file:
                raise ManifestError(manifest, f"{base}.file", f"a {lesson.kind} lesson has no file")
            if lesson.captions:
                for lang in lesson.captions.as_dict():
                    fname = f"{base}.captions.{lang}"
                    path = files[fname]
                    ctype = _content_type(manifest, fname, "captions", path)
                    media[f"{lesson.key}.captions.{lang}"] = MediaFile(
                        fname, path, _sha256(path), path.stat().st_size, ctype
                    )
            if lesson.body:
                for lang in lesson.body.as_dict():
                    fname = f"{base}.body.{lang}"
                    try:
                        texts[f"{lesson.key}.{lang}"] = files[fname].read_text(encoding="utf-8")
                    except UnicodeDecodeError as exc:
                        raise ManifestError(manifest, fname, "not UTF-8 text") from exc
    return spec, media, texts


def _asset_for(
    session: Session,
    storage: Storage,
    mf: MediaFile,
    report: PublishReport,
    progress: UploadProgress | None,
) -> Asset:
    existing = session.exec(
        select(Asset)
        .where(Asset.sha256 == mf.sha256, Asset.status == AssetStatus.ready)
        .order_by(col(Asset.id))
    ).first()
    if existing and storage.exists(existing.storage_key):
        report.reused += 1
        if existing.duration_seconds is None and mf.duration:
            existing.duration_seconds = mf.duration
            session.add(existing)
        if existing.page_count is None and mf.pages:
            existing.page_count = mf.pages
            session.add(existing)
        return existing
    asset = existing or Asset(
        storage_key=new_key("assets", mf.path.name),
        content_type=mf.content_type,
        size=mf.size,
        sha256=mf.sha256,
        original_filename=mf.path.name,
        duration_seconds=mf.duration,
        page_count=mf.pages,
    )
    callback = progress(mf.path.name, mf.size, len(report.uploaded)) if progress else None
    with mf.path.open("rb") as f:
        storage.put(asset.storage_key, f, content_type=mf.content_type, progress=callback)
    asset.status = AssetStatus.ready
    session.add(asset)
    session.flush()
    report.uploaded.append(mf.path.name)
    report.uploaded_bytes += mf.size
    return asset


def _ensure_rendition(session: Session, storage: Storage, asset: Asset) -> None:
    """Give an MP4 its HLS rendition when ffmpeg is installed; without one the MP4 plays."""
    from app.delivery import hls

    if asset.content_type != "video/mp4" or hls.ffmpeg_path() is None:
        return
    if asset.hls_key and storage.exists(asset.hls_key):
        return
    try:
        asset.hls_key = hls.make_rendition(storage, source_key=asset.storage_key)
    except hls.RenditionError as exc:
        log.warning("hls.rendition_failed", asset=asset.storage_key, error=str(exc))
        return
    session.add(asset)


def publish_folder(
    *,
    session: Session,
    storage: Storage,
    folder: Path,
    progress: UploadProgress | None = None,
    renditions: bool = False,
) -> PublishReport:
    """Create or update the product described by a course folder, idempotently.

    Everything is validated before anything is written; unchanged media (same sha256) is
    not uploaded again; lessons are matched by key and updated in place.
    """
    spec, media, texts = inspect_folder(folder)
    report = PublishReport(slug=spec.slug)

    def asset_id(media_key: str) -> int:
        asset = _asset_for(session, storage, media[media_key], report, progress)
        if renditions:
            _ensure_rendition(session, storage, asset)
        return asset.id or 0

    return publish_spec(
        session=session, spec=spec, texts=texts, asset_id=asset_id, source=folder, report=report
    )


def publish_spec(
    *,
    session: Session,
    spec: ProductSpec,
    texts: dict[str, str],
    asset_id: Callable[[str], int],
    source: Path,
    report: PublishReport | None = None,
) -> PublishReport:
    """Create or update the product of a checked manifest (a folder's, or one sent to the API).

    asset_id(media key) gives the asset of each file: the lesson key for a lesson's file,
    "<lesson key>.captions.<lang>" for a caption track; texts are keyed "<lesson key>.<lang>".
    source names the manifest in errors.
    """
    report = report or PublishReport(slug=spec.slug)
    product = session.exec(select(Product).where(Product.slug == spec.slug)).first()
    if product is None:
        product = Product(slug=spec.slug, kind=ProductKind(spec.kind))
        report.created = True
    _assign(
        product,
        kind=ProductKind(spec.kind),
        status=ProductStatus(spec.status),
        title=spec.title.as_dict(),
        tagline=spec.tagline.as_dict() if spec.tagline else {},
        description=spec.description.as_dict() if spec.description else {},
    )
    session.add(product)
    session.flush()
    pid = product.id
    assert pid is not None
    _set_bundle_items(session, source, product, spec.includes)

    prices = {p.currency: p for p in session.exec(select(Price).where(Price.product_id == pid))}
    for ps in spec.prices:
        price = prices.pop(ps.currency, None) or Price(
            product_id=pid, currency=ps.currency, amount=0
        )
        price.amount = ps.amount
        session.add(price)
    for stale in prices.values():
        session.delete(stale)

    modules = {m.key: m for m in session.exec(select(Module).where(Module.product_id == pid))}
    lessons = {ls.key: ls for ls in session.exec(select(Lesson).where(Lesson.product_id == pid))}
    position = 0
    seen_modules: set[str] = set()
    seen_lessons: set[str] = set()
    for mpos, ms in enumerate(spec.modules):
        module = modules.get(ms.key) or Module(product_id=pid, key=ms.key, position=mpos)
        _assign(module, position=mpos, title=ms.title.as_dict())
        session.add(module)
        session.flush()
        seen_modules.add(ms.key)
        for ls in ms.lessons:
            seen_lessons.add(ls.key)
            # A manifest's file is always media: inspect_folder and the API refuse the rest.
            lesson_asset = asset_id(ls.key) if ls.file else None
            body = {
                lang: texts[f"{ls.key}.{lang}"] for lang in (ls.body.as_dict() if ls.body else {})
            }
            captions: dict[str, int] = {}
            for lang in ls.captions.as_dict() if ls.captions else {}:
                captions[lang] = asset_id(f"{ls.key}.captions.{lang}")
            values: dict[str, Any] = {
                "module_id": module.id,
                "position": position,
                "kind": LessonKind(ls.kind),
                "title": ls.title.as_dict(),
                "body": body,
                "captions": captions,
                "is_preview": ls.preview,
                "asset_id": lesson_asset,
            }
            position += 1
            lesson = lessons.get(ls.key)
            if lesson is None:
                session.add(Lesson(product_id=pid, key=ls.key, **values))
                report.lessons_added += 1
            elif _assign(lesson, **values):
                session.add(lesson)
                report.lessons_updated += 1
            else:
                report.lessons_unchanged += 1
    removed = [ls.id for key, ls in lessons.items() if key not in seen_lessons]
    if removed:
        session.execute(delete(Lesson).where(col(Lesson.id).in_(removed)))
        report.lessons_removed = len(removed)
    stale_modules = [m.id for key, m in modules.items() if key not in seen_modules]
    if stale_modules:
        session.execute(delete(Module).where(col(Module.id).in_(stale_modules)))
    if session.dirty or session.new or report.created or removed or stale_modules:
        product.updated_at = utcnow()
    session.flush()
    catalog_changed(session)
    return report


def _set_bundle_items(session: Session, folder: Path, bundle: Product, slugs: list[str]) -> None:
    wanted: list[int] = []
    for index, slug in enumerate(slugs):
        included = session.exec(select(Product).where(Product.slug == slug)).first()
        if included is None or included.id == bundle.id:
            raise ManifestError(
                folder / "course.toml",
                f"includes[{index}]",
                f"no other product {slug!r}: publish it first",
            )
        wanted.append(included.id or 0)
    current = {
        b.product_id: b
        for b in session.exec(select(BundleItem).where(BundleItem.bundle_id == bundle.id))
    }
    for product_id, item in current.items():
        if product_id not in wanted:
            session.delete(item)
    for product_id in wanted:
        if product_id not in current:
            session.add(BundleItem(bundle_id=bundle.id or 0, product_id=product_id))


def _assign(obj: Any, **values: Any) -> bool:
    """Set attributes that differ; return whether anything changed."""
    changed = False
    for name, value in values.items():
        if getattr(obj, name) != value:
            setattr(obj, name, value)
            changed = True
    return changed
