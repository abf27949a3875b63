"""Stamped e-book copies: a footer on every page, the facts in the metadata, StampError or a PDF."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pikepdf
import pytest
from pikepdf import Array, Dictionary, Name

from app.delivery.stamping import (
    STAMP_XOBJECT_NAME,
    XMP_NAMESPACE,
    Stamp,
    StampError,
    stamp_pdf,
    stamp_text,
)
from tests.conftest import COURSES

DEMO_EBOOK = COURSES / "linkedin-playbook" / "media" / "b2b-linkedin-playbook.pdf"
ADA = Stamp(name="Ada Lovelace", email="ada@example.com", order_number="R-2024-000042")
A4 = (595, 842)


def make_pdf(pages: int = 3, *, size: tuple[float, float] = A4, text: bool = True) -> bytes:
    """A PDF of `pages` pages, each with a line of Helvetica text unless `text` is False."""
    pdf = pikepdf.new()
    with pdf.open_metadata(set_pikepdf_as_editor=False) as meta:
        meta["dc:title"] = "The Author's Book"
    font = pdf.make_indirect(
        Dictionary(Type=Name.Font, Subtype=Name.Type1, BaseFont=Name.Helvetica)
    )
    for number in range(1, pages + 1):
        page = pdf.add_blank_page(page_size=size)
        if text:
            page.obj.Resources = Dictionary(Font=Dictionary(F1=font))
            page.obj.Contents = pdf.make_stream(
                b"BT /F1 12 Tf 72 720 Td (Page %d of the book) Tj ET" % number
            )
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def stamped(data: bytes, stamp: Stamp = ADA) -> tuple[bytes, int]:
    out = io.BytesIO()
    pages = stamp_pdf(io.BytesIO(data), out, stamp)
    return out.getvalue(), pages


def stamp_xobject(page: pikepdf.Page) -> pikepdf.Stream:
    form = page.obj.Resources.XObject[STAMP_XOBJECT_NAME]
    assert isinstance(form, pikepdf.Stream)
    assert form.Type == Name.XObject and form.Subtype == Name.Form
    return form


def shown_text(form: pikepdf.Stream) -> bytes:
    """The string operand of the footer's Tj, as the content stream parser reads it."""
    shows = [
        bytes(instr.operands[0])
        for instr in pikepdf.parse_content_stream(form)
        if str(instr.operator) == "Tj"
    ]
    assert len(shows) == 1
    return shows[0]


def actual_text(form: pikepdf.Stream) -> str | None:
    """The /ActualText of the footer's marked content, if it has one."""
    for instr in pikepdf.parse_content_stream(form):
        if str(instr.operator) == "BDC" and "/ActualText" in instr.operands[1]:
            return str(instr.operands[1].ActualText)
    return None


def placement_matrix(page: pikepdf.Page) -> list[float]:
    """The operands of the `cm` in the page's last content stream, the one that draws us."""
    contents = page.obj.Contents
    assert isinstance(contents, Array)
    last = contents[len(contents) - 1]
    assert isinstance(last, pikepdf.Stream)
    ops = pikepdf.parse_content_stream(last)
    names = [str(instr.operator) for instr in ops]
    assert names == ["Q", "q", "cm", "Do", "Q"]
    assert ops[3].operands[0] == Name(STAMP_XOBJECT_NAME)
    return [float(v) for v in ops[2].operands]


def assert_valid(data: bytes) -> None:
    with pikepdf.open(io.BytesIO(data)) as pdf:
        assert pdf.check_pdf_syntax() == []


# --- the stamp ---------------------------------------------------------------------------


