"""Outgoing email: one sender interface; files in var/outbox by default, SMTP in production."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Protocol

import structlog

from app.config import Settings
from app.web import render, translations

log = structlog.get_logger()


class MailError(Exception):
    """The message could not be handed to the mail server."""


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str
    html: str


class Mailer(Protocol):
    def send(self, mail: Mail) -> None:
        """Deliver the message or raise MailError."""
        ...


def build_message(mail: Mail, sender: str) -> EmailMessage:
    """A multipart/alternative message (plain text first, HTML second)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = mail.to
    msg["Subject"] = mail.subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1].rstrip(">") or None)
    msg.set_content(mail.text)
    msg.add_alternative(mail.html, subtype="html")
    return msg


class OutboxMailer:
    """Writes each message as an .eml file under the outbox folder and logs a line."""

    def __init__(self, folder: Path, sender: str) -> None:
        self.folder = folder
        self.sender = sender

    def send(self, mail: Mail) -> None:
        message = build_message(mail, self.sender)
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = self.folder / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
        path.write_bytes(bytes(message))
        log.info("email.outbox", to=mail.to, subject=mail.subject, file=str(path))


def render_mail(name: str, *, to: str, locale: str, **context: object) -> Mail:
    """Render templates/emails/<name>.txt and .html in the recipient's language."""
    tr = translations(locale)
    subject = tr.gettext(SUBJECTS[name])
    text = render(f"emails/{name}.txt", locale=locale, subject=subject, **context)
    html = render(f"emails/{name}.html", locale=locale, subject=subject, **context)
    return Mail(to=to, subject=subject, text=text, html=html)


SUBJECTS = {
    "magic_link": "Your sign-in link for Rapport",
    "purchase": "Thank you for your purchase",
    "release": "New in your library",
    "inquiry_admin": "New inquiry",
    "inquiry_received": "We have received your inquiry",
}


def make_mailer(settings: Settings) -> Mailer:
    """SMTP when RAPPORT_SMTP_URL is set, else the outbox folder."""
    if settings.smtp_url:
        from app.integrations.smtp import SmtpMailer

        return SmtpMailer(settings.smtp_url, settings.mail_from)
    return OutboxMailer(settings.data_dir / "outbox", settings.mail_from)
