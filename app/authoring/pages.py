"""The author area (/author): products, prices, modules and lessons as HTML forms.

A refused form comes back as the same page with what the author typed, the reason beside
the field and a 4xx status; the request's transaction is rolled back before, so nothing of
a refused form is kept. Also here: the release-email switch of the account page and the
unsubscribe link of those emails, which works without signing in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session, col, func, select

from app.accounts.models import User
from app.authoring import schemas, service
from app.authoring.service import AuthoringError
from app.catalog import service as catalog
from app.catalog.models import (
    Asset,
    Lesson,
    LessonKind,
    Module,
    ModuleStatus,
    Product,
    ProductKind,
    ProductStatus,
)
from app.checkout.models import Entitlement
from app.deps import AuthorUser, CurrentUser, SessionDep
from app.errors import NotFound
from app.markdown import render_markdown
from app.web import LOCALES, TEMPLATES, flash, gettext_for, page

router = APIRouter(include_in_schema=False)
log = structlog.get_logger()

# Form fields are capped generously here; the schemas hold the real limits and explain them.
Text = Annotated[str, Form(max_length=200_000)]
Short = Annotated[str, Form(max_length=200)]
Flag = Annotated[str, Form(max_length=10)]
Ids = Annotated[list[str], Form(max_length=100)]
TRANSLATED = ("title", "tagline", "description", "body", "notes", "captions")
_AMOUNT = re.compile(r"(\d{1,9})(?:[.,](\d{1,2}))?")


# Form helpers -----------------------------------------------------------------------------------


def _pair(values: Mapping[str, str], name: str) -> dict[str, str]:
    return {lang: values.get(f"{name}_{lang}", "") for lang in LOCALES}


def _hints(_: Callable[[str], str]) -> dict[str, str]:
    """What the author should fix, by field: pydantic's own messages are English only."""
    slug = _(
        "Use lowercase letters, digits and hyphens (at most 80), starting with a letter or digit."
    )
    return {
        "slug": slug,
        "key": slug,
        "kind": _("Choose one of the kinds offered."),
        "title": _("At most 200 characters."),
        "tagline": _("At most 300 characters."),
        "description": _("At most 20,000 characters."),
        "body": _("At most 100,000 characters."),
        "notes": _("At most 5,000 characters."),
        "includes": _("Choose products from the list."),
        "asset_id": _("Choose a file from the list."),
        "captions": _("Choose caption files from the list."),
    }


def _invalid(request: Request, exc: ValidationError) -> dict[str, str]:
    _ = gettext_for(request)
    hints = _hints(_)
    errors: dict[str, str] = {}
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if not loc:
            continue
        name = "_".join(loc[:2]) if loc[0] in TRANSLATED and len(loc) > 1 else loc[0]
        errors.setdefault(name, hints.get(loc[0], _("Please check this field.")))
    return errors


def _refusal(
    request: Request, session: Session, exc: ValidationError | AuthoringError
) -> tuple[int, dict[str, str]]:
    """The status and per-field messages for a refused form; a refused change is rolled back."""
    if isinstance(exc, ValidationError):
        return 422, _invalid(request, exc)
    session.rollback()
    return exc.status, _refused(request, exc)


def _refused(request: Request, exc: AuthoringError) -> dict[str, str]:
    _ = gettext_for(request)
    text = _(exc.message) % exc.params if exc.params else _(exc.message)
    return {exc.field.replace(".", "_"): text}


def _major(amount: int) -> str:
    return f"{amount // 100}.{amount % 100:02d}"


def parse_amount(text: str) -> int | None:
    """'149', '149.9' or '149,90' to minor units; '' to None; anything else raises ValueError."""
    text = text.strip()
    if not text:
        return None
    match = _AMOUNT.fullmatch(text)
    if match is None:
        raise ValueError(text)
    return int(match.group(1)) * 100 + int((match.group(2) or "0").ljust(2, "0"))


def _get(session: Session, model: type[Any], item_id: int) -> Any:
    item = session.get(model, item_id) if 0 < item_id < 2**31 else None
    if item is None:
        raise NotFound()
    return item