def test_every_page_draws_the_one_stamp_and_nothing_is_lost() -> None:
    source = make_pdf(7)
    data, pages = stamped(source)
    assert pages == 7
    assert_valid(data)
    with pikepdf.open(io.BytesIO(data)) as pdf:
        assert len(pdf.pages) == 7
        forms = {stamp_xobject(page).objgen for page in pdf.pages}
        assert len(forms) == 1  # one XObject for the whole book, not one per page
        for number, page in enumerate(pdf.pages, start=1):
            contents = page.obj.Contents
            assert isinstance(contents, Array) and len(contents) == 3
            assert contents[0].read_bytes().strip() == b"q"
            assert b"(Page %d of the book)" % number in contents[1].read_bytes()
            placement_matrix(page)
        form = stamp_xobject(pdf.pages[0])
        content = form.read_bytes()  # uncompressed
        assert b"ada@example.com" in content and b"R-2024-000042" in content
        assert shown_text(form) == stamp_text(ADA).encode("cp1252")
        assert actual_text(form) is None  # shown exactly as it is: nothing to add
        assert content.count(b"BDC") == content.count(b"EMC")
        assert form.Resources.Font.F1.BaseFont == Name.Helvetica
        assert form.Resources.Font.F1.Encoding == Name.WinAnsiEncoding


def test_stamp_text() -> None:
    assert stamp_text(ADA) == "Licensed to Ada Lovelace <ada@example.com> · Order R-2024-000042"
    assert stamp_text(Stamp("", "a@b.example", "7")) == "Licensed to <a@b.example> · Order 7"
    messy = stamp_text(Stamp("Ada\n\tLovelace ", "a@b.example", "7\r\n"))
    assert messy == "Licensed to Ada Lovelace <a@b.example> · Order 7"
    assert len(stamp_text(Stamp("x" * 5000, "a@b.example", "7"))) < 200


def test_metadata_carries_the_facts_and_keeps_the_authors() -> None:
    data, _ = stamped(make_pdf(2))
    with pikepdf.open(io.BytesIO(data)) as pdf:
        meta = pdf.open_metadata()
        assert "ada@example.com" in meta["dc:rights"] and "R-2024-000042" in meta["dc:rights"]
        assert meta[f"{{{XMP_NAMESPACE}}}email"] == "ada@example.com"
        assert meta[f"{{{XMP_NAMESPACE}}}order"] == "R-2024-000042"
        assert meta[f"{{{XMP_NAMESPACE}}}licensee"] == "Ada Lovelace"
        assert meta["dc:title"] == "The Author's Book"
        info = pdf.docinfo
        assert str(info["/RapportEmail"]) == "ada@example.com"
        assert str(info["/RapportOrder"]) == "R-2024-000042"
        assert str(info["/RapportLicensee"]) == "Ada Lovelace"
        assert str(info["/Title"]) == "The Author's Book"


def test_copy_grows_by_little_not_by_a_page_copy() -> None:
    source = make_pdf(200)
    data, pages = stamped(source)
    assert pages == 200
    # The XObject, font and metadata once, then ~50 bytes a page for the references.
    assert len(data) < len(source) + 8_000 + 200 * 100


def test_names_outside_latin1_are_shown_safely_and_kept_exactly() -> None:
    for name in ("Zoë Ł", "山田 太郎", "Ωmega — “quoted”", "emoji 🙂 here", "Ø\x00\x07bell"):
        stamp = Stamp(name=name, email="buyer@example.com", order_number="R-1")
        data, pages = stamped(make_pdf(2), stamp)
        assert pages == 2
        assert_valid(data)
        with pikepdf.open(io.BytesIO(data)) as pdf:
            form = stamp_xobject(pdf.pages[0])
            shown = shown_text(form)
            assert b"<buyer@example.com>" in shown and shown.endswith(b"Order R-1")
            shown.decode("cp1252")  # every byte is a WinAnsi character
            assert str(pdf.docinfo["/RapportLicensee"]) == " ".join(
                "".join(c if c.isprintable() else " " for c in name).split()
            )
    data, _ = stamped(make_pdf(1), Stamp("Zoë Ł", "z@example.com", "R-1"))
    with pikepdf.open(io.BytesIO(data)) as pdf:
        form = stamp_xobject(pdf.pages[0])
        assert shown_text(form).startswith(b"Licensed to Zo\xeb L <")
        # Copy and search get the real text: the footer's /ActualText holds it.
        assert actual_text(form) == "Licensed to Zoë Ł <z@example.com> · Order R-1"
    data, _ = stamped(make_pdf(1), Stamp("山田", "y@example.com", "R-2"))
    with pikepdf.open(io.BytesIO(data)) as pdf:
        form = stamp_xobject(pdf.pages[0])
        assert shown_text(form).startswith(b"Licensed to ?? <")
        assert actual_text(form) == "Licensed to 山田 <y@example.com> · Order R-2"
        assert str(pdf.open_metadata()[f"{{{XMP_NAMESPACE}}}licensee"]) == "山田"


