"""Release emails: each buyer of a product hears about a newly released module once.

Job code, not request code: these functions open their own sessions and commit. The job
`release_email` lists the recipients and queues `release_email_to` for each; that one sends
and then records a ReleaseNotice, so a retry or a second release never mails anyone twice.
"""

from __future__ import annotations

import dataclasses

import structlog
from markupsafe import Markup
from sqlalchemy import Engine, exists
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import Select

from app.accounts.models import User
from app.authoring.service import unsubscribe_token
from app.catalog.models import (
    Lesson,
    Module,
    ModuleStatus,
    Product,
    ProductStatus,
    ReleaseNotice,
)
from app.checkout.models import Entitlement
from app.config import Settings
from app.mail import Mail, Mailer, render_mail
from app.markdown import render_markdown
from app.web import pick

log = structlog.get_logger()


def _eligible(module_id: int) -> Select[User, Module, Product]:
    """Buyers with live access who want release emails and have not had this one."""
    told = exists().where(
        col(ReleaseNotice.module_id) == module_id, col(ReleaseNotice.user_id) == col(User.id)
    )
    return (
        select(User, Module, Product)
        .join(Entitlement, col(Entitlement.user_id) == col(User.id))
        .join(Module, col(Module.product_id) == col(Entitlement.product_id))
        .join(Product, col(Product.id) == col(Module.product_id))
        .where(
            col(Module.id) == module_id,
            Module.status == ModuleStatus.published,
            Product.status == ProductStatus.published,
            col(Entitlement.revoked_at).is_(None),
            col(User.release_emails).is_(True),
            ~told,
        )
        .order_by(col(User.id))
    )


def release_recipients(*, engine: Engine, module_id: int) -> list[int]:
    """The ids of the buyers to tell about the module now."""
    with Session(engine) as session:
        return [user.id or 0 for user, _m, _p in session.exec(_eligible(module_id))]


def release_mail(
    *, session: Session, settings: Settings, user: User, module: Module, product: Product
) -> Mail:
    """The release email in the buyer's language, with a link that unsubscribes."""
    locale = user.locale
    base = settings.base_url.rstrip("/")
    lessons = list(
        session.exec(
            select(Lesson)
            .where(Lesson.module_id == module.id, col(Lesson.published).is_(True))
            .order_by(col(Lesson.position))
        )
    )
    link = f"{base}/learn/{product.slug}/{lessons[0].key}" if lessons else f"{base}/library"
    notes = pick(module.release_notes, locale)
    token = unsubscribe_token(secret=settings.secret_key, user_id=user.id or 0)
    product_title = pick(product.title, locale)
    mail = render_mail(
        "release",
        to=user.email,
        locale=locale,
        buyer_name=user.name,
        product_title=product_title,
        module_title=pick(module.title, locale),
        lessons=[pick(lesson.title, locale) for lesson in lessons],
        notes=notes,
        notes_html=Markup(render_markdown(notes)),  # noqa: S704 - raw HTML is escaped
        link=link,
        unsubscribe=f"{base}/release-emails/unsubscribe?token={token}",
    )
    # A title sent through the API may hold line breaks, which no mail header may carry.
    subject = " ".join(f"{mail.subject}: {product_title}".split())
    return dataclasses.replace(mail, subject=subject)


def send_release_email(
    *, engine: Engine, settings: Settings, mailer: Mailer, module_id: int, user_id: int
) -> None:
    """Email one buyer about the module unless they had it, opted out or lost access.

    A MailError propagates, so that the job runner tries again later.
    """
    with Session(engine) as session:
        row = session.exec(_eligible(module_id).where(col(User.id) == user_id)).first()
        if row is None:
            return
        user, module, product = row
        mail = release_mail(
            session=session, settings=settings, user=user, module=module, product=product
        )
    mailer.send(mail)
    with Session(engine) as session:
        try:
            session.add(ReleaseNotice(module_id=module_id, user_id=user_id))
            session.commit()
        except IntegrityError:  # a parallel attempt recorded it first
            session.rollback()
    log.info("email.release_sent", module_id=module_id, user_id=user_id)