def _buyers(session: Session, product_id: int) -> int:
    """How many buyers have access now (and would be told about a release)."""
    return int(
        session.exec(
            select(func.count())
            .select_from(Entitlement)
            .join(User, col(User.id) == col(Entitlement.user_id))
            .where(
                Entitlement.product_id == product_id,
                col(Entitlement.revoked_at).is_(None),
                col(User.release_emails).is_(True),
            )
        ).one()
    )


# The product list -------------------------------------------------------------------------------


def _index(
    request: Request,
    session: Session,
    *,
    status_code: int = 200,
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
) -> Response:
    return page(
        request,
        "authoring/index.html",
        status_code=status_code,
        products=service.list_products(session=session),
        kinds=list(ProductKind),
        values=values or {"kind": "course"},
        errors=errors or {},
    )


@router.get("/author")
def index(request: Request, session: SessionDep, author: AuthorUser) -> Response:
    return _index(request, session)


@router.post("/author/products")
def create_product(
    request: Request,
    session: SessionDep,
    author: AuthorUser,
    slug: Short = "",
    kind: Short = "",
    title_en: Text = "",
    title_de: Text = "",
) -> Response:
    values = {"slug": slug, "kind": kind, "title_en": title_en, "title_de": title_de}
    try:
        data = schemas.ProductCreate.model_validate(
            {"slug": slug, "kind": kind, "title": _pair(values, "title")}
        )
        product = service.create_product(session=session, data=data)
    except (ValidationError, AuthoringError) as exc:
        code, errors = _refusal(request, session, exc)
        return _index(request, session, status_code=code, values=values, errors=errors)
    log.info("author.product_created", product_id=product.id, by=author.id)
    _ = gettext_for(request)
    flash(request, _("The product is created as a draft."), "success")
    return RedirectResponse(f"/author/products/{product.id}", status_code=303)


# The product editor -----------------------------------------------------------------------------


def _product_values(out: schemas.ProductOut) -> dict[str, Any]:
    values: dict[str, Any] = {"slug": out.slug, "kind": out.kind.value}
    for name in ("title", "tagline", "description"):
        for lang in LOCALES:
            values[f"{name}_{lang}"] = getattr(out, name).get(lang, "")
    for currency in schemas.CURRENCIES:
        amount = out.prices.get(currency)
        values[f"prices_{currency}"] = _major(amount) if amount else ""
    values["includes"] = [str(i) for i in out.includes]
    return values


def _product_page(
    request: Request,
    session: Session,
    product: Product,
    *,
    status_code: int = 200,
    values: Mapping[str, Any] | None = None,
    errors: Mapping[str, str] | None = None,
) -> Response:
    _ = gettext_for(request)
    out = service.product_out(session=session, product=product)
    others = list(
        session.exec(
            select(Product)
            .where(Product.id != product.id, Product.kind != ProductKind.bundle)
            .order_by(col(Product.id))
        )
    )
    problems = []
    if product.status == ProductStatus.draft:
        problems = [_(m) for _f, m in service.publish_problems(session=session, product=product)]
    return page(
        request,
        "authoring/product.html",
        status_code=status_code,
        product=out,
        values={**_product_values(out), **(values or {})},
        errors=errors or {},
        others=others,
        problems=problems,
        kinds=list(ProductKind),
        currencies=schemas.CURRENCIES,
        buyers=_buyers(session, product.id or 0),
    )


@router.get("/author/products/{product_id}")
def product_editor(
    request: Request, session: SessionDep, author: AuthorUser, product_id: int
) -> Response:
    return _product_page(request, session, _get(session, Product, product_id))


