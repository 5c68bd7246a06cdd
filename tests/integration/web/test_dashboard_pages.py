"""The dashboard's long lists come a page at a time (keyset pagination): the clients and the documents pages
show the newest rows with an "Older …" link to the next page, and a name search runs in the database, its
``%`` and ``_`` taken literally."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
from sqlalchemy import text

from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.conversations.handoffs import Draft
from app.conversations.models import SenderType
from app.core.pagination import EVERY_ROW, Keyset, PageRequest
from tests.conftest import Coach, make_client
from tests.integration.api.test_pagination import T0, add_message, conversations_with_messages
from tests.integration.web.test_dashboard import browser, csrf, log_in, sign_up

__all__ = ["browser"]  # the fixture, imported for the tests here

OLDER_CLIENTS = re.compile(r'<a href="(/dashboard/clients\?[^"]+)" rel="next">Older clients</a>')
OLDER_DOCUMENTS = re.compile(r'<a href="(/dashboard/documents\?[^"]+)" rel="next">Older documents</a>')
CLIENT_NAME = re.compile(r'<a href="/dashboard/clients/[0-9a-f-]+">([^<]+)</a>')
MESSAGE = re.compile(r'<div class="text">([^<]*)</div>')
DOCUMENT_TITLE = re.compile(r"<td><strong>([^<]+)</strong>")


def older_link(response: httpx.Response, older: re.Pattern[str]) -> str:
    """The page's "Older …" link."""
    link = older.search(response.text)
    assert link is not None, "no link to older rows"
    return html.unescape(link.group(1))


async def pages(browser: httpx.AsyncClient, url: str, older: re.Pattern[str], rows: re.Pattern[str]) -> list[list[str]]:
    """Each page's rows, following the "Older …" links from ``url`` until a page has none."""
    found: list[list[str]] = []
    next_url: str | None = url
    while next_url is not None:
        response = await browser.get(next_url)
        assert response.status_code == 200, response.text
        found.append([html.unescape(name) for name in rows.findall(response.text)])
        next_url = older_link(response, older) if older.search(response.text) else None
        assert len(found) < 20, "the pages never end"
    return found


async def test_the_clients_page_lists_every_client_once_a_page_at_a_time(
    browser: httpx.AsyncClient, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    other = await make_coach("Other Coach")
    await make_client(http, other, "Eve of another coach")  # never found by this coach's search
    await sign_up(browser)
    token = await csrf(browser, "/dashboard/clients")
    names = ["Ada", "Ben 100%", "Cleo", "Dan_1", "Eve"]
    for name in names:
        created = await browser.post("/dashboard/clients", data={"name": name, "_csrf_token": token})
        assert created.status_code in (302, 303)

    listed = await pages(browser, "/dashboard/clients?limit=2", OLDER_CLIENTS, CLIENT_NAME)
    assert listed == [["Eve", "Dan_1"], ["Cleo", "Ben 100%"], ["Ada"]]
    first = await browser.get("/dashboard/clients?limit=2")
    assert "Newest clients" not in first.text
    second = await browser.get(older_link(first, OLDER_CLIENTS))
    assert "Newest clients" in second.text and "limit=2" in older_link(second, OLDER_CLIENTS)

    # the search is a literal, case-insensitive substring, paged too
    assert await pages(browser, "/dashboard/clients?q=%25&limit=1", OLDER_CLIENTS, CLIENT_NAME) == [["Ben 100%"]]
    assert await pages(browser, "/dashboard/clients?q=_", OLDER_CLIENTS, CLIENT_NAME) == [["Dan_1"]]
    assert await pages(browser, "/dashboard/clients?q=E&limit=1", OLDER_CLIENTS, CLIENT_NAME) == [
        ["Eve"],
        ["Cleo"],
        ["Ben 100%"],
    ]

    bad = await browser.get("/dashboard/clients?cursor=edited")
    assert bad.status_code == 400 and "cursor is not a valid cursor" in bad.text


async def test_the_name_search_pages_either_way_and_every_row_through_the_database_function(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], container: Container
) -> None:
    """``client_search()`` (migration 0036) returns the page itself: oldest first as newest first, from a
    cursor, and every match for an unlimited page, each match once."""
    coach = await make_coach("Searching Coach")
    for name in ("Mia", "Noah", "Amira", "Liam", "Samir"):
        await make_client(http, coach, name)

    async def names(page: PageRequest, *, oldest_first: bool) -> tuple[list[str], Keyset | None]:
        async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
            found = await container.accounts.list_clients(uow, page, name_contains="MI", oldest_first=oldest_first)
        return [client.name for client in found.items], found.next

    first, position = await names(PageRequest(limit=2), oldest_first=True)
    assert first == ["Mia", "Amira"] and position is not None
    assert await names(PageRequest(position, 2), oldest_first=True) == (["Samir"], None)
    first, position = await names(PageRequest(limit=2), oldest_first=False)
    assert first == ["Samir", "Amira"] and position is not None
    assert await names(PageRequest(position, 2), oldest_first=False) == (["Mia"], None)
    assert await names(EVERY_ROW, oldest_first=False) == (["Samir", "Amira", "Mia"], None)


