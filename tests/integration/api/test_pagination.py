"""The API's lists come a page at a time (keyset pagination, ``app.core.pagination``): the body holds one page,
the ``Link`` header the next page's address (RFC 8288) until the last page. Following the links gives every
row once, in the list's order, however many rows share a timestamp, and rows added meanwhile do not shift the
pages after. A bad cursor or limit is a 400 that changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.container import Container
from app.conversations.handoffs import Draft, DraftStatus
from app.conversations.models import Conversation, Message, SenderType
from app.core.pagination import MAX_PAGE_SIZE, Keyset, PageRequest, encode_cursor
from tests.conftest import Coach, make_client

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def next_link(response: httpx.Response) -> str | None:
    """The ``rel="next"`` address of the response's ``Link`` header (httpx parses RFC 8288), or ``None``."""
    return response.links.get("next", {}).get("url")


async def every_page(http: httpx.AsyncClient, coach: Coach, url: str) -> list[list[dict]]:
    """The pages of a list, following ``Link: <…>; rel="next"`` from ``url`` until a page has none."""
    pages: list[list[dict]] = []
    next_url: str | None = url
    while next_url is not None:
        response = await http.get(next_url, headers=coach.headers)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        next_url = next_link(response)
        assert len(pages) < 50, "the pages never end"
    return pages


async def add_message(
    uow: UnitOfWork, conversation_id: uuid.UUID, sender: str, text: str, at: datetime, **fields: Any
) -> Message:
    """A message stored as sent at ``at``, in no chat session: no session sweep of another test ends (and
    summarises) the long-idle sessions that dated messages would open."""
    message = Message(
        coach_id=uow.coach_id, conversation_id=conversation_id, sender_type=sender, text=text, created_at=at, **fields
    )
    uow.session.add(message)
    await uow.session.flush()
    return message


async def conversations_with_messages(
    container: Container, coach: Coach, client_id: str, times: list[datetime]
) -> list[uuid.UUID]:
    """One conversation of ``client_id`` per time, each with one client message sent at that time."""
    ids = []
    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        coach_row = await uow.coach()
        for at in times:
            conversation = Conversation(coach_id=coach_row.id, client_id=uuid.UUID(client_id), channel="api")
            uow.session.add(conversation)
            await uow.session.flush()
            await add_message(uow, conversation.id, SenderType.CLIENT, f"sent {at}", at)
            ids.append(conversation.id)
    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        for conversation_id, at in zip(ids, times, strict=True):  # the trigger keeps it; made exact here
            values = {"last_message_at": at}
            await uow.session.execute(update(Conversation).where(Conversation.id == conversation_id).values(values))
    return ids


