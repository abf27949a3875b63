"""Authoring JSON API under /api/v1/author: products, prices, modules, lessons, their order.

For authors and admins (session cookie with an X-CSRFToken header, or a bearer token).
Refused input answers 422 (409 for a clash with what exists) and changes nothing: the
error leaves the endpoint, so the request's transaction is rolled back.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlmodel import Session

from app.authoring import schemas, service
from app.authoring.service import AuthoringError
from app.catalog.models import Lesson, Module, Product, ProductStatus
from app.deps import AuthorUser, SessionDep
from app.errors import NotFound


class _RefusalsAsJson(APIRoute):
    """Turn a refused change into `{"detail": [{"loc", "msg"}], "status"}`, like a 422."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except AuthoringError as exc:
                detail = [
                    {"loc": ["body", *exc.field.split(".")], "msg": exc.text, "type": "value_error"}
                ]
                return JSONResponse({"detail": detail, "status": exc.status}, exc.status)

        return run


# Every operation may answer 404 (an id that does not exist) and 409 (a clash with what exists).
router = APIRouter(
    prefix="/api/v1/author",
    tags=["authoring"],
    route_class=_RefusalsAsJson,
    responses={404: {"description": "Not found"}, 409: {"description": "Conflict"}},
)
ProductId = Annotated[int, Path(ge=1, le=2**31 - 1)]
ModuleId = Annotated[int, Path(ge=1, le=2**31 - 1)]
LessonId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _product(session: Session, product_id: int) -> Product:
    product = session.get(Product, product_id)
    if product is None:
        raise NotFound()
    return product


def _module(session: Session, module_id: int) -> Module:
    module = session.get(Module, module_id)
    if module is None:
        raise NotFound()
    return module


def _lesson(session: Session, lesson_id: int) -> Lesson:
    lesson = session.get(Lesson, lesson_id)
    if lesson is None:
        raise NotFound()
    return lesson


@router.get("/products", response_model=list[schemas.ProductSummary])
def list_products(session: SessionDep, author: AuthorUser) -> Any:
    """Every product, drafts included."""
    return service.list_products(session=session)


@router.post("/products", response_model=schemas.ProductOut, status_code=201)
def create_product(session: SessionDep, author: AuthorUser, data: schemas.ProductCreate) -> Any:
    """A new draft product."""
    product = service.create_product(session=session, data=data)
    return service.product_out(session=session, product=product)


@router.get("/products/{product_id}", response_model=schemas.ProductOut)
def get_product(session: SessionDep, author: AuthorUser, product_id: ProductId) -> Any:
    """A product with its prices, modules and lessons, drafts included."""
    return service.product_out(session=session, product=_product(session, product_id))


@router.patch("/products/{product_id}", response_model=schemas.ProductOut)
def update_product(
    session: SessionDep, author: AuthorUser, product_id: ProductId, data: schemas.ProductUpdate
) -> Any:
    """Change the fields sent: slug, kind, texts, and a bundle's products."""
    product = _product(session, product_id)
    service.update_product(session=session, product=product, data=data)
    return service.product_out(session=session, product=product)


@router.put("/products/{product_id}/prices", response_model=schemas.ProductOut)
def set_prices(
    session: SessionDep, author: AuthorUser, product_id: ProductId, data: schemas.PricesIn
) -> Any:
    """Replace all prices (minor units per currency: EUR, AUD, USD)."""
    product = _product(session, product_id)
    prices = {str(currency): amount for currency, amount in data.prices.items()}
    service.set_prices(session=session, product=product, prices=prices)
    return service.product_out(session=session, product=product)


@router.post("/products/{product_id}/publish", response_model=schemas.ProductOut)
def publish_product(session: SessionDep, author: AuthorUser, product_id: ProductId) -> Any:
    """Show the product in the catalog (it needs a title and a price)."""
    product = _product(session, product_id)
    service.set_status(session=session, product=product, status=ProductStatus.published)
    return service.product_out(session=session, product=product)


@router.post("/products/{product_id}/unpublish", response_model=schemas.ProductOut)
def unpublish_product(session: SessionDep, author: AuthorUser, product_id: ProductId) -> Any:
    """Hide the product from everyone but authors and admins."""
    product = _product(session, product_id)
    service.set_status(session=session, product=product, status=ProductStatus.draft)
    return service.product_out(session=session, product=product)


