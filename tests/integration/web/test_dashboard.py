"""The coach dashboard (server-rendered pages + htmx) and the widget pages, driven over real HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
from cryptography.fernet import Fernet
from selectolax.lexbor import LexborHTMLParser

from app.accounts.models import Coach as CoachRow
from app.core.security import SecretBox, mask_secret
from app.db.engine import tenant_session
from app.rag.pipeline import set_document
from app.web.api.accounts import UNREADABLE_SECRET
from tests.cited import assert_cites_only_what_it_draws_on
from tests.conftest import Coach, ReadyCoach, make_client, upload, widget_page
from tests.hostile_files import text_pdf
from tests.openai_wire import MOCK_ENDPOINT_SETTINGS, mock_chat_endpoint, mock_openai, openai_sse, sse_response

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
    assert response.status_code in (302, 303) and response.headers["location"] == "/dashboard/start"
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
        long_name = await other.post(
            "/signup",
            data={"coach_name": "n" * 201, "email": "z@example.com", "password": PASSWORD, "_csrf_token": token},
        )
        assert long_name.status_code == 400 and "coach_name must be at most 200 characters" in long_name.text
        long_email = await other.post(
            "/signup",
            data={"coach_name": "Z", "email": "z" * 310 + "@example.com", "password": PASSWORD, "_csrf_token": token},
        )
        assert long_email.status_code == 400 and "not a valid e-mail address" in long_email.text


async def test_names_and_persona_longer_than_allowed_are_refused_and_change_nothing(
    browser: httpx.AsyncClient,
) -> None:
    """The forms have no schema: the services' limits give the same 400 the API gives, not the database's error."""
    await sign_up(browser, name="Kept Name")
    token = await csrf(browser, "/dashboard/settings")
    for field, value, message in (
        ("name", "n" * 201, "name must be at most 200 characters"),
        ("persona", "p" * 8001, "persona must be at most 8000 characters"),
    ):
        data = {"section": "profile", "name": "Kept Name", "persona": "Kept persona", "_csrf_token": token}
        response = await browser.post("/dashboard/settings", data=data | {field: value})
        assert response.status_code == 400 and message in response.text
    page = (await browser.get("/dashboard/settings")).text
    assert 'value="Kept Name"' in page and "p" * 8001 not in page
    token = await csrf(browser, "/dashboard/clients")
    response = await browser.post("/dashboard/clients", data={"name": "c" * 201, "_csrf_token": token})
    assert response.status_code == 400 and "name must be at most 200 characters" in response.text
    assert "c" * 201 not in (await browser.get("/dashboard/clients")).text


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
    assert 'href="/dashboard/start#step-preview">try it</a>' in table.text
    reprocess = re.search(r'action="(/dashboard/documents/[0-9a-f-]+/reprocess)"', table.text)
    assert reprocess is not None, "a ready document can be processed again"
    assert (await browser.post(reprocess.group(1), data={"_csrf_token": token})).status_code in (302, 303)
    table = await browser.get("/dashboard/documents/table")
    assert "replaces the earlier copy once ready" in table.text and 'hx-trigger="every 2s"' in table.text
    busy = await browser.post(reprocess.group(1), data={"_csrf_token": token})
    assert busy.status_code == 409 and "is being processed again already" in busy.text
    await run_jobs()
    table = await browser.get("/dashboard/documents/table")
    assert table.text.count("/reprocess") == 1 and "replaces the earlier copy" not in table.text, "one copy, ready"
    page = (await browser.get("/dashboard/documents")).text
    assert 'id="dropzone"' in page and "/static/documents.js" in page and ".vtt" in page

    rejected = await browser.post(
        "/dashboard/documents", data={"_csrf_token": token}, files={"file": ("notes.xlsx", b"PK\x03\x04")}
    )
    assert rejected.status_code == 400 and "unsupported file type" in rejected.text
    again = await browser.post(
        "/dashboard/documents",
        data={"_csrf_token": token},
        files={"file": ("journal-copy.md", b"# Journal\n\nWrite three lines each evening.\n")},
    )
    assert again.status_code == 409 and "already in your library as “Journal”" in again.text
    assert "Journal Copy" not in (await browser.get("/dashboard/documents/table")).text


async def test_clients_page_gives_a_working_widget_link_and_snippet(browser: httpx.AsyncClient) -> None:
    await sign_up(browser)
    token = await csrf(browser, "/dashboard/clients")
    created = await browser.post("/dashboard/clients", data={"name": "Ada", "_csrf_token": token})
    assert created.status_code in (302, 303)
    page = (await browser.get("/dashboard/clients")).text
    link = re.search(r"/w/(ocw_[A-Za-z0-9_-]+)", page)
    assert link and "Ada" in page
    assert f'/static/widget.js" data-token="{link.group(1)}" async' in page, "the embeddable snippet"
    widget = await browser.get(f"/w/{link.group(1)}", follow_redirects=True)
    assert widget.status_code == 200 and "/static/chat.js" in widget.text
    assert (await browser.get("/w/ocw_not-a-token")).status_code == 404
    assets = ("widget.js", "chat.js", "markdown.js", "app.css", "vendor/htmx.min.js", "vendor/marked.umd.js")
    assets += ("vendor/purify.min.js",)
    for asset in (f"/static/{name}" for name in assets):
        assert (await browser.get(asset)).status_code == 200, asset
    assert "list that site under" in page and "(none listed yet)" in page, "the snippet needs the site listed"

    # a name the form should have stopped: blanks make a "New client", one too long is the page with the reason
    blank = await browser.post("/dashboard/clients", data={"name": "   ", "_csrf_token": token})
    assert blank.status_code in (302, 303)
    too_long = await browser.post("/dashboard/clients", data={"name": "x" * 201, "_csrf_token": token})
    assert too_long.status_code == 400 and too_long.headers["content-type"].startswith("text/html")
    assert "name must be at most 200 characters" in too_long.text
    names = re.findall(r'<a href="/dashboard/clients/[0-9a-f-]{36}">([^<]+)</a>', too_long.text)
    assert sorted(names) == ["Ada", "New client"], names


async def test_transcript_shows_citations(browser: httpx.AsyncClient, meditations_coach: ReadyCoach) -> None:
    chat = await browser.post(
        "/api/v1/chat",
        headers={"Authorization": f"Bearer {meditations_coach.widget_token}"},
        json={"text": "How do I stay calm?"},
    )
    citations = chat.json()["citations"]
    # the real model's reply cites what it draws on, if anything (a stub's citations in a transcript:
    # tests/integration/web/test_ux_bugs.py)
    await assert_cites_only_what_it_draws_on(browser, meditations_coach.widget_token, chat.json()["reply"], citations)
    # the book numbers its pages from its 11th (front matter in roman numerals): cited as its viewer shows them,
    # a passage across a page break by both pages ("pp. 42–43")
    assert all(re.fullmatch(rf"pp?\. {c['page'] - 10}(–\d+)?", c["locator"]) for c in citations if c["page"] > 10)
    shown = {c.get("locator") or f"p. {c['page']}" for c in citations}
    token = await csrf(browser, "/login")
    await browser.post(
        "/login", data={"email": meditations_coach.coach.email, "password": PASSWORD, "_csrf_token": token}
    )
    listing = await browser.get("/dashboard/conversations")
    assert chat.json()["conversation_id"] in listing.text
    transcript = await browser.get(f"/dashboard/conversations/{chat.json()['conversation_id']}")
    assert transcript.status_code == 200 and "How do I stay calm?" in transcript.text
    assert all(re.search(rf", {re.escape(where)}\b", transcript.text) for where in shown), shown
    assert "SmolLM2" in transcript.text, "attribution metadata is shown to the coach"


async def test_settings_never_show_the_key(browser: httpx.AsyncClient) -> None:
    await sign_up(browser)
    token = await csrf(browser, "/dashboard/settings")
    secret = "sk-proj-" + "Z" * 40 + "wxyz"
    with mock_openai() as openai_api:  # the save's test message to OpenAI (an empty base URL)
        openai_api.route(host="127.0.0.1").pass_through()
        route = openai_api.post("https://api.openai.com/v1/chat/completions").mock(
            return_value=sse_response(openai_sse(["Hi"], (8, 1), finish_reason="length"))
        )
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
    assert saved.status_code == 200 and "Saved. Your model answered a test message." in saved.text
    assert route.calls.last.request.headers["authorization"] == f"Bearer {secret}"
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


# ---------------------------------------------------------------------------------------- handoffs (issue 4)

DELTAS = ["Try", " one", " small", " step", "."]
REPLY = "".join(DELTAS)


@pytest.fixture
def llm_api() -> Iterator[respx.MockRouter]:
    """The coach's endpoint, mocked (see :func:`tests.openai_wire.mock_chat_endpoint`)."""
    with mock_chat_endpoint(DELTAS, (50, 5)) as router:
        yield router


