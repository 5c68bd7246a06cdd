"""Issue 17's bugs that show over plain HTTP: the learning export link works with the dashboard session, an
ended session says "summary pending" / "summary failed" to the client and the coach, and 404s of the dashboard
and the widget are pages, not JSON (the API keeps its JSON)."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator

import docx
import httpx
import pytest
import respx
from sqlalchemy import update

from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.conversations.metadata import client_citations
from app.handoff.catalogue import widget_texts
from app.rag.models import Document
from app.rag.passages import current_citations
from tests.conftest import Coach, make_client, upload, widget_page
from tests.integration.web.test_dashboard import browser, client_chat, log_in
from tests.openai_wire import MOCK_ENDPOINT_SETTINGS, mock_chat_endpoint

__all__ = ["browser"]  # fixture used by name below
HTML = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture
def llm_api() -> Iterator[respx.MockRouter]:
    """The coach's endpoint, mocked: its reply cites the first three passages by number, as the prompt asks."""
    with mock_chat_endpoint(["Try", " a", " walk", " [1][2][3]", "."], (40, 4)) as router:
        yield router


async def test_learning_export_link_works_with_the_dashboard_session(
    browser: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Export Coach")
    await log_in(browser, coach)
    page = (await browser.get("/dashboard/learning")).text
    assert "/api/v1/learning/export" not in page, "the page links to a route that needs an API key"
    assert "/dashboard/learning/export?format=sft" in page
    for kind in ("sft", "preference"):
        response = await browser.get(f"/dashboard/learning/export?format={kind}&split=all")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/jsonl")
        assert f'filename="opencoach-{kind}-all.jsonl"' in response.headers["content-disposition"]
    bad = await browser.get("/dashboard/learning/export?format=csv")
    assert bad.status_code == 400 and "format" in bad.json()["detail"]
    async with httpx.AsyncClient(base_url=str(browser.base_url)) as anonymous:
        refused = await anonymous.get("/dashboard/learning/export")
        assert refused.status_code in (302, 303) and refused.headers["location"] == "/login"


async def test_an_ended_session_says_summary_pending_then_failed(
    browser: httpx.AsyncClient,
    http: httpx.AsyncClient,
    container: Container,
    make_coach: Callable[..., Awaitable[Coach]],
    llm_api: respx.MockRouter,
) -> None:
    coach = await make_coach("Summary Coach")
    assert (await http.patch("/api/v1/settings", headers=coach.headers, json=MOCK_ENDPOINT_SETTINGS)).status_code == 200
    client = await make_client(http, coach, "Noor")
    auth = {"Authorization": f"Bearer {client['widget_token']}"}
    turn = await client_chat(http, client["widget_token"], "How do I sleep better?")
    ended = await http.post(f"/api/v1/widget/conversations/{turn['conversation_id']}/end-session", headers=auth)
    session_id = ended.json()["session_id"]
    assert session_id, ended.text

    status = await http.get(f"/api/v1/widget/sessions/{session_id}", headers=auth)
    assert status.status_code == 200 and status.json()["status"] == "pending", status.text
    assert set(status.json()) == {"id", "status"}, "no error, no internal fields"
    await log_in(browser, coach)
    client_page = await browser.get(f"/dashboard/clients/{client['id']}")
    assert "Summary pending" in client_page.text

    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        await container.summaries.fail_summary(uow, uuid.UUID(session_id), "APIConnectionError: endpoint down")
    status = await http.get(f"/api/v1/widget/sessions/{session_id}", headers=auth)
    assert status.json()["status"] == "failed"
    assert "APIConnectionError" not in status.text, "the reason (it may name the coach's provider) is the coach's"
    client_page = await browser.get(f"/dashboard/clients/{client['id']}")
    assert "Summary failed: APIConnectionError: endpoint down" in client_page.text

    # another client, a malformed id, an unknown id: clear errors
    other = await make_client(http, coach, "Sam")
    foreign = await http.get(
        f"/api/v1/widget/sessions/{session_id}", headers={"Authorization": f"Bearer {other['widget_token']}"}
    )
    assert foreign.status_code == 404 and foreign.json()["detail"] == "session not found"
    assert (await http.get("/api/v1/widget/sessions/not-a-uuid", headers=auth)).status_code == 400
    assert (await http.get(f"/api/v1/widget/sessions/{uuid.uuid4()}", headers=auth)).status_code == 404


async def test_not_found_pages_are_html_for_people_and_json_for_the_api(
    browser: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    for path, back in (("/dashboard/no-such-page", "/dashboard/conversations"), ("/w/x/y/z", "/w/chat")):
        response = await browser.get(path, headers=HTML)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/html"), path
        assert "Page not found" in response.text and f'href="{back}"' in response.text, path
    coach = await make_coach("Missing Coach")
    await log_in(browser, coach)
    missing = await browser.get(f"/dashboard/clients/{uuid.uuid4()}", headers=HTML)
    assert missing.status_code == 404 and "Page not found" in missing.text
    assert "client not found" in missing.text
    # the API, fetch calls and htmx fragments keep the JSON body
    api = await browser.get("/api/v1/no-such-route", headers=HTML)
    assert api.status_code == 404 and json.loads(api.text)["status_code"] == 404
    fetched = await browser.get(f"/dashboard/clients/{uuid.uuid4()}")
    assert fetched.status_code == 404 and fetched.json()["detail"] == "client not found"
    fragment = await browser.get("/dashboard/no-such-page", headers=HTML | {"HX-Request": "true"})
    assert fragment.status_code == 404 and fragment.json()["status_code"] == 404


ICON_LINK = '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'


async def test_the_dashboard_and_widget_pages_have_a_site_icon(
    http: httpx.AsyncClient, browser: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """Browsers asked for /favicon.ico on every dashboard and widget page and got a 404. The pages link an SVG
    icon, and /favicon.ico (asked for where a page names none) is one too."""
    ico = await http.get("/favicon.ico")
    assert ico.status_code == 200 and ico.headers["content-type"] == "image/vnd.microsoft.icon"
    assert ico.content.startswith(b"\x00\x00\x01\x00") and "max-age=" in ico.headers["cache-control"]
    svg = await http.get("/static/favicon.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.startswith("<svg")

    coach = await make_coach("Icon Coach")
    token = (await make_client(http, coach))["widget_token"]
    pages = [await browser.get("/login"), await browser.get("/dashboard/no-such-page", headers=HTML)]
    await log_in(browser, coach)
    pages += [await browser.get("/dashboard/inbox"), await browser.get("/w/not-a-valid-token")]
    async with httpx.AsyncClient(base_url=http.base_url, follow_redirects=True, timeout=60) as widget:
        opened = [await widget.get(path) for path in (f"/w/{token}", "/w/memory", "/w/tone")]
    assert [page.status_code for page in opened] == [200, 200, 200]
    pages += opened
    for page in pages:
        assert page.headers["content-type"].startswith("text/html"), page.url
        assert ICON_LINK in page.text, page.url


TIPS = (
    "start your morning routine with one glass of water",
    "write down the single most important task of the morning",
    "walk outside for five minutes before looking at a screen",
    "put the phone in another room in the evening",
    "read a paper book for twenty minutes before sleep",
)
NOTES = " ".join(f"Routine tip number {n}: {TIPS[n % len(TIPS)]}, day {n // len(TIPS) + 1}." for n in range(300))


async def test_the_client_opens_the_passage_of_a_citation(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    llm_api: respx.MockRouter,
    container: Container,
) -> None:
    coach = await make_coach("Passage Coach")
    document = await upload(http, coach, "routines.txt", NOTES.encode())
    await run_jobs()
    ready = await http.get(f"/api/v1/documents/{document['id']}", headers=coach.headers)
    assert ready.json()["status"] == "ready", ready.text
    settings = MOCK_ENDPOINT_SETTINGS | {"response_cache_ttl_seconds": 0}
    assert (await http.patch("/api/v1/settings", headers=coach.headers, json=settings)).status_code == 200
    client = await make_client(http, coach, "Ivo")
    auth = {"Authorization": f"Bearer {client['widget_token']}"}
    turn = await client_chat(http, client["widget_token"], "What should my morning routine look like?")
    assert turn["citations"], turn
    cited = turn["citations"][0]

    passage = await http.get(f"/api/v1/widget/passages/{cited['chunk_id']}", headers=auth)
    assert passage.status_code == 200, passage.text
    body = passage.json()
    assert body["title"] == cited["title"] and body["chunk_id"] == cited["chunk_id"]
    assert "Routine tip number" in body["text"]
    assert body["after"] and body["after"] not in body["text"], "the sentences after it, not the overlap again"

    # another client of the same coach was not shown it; a chunk id nobody cited; a malformed id
    other = await make_client(http, coach, "Eli")
    foreign = await http.get(
        f"/api/v1/widget/passages/{cited['chunk_id']}", headers={"Authorization": f"Bearer {other['widget_token']}"}
    )
    assert foreign.status_code == 404 and foreign.json()["detail"] == "passage not found"
    assert (await http.get(f"/api/v1/widget/passages/{uuid.uuid4()}", headers=auth)).status_code == 404
    assert (await http.get("/api/v1/widget/passages/nope", headers=auth)).status_code == 400

    # the file processed again, twice: the citation opens its passage in the copy that replaced the document
    for _ in range(2):
        again = await http.post(f"/api/v1/documents/{document['id']}/reprocess", headers=coach.headers)
        assert again.status_code == 202, again.text
        document = again.json()
        await run_jobs()
    reopened = await http.get(f"/api/v1/widget/passages/{cited['chunk_id']}", headers=auth)
    assert reopened.status_code == 200, reopened.text
    assert reopened.json() == body, "the same passage, under the id the client was shown"

    # processed again by an extraction that reads more of the file (a foreword first: every chunk boundary moves),
    # the citation opens the copy's chunk whose text is most like the cited one
    copy = (await http.post(f"/api/v1/documents/{document['id']}/reprocess", headers=coach.headers)).json()
    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        foreword = " ".join(f"A foreword line, {n}." for n in range(30))
        data = f"{foreword}\n\n{NOTES}".encode()
        await uow.session.execute(update(Document).where(Document.id == uuid.UUID(copy["id"])).values(original=data))
    await run_jobs()
    moved = (await http.get(f"/api/v1/widget/passages/{cited['chunk_id']}", headers=auth)).json()
    middle = [tip for tip in body["text"].split(". ") if tip.startswith("Routine tip")][2]
    assert moved["text"] != body["text"] and middle in moved["text"], (middle, moved["text"])


def _routines_docx(title: str = "", foreword: bool = False) -> bytes:
    """:data:`NOTES` as a Word document, 30 sentences a page; ``title`` in its core properties; ``foreword``: a
    page of other text first (every page of the notes one later)."""
    document = docx.Document()
    document.core_properties.title = title
    pages = [" ".join(f"A foreword line, {n}." for n in range(30))] if foreword else []
    sentences = [f"{sentence}." for sentence in NOTES.removesuffix(".").split(". ")]
    pages += [" ".join(sentences[start : start + 30]) for start in range(0, len(sentences), 30)]
    for number, text in enumerate(pages):
        if number:
            document.add_page_break()
        document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


async def test_passages_of_one_source_are_cited_to_the_client_once_with_the_replys_markers(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    llm_api: respx.MockRouter,
    base_url: str,
) -> None:
    """A reply citing several passages of one unpaged file showed its label once per passage ("routines",
    "routines", …). The client sees it once, led by every marker of the reply it stands for ("[1, 2, 3]"), in the
    turn's answer, the widget's reads and its page; the coach's transcript still lists each passage."""
    coach = await make_coach("Citing Coach")
    await upload(http, coach, "routines.txt", NOTES.encode())
    await run_jobs()
    settings = MOCK_ENDPOINT_SETTINGS | {"response_cache_ttl_seconds": 0}
    assert (await http.patch("/api/v1/settings", headers=coach.headers, json=settings)).status_code == 200
    client = await make_client(http, coach, "Ivo")
    auth = {"Authorization": f"Bearer {client['widget_token']}"}
    turn = await client_chat(http, client["widget_token"], "What should my morning routine look like?")
    listed = await _listed_citations(http, coach, auth, turn["conversation_id"])  # the widget reads: as the turn's
    passages = listed["api"]
    assert len(passages) >= 2 and len({(c["title"], c["page"]) for c in passages}) == 1, passages
    numbers = list(range(1, len(passages) + 1))
    assert [(c["chunk_id"], c["markers"]) for c in turn["citations"]] == [(passages[0]["chunk_id"], numbers)]
    assert listed["history"] == turn["citations"]
    page = (await widget_page(base_url, client["widget_token"])).text
    label = f"[{', '.join(map(str, numbers))}] {passages[0]['title']}"
    assert page.count(f">{label}</li>") == 1 and page.count(f">{passages[0]['title']}</li>") == 0, label


async def _listed_citations(http: httpx.AsyncClient, coach: Coach, auth: dict[str, str], conversation: str) -> dict:
    """The AI reply's citations as each listing shows them: ``{"api", "history", "messages"}`` (the coach's
    transcript API: every passage; the widget's history and catch-up reads: the client's view of them, one per
    source, :func:`client_citations`, which this checks)."""
    transcript = await http.get(f"/api/v1/conversations/{conversation}", headers=coach.headers)
    history = await http.get(f"/api/v1/widget/conversations/{conversation}/history", headers=auth)
    caught_up = await http.get(f"/api/v1/widget/conversations/{conversation}/messages", headers=auth)
    listings = {"api": transcript.json()["messages"], "history": history.json(), "messages": caught_up.json()}
    cited = {name: next(m for m in found if m["sender_type"] == "ai")["citations"] for name, found in listings.items()}
    assert cited["history"] == cited["messages"] == client_citations(cited["api"]), cited
    return cited


async def test_a_transcript_lists_a_citation_where_its_passage_is_now(
    http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    llm_api: respx.MockRouter,
    container: Container,
    base_url: str,
) -> None:
    """A document processed again by an extraction that reads a foreword page and the file's title: the
    citations of a reply stored before are listed (coach's API, widget reads, widget page, dashboard transcript)
    with the copy's title and the page the passage they open is on now; once the copy is deleted too, as
    stored."""
    coach = await make_coach("Transcript Coach")
    document = await upload(http, coach, "routines.docx", _routines_docx())
    await run_jobs()
    settings = MOCK_ENDPOINT_SETTINGS | {"response_cache_ttl_seconds": 0}
    assert (await http.patch("/api/v1/settings", headers=coach.headers, json=settings)).status_code == 200
    client = await make_client(http, coach, "Ivo")
    auth = {"Authorization": f"Bearer {client['widget_token']}"}
    turn = await client_chat(http, client["widget_token"], "What should my morning routine look like?")
    conversation = turn["conversation_id"]
    stored = (await _listed_citations(http, coach, auth, conversation))["api"]  # every passage cited
    assert turn["citations"] == client_citations(stored), turn
    assert stored and all(c["title"] == "Routines" and c["page"] for c in stored), stored

    copy = (await http.post(f"/api/v1/documents/{document['id']}/reprocess", headers=coach.headers)).json()
    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        data = _routines_docx("Morning Routines", foreword=True)
        await uow.session.execute(update(Document).where(Document.id == uuid.UUID(copy["id"])).values(original=data))
    await run_jobs()
    now = []
    for cited in stored:
        passage = await http.get(f"/api/v1/widget/passages/{cited['chunk_id']}", headers=auth)
        assert passage.status_code == 200, passage.text
        now.append({"title": passage.json()["title"], "page": passage.json()["page"]})
    assert now[0] == {"title": "Morning Routines", "page": stored[0]["page"] + 1}, (stored[0], now[0])
    listed = (await _listed_citations(http, coach, auth, conversation))["api"]
    assert [c["chunk_id"] for c in listed] == [c["chunk_id"] for c in stored]  # the ids shown, as stored
    assert [{"title": c["title"], "page": c["page"]} for c in listed] == now
    assert {c["document_id"] for c in listed} == {copy["id"]}
    shown = f"Morning Routines, p. {now[0]['page']}"
    assert shown in (await widget_page(base_url, client["widget_token"])).text
    await log_in(browser, coach)
    assert shown in (await browser.get(f"/dashboard/conversations/{conversation}")).text

    # the copy deleted too: the passages are gone, the citations are listed as they were stored
    assert (await http.delete(f"/api/v1/documents/{copy['id']}", headers=coach.headers)).status_code == 204
    listed = (await _listed_citations(http, coach, auth, conversation))["api"]
    assert [{key: c[key] for key in ("document_id", "title", "page", "chunk_id")} for c in listed] == [
        {key: c[key] for key in ("document_id", "title", "page", "chunk_id")} for c in stored
    ]
    page = (await widget_page(base_url, client["widget_token"])).text
    assert f"Routines, p. {stored[0]['page']}" in page and "Morning Routines" not in page
    # opening one says so in the client's language (the widget shows the catalogue's text for the refusal's code;
    # it showed the English "passage not found" to every client)
    gone = await http.get(f"/api/v1/widget/passages/{stored[0]['chunk_id']}", headers=auth)
    assert gone.status_code == 404 and gone.json()["code"] == "passage_gone", gone.text
    assert widget_texts("de")["refused_passage_gone"] == "Diese Textstelle ist nicht mehr verfügbar."
    # a citation without a chunk id, with one that is no UUID, or that is no object is listed as stored (as is a
    # stored value that is no list)
    odd = [{"title": "Notes", "page": 2, "chunk_id": "c1"}, {"title": "Notes", "page": 3}, "x", None, 3]
    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        listed = [odd, [], stored, {"chunk_id": stored[0]["chunk_id"]}]
        assert await current_citations(uow.session, listed) == listed
