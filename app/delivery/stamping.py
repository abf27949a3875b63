"""Personalised e-book copies: a buyer's name, email and order number on every page of a PDF.

`stamp_pdf` writes a copy of an e-book with one small footer line on every page, "Licensed to
NAME <EMAIL> · Order NUMBER", and the same facts in the document's metadata (XMP and the
DocInfo dictionary). It is built for speed with pikepdf (qpdf underneath): pages are never
re-rendered or copied. The footer is ONE Form XObject in the output, drawn on every page by a
short content stream appended to the page (`q … cm /RapportStamp Do Q`, one per distinct page
layout, shared), so the copy costs about twice qpdf's own open and save of the file and grows by
a few KB (XObject, font, metadata) plus tens of bytes of references a page.

An input that is not a usable PDF (not a PDF at all, truncated or otherwise damaged, encrypted
with a password we do not have, or without pages) raises `StampError` and nothing else, so the
job that stamps can mark the asset failed and tell the author; reading the source or writing
the target may still raise `OSError`, which is not the document's fault.

Nothing in a copy acts by itself: scripts, launch actions and automatic actions (/OpenAction,
/AA) are removed before the footer is drawn; links to the web and form fields stay.

The footer uses the standard Helvetica font (WinAnsiEncoding, nothing embedded), so characters
it cannot show are transliterated where that is safe ("Ł" → "L") and shown as "?" otherwise
("山田" → "??"); the exact text is kept as the footer's /ActualText (what copy and search give),
and in the metadata, which are Unicode.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pikepdf
from pikepdf import Array, Dictionary, Name, Pdf, String
from pikepdf.models.metadata import PdfMetadata

__all__ = [
    "STAMP_XOBJECT_NAME",
    "XMP_NAMESPACE",
    "Stamp",
    "StampError",
    "stamp_pdf",
    "stamp_text",
]

STAMP_XOBJECT_NAME = "/RapportStamp"
"""The name under which every page's /Resources /XObject holds the footer."""

XMP_NAMESPACE = "https://rapport.invalid/ns/license/1.0/"
"""Our XMP namespace (prefix `rapport`): properties `licensee`, `email` and `order`."""
XMP_PREFIX = "rapport"

FONT_SIZE = 7.0
"""Footer font size in points (shrunk on pages too narrow for the whole line)."""
BOTTOM_MARGIN = 8.0
"""Distance from the visible bottom edge of the page to the footer's box."""
SIDE_MARGIN = 18.0
"""Least distance from the footer to the left and right edges of the page."""
GREY = 0.3
"""Footer text colour (DeviceGray): readable, not loud."""
BACKDROP_OPACITY = 0.7
"""The footer sits on a white band this opaque, so it stays readable on dark pages."""
PADDING = 2.0
"""Space between the text and the edges of its band, in points."""
MAX_FIELD_CHARS = 120
"""Longer names or emails are cut (with "…") so the footer stays one line."""

# qpdf warnings about things it put right entirely (page tree fix-ups); any other warning
# means damage, and the PDF is refused.
_HARMLESS = re.compile(
    r"; (?:repairing|overriding)$|MediaBox is undefined; setting to"
    r"|appears more than once in the pages tree; creating a new page object as a copy"
    r"|extraneous whitespace seen before xref"
)

_DESCENT = 0.207  # Helvetica's descent, in em: the baseline sits this far above the padding
_HEIGHT = 0.925  # Helvetica's ascent + descent (0.718 + 0.207), in em

# Advance widths (1/1000 em) of Helvetica, from its AFM, for the printable ASCII range; the
# other WinAnsi codes are estimated generously (the width only decides where to centre the
# line and whether to shrink it, so erring wide is harmless).
_HELVETICA_ASCII = (
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556,
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556,
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
)  # fmt: skip
_HELVETICA_OTHER = 722

# Letters that Unicode does not decompose into a Latin base letter and a combining mark, and
# punctuation that WinAnsi lacks (written as escapes: several look like ASCII).
_TRANSLITERATIONS = {
    "\u0141": "L", "\u0142": "l",  # L with stroke
    "\u0110": "D", "\u0111": "d",  # D with stroke
    "\u0126": "H", "\u0127": "h",  # H with stroke
    "\u0131": "i",  # dotless i
    "\u013f": "L", "\u0140": "l",  # L with middle dot
    "\u0166": "T", "\u0167": "t",  # T with stroke
    "\u0138": "k",  # kra
    "\u1e9e": "SS",  # capital sharp s
    "\u0197": "I", "\u0268": "i",  # I with stroke
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2212": "-",  # hyphens, minus sign
    "\u2044": "/",  # fraction slash
    "\u2032": "'", "\u2033": '"',  # primes
}  # fmt: skip


