"""The author area's pages, release emails with their unsubscribe link, and library marks."""

from __future__ import annotations

import re
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from app.accounts.models import User
from app.catalog.models import Lesson, Module, Price, Product, ReleaseNotice
from app.checkout.models import Entitlement
from app.models_base import utcnow
from tests.authoring.conftest import DEMO, buyer, call, form, lessons_of, modules_of
from tests.conftest import sign_in


def product_named(engine: Engine, slug: str) -> Product:
    with Session(engine) as session:
        product = session.exec(select(Product).where(Product.slug == slug)).one()
        session.expunge(product)
        return product


def test_an_author_builds_a_product_with_the_forms(author: TestClient, engine: Engine) -> None:
    r = author.get("/author")
    assert r.status_code == 200 and "No products yet" in r.text
    r = form(
        author,
        "/author/products",
        {"slug": "pitch-deck", "kind": "ebook", "title_en": "Pitch deck", "title_de": ""},
    )
    assert r.status_code == 303
    url = r.headers["location"]
    page = author.get(url).text
    assert "The product is created as a draft." in page and "Add at least one price." in page
    pid = product_named(engine, "pitch-deck").id

    r = form(
        author,
        url,
        {
            "slug": "pitch-deck",
            "kind": "ebook",
            "title_en": "Pitch deck",
            "title_de": "Pitch-Deck",
            "tagline_en": "Ten slides.",
            "description_en": "Read *this* <script>alert(1)</script>",
        },
    )
    assert r.status_code == 303
    r = form(author, f"{url}/prices", {"prices_EUR": "49,90", "prices_AUD": "", "prices_USD": "55"})
    assert r.status_code == 303
    with Session(engine) as session:
        prices = {p.currency: p.amount for p in session.exec(select(Price))}
    assert prices == {"EUR": 4990, "USD": 5500}
    r = form(author, f"{url}/modules", {"title_en": "Slides", "title_de": "Folien"})
    assert r.status_code == 303 and r.headers["location"].startswith("/author/modules/")
    module_url = r.headers["location"]
    r = form(author, f"{module_url}/lessons", {"kind": "pdf", "title_en": "The deck"})
    assert r.status_code == 303 and r.headers["location"].startswith("/author/lessons/")
    lesson_page = author.get(r.headers["location"])
    assert lesson_page.status_code == 200
    assert 'id="upload" class="upload-slot" data-lesson-id=' in lesson_page.text

    r = form(author, f"{url}/status", {"status": "published"})
    assert r.status_code == 303
    assert product_named(engine, "pitch-deck").status == "published"
    listing = author.get("/author").text  # the flash message is shown on the next page
    assert "Published: the product is in the catalog now." in listing
    shown = author.get("/products/pitch-deck").text
    assert "<em>this</em>" in shown and "<script>alert" not in shown
    assert pid is not None and f'href="/author/products/{pid}">Pitch deck' in listing


def test_forms_answer_bad_input_with_4xx_and_keep_nothing(
    author: TestClient, engine: Engine, demo: Product
) -> None:
    url = f"/author/products/{demo.id}"
    before = product_named(engine, DEMO)
    details = {
        "slug": DEMO,
        "kind": "course",
        "title_en": "Changed",
        "title_de": "Geändert",
    }
    cases = [
        (f"{url}/prices", {"prices_EUR": "-5"}, 422, "Enter an amount like 149 or 149.00."),
        (f"{url}/prices", {"prices_EUR": "0"}, 422, "Enter an amount above 0 and up to 100,000."),
        (f"{url}/prices", {"prices_EUR": "0.10"}, 422, "The lowest price the payment provider"),
        (f"{url}/prices", {"prices_EUR": "1000000"}, 422, "Enter an amount above 0"),
        (f"{url}/prices", {}, 422, "A published product needs at least one price."),
        (url, {**details, "slug": "linkedin playbook"}, 422, "Use lowercase letters"),
        (url, {**details, "title_en": "x" * 201}, 422, "At most 200 characters."),
        (url, {**details, "kind": "podcast"}, 422, "Choose one of the kinds offered."),
        (url, {**details, "kind": "ebook"}, 409, "Unpublish the product before changing"),
        (url, {**details, "title_en": "", "title_de": ""}, 422, "Enter an English or a German"),
        (f"{url}/modules", {"title_en": ""}, 422, "Enter an English or a German text."),
    ]
    for target, data, status, message in cases:
        r = form(author, target, data)
        assert r.status_code == status, (data, r.status_code)
        assert message in r.text, (data, message)
        # The page keeps what the author typed.
        if data.get("title_en"):
            assert data["title_en"][:50] in r.text
    after = product_named(engine, DEMO)
    assert (after.title, after.slug, after.kind, after.updated_at) == (
        before.title,
        before.slug,
        before.kind,
        before.updated_at,
    )
    with Session(engine) as session:
        assert {p.currency: p.amount for p in session.exec(select(Price))} == {
            "EUR": 14900,
            "AUD": 24900,
            "USD": 15900,
        }
        assert len(list(session.exec(select(Module)))) == 3
    r = form(author, "/author/products", {"slug": DEMO, "kind": "course", "title_en": "Again"})
    assert r.status_code == 409 and "is already taken" in r.text
    r = author.post(url, data={"slug": "x" * 300}, headers={"Accept": "text/html"})
    assert r.status_code == 403  # without the CSRF token the form goes nowhere


