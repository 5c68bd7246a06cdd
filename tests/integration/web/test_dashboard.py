"""The coach dashboard (server-rendered pages + htmx) and the widget pages, driven over real HTTP."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from tests.conftest import ReadyCoach

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')


@pytest.fixture
async def browser(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A cookie-keeping client, like a browser tab."""
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        yield client


async def csrf(browser: httpx.AsyncClient, page: str) -> str:
    response = await browser.get(page)
    assert response.status_code == 200, response.text
    match = CSRF.search(response.text)
    assert match, f"{page} has no CSRF field"
    return match.group(1)


async def sign_up(browser: httpx.AsyncClient, name: str = "Dash Coach") -> str:
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    token = await csrf(browser, "/signup")
    response = await browser.post(
        "/signup", data={"coach_name": name, "email": email, "password": PASSWORD, "_csrf_token": token}
    )
    assert response.status_code in (302, 303) and response.headers["location"] == "/dashboard/settings"
    return email


async def test_pages_need_a_session(browser: httpx.AsyncClient) -> None:
    for page in ("/dashboard/documents", "/dashboard/clients", "/dashboard/conversations", "/dashboard/settings"):
        response = await browser.get(page)
        assert response.status_code in (302, 303) and response.headers["location"] == "/login", page


async def test_forms_need_the_csrf_token(browser: httpx.AsyncClient) -> None:
    await browser.get("/signup")
    response = await browser.post("/signup", data={"coach_name": "X", "email": "x@example.com", "password": PASSWORD})
    assert response.status_code == 403


async def test_signup_shows_the_api_key_once_and_it_works(browser: httpx.AsyncClient) -> None:
    await sign_up(browser)
    first = await browser.get("/dashboard/settings")
    key = re.search(r"(oc_[A-Za-z0-9_-]{43})", first.text)
    assert key, "the new API key is shown after sign-up"
    assert key.group(1) not in (await browser.get("/dashboard/settings")).text
    api = await browser.get("/api/v1/documents", headers={"Authorization": f"Bearer {key.group(1)}"})
    assert api.status_code == 200


async def test_signup_errors_are_shown_on_the_form(browser: httpx.AsyncClient) -> None:
    email = await sign_up(browser)
    async with httpx.AsyncClient(base_url=str(browser.base_url)) as other:
        token = await csrf(other, "/signup")
        taken = await other.post(
            "/signup", data={"coach_name": "Y", "email": email, "password": PASSWORD, "_csrf_token": token}
        )
        assert taken.status_code == 409 and "already exists" in taken.text
        short = await other.post(
            "/signup", data={"coach_name": "Y", "email": "y@example.com", "password": "short", "_csrf_token": token}
        )
        assert short.status_code == 400 and "at least 8 characters" in short.text


async def test_login_logout(browser: httpx.AsyncClient) -> None:
    email = await sign_up(browser)
    token = await csrf(browser, "/dashboard/documents")
    assert (await browser.post("/logout", data={"_csrf_token": token})).status_code in (302, 303)
    assert (await browser.get("/dashboard/documents")).status_code in (302, 303)
    token = await csrf(browser, "/login")
    wrong = await browser.post("/login", data={"email": email, "password": "nope-nope", "_csrf_token": token})
    assert wrong.status_code == 401 and "wrong e-mail or password" in wrong.text
    right = await browser.post("/login", data={"email": email, "password": PASSWORD, "_csrf_token": token})
    assert right.status_code in (302, 303) and right.headers["location"] == "/dashboard/documents"
    assert (await browser.get("/dashboard/documents")).status_code == 200