async def test_the_documents_page_and_its_live_table_keep_their_page(browser: httpx.AsyncClient) -> None:
    await sign_up(browser)
    token = await csrf(browser, "/dashboard/documents")
    for i in range(3):
        note = (f"week-{i}.txt", f"Notes {i}.".encode())  # each file its own: the same one twice is refused
        uploaded = await browser.post("/dashboard/documents", data={"_csrf_token": token}, files={"file": note})
        assert uploaded.status_code in (302, 303), uploaded.text

    listed = await pages(browser, "/dashboard/documents?limit=2", OLDER_DOCUMENTS, DOCUMENT_TITLE)
    assert listed == [["Week 2", "Week 1"], ["Week 0"]]
    second = await browser.get(older_link(await browser.get("/dashboard/documents?limit=2"), OLDER_DOCUMENTS))
    # the table polls for its own page (the documents are still queued: no worker runs here)
    poll = re.search(r'hx-get="([^"]+)"', second.text)
    assert poll is not None and "cursor=" in poll.group(1)
    table = await browser.get(html.unescape(poll.group(1)))
    assert DOCUMENT_TITLE.findall(table.text) == ["Week 0"]


async def test_the_handoff_queue_names_each_drafts_client_and_the_badge_counts(
    browser: httpx.AsyncClient,
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
) -> None:
    coach = await make_coach("Queue counts")
    await log_in(browser, coach)
    ids = []
    for name in ("Noor", "Oskar", "Pia"):
        client = await make_client(http, coach, name)
        [conversation_id] = await conversations_with_messages(container, coach, client["id"], [T0])
        ids.append(conversation_id)
    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        for conversation_id in ids[:2]:  # a draft for Noor's and Oskar's last message
            message_id = await uow.session.scalar(
                text("SELECT id FROM messages WHERE conversation_id = :c"), {"c": conversation_id}
            )
            uow.session.add(
                Draft(coach_id=uow.coach_id, conversation_id=conversation_id, client_message_id=message_id, text="Hi")
            )
    taken = await http.post(f"/api/v1/conversations/{ids[2]}/takeover", headers=coach.headers)
    assert taken.status_code == 200, taken.text

    summary = (await browser.get("/dashboard/handoffs/summary")).json()
    assert (summary["open"], summary["claimed"], summary["drafts"]) == (0, 1, 2)
    queue = (await browser.get("/dashboard/handoffs")).text
    drafts = queue[queue.index("Drafts to review") :]
    assert "Noor" in drafts and "Oskar" in drafts and "Pia" not in drafts


async def test_a_long_transcript_opens_on_its_end_and_pages_back_with_its_drafts(
    browser: httpx.AsyncClient,
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
) -> None:
    coach = await make_coach("Long transcript")
    await log_in(browser, coach)
    client = await make_client(http, coach, "Lena")
    times = [T0 + timedelta(minutes=n) for n in range(60)]
    [conversation_id] = await conversations_with_messages(container, coach, client["id"], times[:1])
    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        stored = [
            await add_message(uow, conversation_id, SenderType.CLIENT, f"m{n}", at)
            for n, at in enumerate(times[1:], start=1)
        ]
        uow.session.add(  # a pending draft answering an old message: shown under it, on its page
            Draft(
                coach_id=uow.coach_id, conversation_id=conversation_id, client_message_id=stored[2].id, text="Old draft"
            )
        )

    pane = (await browser.get(f"/dashboard/conversations/{conversation_id}")).text
    assert MESSAGE.findall(pane) == [f"m{n}" for n in range(10, 60)]
    link = re.search(r'hx-get="(/dashboard/conversations/[^"]+/earlier\?[^"]+)"', pane)
    assert link is not None and "Old draft" not in pane
    fragment = await browser.get(html.unescape(link.group(1)), headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and fragment.text.startswith('<div id="earlier-page">')
    assert MESSAGE.findall(fragment.text)[1:] == [f"m{n}" for n in range(1, 10)]  # the first is "sent …"
    assert "Old draft" in fragment.text and "earlier?" not in fragment.text  # the first page: no link
    # without JavaScript the link opens a page of its own
    page = await browser.get(html.unescape(link.group(1)))
    assert page.status_code == 200 and "Lena: earlier messages" in page.text and "Back to the conversation" in page.text

    bad = await browser.get(f"/dashboard/conversations/{conversation_id}/earlier?cursor=edited")
    assert bad.status_code == 400
    stranger = await make_coach("Stranger")
    other = httpx.AsyncClient(base_url=str(browser.base_url))
    async with other:
        await log_in(other, stranger)
        assert (await other.get(html.unescape(link.group(1)))).status_code == 404