class StampError(Exception):
    """The input is not a usable PDF: corrupt, encrypted without a password, or no pages.

    The message is meant for the author (the asset is marked failed); buyers get a generic one.
    """


@dataclass(frozen=True)
class Stamp:
    """Who a copy is licensed to."""

    name: str
    email: str
    order_number: str


def stamp_text(stamp: Stamp) -> str:
    """The footer line, in full Unicode (what /ActualText and the metadata carry)."""
    name = _clip(_one_line(stamp.name))
    email = _clip(_one_line(stamp.email))
    order = _clip(_one_line(stamp.order_number))
    licensee = f"{name} <{email}>" if name else f"<{email}>"
    return f"Licensed to {licensee} · Order {order}"


def stamp_pdf(source: BinaryIO | Path, target: BinaryIO | Path, stamp: Stamp) -> int:
    """Write a copy of `source` stamped for `stamp` to `target`; return its page count.

    Every page gets a small footer line ("Licensed to {name} <{email}> · Order {number}"),
    placed on the visible bottom edge as the page is displayed (CropBox, /Rotate), and the
    document's metadata gets the same facts: XMP `dc:rights` plus `rapport:licensee`,
    `rapport:email` and `rapport:order`, and DocInfo `/RapportLicensee`, `/RapportEmail`,
    `/RapportOrder`. Nothing else changes: the author's title, keywords and so on stay.

    A `Path` target is written through a temporary file beside it and renamed into place, so
    it is either the whole stamped copy or untouched. A stream target receives the bytes from
    its current position; after a `StampError` it may hold a partial write, to be discarded.

    Raises:
        StampError: the source is not a usable PDF (see the module docstring).
        OSError: the source cannot be read or the target cannot be written.
    """
    if isinstance(source, Path) and isinstance(target, Path) and _same_file(source, target):
        raise ValueError(f"cannot stamp {source} onto itself")
    text = stamp_text(stamp)
    if isinstance(target, Path):
        with _replace_on_success(target) as tmp:
            return _stamp(source, tmp, stamp, text)
    return _stamp(source, target, stamp, text)


def _stamp(source: BinaryIO | Path, target: BinaryIO | Path, stamp: Stamp, text: str) -> int:
    if b"%PDF-" not in _head(source):
        raise StampError("the file is not a PDF (it does not start with %PDF-)")
    try:
        # No recovery: a PDF qpdf would have to reconstruct (truncated, damaged xref) is a
        # broken upload the author should fix, not something to sell half-read.
        with pikepdf.open(source, attempt_recovery=False) as pdf:
            pages = len(pdf.pages)
            if pages == 0:
                raise StampError("the PDF has no pages")
            _strip_active_content(pdf)
            _stamp_pages(pdf, text)
            _stamp_metadata(pdf, stamp, text)
            # 1.4: the band's opacity. Object streams, compression and encryption as they were.
            pdf.save(target, min_version="1.4", encryption=pdf.is_encrypted)
            problems = [w for w in pdf.get_warnings() if not _HARMLESS.search(w)]
    except StampError:
        raise
    except pikepdf.PasswordError as exc:
        raise StampError(
            "the PDF is encrypted and needs a password to open; upload it without a password"
        ) from exc
    except OSError:
        raise
    except Exception as exc:  # every way a damaged document can fail in qpdf or here
        raise StampError(_damaged(source, exc)) from exc
    if problems:
        # qpdf read it but found damage (objects or streams it could not read whole): the copy
        # might be missing content, so it is not sold.
        raise StampError(_damaged(source, problems[0]))
    return pages


def _head(source: BinaryIO | Path) -> bytes:
    """The first KiB of the source (where the %PDF- header must be), position unchanged."""
    if isinstance(source, Path):
        with source.open("rb") as f:
            return f.read(1024)
    position = source.tell()
    try:
        return source.read(1024)
    finally:
        source.seek(position)


def _damaged(source: BinaryIO | Path, problem: object) -> str:
    """The message for the author: what qpdf found, without the file name it starts with."""
    detail = str(problem).strip() or type(problem).__name__
    where = re.escape(str(source)) if isinstance(source, Path) else r"stream <[^>]*>"
    detail = re.sub(rf"^(?:{where})(?: \([^)]*\))?: ", "", detail)[:160]
    return f"the PDF is damaged or incomplete ({detail}); export it again and re-upload it"