async def test_upload_and_live_status(browser: httpx.AsyncClient, run_jobs: Callable[[], Awaitable[None]]) -> None:
    await sign_up(browser)
    token = await csrf(browser, "/dashboard/documents")
    uploaded = await browser.post(
        "/dashboard/documents",
        data={"_csrf_token": token},
        files={"file": ("journal.md", b"# Journal\n\nWrite three lines each evening.\n")},
    )
    assert uploaded.status_code in (302, 303)
    table = await browser.get("/dashboard/documents/table")
    assert "Journal" in table.text and "queued" in table.text
    assert 'hx-trigger="every 2s"' in table.text, "the table polls while a document is in progress"
    await run_jobs()
    table = await browser.get("/dashboard/documents/table")
    assert "ready" in table.text and "hx-trigger" not in table.text

    rejected = await browser.post(
        "/dashboard/documents", data={"_csrf_token": token}, files={"file": ("notes.docx", b"PK\x03\x04")}
    )
    assert rejected.status_code == 400 and "unsupported file type" in rejected.text


async def test_clients_page_gives_a_working_widget_link_and_snippet(browser: httpx.AsyncClient) -> None:
    await sign_up(browser)
    token = await csrf(browser, "/dashboard/clients")
    created = await browser.post("/dashboard/clients", data={"name": "Ada", "_csrf_token": token})
    assert created.status_code in (302, 303)
    page = (await browser.get("/dashboard/clients")).text
    link = re.search(r"/w/(ocw_[A-Za-z0-9_-]+)", page)
    assert link and "Ada" in page
    assert f'/static/widget.js" data-token="{link.group(1)}" async' in page, "the embeddable snippet"
    widget = await browser.get(f"/w/{link.group(1)}")
    assert widget.status_code == 200 and "/static/chat.js" in widget.text
    assert (await browser.get("/w/ocw_not-a-token")).status_code == 404
    for asset in ("/static/widget.js", "/static/chat.js", "/static/vendor/htmx.min.js", "/static/app.css"):
        assert (await browser.get(asset)).status_code == 200, asset


async def test_transcript_shows_citations(browser: httpx.AsyncClient, meditations_coach: ReadyCoach) -> None:
    chat = await browser.post(
        "/api/v1/chat",
        headers={"Authorization": f"Bearer {meditations_coach.widget_token}"},
        json={"text": "How do I stay calm?"},
    )
    page_numbers = {c["page"] for c in chat.json()["citations"]}
    token = await csrf(browser, "/login")
    await browser.post(
        "/login", data={"email": meditations_coach.coach.email, "password": PASSWORD, "_csrf_token": token}
    )
    listing = await browser.get("/dashboard/conversations")
    assert chat.json()["conversation_id"] in listing.text
    transcript = await browser.get(f"/dashboard/conversations/{chat.json()['conversation_id']}")
    assert transcript.status_code == 200 and "How do I stay calm?" in transcript.text
    assert any(f"p. {n}" in transcript.text for n in page_numbers)
    assert "SmolLM2" in transcript.text, "attribution metadata is shown to the coach"


async def test_settings_never_show_the_key(browser: httpx.AsyncClient) -> None:
    await sign_up(browser)
    token = await csrf(browser, "/dashboard/settings")
    secret = "sk-proj-" + "Z" * 40 + "wxyz"
    saved = await browser.post(
        "/dashboard/settings",
        data={
            "name": "Dash Coach",
            "persona": "Be brief.",
            "llm_provider": "openai",
            "llm_model": "gpt-4o-mini",
            "llm_base_url": "",
            "llm_api_key": secret,
            "_csrf_token": token,
        },
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    page = (await browser.get("/dashboard/settings")).text
    assert secret not in page and "Z" * 10 not in page
    assert "wxyz" in page, "a masked hint (last four characters) tells the coach which key is set"
    bad = await browser.post(
        "/dashboard/settings",
        data={"name": "Dash Coach", "llm_provider": "openai", "llm_model": "", "_csrf_token": token},
    )
    assert bad.status_code == 400 and "llm_model is required" in bad.text


async def test_openapi_schema_lists_the_contract(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/schema/openapi.json")).json()
    for path in (
        "/api/v1/auth/signup",
        "/api/v1/documents",
        "/api/v1/documents/{document_id}",
        "/api/v1/clients",
        "/api/v1/conversations/{conversation_id}",
        "/api/v1/chat",
    ):
        assert path in schema["paths"], path