def test_the_editor_in_german(author: TestClient, demo: Product) -> None:
    author.cookies.set("lang", "de")
    page = author.get(f"/author/products/{demo.id}").text
    for text in ("Module und Lektionen", "Preise speichern", "Veröffentlicht", "Angaben speichern"):
        assert text in page, text
    r = form(author, f"/author/products/{demo.id}/prices", {"prices_EUR": "abc"})
    assert r.status_code == 422 and "Geben Sie einen Betrag wie 149 oder 149,00 ein." in r.text


def _mails(outbox: Path) -> list[EmailMessage]:
    found = []
    for path in sorted(outbox.glob("*.eml")):
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        assert isinstance(message, EmailMessage)
        found.append(message)
    return found


def _text(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def test_releasing_a_module_emails_each_buyer_once(
    app: FastAPI, author: TestClient, engine: Engine, demo: Product, outbox: Path
) -> None:
    pid = demo.id or 0
    lena = buyer(engine, "lena@example.com", pid, locale="de", name="Lena")
    buyer(engine, "quiet@example.com", pid, release_emails=False)
    buyer(engine, "refunded@example.com", pid, revoked=True)
    r = form(author, f"/author/products/{pid}/modules", {"title_en": "Bonus", "title_de": "Extra"})
    module_url = r.headers["location"]
    module_id = int(module_url.rsplit("/", 1)[1])
    form(author, f"{module_url}/lessons", {"kind": "text", "title_en": "Q&A", "title_de": "F&A"})
    page = author.get(module_url).text
    assert "Email 1 buyer about this release" in page

    r = form(
        author,
        f"{module_url}/status",
        {
            "status": "published",
            "notify": "1",
            "notes_en": "Answers to your *questions*.",
            "notes_de": "Antworten auf Ihre *Fragen*.",
        },
    )
    assert r.status_code == 303
    assert "The buyers are being emailed." in author.get(module_url).text
    app.state.jobs.drain()
    mails = _mails(outbox)
    assert [m["To"] for m in mails] == ["lena@example.com"]
    mail = mails[0]
    assert mail["Subject"].startswith("Neu in Ihrer Bibliothek: Vertrauen auf Distanz")
    text = _text(mail)
    assert "Extra" in text and "F&A" in text and "Antworten auf Ihre *Fragen*." in text
    assert f"http://testserver/learn/{DEMO}/q-a" in text
    html = mail.get_body(("html",))
    assert html is not None and "<em>Fragen</em>" in str(html.get_content())

    # Releasing again (after a withdrawal) does not mail the same buyer twice.
    form(author, f"{module_url}/status", {"status": "draft"})
    form(author, f"{module_url}/status", {"status": "published", "notify": "1"})
    app.state.jobs.drain()
    assert len(_mails(outbox)) == 1
    with Session(engine) as session:
        notices = list(session.exec(select(ReleaseNotice)))
        assert [(n.module_id, n.user_id) for n in notices] == [(module_id, lena)]

    # The link in the email turns them off without signing in, after a confirmation.
    link = re.search(r"(http://testserver/release-emails/unsubscribe\?token=\S+)", text)
    assert link
    with TestClient(app) as stranger:
        confirm = stranger.get(link.group(1).removeprefix("http://testserver"))
        assert confirm.status_code == 200 and "Stop these emails" in confirm.text
        token = link.group(1).split("token=")[1]
        tampered = stranger.get(f"/release-emails/unsubscribe?token={token[:-2]}xx")
        assert tampered.status_code == 400
        r = form(stranger, "/release-emails/unsubscribe", {"token": token})
        assert r.status_code == 200 and "no longer get emails about new content" in r.text
    with Session(engine) as session:
        assert session.get(User, lena).release_emails is False  # type: ignore[union-attr]


def test_no_email_without_notify_or_for_a_draft_product(
    app: FastAPI, author: TestClient, engine: Engine, demo: Product, outbox: Path
) -> None:
    pid = demo.id or 0
    buyer(engine, "lena@example.com", pid)
    module = call(author, "POST", f"/api/v1/author/products/{pid}/modules", {"title": {"en": "A"}})
    r = call(author, "POST", f"/api/v1/author/modules/{module.json()['id']}/publish", {})
    assert r.json()["notified"] is False
    call(author, "POST", f"/api/v1/author/products/{pid}/unpublish")
    module = call(author, "POST", f"/api/v1/author/products/{pid}/modules", {"title": {"en": "B"}})
    # Modules added to a draft product go live with it; make this one a draft to release.
    call(author, "POST", f"/api/v1/author/modules/{module.json()['id']}/unpublish")
    r = call(
        author, "POST", f"/api/v1/author/modules/{module.json()['id']}/publish", {"notify": True}
    )
    assert r.status_code == 200 and r.json()["notified"] is False
    app.state.jobs.drain()
    assert _mails(outbox) == []


def test_the_account_page_switches_release_emails(
    app: FastAPI, engine: Engine, demo: Product
) -> None:
    user_id = buyer(engine, "lena@example.com", demo.id or 0)
    with TestClient(app) as client:
        sign_in(client, engine, "lena@example.com")
        page = client.get("/account").text
        assert 'name="release_emails" value="1" checked' in page
        r = form(client, "/account/release-emails", {})
        assert r.status_code == 303
        assert "You will no longer get emails about new content." in client.get("/account").text
        with Session(engine) as session:
            assert session.get(User, user_id).release_emails is False  # type: ignore[union-attr]
        form(client, "/account/release-emails", {"release_emails": "1"})
        assert 'name="release_emails" value="1" checked' in client.get("/account").text


def test_the_library_marks_what_is_new_since_the_last_visit(
    app: FastAPI, author: TestClient, engine: Engine, demo: Product
) -> None:
    pid = demo.id or 0
    buyer(engine, "lena@example.com", pid, granted_at=utcnow() - timedelta(days=3))
    module = call(
        author, "POST", f"/api/v1/author/products/{pid}/modules", {"title": {"en": "Fresh module"}}
    ).json()
    call(
        author,
        "POST",
        f"/api/v1/author/modules/{module['id']}/lessons",
        {"title": {"en": "New talk"}, "kind": "text"},
    )
    call(author, "POST", f"/api/v1/author/modules/{module['id']}/publish", {})
    with TestClient(app) as client:
        sign_in(client, engine, "lena@example.com")
        assert "New: Fresh module" in client.get("/library").text
        # Opening the product counts as a visit: afterwards nothing is new any more.
        assert client.get(f"/learn/{DEMO}/welcome").status_code == 200
        assert "New:" not in client.get("/library").text
        # A release older than the window is not "new", even for a buyer who never came back.
        with Session(engine) as session:
            session.execute(
                update(Module)
                .where(col(Module.id) == module["id"])
                .values(published_at=utcnow() - timedelta(days=60))
            )
            session.execute(
                update(Module).where(col(Module.id) != module["id"]).values(published_at=None)
            )
            session.execute(
                update(Entitlement).values(seen_at=None, granted_at=utcnow() - timedelta(days=90))
            )
            session.commit()
        assert "New:" not in client.get("/library").text


def test_text_lessons_render_markdown_safely(
    author: TestClient, engine: Engine, demo: Product
) -> None:
    module = modules_of(engine, demo.id or 0)[0]
    text = lessons_of(engine, module.id or 0)[2]
    assert text.kind == "text"
    body = "# Checklist\n\n<img src=x onerror=alert(1)> **done**"
    r = form(
        author,
        f"/author/lessons/{text.id}",
        {
            "key": text.key,
            "kind": "text",
            "title_en": "Checklist",
            "is_preview": "1",
            "published": "1",
            "body_shown": "1",
            "body_en": body,
        },
    )
    assert r.status_code == 303
    editor = author.get(f"/author/lessons/{text.id}").text
    assert "<h1>Checklist</h1>" in editor and "<img src=x" not in editor
    with TestClient(author.app) as visitor:
        page = visitor.get(f"/learn/{DEMO}/{text.key}").text  # a free preview
    assert "<strong>done</strong>" in page and "<img src=x" not in page
    with Session(engine) as session:
        assert session.get(Lesson, text.id).body == {"en": body}  # type: ignore[union-attr]
