"""The jobs: stamping a buyer's e-book copy, the purchase email, sending any email.

Each is registered by name; web code queues them with `state.jobs.enqueue(name, ...)` or
`enqueue_after_commit(session, name, ...)`, and either runner runs them with a JobContext.
A worker process imports only this module (through `lookup`), so a module that registers
jobs of its own with `@job` must be imported here.
"""

from __future__ import annotations

from dataclasses import asdict

import structlog

from app.accounts.notify import magic_link_mail
from app.authoring import processing  # noqa: F401 - registers process_upload (authoring)
from app.authoring.notify import release_recipients, send_release_email
from app.checkout.notify import purchase_mail
from app.delivery.copies import copy_failed, failure_notice, make_copy
from app.jobs.base import JobContext, JobsUnavailable, job
from app.mail import Mail

log = structlog.get_logger()


@job("send_mail")
def send_mail(ctx: JobContext, *, to: str, subject: str, text: str, html: str) -> None:
    """Hand a rendered email to the mailer; a MailError (SMTP down) is retried with backoff."""
    ctx.mailer.send(Mail(to=to, subject=subject, text=text, html=html))


def queue_mail(ctx: JobContext, mail: Mail) -> None:
    """Send mail through the send_mail job, so that a mail server outage is ridden out."""
    ctx.jobs.enqueue("send_mail", **asdict(mail))


@job("magic_link_email")
def magic_link_email(ctx: JobContext, *, email: str, next_path: str) -> None:
    """Make a sign-in link for a known address and queue its email; nothing for others."""
    mail = magic_link_mail(
        engine=ctx.engine, settings=ctx.settings, email=email, next_path=next_path
    )
    if mail is not None:
        queue_mail(ctx, mail)
        log.info("auth.magic_link_queued")


@job("purchase_email")
def purchase_email(ctx: JobContext, *, order_id: int) -> None:
    """Write the buyer's thank-you email (with its sign-in link, made once) and queue it."""
    mail = purchase_mail(engine=ctx.engine, settings=ctx.settings, order_id=order_id)
    if mail is not None:
        queue_mail(ctx, mail)
        log.info("email.purchase_queued", order_id=order_id)


def _tell_admin(ctx: JobContext, reason: str, *, asset_failed: bool) -> None:
    mail = failure_notice(to=ctx.settings.admin_email, reason=reason, asset_failed=asset_failed)
    try:
        queue_mail(ctx, mail)
    except JobsUnavailable as exc:
        # The failure is logged and recorded on the copy (and asset); the mail is a courtesy.
        log.warning("copy.admin_not_told", error=str(exc))


def _stamp_copy_failed(ctx: JobContext, reason: str, *, copy_id: int) -> None:
    copy_failed(ctx.engine, copy_id, reason)
    _tell_admin(ctx, f"copy {copy_id}: {reason}", asset_failed=False)


@job("stamp_copy", unique_by=("copy_id",), on_failure=_stamp_copy_failed)
def stamp_copy(ctx: JobContext, *, copy_id: int) -> None:
    """Make the buyer's personalised copy; a broken file fails at once, storage errors retry."""
    make_copy(
        ctx.engine,
        ctx.storage,
        copy_id,
        lambda reason: _tell_admin(ctx, reason, asset_failed=True),
    )


@job("release_email", unique_by=("module_id",))
def release_email(ctx: JobContext, *, module_id: int) -> None:
    """Queue one email per buyer to tell about a released module (authoring)."""
    for user_id in release_recipients(engine=ctx.engine, module_id=module_id):
        ctx.jobs.enqueue("release_email_to", module_id=module_id, user_id=user_id)


@job("release_email_to", unique_by=("module_id", "user_id"))
def release_email_to(ctx: JobContext, *, module_id: int, user_id: int) -> None:
    """Email one buyer about a released module, at most once; mail errors are retried."""
    send_release_email(
        engine=ctx.engine,
        settings=ctx.settings,
        mailer=ctx.mailer,
        module_id=module_id,
        user_id=user_id,
    )