# --- active content -------------------------------------------------------------------------

# Actions that run code or other programs. A buyer's copy must not do anything by itself when
# opened or scrolled, nor on a click; links to the web (URI, GoTo) stay.
_ACTIVE_ACTIONS = frozenset({Name.JavaScript, Name.Launch, Name.ImportData})


def _strip_active_content(pdf: Pdf) -> None:
    """Remove scripts and automatic actions from the document: its /OpenAction and /AA, the
    /Names /JavaScript tree, XFA forms (which carry scripts), and every /AA and active /A
    of form fields and outline items. Pages and their annotations are cleaned in the page
    loop of `_stamp_pages`, which reads each page's keys anyway. Active actions: JavaScript,
    Launch, ImportData, a `javascript:` URI, also further down an action's /Next chain.
    Objects no longer referenced are not saved."""
    root = pdf.Root
    for key in ("/OpenAction", "/AA"):
        if key in root:
            del root[key]
    names = root.get("/Names")
    if isinstance(names, Dictionary) and "/JavaScript" in names:
        del names["/JavaScript"]
    form = root.get("/AcroForm")
    if isinstance(form, Dictionary):
        if "/XFA" in form:
            del form["/XFA"]
        fields = form.get("/Fields")
        if isinstance(fields, Array):
            _strip_tree(list(fields), ("/Kids",))
    outlines = root.get("/Outlines")
    if isinstance(outlines, Dictionary):
        _strip_tree([outlines], ("/First", "/Next"))


def _strip_tree(start: list[Any], links: tuple[str, ...]) -> None:
    """_strip_from on every dictionary reachable from `start` through the `links` keys."""
    seen: set[tuple[int, int]] = set()
    todo = start
    while todo:
        node = todo.pop()
        if not isinstance(node, Dictionary):
            continue
        if node.is_indirect:
            if node.objgen in seen:
                continue  # a damaged tree may loop
            seen.add(node.objgen)
        _strip_from(node)
        for link in links:
            if link in node:
                child = node[link]
                todo.extend(child if isinstance(child, Array) else [child])


def _strip_annotations(annots: object) -> None:
    if isinstance(annots, Array):
        for annot in annots:
            if isinstance(annot, Dictionary):
                _strip_from(annot)


def _strip_from(holder: Dictionary) -> None:
    if "/AA" in holder:
        del holder["/AA"]
    if "/A" in holder:
        action = holder["/A"]
        if _is_active(action):
            del holder["/A"]
        elif isinstance(action, Dictionary):
            _strip_chain(action)


def _strip_chain(action: Dictionary) -> None:
    """Drop the active actions from the /Next chain of an action that stays."""
    seen: set[tuple[int, int]] = set()
    todo = [action]
    while todo:
        current = todo.pop()
        if current.is_indirect:
            if current.objgen in seen:
                continue  # a chain may loop
            seen.add(current.objgen)
        if "/Next" not in current:
            continue
        following = current["/Next"]
        if isinstance(following, Array):
            for index in reversed(range(len(following))):
                if _is_active(following[index]):
                    del following[index]
            todo.extend(a for a in following if isinstance(a, Dictionary))
        elif _is_active(following):
            del current["/Next"]
        elif isinstance(following, Dictionary):
            todo.append(following)


def _is_active(value: object) -> bool:
    if not isinstance(value, Dictionary):
        return False
    if "/JS" in value:
        return True
    kind = value.get("/S")
    if kind in _ACTIVE_ACTIONS:
        return True
    return kind == Name.URI and str(value.get("/URI", "")).strip().lower().startswith("javascript:")


# --- pages ----------------------------------------------------------------------------------


