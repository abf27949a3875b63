"""Every text the pages, emails and messages show has a German translation."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2)}


def extracted() -> set[str]:
    found: set[str] = set()
    for folder in (ROOT / "templates", ROOT / "app"):
        method_map = [
            ("**.html", "jinja2"),
            ("**.txt", "jinja2"),
            ("**.jinja", "jinja2"),
            ("**.py", "python"),
        ]
        for _file, _line, message, _comments, _ctx in extract_from_dir(
            str(folder), method_map=method_map, keywords=KEYWORDS
        ):
            found.add(message[0] if isinstance(message, tuple) else message)
    return found


def test_every_message_has_a_german_translation() -> None:
    with (ROOT / "app/locale/de/LC_MESSAGES/messages.po").open("rb") as f:
        catalog = read_po(f, locale="de")
    messages = extracted()
    assert len(messages) > 100  # the extraction really read the templates
    missing = []
    for msgid in sorted(messages):
        entry = catalog.get(msgid)
        text = entry.string if entry else None
        if isinstance(text, tuple):
            text = text[0] if all(text) else ""
        if not text or (entry is not None and entry.fuzzy):
            missing.append(msgid)
    assert not missing, (
        f"untranslated in de/messages.po (run pybabel update, see app/locale/README.md): {missing}"
    )
