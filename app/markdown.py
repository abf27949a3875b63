"""Markdown to HTML with raw HTML switched off, so author text can never inject markup."""

from __future__ import annotations

from markdown_it import MarkdownIt

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": True}).enable(
    "table"
)


def render_markdown(source: str) -> str:
    """Safe HTML for a Markdown text (raw HTML is escaped, not passed through)."""
    return str(_md.render(source or ""))