def _stamp_pages(pdf: Pdf, text: str) -> None:
    """Draw the footer on every page: one XObject, one shared "q", one placement per layout.

    The page loop is the only part whose cost grows with the book, so it reads each page's
    keys once and caches what it can: the placement stream per distinct (CropBox, MediaBox,
    /Rotate), the /XObject entry per shared /Resources dictionary.
    """
    shown = _winansi(text)
    width = _text_width(shown) + 2 * PADDING
    form = _stamp_xobject(pdf, text, shown, width)
    name = Name(STAMP_XOBJECT_NAME)
    # "q" before the page's own content, "Q" after it: its graphics state cannot leak into the
    # footer (a page may end with a transformation or a clip still in force).
    save_state = pdf.make_stream(b"q\n")
    placements: dict[tuple[bytes, bytes, int], pikepdf.Stream] = {}
    shared_resources: set[tuple[int, int]] = set()
    for page in pdf.pages:
        obj = page.obj
        keys = obj.keys()  # one call instead of one per key: this loop is the hot path
        crop = obj.CropBox if "/CropBox" in keys else None
        media = obj.MediaBox if "/MediaBox" in keys else None
        rotate = _rotation(obj.Rotate) if "/Rotate" in keys else 0
        if "/AA" in keys:
            del obj["/AA"]  # actions on opening or closing the page
        if "/Annots" in keys:
            _strip_annotations(obj.Annots)
        key = (_fingerprint(crop), _fingerprint(media), rotate)
        placement = placements.get(key)
        if placement is None:
            box = _visible_box(crop, media)
            placement = pdf.make_stream(_placement(box, rotate, width))
            placements[key] = placement

        resources = obj.Resources if "/Resources" in keys else None
        if isinstance(resources, Dictionary):
            objgen = resources.objgen  # (0, 0) for a page's own direct dictionary
            if objgen == (0, 0) or objgen not in shared_resources:
                shared_resources.add(objgen)
                xobjects = resources.XObject if "/XObject" in resources else None
                if isinstance(xobjects, Dictionary):
                    xobjects[name] = form
                else:
                    resources.XObject = Dictionary({STAMP_XOBJECT_NAME: form})
        else:
            obj.Resources = Dictionary(XObject=Dictionary({STAMP_XOBJECT_NAME: form}))

        # qpdf turns /Contents into an array [q, ...the page's own streams..., placement].
        page.contents_add(save_state, prepend=True)
        page.contents_add(placement)


def _fingerprint(value: object) -> bytes:
    """A hashable stand-in for a box (or None), for the placement cache."""
    if value is None:
        return b""
    if isinstance(value, pikepdf.Object):
        return bytes(value.unparse())
    return repr(value).encode()


def _stamp_xobject(pdf: Pdf, text: str, shown: bytes, width: float) -> pikepdf.Stream:
    """The footer as one Form XObject, its box from (0, 0) to (width, height) in points.

    A translucent white band, then the line in grey Helvetica on it, marked as a pagination
    artifact (tagged PDFs stay valid; screen readers skip it).
    """
    font = pdf.make_indirect(
        Dictionary(
            Type=Name.Font,
            Subtype=Name.Type1,
            BaseFont=Name.Helvetica,
            Encoding=Name.WinAnsiEncoding,
        )
    )
    height = FONT_SIZE * _HEIGHT + 2 * PADDING
    band = b"q /GS1 gs 1 g 0 0 %s %s re f Q " % (_num(width), _num(height))
    show = b"BT /F1 %s Tf %s g %s %s Td (%s) Tj ET" % (
        _num(FONT_SIZE),
        _num(GREY),
        _num(PADDING),
        _num(PADDING + FONT_SIZE * _DESCENT),
        _escape(shown),
    )
    try:
        exact = text.encode("cp1252") == shown
    except UnicodeEncodeError:
        exact = False
    if not exact:
        # What copy, search and screen readers get where the font could not show the text.
        actual = Dictionary(ActualText=String(text)).unparse()
        show = b"/Span " + actual + b" BDC " + show + b" EMC"
    content = b"/Artifact <</Type /Pagination /Subtype /Footer>> BDC " + band + show + b" EMC\n"
    return pdf.make_stream(
        content,
        Type=Name.XObject,
        Subtype=Name.Form,
        BBox=Array([0, 0, _round(width), _round(height)]),
        Resources=Dictionary(
            Font=Dictionary(F1=font),
            ExtGState=Dictionary(GS1=Dictionary(Type=Name.ExtGState, ca=BACKDROP_OPACITY)),
        ),
    )


def _visible_box(crop: object, media: object) -> tuple[float, float, float, float]:
    """The page's CropBox (else MediaBox), normalised to (left, bottom, right, top)."""
    box = crop if isinstance(crop, Array) and len(crop) == 4 else media
    if not isinstance(box, Array) or len(box) != 4:
        raise StampError("a page has no usable /MediaBox")
    x0, y0, x1, y1 = (float(v) for v in box)
    left, right = sorted((x0, x1))
    bottom, top = sorted((y0, y1))
    if right - left < 1 or top - bottom < 1:
        raise StampError("a page has an empty /MediaBox")
    return left, bottom, right, top


def _rotation(value: object) -> int:
    """/Rotate as 0, 90, 180 or 270 (anything invalid counts as 0, as viewers do)."""
    try:
        degrees = int(value) % 360  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0
    return degrees if degrees in (0, 90, 180, 270) else 0