async def test_clients_come_a_page_at_a_time_each_once_newest_first(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Pages of clients")
    made = [(await make_client(http, coach, f"Client {i}"))["id"] for i in range(7)]

    first = await http.get("/api/v1/clients?limit=3", headers=coach.headers)
    assert first.status_code == 200
    assert [c["id"] for c in first.json()] == made[::-1][:3]
    link = next_link(first)
    assert link is not None and link.startswith("/api/v1/clients?") and "limit=3" in link

    later = (await make_client(http, coach, "Written meanwhile"))["id"]  # newer: the first page's, not a later one's
    pages = [first.json(), *await every_page(http, coach, link)]
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [c["id"] for page in pages for c in page] == made[::-1]
    assert later not in {c["id"] for page in pages for c in page}
    # without a limit: one page of 50, no next page
    everything = await http.get("/api/v1/clients", headers=coach.headers)
    assert [c["id"] for c in everything.json()] == [later, *made[::-1]]
    assert next_link(everything) is None


async def test_conversations_sharing_a_timestamp_are_each_listed_once(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], container: Container
) -> None:
    coach = await make_coach("Pages of conversations")
    client = await make_client(http, coach, "Talker")
    # five conversations at the same instant, two later ones: the id breaks the ties
    times = [T0] * 5 + [T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
    ids = await conversations_with_messages(container, coach, client["id"], times)

    pages = await every_page(http, coach, "/api/v1/conversations?limit=2")
    listed = [c["id"] for page in pages for c in page]
    assert len(listed) == len(set(listed)) == 7
    assert set(listed) == {str(i) for i in ids}
    assert listed[:2] == [str(ids[6]), str(ids[5])]  # most recent first
    assert all(c["message_count"] == 1 and c["client_name"] == "Talker" for page in pages for c in page)


async def test_documents_handoffs_and_drafts_follow_their_links_to_the_end(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], container: Container
) -> None:
    coach = await make_coach("Pages of the rest")
    for i in range(3):
        note = (f"notes-{i}.txt", f"Notes on habits, part {i}.".encode())  # each file its own
        response = await http.post("/api/v1/documents", headers=coach.headers, files={"file": note})
        assert response.status_code == 202, response.text
    documents = await every_page(http, coach, "/api/v1/documents?limit=2")
    assert [len(page) for page in documents] == [2, 1]
    assert [d["title"] for page in documents for d in page] == ["Notes 2", "Notes 1", "Notes 0"]

    client = await make_client(http, coach, "Held")
    conversations = await conversations_with_messages(
        container, coach, client["id"], [T0 + timedelta(minutes=i) for i in range(3)]
    )
    for conversation_id in conversations:  # an unprompted takeover opens a handoff the coach holds
        response = await http.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=coach.headers)
        assert response.status_code == 200, response.text
    handoffs = await every_page(http, coach, "/api/v1/handoffs?status=claimed&limit=2")
    assert [len(page) for page in handoffs] == [2, 1]
    assert [h["conversation_id"] for page in handoffs for h in page] == [str(c) for c in conversations[::-1]]
    assert await every_page(http, coach, "/api/v1/handoffs?status=closed&limit=2") == [[]]

    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        for i, conversation_id in enumerate(conversations):
            message = await add_message(uow, conversation_id, SenderType.CLIENT, "draft me", T0)
            draft = Draft(
                coach_id=uow.coach_id,
                conversation_id=conversation_id,
                client_message_id=message.id,
                status=DraftStatus.PENDING,
                text=f"draft {i}",
                created_at=T0 + timedelta(minutes=i),
            )
            uow.session.add(draft)
    drafts = await every_page(http, coach, "/api/v1/drafts?status=pending&limit=2")
    assert [d["text"] for page in drafts for d in page] == ["draft 0", "draft 1", "draft 2"]  # oldest first


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("limit=0", "limit must be between 1 and 200"),
        ("limit=201", "limit must be between 1 and 200"),
        ("cursor=not-a-cursor", "cursor is not a valid cursor of this list: use the one the previous page gave"),
        # a cursor whose time has no zone (made by hand, not by a page)
        ("cursor=" + Keyset(datetime(2026, 1, 1), uuid.UUID(int=1)).encode(), "cursor is not a valid cursor"),
        # another list's cursor: the inbox's holds three values
        ("cursor=WzEsICIyMDI2LTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwgIngiXQ", "cursor is not a valid cursor"),
        # an edited time before the year 1 in UTC
        ("cursor=" + encode_cursor(["0001-01-01T00:00:00+05:00", str(uuid.UUID(int=1))]), "cursor is not a valid"),
    ],
)
@pytest.mark.parametrize("path", ["clients", "conversations", "documents", "handoffs", "drafts"])
async def test_a_bad_cursor_or_limit_is_a_400_with_a_message(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], path: str, query: str, detail: str
) -> None:
    coach = await make_coach("Bad pages")
    await make_client(http, coach, "Kept")
    response = await http.get(f"/api/v1/{path}?{query}", headers=coach.headers)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(detail)
    assert [c["name"] for c in (await http.get("/api/v1/clients", headers=coach.headers)).json()] == ["Kept"]


def test_a_cursor_goes_back_to_the_position_it_was_made_from() -> None:
    keyset = Keyset(datetime(2026, 12, 4, 17, 30, 0, 123456, tzinfo=UTC), uuid.uuid4())
    assert PageRequest.parse(keyset.encode(), 10) == PageRequest(keyset, 10)
    assert PageRequest.parse(None, None) == PageRequest(None, 50)
    assert PageRequest.parse("", 1) == PageRequest(None, 1)