def test_parentheses_and_backslashes_are_escaped() -> None:
    stamp = Stamp(
        name=r"Ada (the first) \ Lovelace)", email="a(b)@example.com", order_number="R-(1"
    )
    data, _ = stamped(make_pdf(1), stamp)
    assert_valid(data)
    with pikepdf.open(io.BytesIO(data)) as pdf:
        assert shown_text(stamp_xobject(pdf.pages[0])) == stamp_text(stamp).encode("cp1252")


# --- where the stamp goes ----------------------------------------------------------------


def _page_with(data: bytes, **keys: object) -> bytes:
    with pikepdf.open(io.BytesIO(data)) as pdf:
        for key, value in keys.items():
            pdf.pages[0].obj[Name("/" + key)] = value
        out = io.BytesIO()
        pdf.save(out)
        return out.getvalue()


@pytest.mark.parametrize(
    ("rotate", "axes", "edge"),
    [
        # /Rotate turns the page clockwise; the footer reads left to right on the bottom edge
        # as displayed: user space's bottom, right, top or left edge.
        (0, [1, 0, 0, 1], ("y", 0)),
        (90, [0, 1, -1, 0], ("x", 595)),
        (180, [-1, 0, 0, -1], ("y", 842)),
        (270, [0, -1, 1, 0], ("x", 0)),
        (-90, [0, -1, 1, 0], ("x", 0)),
    ],
)
def test_footer_follows_rotation(rotate: int, axes: list[int], edge: tuple[str, int]) -> None:
    data, _ = stamped(_page_with(make_pdf(1), Rotate=rotate))
    with pikepdf.open(io.BytesIO(data)) as pdf:
        a, b, c, d, e, f = placement_matrix(pdf.pages[0])
    assert [a, b, c, d] == axes
    axis, value = edge
    origin = e if axis == "x" else f
    assert abs(origin - value) < 20  # near the edge it should be on, a few points in
    assert 0 <= e <= 595 and 0 <= f <= 842


def test_footer_sits_in_the_cropbox_and_shrinks_on_narrow_pages() -> None:
    data, _ = stamped(_page_with(make_pdf(1), CropBox=Array([100, 200, 500, 700])))
    with pikepdf.open(io.BytesIO(data)) as pdf:
        a, _, _, _, e, f = placement_matrix(pdf.pages[0])
        width = float(stamp_xobject(pdf.pages[0]).BBox[2])
    assert a == 1 and e > 100 and e + width < 500 and 200 < f < 220

    data, _ = stamped(make_pdf(1, size=(144, 144)))  # a 2-inch page
    with pikepdf.open(io.BytesIO(data)) as pdf:
        scale, _, _, _, e, _ = placement_matrix(pdf.pages[0])
        width = float(stamp_xobject(pdf.pages[0]).BBox[2])
    assert 0 < scale < 1 and e >= 0 and e + width * scale <= 144


def test_the_pages_own_graphics_state_cannot_move_the_footer() -> None:
    with pikepdf.open(io.BytesIO(make_pdf(0 + 1, text=False))) as pdf:
        # Unbalanced on purpose: a transformation left in force, as some generators do.
        pdf.pages[0].obj.Contents = pdf.make_stream(b"4 0 0 4 0 0 cm 0 0 10 10 re f")
        out = io.BytesIO()
        pdf.save(out)
    data, _ = stamped(out.getvalue())
    with pikepdf.open(io.BytesIO(data)) as pdf:
        ops = [str(i.operator) for i in pikepdf.parse_content_stream(pdf.pages[0])]
    assert ops == ["q", "cm", "re", "f", "Q", "q", "cm", "Do", "Q"]


