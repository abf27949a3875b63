"""The course folder format: `courses/<slug>/course.toml` plus media, checked before any change."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.catalog.prices import below_minimum, minimum_message

MANIFEST_NAME = "course.toml"
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,79}$")]
CURRENCIES = {"EUR", "AUD", "USD", "GBP", "CHF"}
LOCALES = {"en", "de"}


class ManifestError(Exception):
    """A manifest that cannot be published; names the file and the field."""

    def __init__(self, path: Path, field: str, message: str) -> None:
        self.path = path
        self.field = field
        self.message = message
        super().__init__(f"{path}: {field}: {message}")


def _translated(value: Any) -> Any:
    if isinstance(value, str):
        return {"en": value}
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceSpec(_Strict):
    currency: str
    amount: int = Field(gt=0, description="minor units, e.g. cents")

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        if v not in CURRENCIES:
            raise ValueError(f"must be one of {', '.join(sorted(CURRENCIES))}")
        return v

    @model_validator(mode="after")
    def _chargeable(self) -> PriceSpec:
        minimum = below_minimum(self.currency, self.amount)
        if minimum is not None:
            shown = f"{self.amount / 100:.2f} {self.currency}"
            raise ValueError(f"{shown} is {minimum_message(self.currency, minimum)}")
        return self


class Text(_Strict):
    """A text in one or more of the supported languages."""

    en: str | None = None
    de: str | None = None

    @model_validator(mode="after")
    def _some(self) -> Text:
        if not (self.en or self.de):
            raise ValueError("needs at least one of en, de")
        return self

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in (("en", self.en), ("de", self.de)) if v}


class LessonSpec(_Strict):
    key: Slug
    kind: Literal["video", "text", "pdf"]
    title: Text
    file: str | None = None
    body: Text | None = None
    captions: Text | None = None  # video lessons: WebVTT files per language
    preview: bool = False

    _t = field_validator("title", "body", mode="before")(_translated)

    @model_validator(mode="after")
    def _content(self) -> LessonSpec:
        if self.kind in ("video", "pdf") and not self.file:
            raise ValueError(f"a {self.kind} lesson needs 'file'")
        if self.captions and self.kind != "video":
            raise ValueError("only video lessons have captions")
        if self.kind == "text" and not self.body:
            raise ValueError("a text lesson needs 'body' (Markdown files per language)")
        return self


class ModuleSpec(_Strict):
    key: Slug
    title: Text
    lessons: list[LessonSpec] = Field(min_length=1)

    _t = field_validator("title", mode="before")(_translated)


class ProductSpec(_Strict):
    slug: Slug
    kind: Literal["course", "ebook", "bundle"]
    status: Literal["draft", "published"] = "published"
    title: Text
    tagline: Text | None = None
    description: Text | None = None
    prices: list[PriceSpec] = Field(min_length=1)
    modules: list[ModuleSpec] = Field(default_factory=list)
    includes: list[Slug] = Field(default_factory=list)  # bundles: the products they grant

    _t = field_validator("title", "tagline", "description", mode="before")(_translated)

    @model_validator(mode="after")
    def _unique(self) -> ProductSpec:
        currencies = [p.currency for p in self.prices]
        if len(set(currencies)) != len(currencies):
            raise ValueError("prices: one price per currency")
        modules = [m.key for m in self.modules]
        if len(set(modules)) != len(modules):
            raise ValueError("modules: module keys must be unique")
        if self.kind == "bundle" and not self.includes:
            raise ValueError("includes: a bundle needs the slugs of the products it grants")
        if self.kind != "bundle" and self.includes:
            raise ValueError("includes: only a bundle can include other products")
        lessons = [lesson.key for m in self.modules for lesson in m.lessons]
        if len(set(lessons)) != len(lessons):
            raise ValueError("lesson keys must be unique within the product")
        return self


def _field_name(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _safe_file(folder: Path, manifest: Path, field: str, rel: str) -> Path:
    path = (folder / rel).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise ManifestError(manifest, field, f"{rel!r} points outside the product folder")
    if not path.is_file():
        raise ManifestError(manifest, field, f"file {rel!r} does not exist")
    return path


def parse_spec(data: dict[str, Any], manifest: Path) -> ProductSpec:
    """Check a manifest's parsed content (a folder's TOML, or JSON sent to the author API)."""
    if "prices" not in data:
        raise ManifestError(manifest, "prices", "missing: at least one [[prices]] entry")
    try:
        return ProductSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ManifestError(manifest, _field_name(first["loc"]), first["msg"]) from exc


def load_manifest(folder: Path) -> tuple[ProductSpec, dict[str, Path]]:
    """Parse and check a product folder; return the spec and every referenced file by field."""
    manifest = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise ManifestError(folder, "(folder)", "not a folder")
    if not manifest.is_file():
        raise ManifestError(manifest, "(file)", "missing manifest")
    try:
        data = tomllib.loads(manifest.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(manifest, "(syntax)", str(exc)) from exc
    spec = parse_spec(data, manifest)
    if spec.slug != folder.name:
        raise ManifestError(manifest, "slug", f"{spec.slug!r} must equal the folder name")
    files: dict[str, Path] = {}
    for mi, module in enumerate(spec.modules):
        for li, lesson in enumerate(module.lessons):
            base = f"modules[{mi}].lessons[{li}]"
            if lesson.file:
                files[f"{base}.file"] = _safe_file(folder, manifest, f"{base}.file", lesson.file)
            if lesson.body:
                for lang, rel in lesson.body.as_dict().items():
                    field = f"{base}.body.{lang}"
                    files[field] = _safe_file(folder, manifest, field, rel)
            if lesson.captions:
                for lang, rel in lesson.captions.as_dict().items():
                    field = f"{base}.captions.{lang}"
                    files[field] = _safe_file(folder, manifest, field, rel)
    return spec, files