def _placement(box: tuple[float, float, float, float], rotate: int, width: float) -> bytes:
    """`Q q <cm> /RapportStamp Do Q`: the footer centred on the bottom edge as displayed.

    /Rotate turns the displayed page clockwise, so "the bottom edge as displayed" is the user
    space's bottom (0°), right (90°), top (180°) or left (270°) edge.
    """
    left, bottom, right, top = box
    shown_width = (top - bottom) if rotate in (90, 270) else (right - left)
    scale = min(1.0, max(shown_width - 2 * SIDE_MARGIN, 1.0) / width)
    u = (shown_width - width * scale) / 2  # displayed x of the footer's box
    v = BOTTOM_MARGIN  # displayed y of the footer's box
    if rotate == 90:
        matrix = (0.0, scale, -scale, 0.0, right - v, bottom + u)
    elif rotate == 180:
        matrix = (-scale, 0.0, 0.0, -scale, right - u, top - v)
    elif rotate == 270:
        matrix = (0.0, -scale, scale, 0.0, left + v, top - u)
    else:
        matrix = (scale, 0.0, 0.0, scale, left + u, bottom + v)
    cm = b" ".join(_num(m) for m in matrix)
    return b"\nQ q " + cm + b" cm " + STAMP_XOBJECT_NAME.encode() + b" Do Q\n"


# --- metadata -------------------------------------------------------------------------------


def _stamp_metadata(pdf: Pdf, stamp: Stamp, text: str) -> None:
    name = _clip(_one_line(stamp.name))
    email = _clip(_one_line(stamp.email))
    order = _clip(_one_line(stamp.order_number))
    _register_xmp_namespace()
    # Not the pikepdf producer mark, not the DocInfo sync: the author's fields stay as they are.
    with pdf.open_metadata(set_pikepdf_as_editor=False, update_docinfo=False) as meta:
        meta["dc:rights"] = text
        meta[f"{XMP_PREFIX}:licensee"] = name
        meta[f"{XMP_PREFIX}:email"] = email
        meta[f"{XMP_PREFIX}:order"] = order
    info = pdf.docinfo
    info[Name("/RapportLicensee")] = String(name)
    info[Name("/RapportEmail")] = String(email)
    info[Name("/RapportOrder")] = String(order)


@functools.cache
def _register_xmp_namespace() -> None:
    PdfMetadata.register_xml_namespace(XMP_NAMESPACE, XMP_PREFIX)


# --- text -----------------------------------------------------------------------------------


def _one_line(value: str) -> str:
    """Control characters (newlines, tabs...) become spaces, runs of spaces one."""
    cleaned = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in value)
    return " ".join(cleaned.split())


def _clip(value: str) -> str:
    return value if len(value) <= MAX_FIELD_CHARS else value[: MAX_FIELD_CHARS - 1] + "…"


def _winansi(text: str) -> bytes:
    """`text` in WinAnsiEncoding (cp1252): transliterated where safe, "?" where not."""
    out = bytearray()
    for ch in text:
        out += _winansi_char(ch)
    return bytes(out)


def _winansi_char(ch: str) -> bytes:
    with contextlib.suppress(UnicodeEncodeError):
        return ch.encode("cp1252")
    if ch in _TRANSLITERATIONS:
        return _TRANSLITERATIONS[ch].encode("cp1252")
    # "ő" is "o" and a combining mark, the "fi" ligature is "f" "i", full-width letters are
    # letters: keep what WinAnsi can show.
    base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    try:
        encoded = base.encode("cp1252")
    except UnicodeEncodeError:
        return b"?"
    return encoded if base and len(base) <= 3 else b"?"


def _text_width(shown: bytes) -> float:
    """The width of the footer line in points, at FONT_SIZE."""
    units = sum(_HELVETICA_ASCII[b - 32] if 32 <= b < 127 else _HELVETICA_OTHER for b in shown)
    return max(units * FONT_SIZE / 1000, 1.0)


def _escape(shown: bytes) -> bytes:
    """A PDF literal string's body: backslash and parentheses escaped."""
    return shown.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _round(value: float) -> float:
    return round(value, 3)


def _num(value: float) -> bytes:
    """A PDF number: at most 3 decimals, no exponent, no "-0"."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return b"0" if text in ("-0", "") else text.encode()


# --- files ----------------------------------------------------------------------------------


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


@contextlib.contextmanager
def _replace_on_success(target: Path) -> Iterator[Path]:
    """A temporary path beside `target`, renamed onto it when the block succeeds."""
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