def test_pages_without_content_or_resources_or_with_content_arrays() -> None:
    with pikepdf.open(io.BytesIO(make_pdf(3))) as pdf:
        first, second, third = (page.obj for page in pdf.pages)
        del first["/Contents"]
        del first["/Resources"]
        second.Contents = Array([pdf.make_stream(b"0 0 m"), pdf.make_stream(b"9 9 l S")])
        shared = pdf.make_indirect(Dictionary(XObject=Dictionary()))
        second.Resources = shared
        third.Resources = shared
        out = io.BytesIO()
        pdf.save(out)
    data, pages = stamped(out.getvalue())
    assert pages == 3
    assert_valid(data)
    with pikepdf.open(io.BytesIO(data)) as pdf:
        for page in pdf.pages:
            stamp_xobject(page)
            placement_matrix(page)
        assert len(pdf.pages[1].obj.Contents) == 4  # q, both streams, the placement


def test_the_demo_ebook(tmp_path: Path) -> None:
    target = tmp_path / "copy.pdf"
    pages = stamp_pdf(DEMO_EBOOK, target, ADA)
    with pikepdf.open(DEMO_EBOOK) as original:
        assert pages == len(original.pages) > 1
    data = target.read_bytes()
    assert_valid(data)
    assert len(data) < DEMO_EBOOK.stat().st_size + 16_000
    with pikepdf.open(target) as pdf:
        assert len(pdf.pages) == pages
        for page in pdf.pages:
            assert b"ada@example.com" in stamp_xobject(page).read_bytes()
            placement_matrix(page)
        assert "R-2024-000042" in str(pdf.open_metadata()["dc:rights"])
    assert [p.name for p in tmp_path.iterdir()] == ["copy.pdf"]  # no temporary file left


def test_an_owner_password_only_pdf_is_stamped_and_stays_restricted() -> None:
    with pikepdf.open(io.BytesIO(make_pdf(2))) as pdf:
        out = io.BytesIO()
        permissions = pikepdf.Permissions(extract=False)
        pdf.save(out, encryption=pikepdf.Encryption(owner="secret", user="", allow=permissions))
    data, pages = stamped(out.getvalue())
    assert pages == 2
    with pikepdf.open(io.BytesIO(data)) as pdf:
        assert pdf.is_encrypted and not pdf.allow.extract
        assert b"ada@example.com" in stamp_xobject(pdf.pages[0]).read_bytes()


def test_stamping_a_file_onto_itself_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "book.pdf"
    path.write_bytes(make_pdf(1))
    with pytest.raises(ValueError, match="onto itself"):
        stamp_pdf(path, path, ADA)


# --- unusable inputs ---------------------------------------------------------------------


def _encrypted() -> bytes:
    with pikepdf.open(io.BytesIO(make_pdf(1))) as pdf:
        out = io.BytesIO()
        pdf.save(out, encryption=pikepdf.Encryption(owner="o", user="u"))
        return out.getvalue()


def _no_pages() -> bytes:
    out = io.BytesIO()
    pikepdf.new().save(out)
    return out.getvalue()


def _garbled_xref() -> bytes:
    data = bytearray(make_pdf(5))
    start = data.rindex(b"startxref")
    offset = int(data[start + 9 :].split()[0])
    data[offset : offset + 40] = b"%" * 40  # the cross-reference table is gone
    return bytes(data)


def _garbled_object() -> bytes:
    data = make_pdf(5)
    at = data.index(b" 0 obj", data.index(b" 0 obj", data.index(b" 0 obj") + 1) + 1)
    start = data.rindex(b"\n", 0, at) + 1
    return data[:start] + b"%" * (at + 6 - start) + data[at + 6 :]  # "7 0 obj" is gone