@router.post("/author/products/{product_id}")
def save_product(
    request: Request,
    session: SessionDep,
    author: AuthorUser,
    product_id: int,
    slug: Short = "",
    kind: Short = "",
    title_en: Text = "",
    title_de: Text = "",
    tagline_en: Text = "",
    tagline_de: Text = "",
    description_en: Text = "",
    description_de: Text = "",
    includes: Ids = [],  # noqa: B006 - FastAPI copies form defaults
    includes_shown: Flag = "",
) -> Response:
    product = _get(session, Product, product_id)
    values: dict[str, Any] = {
        "slug": slug,
        "kind": kind,
        "title_en": title_en,
        "title_de": title_de,
        "tagline_en": tagline_en,
        "tagline_de": tagline_de,
        "description_en": description_en,
        "description_de": description_de,
        "includes": includes,
    }
    fields: dict[str, Any] = {"slug": slug, "kind": kind}
    for name in ("title", "tagline", "description"):
        fields[name] = _pair(values, name)
    if includes_shown and kind == ProductKind.bundle:
        fields["includes"] = includes
    try:
        data = schemas.ProductUpdate.model_validate(fields)
        service.update_product(session=session, product=product, data=data)
    except (ValidationError, AuthoringError) as exc:
        code, errors = _refusal(request, session, exc)
        return _product_page(
            request, session, product, status_code=code, values=values, errors=errors
        )
    _ = gettext_for(request)
    flash(request, _("Saved."), "success")
    return RedirectResponse(f"/author/products/{product_id}", status_code=303)


@router.post("/author/products/{product_id}/prices")
def save_prices(
    request: Request,
    session: SessionDep,
    author: AuthorUser,
    product_id: int,
    prices_EUR: Short = "",  # the field names carry the currency codes
    prices_AUD: Short = "",
    prices_USD: Short = "",
) -> Response:
    _ = gettext_for(request)
    product = _get(session, Product, product_id)
    typed = {"EUR": prices_EUR, "AUD": prices_AUD, "USD": prices_USD}
    values = {f"prices_{c}": v for c, v in typed.items()}
    prices: dict[str, int] = {}
    errors: dict[str, str] = {}
    for currency, text in typed.items():
        try:
            amount = parse_amount(text)
        except ValueError:
            errors[f"prices_{currency}"] = _("Enter an amount like 149 or 149.00.")
            continue
        if amount is not None:
            prices[currency] = amount
    try:
        if errors:
            raise AuthoringError("prices", "")
        service.set_prices(session=session, product=product, prices=prices)
    except AuthoringError as exc:
        session.rollback()
        return _product_page(
            request,
            session,
            product,
            status_code=exc.status,
            values=values,
            errors=errors or _refused(request, exc),
        )
    flash(request, _("Prices saved."), "success")
    return RedirectResponse(f"/author/products/{product_id}#prices", status_code=303)


@router.post("/author/products/{product_id}/status")
def product_status(
    request: Request,
    session: SessionDep,
    author: AuthorUser,
    product_id: int,
    status: Annotated[ProductStatus, Form()],
) -> Response:
    _ = gettext_for(request)
    product = _get(session, Product, product_id)
    try:
        service.set_status(session=session, product=product, status=status)
    except AuthoringError as exc:
        session.rollback()
        return _product_page(
            request, session, product, status_code=exc.status, errors={"status": _(exc.message)}
        )
    log.info("author.product_status", product_id=product.id, status=status, by=author.id)
    if status == ProductStatus.published:
        flash(request, _("Published: the product is in the catalog now."), "success")
    else:
        flash(request, _("Unpublished: only authors and admins see the product now."), "success")
    return RedirectResponse(f"/author/products/{product_id}", status_code=303)


@router.get("/author/products/{product_id}/preview")
def preview(request: Request, session: SessionDep, author: AuthorUser, product_id: int) -> Response:
    product = _get(session, Product, product_id)
    view = catalog.get_preview(session=session, product_id=product_id)
    if view is None:
        raise NotFound()
    return page(request, "authoring/preview.html", product=view, status=product.status)