async def test_a_transcript_comes_a_page_of_messages_at_a_time_oldest_first(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], container: Container
) -> None:
    """``GET /api/v1/conversations/{id}``: the conversation with one page of its messages from the first on, the
    rest at its ``Link`` header; another coach's conversation is a 404, a bad cursor a 400."""
    coach = await make_coach("Transcript pages")
    client = await make_client(http, coach, "Long talker")
    times = [T0 + timedelta(minutes=i) for i in range(5)]
    [conversation_id] = await conversations_with_messages(container, coach, client["id"], times[:1])
    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        for at in times[1:]:
            await add_message(uow, conversation_id, SenderType.AI, f"reply {at}", at)
    url = f"/api/v1/conversations/{conversation_id}"

    pages: list[dict] = []
    next_url: str | None = f"{url}?limit=2"
    while next_url is not None:
        response = await http.get(next_url, headers=coach.headers)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        next_url = next_link(response)
    assert [len(page["messages"]) for page in pages] == [2, 2, 1]
    assert {page["id"] for page in pages} == {str(conversation_id)} and pages[0]["client_id"] == client["id"]
    texts = [m["text"] for page in pages for m in page["messages"]]
    assert texts == [f"sent {T0}"] + [f"reply {at}" for at in times[1:]]
    whole = await http.get(url, headers=coach.headers)
    assert [m["text"] for m in whole.json()["messages"]] == texts and next_link(whole) is None

    other = await make_coach("Not theirs")
    assert (await http.get(url, headers=other.headers)).status_code == 404
    bad = await http.get(f"{url}?cursor=not-a-cursor", headers=coach.headers)
    assert bad.status_code == 400 and bad.json()["detail"].startswith("cursor is not a valid cursor")


async def test_the_widget_history_pages_back_through_the_clients_own_conversation_only(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], container: Container
) -> None:
    coach = await make_coach("Widget history")
    own, other = await make_client(http, coach, "Own"), await make_client(http, coach, "Other")
    times = [T0 + timedelta(minutes=i) for i in range(3)]
    [conversation_id] = await conversations_with_messages(container, coach, own["id"], [T0])
    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        for at in times[1:]:
            await add_message(uow, conversation_id, SenderType.AI, f"reply {at}", at)
    mine = {"Authorization": f"Bearer {own['widget_token']}"}
    url = f"/api/v1/widget/conversations/{conversation_id}/history?limit=2"

    first = await http.get(url, headers=mine)
    assert first.status_code == 200
    assert [m["text"] for m in first.json()] == [f"reply {times[2]}", f"reply {times[1]}"]  # newest first
    rest = await http.get(next_link(first) or "", headers=mine)
    assert [m["text"] for m in rest.json()] == [f"sent {T0}"] and next_link(rest) is None

    theirs = await http.get(url, headers={"Authorization": f"Bearer {other['widget_token']}"})
    assert theirs.status_code == 404 and theirs.json()["detail"] == "conversation not found"
    bad = await http.get(f"{url}&cursor=x", headers=mine)
    assert bad.status_code == 400 and bad.json()["detail"].startswith("cursor is not a valid cursor")
    malformed = await http.get("/api/v1/widget/conversations/not-an-id/history", headers=mine)
    assert malformed.status_code == 400


async def test_the_widget_catch_up_comes_at_most_a_page_at_a_time_after_the_last_message_shown(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], container: Container
) -> None:
    """``GET /api/v1/widget/conversations/{id}/messages`` (the widget's catch-up after a reconnect) returns at
    most ``MAX_PAGE_SIZE`` messages, oldest first; the ``Link`` header asks for those after the last one, so
    following it gives every message once, with or without a starting ``after``."""
    coach = await make_coach("Catch-up pages")
    own = await make_client(http, coach, "Away a while")
    [conversation_id] = await conversations_with_messages(container, coach, own["id"], [T0])
    times = [T0 + timedelta(seconds=i) for i in range(1, MAX_PAGE_SIZE + 31)]
    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        for i, at in enumerate(times):
            await add_message(uow, conversation_id, SenderType.AI, f"{i}", at)
    mine = {"Authorization": f"Bearer {own['widget_token']}"}
    url = f"/api/v1/widget/conversations/{conversation_id}/messages"

    async def follow(start: str) -> list[list[dict]]:
        pages, next_url = [], start
        while next_url is not None:
            response = await http.get(next_url, headers=mine)
            assert response.status_code == 200, response.text
            pages.append(response.json())
            next_url = next_link(response)
            assert len(pages) < 10, "the pages never end"
        return pages

    from_start = await follow(url)
    assert [len(page) for page in from_start] == [MAX_PAGE_SIZE, 31]
    texts = [m["text"] for page in from_start for m in page]
    assert texts == [f"sent {T0}"] + [f"{i}" for i in range(len(times))]
    after_first = await follow(f"{url}?after={from_start[0][0]['id']}")
    assert [len(page) for page in after_first] == [MAX_PAGE_SIZE, 30]
    assert [m["text"] for page in after_first for m in page] == texts[1:]
    last = from_start[-1][-1]["id"]
    caught_up = await http.get(url, params={"after": last}, headers=mine)
    assert caught_up.json() == [] and next_link(caught_up) is None
