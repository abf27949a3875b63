"""SMTP delivery: the only module that talks to smtplib."""

from __future__ import annotations

import smtplib
import ssl
from urllib.parse import unquote, urlsplit

from app.mail import Mail, MailError, build_message


def _is_tls(client: smtplib.SMTP) -> bool:
    return isinstance(client.sock, ssl.SSLSocket)


def _loopback(host: str) -> bool:
    return host in ("localhost", "127.0.0.1", "::1")


class SmtpMailer:
    """smtp://user:pass@host:587 (STARTTLS when offered) or smtps://host:465 (TLS)."""

    def __init__(self, url: str, sender: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("RAPPORT_SMTP_URL must look like smtp://user:pass@host:587")
        self.tls = parts.scheme == "smtps"
        self.host = parts.hostname
        self.port = parts.port or (465 if self.tls else 587)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = sender
        self.timeout = timeout

    def send(self, mail: Mail) -> None:
        message = build_message(mail, self.sender)
        context = ssl.create_default_context()
        try:
            if self.tls:
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=context
                )
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with client:
                client.ehlo()
                if not self.tls and client.has_extn("starttls"):
                    client.starttls(context=context)
                    client.ehlo()
                if self.username and self.password:
                    if not (self.tls or client.sock is None or _is_tls(client)) and not _loopback(
                        self.host
                    ):
                        raise MailError(
                            f"SMTP {self.host}: the server offers no TLS; refusing to send the "
                            "password in clear text (use smtps:// or a server with STARTTLS)"
                        )
                    client.login(self.username, self.password)
                client.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(f"SMTP {self.host}:{self.port}: {exc}") from exc