@router.post("/author/products/{product_id}/modules")
def add_module(
    request: Request,
    session: SessionDep,
    author: AuthorUser,
    product_id: int,
    title_en: Text = "",
    title_de: Text = "",
) -> Response:
    product = _get(session, Product, product_id)
    values = {"module_title_en": title_en, "module_title_de": title_de}
    try:
        data = schemas.ModuleCreate.model_validate({"title": _pair(values, "module_title")})
        module = service.add_module(session=session, product=product, data=data)
    except (ValidationError, AuthoringError) as exc:
        code, errors = _refusal(request, session, exc)
        errors = {f"module_{k}": v for k, v in errors.items()}  # the add-module form's fields
        return _product_page(
            request, session, product, status_code=code, values=values, errors=errors
        )
    _ = gettext_for(request)
    flash(request, _("Module added."), "success")
    return RedirectResponse(f"/author/modules/{module.id}", status_code=303)


# Modules ----------------------------------------------------------------------------------------


def _module_page(
    request: Request,
    session: Session,
    module: Module,
    *,
    status_code: int = 200,
    values: Mapping[str, Any] | None = None,
    errors: Mapping[str, str] | None = None,
) -> Response:
    product = _get(session, Product, module.product_id)
    out = service.module_out(session=session, module=module)
    defaults: dict[str, Any] = {"key": out.key, "kind": "video"}
    for lang in LOCALES:
        defaults[f"title_{lang}"] = out.title.get(lang, "")
        defaults[f"notes_{lang}"] = out.release_notes.get(lang, "")
    return page(
        request,
        "authoring/module.html",
        status_code=status_code,
        module=out,
        product=product,
        values={**defaults, **(values or {})},
        errors=errors or {},
        buyers=_buyers(session, product.id or 0),
        lesson_kinds=list(LessonKind),
        deletable=not service.visible(product, module),
    )


@router.get("/author/modules/{module_id}")
def module_editor(
    request: Request, session: SessionDep, author: AuthorUser, module_id: int
) -> Response:
    return _module_page(request, session, _get(session, Module, module_id))


@router.post("/author/modules/{module_id}")
def save_module(
    request: Request,
    session: SessionDep,
    author: AuthorUser,
    module_id: int,
    key: Short = "",
    title_en: Text = "",
    title_de: Text = "",
) -> Response:
    module = _get(session, Module, module_id)
    values = {"key": key, "title_en": title_en, "title_de": title_de}
    try:
        data = schemas.ModuleUpdate.model_validate({"key": key, "title": _pair(values, "title")})
        service.update_module(session=session, module=module, data=data)
    except (ValidationError, AuthoringError) as exc:
        code, errors = _refusal(request, session, exc)
        return _module_page(
            request, session, module, status_code=code, values=values, errors=errors
        )
    _ = gettext_for(request)
    flash(request, _("Saved."), "success")
    return RedirectResponse(f"/author/modules/{module_id}", status_code=303)


@router.post("/author/modules/{module_id}/status")
def module_status(
    request: Request,
    session: SessionDep,
    author: AuthorUser,
    module_id: int,
    status: Annotated[ModuleStatus, Form()],
    notify: Flag = "",
    notes_en: Text = "",
    notes_de: Text = "",
) -> Response:
    _ = gettext_for(request)
    module = _get(session, Module, module_id)
    values = {"notes_en": notes_en, "notes_de": notes_de}
    if status == ModuleStatus.draft:
        service.withdraw_module(session=session, module=module)
        flash(request, _("The module is a draft again: buyers no longer see it."), "success")
        return RedirectResponse(f"/author/modules/{module_id}", status_code=303)
    try:
        data = schemas.ModuleRelease.model_validate(
            {"notify": bool(notify), "notes": _pair(values, "notes")}
        )
        emails = service.release_module(session=session, module=module, data=data)
    except (ValidationError, AuthoringError) as exc:
        code, errors = _refusal(request, session, exc)
        return _module_page(
            request, session, module, status_code=code, values=values, errors=errors
        )
    if emails:
        request.app.state.jobs.enqueue_after_commit(session, "release_email", module_id=module_id)
        flash(request, _("Published. The buyers are being emailed."), "success")
    else:
        flash(request, _("Published."), "success")
    log.info("author.module_released", module_id=module_id, emails=emails, by=author.id)
    return RedirectResponse(f"/author/modules/{module_id}", status_code=303)