GOOD = make_pdf(5)
UNUSABLE = {
    "empty": b"",
    "random bytes": os.urandom(4096),
    "html": b"<!doctype html><html><body><h1>Not found</h1></body></html>",
    "pdf header then garbage": b"%PDF-1.7\n" + os.urandom(4096),
    "truncated at 10%": GOOD[: len(GOOD) // 10],
    "truncated at 50%": GOOD[: len(GOOD) // 2],
    "truncated at 90%": GOOD[: len(GOOD) * 9 // 10],
    "truncated before %%EOF": GOOD[: GOOD.rindex(b"startxref") + 12],
    "garbled xref": _garbled_xref(),
    "garbled object": _garbled_object(),
    "no pages": _no_pages(),
    "needs a password": _encrypted(),
}


@pytest.mark.parametrize("case", sorted(UNUSABLE))
def test_unusable_input_raises_stamp_error_only(case: str, tmp_path: Path) -> None:
    data = UNUSABLE[case]
    with pytest.raises(StampError) as stream_error:
        stamp_pdf(io.BytesIO(data), io.BytesIO(), ADA)
    source = tmp_path / "book.pdf"
    source.write_bytes(data)
    target = tmp_path / "copy.pdf"
    with pytest.raises(StampError) as path_error:
        stamp_pdf(source, target, ADA)
    assert str(stream_error.value) == str(path_error.value)
    message = str(path_error.value)
    assert message and str(tmp_path) not in message and "BytesIO" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book.pdf"]  # no partial copy


def test_messages_say_what_is_wrong() -> None:
    def message(case: str) -> str:
        with pytest.raises(StampError) as error:
            stamp_pdf(io.BytesIO(UNUSABLE[case]), io.BytesIO(), ADA)
        return str(error.value)

    assert "not a PDF" in message("html")
    assert "damaged or incomplete" in message("truncated at 90%")
    assert "no pages" in message("no pages")
    assert "password" in message("needs a password")


def test_a_missing_source_is_an_os_error_not_the_documents_fault(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        stamp_pdf(tmp_path / "missing.pdf", tmp_path / "copy.pdf", ADA)


# --- no active content reaches a buyer ---------------------------------------------------


def _js(pdf: pikepdf.Pdf, code: str, *, indirect: bool = False) -> pikepdf.Object:
    action = Dictionary(S=Name.JavaScript, JS=pikepdf.String(code))
    return pdf.make_indirect(action) if indirect else action


def _active_pdf() -> bytes:
    """A PDF with every kind of script and auto-action a viewer might run."""
    pdf = pikepdf.open(io.BytesIO(make_pdf(2)))
    root = pdf.Root
    root.OpenAction = _js(pdf, "app.alert('opened')", indirect=True)
    root.AA = Dictionary(WC=_js(pdf, "app.alert('closing')"))
    script = pdf.make_indirect(
        Dictionary(S=Name.JavaScript, JS=pdf.make_stream(b"this.submitForm('https://x')"))
    )
    root.Names = Dictionary(
        JavaScript=Dictionary(Names=Array([pikepdf.String("init"), script])),
        Dests=Dictionary(Names=Array([])),  # not active: stays
    )
    first, second = pdf.pages[0], pdf.pages[1]
    first.obj.AA = Dictionary(O=_js(pdf, "app.alert('page open')"))
    uri = Dictionary(S=Name.URI, URI=pikepdf.String("https://example.com/book"))
    link = pdf.make_indirect(
        Dictionary(
            Type=Name.Annot,
            Subtype=Name.Link,
            Rect=Array([72, 72, 200, 90]),
            A=Dictionary(
                S=Name.URI,
                URI=pikepdf.String("https://example.com/next"),
                Next=Array([_js(pdf, "app.launchURL('x')"), uri]),
            ),
        )
    )
    scripted_link = Dictionary(
        Type=Name.Annot,
        Subtype=Name.Link,
        Rect=Array([72, 100, 200, 118]),
        A=_js(pdf, "app.alert('click')", indirect=True),
        AA=Dictionary(E=_js(pdf, "app.alert('enter')")),
    )
    launch = Dictionary(
        Type=Name.Annot,
        Subtype=Name.Link,
        Rect=Array([72, 130, 200, 148]),
        A=Dictionary(S=Name.Launch, F=pikepdf.String("calc.exe")),
    )
    js_uri = Dictionary(
        Type=Name.Annot,
        Subtype=Name.Link,
        Rect=Array([72, 160, 200, 178]),
        A=Dictionary(S=Name.URI, URI=pikepdf.String("javascript:app.alert(1)")),
    )
    widget = pdf.make_indirect(
        Dictionary(
            Type=Name.Annot,
            Subtype=Name.Widget,
            FT=Name.Tx,
            T=pikepdf.String("name"),
            Rect=Array([72, 200, 300, 220]),
            AA=Dictionary(K=_js(pdf, "event.value = 1"), F=_js(pdf, "AFNumber_Format()")),
        )
    )
    first.obj.Annots = Array([link, scripted_link, launch, widget])
    second.obj.Annots = Array([js_uri])
    root.AcroForm = Dictionary(Fields=Array([widget]))
    root.Outlines = pdf.make_indirect(Dictionary(Type=Name.Outlines))
    item = pdf.make_indirect(
        Dictionary(Title=pikepdf.String("Start"), Parent=root.Outlines, A=_js(pdf, "x()"))
    )
    root.Outlines.First = item
    root.Outlines.Last = item
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def _every_object(pdf: pikepdf.Pdf) -> list[pikepdf.Object]:
    """The trailer and every object reachable from it, direct ones included."""
    found: list[pikepdf.Object] = []
    seen: set[tuple[int, int]] = set()
    todo: list[object] = [pdf.trailer]
    while todo:
        obj = todo.pop()
        if not isinstance(obj, pikepdf.Object):
            continue  # numbers, booleans and the like come back as Python values
        if obj.is_indirect:
            if obj.objgen in seen:
                continue
            seen.add(obj.objgen)
        found.append(obj)
        if isinstance(obj, Dictionary | pikepdf.Stream):
            todo.extend(obj[key] for key in obj.keys())  # noqa: SIM118 - pikepdf keys
        elif isinstance(obj, Array):
            todo.extend(obj)
    return found


def test_stamped_copies_carry_no_scripts_or_auto_actions() -> None:
    source = _active_pdf()
    with pikepdf.open(io.BytesIO(source)) as before:  # the test PDF really has them all
        assert "/OpenAction" in before.Root and "/JavaScript" in before.Root.Names
    data, pages = stamped(source)
    assert pages == 2
    with pikepdf.open(io.BytesIO(data)) as pdf:
        for obj in _every_object(pdf):
            if isinstance(obj, Dictionary | pikepdf.Stream):
                keys = set(obj.keys())
                assert not keys & {"/OpenAction", "/AA", "/JS", "/JavaScript"}, keys
                if "/S" in keys:
                    assert obj.S not in (Name.JavaScript, Name.Launch), repr(obj)
                if "/URI" in keys:
                    assert not str(obj.URI).lower().startswith("javascript:")
        # What is not active stays: links to the web, the form field, the outline, the stamp.
        annots = pdf.pages[0].obj.Annots
        assert str(annots[0].A.URI) == "https://example.com/next"
        assert [str(a.URI) for a in annots[0].A.Next] == ["https://example.com/book"]
        assert "/Dests" in pdf.Root.Names
        assert str(pdf.Root.AcroForm.Fields[0].T) == "name"
        assert str(pdf.Root.Outlines.First.Title) == "Start"
        for page in pdf.pages:
            assert shown_text(stamp_xobject(page)) == stamp_text(ADA).encode("cp1252")
    assert_valid(data)