@router.post("/products/{product_id}/modules", response_model=schemas.ModuleOut, status_code=201)
def add_module(
    session: SessionDep, author: AuthorUser, product_id: ProductId, data: schemas.ModuleCreate
) -> Any:
    """A new module at the end (a draft when the product is already published)."""
    module = service.add_module(session=session, product=_product(session, product_id), data=data)
    return service.module_out(session=session, module=module)


@router.put("/products/{product_id}/modules/order", response_model=schemas.ProductOut)
def order_modules(
    session: SessionDep, author: AuthorUser, product_id: ProductId, data: schemas.OrderIn
) -> Any:
    """Reorder the modules: every module id of the product, each once (else 422)."""
    product = _product(session, product_id)
    service.reorder_modules(session=session, product=product, ids=data.ids)
    return service.product_out(session=session, product=product)


@router.patch("/modules/{module_id}", response_model=schemas.ModuleOut)
def update_module(
    session: SessionDep, author: AuthorUser, module_id: ModuleId, data: schemas.ModuleUpdate
) -> Any:
    """Change a module's title or key."""
    module = _module(session, module_id)
    service.update_module(session=session, module=module, data=data)
    return service.module_out(session=session, module=module)


@router.delete("/modules/{module_id}", status_code=204)
def delete_module(session: SessionDep, author: AuthorUser, module_id: ModuleId) -> Response:
    """Delete a module buyers cannot see, with its lessons (409 while they can)."""
    service.delete_module(session=session, module=_module(session, module_id))
    return Response(status_code=204)


@router.post("/modules/{module_id}/publish", response_model=schemas.ReleaseOut)
def publish_module(
    request: Request,
    session: SessionDep,
    author: AuthorUser,
    module_id: ModuleId,
    data: schemas.ModuleRelease | None = None,
) -> Any:
    """Release a draft module; with `notify`, its buyers get an email with the notes."""
    module = _module(session, module_id)
    notify = service.release_module(
        session=session, module=module, data=data or schemas.ModuleRelease()
    )
    if notify:
        request.app.state.jobs.enqueue_after_commit(session, "release_email", module_id=module_id)
    return schemas.ReleaseOut(
        module=service.module_out(session=session, module=module), notified=notify
    )


@router.post("/modules/{module_id}/unpublish", response_model=schemas.ModuleOut)
def unpublish_module(session: SessionDep, author: AuthorUser, module_id: ModuleId) -> Any:
    """Make a module a draft again (hidden from buyers)."""
    module = _module(session, module_id)
    service.withdraw_module(session=session, module=module)
    return service.module_out(session=session, module=module)


@router.post("/modules/{module_id}/lessons", response_model=schemas.LessonOut, status_code=201)
def add_lesson(
    session: SessionDep, author: AuthorUser, module_id: ModuleId, data: schemas.LessonCreate
) -> Any:
    """A new lesson at the end of the module (hidden when buyers see the module)."""
    lesson = service.add_lesson(session=session, module=_module(session, module_id), data=data)
    return service.lesson_out(lesson)


@router.put("/modules/{module_id}/lessons/order", response_model=schemas.ModuleOut)
def order_lessons(
    session: SessionDep, author: AuthorUser, module_id: ModuleId, data: schemas.OrderIn
) -> Any:
    """Reorder a module's lessons: every lesson id of the module, each once (else 422)."""
    module = _module(session, module_id)
    service.reorder_lessons(session=session, module=module, ids=data.ids)
    return service.module_out(session=session, module=module)


@router.patch("/lessons/{lesson_id}", response_model=schemas.LessonOut)
def update_lesson(
    session: SessionDep, author: AuthorUser, lesson_id: LessonId, data: schemas.LessonUpdate
) -> Any:
    """Change the fields sent: texts, kind, preview and visibility, file and captions."""
    lesson = _lesson(session, lesson_id)
    service.update_lesson(session=session, lesson=lesson, data=data)
    return service.lesson_out(lesson)


@router.delete("/lessons/{lesson_id}", status_code=204)
def delete_lesson(session: SessionDep, author: AuthorUser, lesson_id: LessonId) -> Response:
    """Delete a lesson buyers cannot see (409 while they can)."""
    service.delete_lesson(session=session, lesson=_lesson(session, lesson_id))
    return Response(status_code=204)