@router.post("/author/modules/{module_id}/delete")
def delete_module(
    request: Request, session: SessionDep, author: AuthorUser, module_id: int
) -> Response:
    module = _get(session, Module, module_id)
    product_id = module.product_id
    try:
        service.delete_module(session=session, module=module)
    except AuthoringError as exc:
        session.rollback()
        return _module_page(
            request, session, module, status_code=exc.status, errors=_refused(request, exc)
        )
    _ = gettext_for(request)
    flash(request, _("Module deleted."), "success")
    return RedirectResponse(f"/author/products/{product_id}", status_code=303)


@router.post("/author/modules/{module_id}/lessons")
def add_lesson(
    request: Request,
    session: SessionDep,
    author: AuthorUser,
    module_id: int,
    kind: Short = "",
    title_en: Text = "",
    title_de: Text = "",
) -> Response:
    module = _get(session, Module, module_id)
    values = {"kind": kind, "lesson_title_en": title_en, "lesson_title_de": title_de}
    try:
        data = schemas.LessonCreate.model_validate(
            {"kind": kind, "title": _pair(values, "lesson_title")}
        )
        lesson = service.add_lesson(session=session, module=module, data=data)
    except (ValidationError, AuthoringError) as exc:
        code, errors = _refusal(request, session, exc)
        errors = {f"lesson_{k}": v for k, v in errors.items()}  # the add-lesson form's fields
        return _module_page(
            request, session, module, status_code=code, values=values, errors=errors
        )
    _ = gettext_for(request)
    flash(request, _("Lesson added."), "success")
    return RedirectResponse(f"/author/lessons/{lesson.id}", status_code=303)


# Lessons ----------------------------------------------------------------------------------------


def _lesson_page(
    request: Request,
    session: Session,
    lesson: Lesson,
    *,
    status_code: int = 200,
    values: Mapping[str, Any] | None = None,
    errors: Mapping[str, str] | None = None,
) -> Response:
    module = _get(session, Module, lesson.module_id)
    product = _get(session, Product, lesson.product_id)
    out = service.lesson_out(lesson)
    defaults: dict[str, Any] = {
        "key": out.key,
        "kind": out.kind.value,
        "is_preview": out.is_preview,
        "published": out.published,
        "asset_id": str(out.asset_id or ""),
    }
    for lang in LOCALES:
        defaults[f"title_{lang}"] = out.title.get(lang, "")
        defaults[f"body_{lang}"] = out.body.get(lang, "")
        defaults[f"captions_{lang}"] = str(out.captions.get(lang, ""))
    merged = {**defaults, **(values or {})}
    kind = LessonKind(out.kind)
    asset = session.get(Asset, lesson.asset_id) if lesson.asset_id else None
    return page(
        request,
        "authoring/lesson.html",
        status_code=status_code,
        lesson=out,
        module=module,
        product=product,
        values=merged,
        errors=errors or {},
        lesson_kinds=list(LessonKind),
        asset=asset,
        assets=service.attachable_assets(session=session, types=service.MEDIA_TYPES[kind]),
        caption_assets=service.attachable_assets(session=session, types=(service.CAPTION_TYPE,)),
        previews={lang: render_markdown(out.body.get(lang, "")) for lang in LOCALES},
        visible_now=service.visible(product, module, lesson),
        upload_widget=(TEMPLATES / "authoring" / "_upload.html").exists(),
        module_visible=service.visible(product, module),
    )


@router.get("/author/lessons/{lesson_id}")
def lesson_editor(
    request: Request, session: SessionDep, author: AuthorUser, lesson_id: int
) -> Response:
    return _lesson_page(request, session, _get(session, Lesson, lesson_id))


