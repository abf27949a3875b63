"""Jinja2 environment, locale negotiation and the helpers every page template uses."""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency
from babel.support import Translations
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from app.markdown import render_markdown

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LOCALES = ("en", "de")
LOCALE_NAMES = {"en": "English", "de": "Deutsch"}
LOCALE_COOKIE = "lang"


@lru_cache
def translations(locale: str) -> Translations:
    """Compiled gettext catalog for a locale, built from the .po file at first use."""
    po = LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po"
    if not po.exists():
        return Translations()
    with po.open("rb") as f:
        catalog = read_po(f, locale=locale)
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(buf)


def negotiate_locale(request: Request, default: str = "en") -> str:
    """Cookie choice first, then the best Accept-Language match, then the default."""
    return choose_locale(
        request.cookies.get(LOCALE_COOKIE), request.headers.get("accept-language", ""), default
    )


def choose_locale(cookie: str | None, header: str, default: str = "en") -> str:
    """The locale from the language cookie's value and an Accept-Language header."""
    if cookie in LOCALES:
        return cookie
    best, best_q = default, -1.0
    for part in header.split(",")[:20]:
        lang, _, params = part.strip().partition(";")
        code = lang.strip().lower()[:2]
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        if code in LOCALES and q > best_q:
            best, best_q = code, q
    return best


def pick(text: dict[str, str] | None, locale: str) -> str:
    """The text in the wanted language, else English, else any."""
    if not text:
        return ""
    return text.get(locale) or text.get("en") or next(iter(text.values()), "")


def money(amount: int, currency: str, locale: str) -> str:
    """Minor units to a localized price, e.g. 14900 EUR -> '149,00 €' in German."""
    return str(format_currency(amount / 100, currency, locale=locale))


def duration(seconds: float | None) -> str:
    if not seconds:
        return ""
    total = round(seconds)
    minutes, secs = divmod(total, 60)
    return f"{minutes}:{secs:02d}"


def make_env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "xml"]),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.globals.update(LOCALES=LOCALES, LOCALE_NAMES=LOCALE_NAMES)
    env.filters.update(
        pick=pick,
        money=money,
        duration=duration,
        markdown=lambda s: Markup(render_markdown(s)),  # noqa: S704 - raw HTML is escaped
    )
    return env


_env: Environment | None = None


def env() -> Environment:
    global _env
    if _env is None:
        _env = make_env()
    return _env


def safe_next(target: str | None, default: str = "/") -> str:
    """A local path to go to next; anything that could leave the site becomes the default."""
    if not target or len(target) > 2000:
        return default
    if not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if any(c in target for c in ("\\", "\r", "\n", "\t")) or target.startswith("/\t"):
        return default
    return target


def request_locale(request: Request) -> str:
    """The language of the current request (cookie, user, Accept-Language)."""
    user = getattr(request.state, "user", None)
    cookie_choice = request.cookies.get(LOCALE_COOKIE) in LOCALES
    if user is not None and not cookie_choice and user.locale in LOCALES:
        return str(user.locale)
    return negotiate_locale(request, request.app.state.settings.default_locale)


def gettext_for(request: Request) -> Any:
    """The gettext function in the request's language."""
    return translations(request_locale(request)).gettext


def client_ip(request: Request) -> str:
    """The visitor's address as the server sees it (the proxy's, unless forwarded headers are
    trusted), for rate limits."""
    return request.client.host if request.client else "unknown"


def flash(request: Request, message: str, kind: str = "info") -> None:
    """A one-time message shown on the next page (kept in the signed session)."""
    request.session.setdefault("flash", []).append({"kind": kind, "text": message})


def page(
    request: Request,
    template: str,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render a page of the shared layout with user, CSRF token, language and messages."""
    locale = request_locale(request)
    user = getattr(request.state, "user", None)
    messages = request.session.pop("flash", []) if "session" in request.scope else []
    csrf = request.scope.get("csrftoken")
    html = render(
        template,
        locale=locale,
        user=user,
        csrf_token=csrf() if csrf else "",
        messages=messages,
        path=request.url.path,
        magic_link_minutes=request.app.state.settings.magic_link_ttl // 60,
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers=headers)


def render(template: str, *, locale: str, **context: Any) -> str:
    """Render a page template in a locale."""
    tr = translations(locale)
    environment = env()
    tmpl = environment.get_template(template)
    return tmpl.render(
        locale=locale,
        _=tr.gettext,
        gettext=tr.gettext,
        ngettext=tr.ngettext,
        **context,
    )