async def log_in(browser: httpx.AsyncClient, coach: Coach) -> None:
    token = await csrf(browser, "/login")
    response = await browser.post("/login", data={"email": coach.email, "password": PASSWORD, "_csrf_token": token})
    assert response.status_code in (302, 303), response.text


async def client_chat(
    http: httpx.AsyncClient, widget_token: str, text: str, conversation_id: str | None = None
) -> dict:
    body: dict[str, Any] = {"text": text} | ({"conversation_id": conversation_id} if conversation_id else {})
    response = await http.post("/api/v1/chat", headers={"Authorization": f"Bearer {widget_token}"}, json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_handoff_pages_and_event_stream_need_a_session(browser: httpx.AsyncClient) -> None:
    for page in ("/dashboard/handoffs", "/dashboard/handoffs/queue", "/dashboard/events"):
        response = await browser.get(page)
        assert response.status_code in (302, 303) and response.headers["location"] == "/login", page


async def test_a_crisis_handoff_shows_its_reasons_labelled_not_as_a_quote(
    browser: httpx.AsyncClient, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """The queue card, the conversation's handoff panel and its header showed the crisis handoff's detail as
    "crisis: finish the job, pills, burden": the detector's cue names, laid out like the client's own words. They
    are labelled reasons now, each cue named as the detector's; the brief says "detector cues" too."""
    coach = await make_coach("Crisis Coach")
    client = await make_client(http, coach, "Sky")
    said = "I have pills saved up and I am going to take them all, I am a burden"
    body = await client_chat(http, client["widget_token"], said)
    assert body["handoff"]["reason"] == "crisis", body
    await log_in(browser, coach)

    queue = (await browser.get("/dashboard/handoffs")).text
    pane = (await browser.get(f"/dashboard/conversations/{body['conversation_id']}")).text
    for page in (queue, pane):
        shown = " ".join(re.sub(r"<[^>]+>", " ", page).split())
        assert "crisis: " not in shown and "Crisis signals" in shown
        for label, cue in (
            ("Suicidal intent or self-harm stated", "finish the job"),
            ("Mentions a means of harm", "pills"),
            ("Indirect sign of suicidal thinking", "burden"),
        ):
            assert f'<li>{label} <span class="muted">· detector cue <code>{cue}</code></span></li>' in page, cue
    assert "Urgent: Suicidal intent or self-harm stated; Mentions a means of harm; Indirect sign" in pane
    assert "Why: Crisis risk (detector cues: finish the job, pills, burden)" in pane


async def test_queue_takeover_coach_message_and_handback(
    browser: httpx.AsyncClient, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """ "/human" opens a handoff (no model call); the queue lists it with reason, SLA and brief; the take-over,
    send and hand-back forms work with the CSRF token (and not without it)."""
    coach = await make_coach("Queue Coach")
    client = await make_client(http, coach, "Robin")
    body = await client_chat(http, client["widget_token"], "/human")
    conversation_id = body["conversation_id"]
    await log_in(browser, coach)

    page = await browser.get("/dashboard/handoffs")
    assert page.status_code == 200
    for expected in (
        "Robin",
        "Client asked for a human",
        "SLA 15 min",
        "Brief",
        f"/dashboard/conversations/{conversation_id}",
    ):
        assert expected in page.text, expected
    assert 'id="handoff-badge"' in page.text and "/static/dashboard.js" in page.text
    summary = (await browser.get("/dashboard/handoffs/summary")).json()
    assert summary["open"] == 1 and summary["crisis"] == []

    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    refused = await browser.post(f"/dashboard/conversations/{conversation_id}/takeover")
    assert refused.status_code == 403
    taken = await browser.post(f"/dashboard/conversations/{conversation_id}/takeover", data={"_csrf_token": token})
    assert (
        taken.status_code in (302, 303) and taken.headers["location"] == f"/dashboard/conversations/{conversation_id}"
    )
    conversation = (await browser.get(f"/dashboard/conversations/{conversation_id}")).text
    assert "You are in this conversation" in conversation and 'id="handback"' in conversation
    queue = (await browser.get("/dashboard/handoffs/queue")).text
    assert "In your hands" in queue and "No open handoffs." in queue

    empty = await browser.post(
        f"/dashboard/conversations/{conversation_id}/messages", data={"text": "  ", "_csrf_token": token}
    )
    assert empty.status_code == 400 and "text must not be empty" in empty.text
    sent = await browser.post(
        f"/dashboard/conversations/{conversation_id}/messages",
        data={"text": "Hi Robin, Queue Coach here.", "_csrf_token": token},
    )
    assert sent.status_code in (302, 303)
    transcript = (await browser.get(f"/dashboard/conversations/{conversation_id}")).text
    assert "Hi Robin, Queue Coach here." in transcript and ">Coach" in transcript
    widget = await widget_page(http.base_url, client["widget_token"])
    assert "Queue Coach is in the conversation" in widget.text, "the widget page shows the coach is there"

    back = await browser.post(f"/dashboard/conversations/{conversation_id}/handback", data={"_csrf_token": token})
    assert back.status_code in (302, 303)
    assert "The AI is answering" in (await browser.get(f"/dashboard/conversations/{conversation_id}")).text
    again = await browser.post(f"/dashboard/conversations/{conversation_id}/handback", data={"_csrf_token": token})
    assert again.status_code == 409 and "not handed off" in again.text
    assert (await browser.get("/dashboard/handoffs/summary")).json()["open"] == 0


async def test_event_stream_delivers_a_new_handoff(
    browser: httpx.AsyncClient, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """The SSE stream says ``ready`` once subscribed, then relays the handoff opened by the client's "/human"
    (and the client's message) as named events with the event's JSON."""
    coach = await make_coach("Live Coach")
    client = await make_client(http, coach, "Sam")
    await log_in(browser, coach)
    events: list[tuple[str, dict[str, Any]]] = []
    async with browser.stream("GET", "/dashboard/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        kind = ""
        async with asyncio.timeout(15):
            while kind != "ready":
                line = await anext(lines)
                kind = line.removeprefix("event: ") if line.startswith("event: ") else kind
            body = await client_chat(http, client["widget_token"], "/human")
            while not any(k == "handoff" for k, _ in events):
                line = await anext(lines)
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line.removeprefix("data: "))))
    handoff = next(data for k, data in events if k == "handoff")["handoff"]
    assert handoff["conversation_id"] == body["conversation_id"]
    assert handoff["client_name"] == "Sam" and handoff["status"] == "open" and handoff["reason"] == "human_request"
    assert any(k == "message" and d["message"]["text"] == "/human" for k, d in events), events


async def test_event_stream_ends_with_the_session_that_opened_it(
    browser: httpx.AsyncClient, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """A log-out ends the session: its open stream relays nothing more and ends (it went on relaying every client
    message, handoff and crisis alert to whoever held the session, a password change elsewhere too)."""
    coach = await make_coach("Leaving Coach")
    client = await make_client(http, coach, "Sam")
    await log_in(browser, coach)
    async with browser.stream("GET", "/dashboard/events") as stream:
        lines = stream.aiter_lines()
        async with asyncio.timeout(15):
            while await anext(lines) != "event: ready":
                pass
        token = await csrf(browser, "/dashboard/settings")
        assert (await browser.post("/logout", data={"_csrf_token": token})).status_code in (302, 303)
        await client_chat(http, client["widget_token"], "/human")
        async with asyncio.timeout(15):
            rest = [line async for line in lines]
    assert not [line for line in rest if line.startswith("event: ")], rest


async def test_draft_review_on_the_conversation_page(
    browser: httpx.AsyncClient,
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    llm_api: respx.MockRouter,
) -> None:
    """Draft mode: the draft shows on the queue and the conversation page; edit-and-send sends the coach's
    text, discard sends nothing; deciding a draft decided already (in another tab) shows the conversation page
    with the reason (409), not an error document."""
    coach = await make_coach("Draft Coach")
    await http.patch(
        "/api/v1/settings",
        headers=coach.headers,
        json=MOCK_ENDPOINT_SETTINGS | {"handoff_mode": "draft"},
    )
    client = await make_client(http, coach, "Kim")
    first = await client_chat(http, client["widget_token"], "How do I plan my week?")
    assert first["handoff"]["status"] == "draft_pending"
    conversation_id = first["conversation_id"]
    await log_in(browser, coach)
    assert REPLY in (await browser.get("/dashboard/handoffs")).text, "the queue lists the pending draft"
    page = (await browser.get(f"/dashboard/conversations/{conversation_id}")).text
    draft_id = re.search(r"/dashboard/drafts/([0-9a-f-]{36})/approve", page).group(1)  # type: ignore[union-attr]
    token = CSRF.search(page).group(1)  # type: ignore[union-attr]
    approved = await browser.post(
        f"/dashboard/drafts/{draft_id}/approve", data={"text": "Pick one thing per day.", "_csrf_token": token}
    )
    assert approved.status_code in (302, 303)
    twice = await browser.post(f"/dashboard/drafts/{draft_id}/approve", data={"_csrf_token": token})
    assert twice.status_code == 409 and "already approved" in twice.text
    assert twice.headers["content-type"].startswith("text/html") and "Pick one thing per day." in twice.text

    await client_chat(http, client["widget_token"], "And my month?", conversation_id)
    page = (await browser.get(f"/dashboard/conversations/{conversation_id}")).text
    second = re.search(r"/dashboard/drafts/([0-9a-f-]{36})/discard", page).group(1)  # type: ignore[union-attr]
    discarded = await browser.post(f"/dashboard/drafts/{second}/discard", data={"_csrf_token": token})
    assert discarded.status_code in (302, 303)
    again = await browser.post(f"/dashboard/drafts/{second}/discard", data={"_csrf_token": token})  # another tab
    assert again.status_code == 409 and again.headers["content-type"].startswith("text/html")
    assert "already discarded" in again.text
    messages = (await http.get(f"/api/v1/conversations/{conversation_id}", headers=coach.headers)).json()["messages"]
    assert [(m["sender_type"], m["text"]) for m in messages] == [
        ("client", "How do I plan my week?"),
        ("human_coach", "Pick one thing per day."),
        ("client", "And my month?"),
    ]


async def test_a_multi_line_draft_approved_unchanged_from_the_form_is_the_ais_reply(
    browser: httpx.AsyncClient, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """The browser sends the draft's textarea back with CRLF line breaks: approved unchanged, the draft goes out
    as the AI's reply with its text as drafted, not as a coach's edit (which would make a training example of
    a line-ending change)."""
    coach = await make_coach("Lines Coach")
    await http.patch("/api/v1/settings", headers=coach.headers, json=MOCK_ENDPOINT_SETTINGS | {"handoff_mode": "draft"})
    client = await make_client(http, coach, "Lee")
    with mock_chat_endpoint(["Breathe out slowly.", "\n\nThen pick one small step."]):
        first = await client_chat(http, client["widget_token"], "How do I start my day?")
    [draft] = (await http.get("/api/v1/drafts", headers=coach.headers)).json()
    assert "\n" in draft["text"]
    await log_in(browser, coach)
    page = (await browser.get(f"/dashboard/conversations/{first['conversation_id']}")).text
    token = CSRF.search(page).group(1)  # type: ignore[union-attr]
    as_a_browser_sends_it = draft["text"].replace("\n", "\r\n")
    approved = await browser.post(
        f"/dashboard/drafts/{draft['id']}/approve", data={"text": as_a_browser_sends_it, "_csrf_token": token}
    )
    assert approved.status_code in (302, 303), approved.text
    conversation = await http.get(f"/api/v1/conversations/{first['conversation_id']}", headers=coach.headers)
    reply = conversation.json()["messages"][-1]
    assert (reply["sender_type"], reply["text"]) == ("ai", draft["text"])
    assert "edited" not in reply["metadata"]


HANDOFF_FORM = {
    "name": "Settings Coach",
    "persona": "Warm, brief, practical.",
    "llm_provider": "local",
    "recent_messages": "10",
    "session_idle_minutes": "30",
    "handoff_mode": "draft",
    "confidence_threshold": "0.7",
    "high_stakes_topics": "divorce\nquitting my job\n",
    "always_escalate_topics": "medication",
    "handoff_sla_minutes": "45",
    "availability_form": "1",
    "avail_timezone": "Europe/Berlin",
    "avail_days": ["0", "2", "4"],
    "avail_start": "08:30",
    "avail_end": "16:00",
    "crisis_resources": "Call 112 in an emergency.\nTelefonSeelsorge: 0800 111 0 111",
    "alert_webhook_url": "https://hooks.example.com/opencoach",
    "alert_email": "alerts@example.com",
}


async def test_settings_handoff_section_saves_and_rejects_bad_input(
    browser: httpx.AsyncClient, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Settings Coach")
    await log_in(browser, coach)
    token = await csrf(browser, "/dashboard/settings")
    saved = await browser.post("/dashboard/settings", data=HANDOFF_FORM | {"_csrf_token": token})
    assert saved.status_code == 200 and "Saved." in saved.text, saved.text
    api = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    assert api["handoff_mode"] == "draft" and api["confidence_threshold"] == 0.7
    assert api["high_stakes_topics"] == ["divorce", "quitting my job"] and api["always_escalate_topics"] == [
        "medication"
    ]
    assert api["handoff_sla_minutes"] == 45
    assert api["availability"] == {"timezone": "Europe/Berlin", "days": [0, 2, 4], "start": "08:30", "end": "16:00"}
    assert api["crisis_resources"] == ["Call 112 in an emergency.", "TelefonSeelsorge: 0800 111 0 111"]
    assert api["alert_webhook_url"] == "https://hooks.example.com/opencoach"
    # a new alert e-mail waits for its owner's confirmation (alerts go nowhere else meanwhile)
    assert api["alert_email"] is None and api["alert_email_pending"] == "alerts@example.com"
    assert "We e-mailed a confirmation link to alerts@example.com" in saved.text
    assert "alerts@example.com is not confirmed yet" in saved.text and "only to this dashboard" in saved.text
    handoff = LexborHTMLParser(saved.text).css_first('form[action="/dashboard/settings#handoff-settings"]')
    assert handoff is not None  # Enter in the handoff form saves it; "Resend the link" is its own form's
    assert [b.text(strip=True) for b in handoff.css("button[type=submit]:not([form])")] == ["Save handoff settings"]
    resent = await browser.post("/dashboard/settings/alert-email/resend", data={"_csrf_token": token})
    assert resent.status_code == 200 and "We e-mailed a confirmation link to alerts@example.com" in resent.text
    # the signing secret is shown whole by the save that made it, masked after (here and in the API)
    secret = re.search(r'<code id="webhook-secret">(whsec_[^<]+)</code>', saved.text)
    assert secret is not None, saved.text
    assert api["alert_webhook_secret"] is None and api["alert_webhook_secret_hint"] == mask_secret(secret[1])
    page = (await browser.get("/dashboard/settings")).text
    assert secret[1] not in page and mask_secret(secret[1]) in page
    # "New signing secret" is its own form's: Enter in the advanced form saves it (its first submit button)
    advanced = LexborHTMLParser(page).css_first('form[action="/dashboard/settings#advanced-settings"]')
    assert advanced is not None
    assert [b.text(strip=True) for b in advanced.css("button[type=submit]:not([form])")] == ["Save advanced settings"]
    rotated = await browser.post("/dashboard/settings/webhook-secret", data={"_csrf_token": token})
    new_secret = re.search(r'<code id="webhook-secret">(whsec_[^<]+)</code>', rotated.text)
    assert rotated.status_code == 200 and new_secret is not None and new_secret[1] != secret[1], rotated.text
    api = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    assert api["alert_webhook_secret_hint"] == mask_secret(new_secret[1])
    assert "Europe/Berlin" in page and "quitting my job" in page and 'value="draft" selected' in page

    for changes, message in [
        ({"confidence_threshold": "1.5"}, "confidence_threshold must be a number from 0 to 1"),
        ({"confidence_threshold": "high"}, "confidence_threshold must be a number from 0 to 1"),
        ({"handoff_sla_minutes": "0"}, "handoff_sla_minutes must be a whole number from 1 to 10080"),
        ({"avail_timezone": "Mars/Olympus"}, "is not an IANA time zone"),
        ({"avail_days": []}, "availability.days must be a non-empty list"),
        ({"avail_end": "07:00"}, "availability.end must be later than availability.start"),
        ({"alert_webhook_url": "ftp://example.com"}, "alert_webhook_url must start with http:// or https://"),
        ({"alert_email": "not-an-address"}, "alert_email is not an e-mail address"),
        ({"handoff_mode": "sometimes"}, "handoff_mode must be one of"),
    ]:
        bad = await browser.post(
            "/dashboard/settings",
            data=HANDOFF_FORM | {"name": "Renamed", "handoff_mode": "auto", "_csrf_token": token} | changes,
        )
        assert bad.status_code == 400 and message in bad.text, (changes, bad.status_code)
        assert (await http.get("/api/v1/settings", headers=coach.headers)).json() == api, "nothing changed"

    always = await browser.post(
        "/dashboard/settings",
        data=HANDOFF_FORM | {"always_available": "1", "alert_webhook_url": "", "_csrf_token": token},
    )
    assert always.status_code == 200
    after = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    assert after["availability"] is None and after["alert_webhook_url"] is None
    assert after["alert_webhook_secret"] is None and after["alert_webhook_secret_hint"] is None
    # no URL, no secret to make: the reason, and nothing made
    refused = await browser.post("/dashboard/settings/webhook-secret", data={"_csrf_token": token})
    message = "set alert_webhook_url first"
    assert refused.status_code == 400 and message in refused.text, refused.text
    api_refused = await http.post("/api/v1/settings/alert-webhook-secret", headers=coach.headers)
    assert api_refused.status_code == 400 and message in api_refused.text, api_refused.text
    assert (await http.get("/api/v1/settings", headers=coach.headers)).json() == after


async def test_settings_open_when_a_stored_secret_cannot_be_decrypted(
    browser: httpx.AsyncClient, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], container: Any
) -> None:
    """A provider key and a webhook secret stored under a key the server no longer has (SECRET_KEY replaced without
    the old one kept): the settings page and the API still answer, saying so, and a new secret replaces it."""
    coach = await make_coach("Lost Key")
    foreign = SecretBox(Fernet.generate_key())
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as session:
        row = await session.get(CoachRow, uuid.UUID(coach.coach_id))
        assert row is not None
        row.alert_webhook_url = "http://127.0.0.1:9/lost"  # (stored as is: nothing is sent in this test)
        row.llm_api_key_encrypted = foreign.encrypt("sk-lost-key-1234")
        row.alert_webhook_secret_encrypted = foreign.encrypt("whsec_lost")
        await session.commit()
    api = await http.get("/api/v1/settings", headers=coach.headers)
    assert api.status_code == 200, api.text
    assert api.json()["llm_api_key_set"] is True
    assert api.json()["llm_api_key_hint"] == api.json()["alert_webhook_secret_hint"] == UNREADABLE_SECRET
    await log_in(browser, coach)
    page = await browser.get("/dashboard/settings")
    assert page.status_code == 200 and UNREADABLE_SECRET.replace("'", "&#39;") in page.text, page.text[:2000]
    made = await http.post("/api/v1/settings/alert-webhook-secret", headers=coach.headers)
    assert made.status_code == 200 and made.json()["alert_webhook_secret_hint"] != UNREADABLE_SECRET


async def test_a_processing_document_shows_pages_read_and_what_is_searchable(
    browser: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], container: Any
) -> None:
    """While a book is processed the table shows pages read of the total and the chunks (and pages) that
    retrieval already uses; the API gives the same numbers."""
    coach = await make_coach("Progress")
    document = await upload(browser, coach, "book.pdf", text_pdf(3))
    document_id = uuid.UUID(document["id"])
    await set_document(
        container.sessionmaker,
        uuid.UUID(coach.coach_id),
        document_id,
        status="processing",
        pages=321,
        pages_done=120,
        chunks=200,
        pages_searchable=60,
    )
    token = await csrf(browser, "/login")
    response = await browser.post("/login", data={"email": coach.email, "password": PASSWORD, "_csrf_token": token})
    assert response.status_code in (302, 303)
    table = (await browser.get("/dashboard/documents/table")).text
    assert "page 120 / 321 read" in table
    assert "searchable: 200 chunks (pages 1–60)" in table
    api = (await browser.get(f"/api/v1/documents/{document_id}", headers=coach.headers)).json()
    assert (api["pages_done"], api["pages_searchable"], api["chunks"]) == (120, 60, 200)


async def test_a_form_whose_csrf_cookie_no_longer_verifies_gets_the_expired_page_and_a_fresh_cookie(
    browser: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """A browser still holding an ``oc_csrf`` cookie signed with another secret key (the demo restarted with a new
    key): Litestar reuses that cookie for the form, so log-in failed with a JSON 403 on every try until the
    cookies were cleared. Now the failed form gets the "This form expired" page, which deletes the stale cookie;
    the page opened again gets a fresh token and the log-in works."""
    coach = await make_coach("Coach Stale Cookie")
    host = browser.base_url.host  # as the server set it: for this host only
    browser.cookies.set("oc_csrf", "0" * 64 + "1" * 64, domain=host)  # a token and a hash made with another key
    token = await csrf(browser, "/login")
    refused = await browser.post(
        "/login",
        data={"email": coach.email, "password": PASSWORD, "_csrf_token": token},
        headers={"Accept": "text/html", "Referer": f"{browser.base_url}/login"},
    )
    assert refused.status_code == 403 and "This form expired" in refused.text
    assert 'href="/login"' in refused.text
    assert "oc_csrf" not in browser.cookies, "the stale cookie is deleted"
    await log_in(browser, coach)  # a fresh token now
    api = await browser.post("/login", data={"email": coach.email}, headers={"Accept": "application/json"})
    assert api.status_code == 403 and api.json() == {"status_code": 403, "detail": "CSRF token verification failed"}