@router.post("/author/lessons/{lesson_id}")
def save_lesson(
    request: Request,
    session: SessionDep,
    author: AuthorUser,
    lesson_id: int,
    key: Short = "",
    kind: Short = "",
    title_en: Text = "",
    title_de: Text = "",
    is_preview: Flag = "",
    published: Flag = "",
    body_shown: Flag = "",
    body_en: Text = "",
    body_de: Text = "",
    asset_shown: Flag = "",
    asset_id: Short = "",
    captions_shown: Flag = "",
    captions_en: Short = "",
    captions_de: Short = "",
) -> Response:
    lesson = _get(session, Lesson, lesson_id)
    values: dict[str, Any] = {
        "key": key,
        "kind": kind,
        "title_en": title_en,
        "title_de": title_de,
        "is_preview": bool(is_preview),
        "published": bool(published),
        "body_en": body_en,
        "body_de": body_de,
        "asset_id": asset_id,
        "captions_en": captions_en,
        "captions_de": captions_de,
    }
    fields: dict[str, Any] = {
        "key": key,
        "kind": kind,
        "title": _pair(values, "title"),
        "is_preview": bool(is_preview),
        "published": bool(published),
    }
    if body_shown:
        fields["body"] = _pair(values, "body")
    if asset_shown:
        fields["asset_id"] = asset_id or None
    if captions_shown:
        fields["captions"] = {k: v for k, v in _pair(values, "captions").items() if v}
    try:
        data = schemas.LessonUpdate.model_validate(fields)
        service.update_lesson(session=session, lesson=lesson, data=data)
    except (ValidationError, AuthoringError) as exc:
        code, errors = _refusal(request, session, exc)
        return _lesson_page(
            request, session, lesson, status_code=code, values=values, errors=errors
        )
    _ = gettext_for(request)
    flash(request, _("Saved."), "success")
    return RedirectResponse(f"/author/lessons/{lesson_id}", status_code=303)


@router.post("/author/lessons/{lesson_id}/delete")
def delete_lesson(
    request: Request, session: SessionDep, author: AuthorUser, lesson_id: int
) -> Response:
    lesson = _get(session, Lesson, lesson_id)
    module_id = lesson.module_id
    try:
        service.delete_lesson(session=session, lesson=lesson)
    except AuthoringError as exc:
        session.rollback()
        return _lesson_page(
            request, session, lesson, status_code=exc.status, errors=_refused(request, exc)
        )
    _ = gettext_for(request)
    flash(request, _("Lesson deleted."), "success")
    return RedirectResponse(f"/author/modules/{module_id}", status_code=303)


# Release emails: the account switch and the unsubscribe link --------------------------------------


@router.post("/account/release-emails")
def release_emails(
    request: Request, session: SessionDep, user: CurrentUser, release_emails: Flag = ""
) -> Response:
    _ = gettext_for(request)
    service.set_release_emails(session=session, user=user, wanted=bool(release_emails))
    if release_emails:
        flash(request, _("You will get an email when a product you own has new content."))
    else:
        flash(request, _("You will no longer get emails about new content."))
    return RedirectResponse("/account", status_code=303)


@router.get("/release-emails/unsubscribe")
def unsubscribe_confirm(request: Request, token: str = "") -> Response:
    """Ask before unsubscribing: mail scanners open links too."""
    user_id = service.unsubscribe_user(secret=request.app.state.settings.secret_key, token=token)
    if user_id is None:
        return page(request, "authoring/unsubscribe.html", status_code=400, invalid=True)
    return page(request, "authoring/unsubscribe.html", token=token)


@router.post("/release-emails/unsubscribe")
def unsubscribe(request: Request, session: SessionDep, token: Short = "") -> Response:
    user_id = service.unsubscribe_user(secret=request.app.state.settings.secret_key, token=token)
    user = session.get(User, user_id) if user_id is not None else None
    if user is None:
        return page(request, "authoring/unsubscribe.html", status_code=400, invalid=True)
    service.set_release_emails(session=session, user=user, wanted=False)
    log.info("release_emails.unsubscribed", user_id=user.id)
    return page(request, "authoring/unsubscribe.html", done=True)
