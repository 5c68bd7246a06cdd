"""The coach's inbox (issue 17): every conversation with its state, last message, unread count and channel,
filters and search, through the API (``GET /api/v1/inbox``) and the dashboard (``/dashboard/inbox``), and
the handoff history on the queue page. The app, PostgreSQL and Redis are real; the coach's model is mocked."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.runtime import Services
from tests.conftest import Coach, make_client
from tests.integration.web.test_dashboard import browser, client_chat, csrf, log_in
from tests.openai_wire import MOCK_ENDPOINT_SETTINGS, mock_chat_endpoint

__all__ = ["browser"]  # fixture used by name
DELTAS = ["Small", " steps", " each", " day", "."]
REPLY = "".join(DELTAS)
CRISIS = "I want to end my life tonight"


@pytest.fixture
def llm_api() -> Iterator[respx.MockRouter]:
    """The coach's endpoint, mocked (see :func:`tests.openai_wire.mock_chat_endpoint`)."""
    with mock_chat_endpoint(DELTAS, (50, 5)) as router:
        yield router


async def inbox(http: httpx.AsyncClient, coach: Coach, **params: Any) -> list[dict[str, Any]]:
    response = await http.get("/api/v1/inbox", headers=coach.headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def new_coach(http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], **settings: Any) -> Coach:
    coach = await make_coach("Inbox Coach")
    changed = await http.patch("/api/v1/settings", headers=coach.headers, json=MOCK_ENDPOINT_SETTINGS | settings)
    assert changed.status_code == 200, changed.text
    return coach


async def talk(http: httpx.AsyncClient, coach: Coach, name: str, message: str) -> str:
    """A new client ``name`` writes ``message``; returns the conversation id."""
    client = await make_client(http, coach, name)
    return str((await client_chat(http, client["widget_token"], message))["conversation_id"])


async def set_channel(services: Services, conversation_id: str, channel: str) -> None:
    engine = create_async_engine(services.migration_database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE conversations SET channel = :ch WHERE id = :c"),
                {"ch": channel, "c": uuid.UUID(conversation_id)},
            )
    finally:
        await engine.dispose()


async def test_each_conversation_shows_who_has_to_act_its_last_message_and_channel(
    http: httpx.AsyncClient,
    services: Services,
    make_coach: Callable[..., Awaitable[Coach]],
    llm_api: respx.MockRouter,
) -> None:
    """States: crisis (open crisis handoff), waiting (open handoff), you (taken over), draft (pending draft),
    ai; the ones needing the coach first; the last message previewed; web or telegram."""
    coach = await new_coach(http, make_coach)
    ai = await talk(http, coach, "Ana", "How do I start my mornings?")
    waiting = await talk(http, coach, "Ben", "Can I talk to a real person please?")
    crisis = await talk(http, coach, "Cy", CRISIS)
    yours = await talk(http, coach, "Dee", "How do I keep a journal?")
    taken = await http.post(f"/api/v1/conversations/{yours}/takeover", headers=coach.headers)
    assert taken.status_code == 200, taken.text
    sent = await http.post(
        f"/api/v1/conversations/{yours}/messages", headers=coach.headers, json={"text": "Hi Dee, it's me."}
    )
    assert sent.status_code == 201, sent.text
    await set_channel(services, yours, "telegram")
    assert (await http.patch("/api/v1/settings", headers=coach.headers, json={"handoff_mode": "draft"})).is_success
    draft = await talk(http, coach, "Eve", "How do I plan my week?")

    rows = await inbox(http, coach)
    by_id = {row["conversation_id"]: row for row in rows}
    states = {cid: by_id[cid]["state"] for cid in (ai, waiting, crisis, yours, draft)}
    assert states == {ai: "ai", waiting: "waiting", crisis: "crisis", yours: "you", draft: "draft"}
    assert [row["state"] for row in rows][:3] == ["crisis", "waiting", "draft"], "the ones needing the coach first"
    assert by_id[crisis]["state_label"] == "Crisis" and by_id[waiting]["state_label"] == "Waiting for you"
    assert (by_id[ai]["last_sender"], by_id[ai]["last_text"]) == ("ai", REPLY)
    assert (by_id[yours]["last_sender"], by_id[yours]["last_text"]) == ("human_coach", "Hi Dee, it's me.")
    assert (by_id[draft]["last_sender"], by_id[draft]["last_text"]) == ("client", "How do I plan my week?")
    assert by_id[ai]["client_name"] == "Ana"
    assert {cid: row["channel"] for cid, row in by_id.items()} == {
        ai: "web",
        waiting: "web",
        crisis: "web",
        yours: "telegram",
        draft: "web",
    }

    assert [r["conversation_id"] for r in await inbox(http, coach, channel="telegram")] == [yours]
    assert yours not in {r["conversation_id"] for r in await inbox(http, coach, channel="web")}
    assert [r["conversation_id"] for r in await inbox(http, coach, state="waiting")] == [waiting]
    assert [r["conversation_id"] for r in await inbox(http, coach, state="draft")] == [draft]
    other = await make_coach("Someone Else")
    assert await inbox(http, other) == [], "another coach's conversations never show"


async def test_unread_counts_drop_when_the_coach_reads_and_grow_with_new_messages(
    http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    llm_api: respx.MockRouter,
) -> None:
    coach = await new_coach(http, make_coach)
    client = await make_client(http, coach, "Gus")
    first = await client_chat(http, client["widget_token"], "How do I sleep better?")
    conversation = str(first["conversation_id"])
    await client_chat(http, client["widget_token"], "And wake up earlier?", conversation)
    assert [r["unread"] for r in await inbox(http, coach)] == [2], "only the client's messages count"

    read = await http.post(f"/api/v1/conversations/{conversation}/read", headers=coach.headers)
    assert read.status_code == 204, read.text
    assert [r["unread"] for r in await inbox(http, coach)] == [0]
    assert await inbox(http, coach, unread="true") == []

    await client_chat(http, client["widget_token"], "Thanks!", conversation)
    assert [r["unread"] for r in await inbox(http, coach, unread="true")] == [1]

    await log_in(browser, coach)
    page = await browser.get(f"/dashboard/conversations/{conversation}")
    assert page.status_code == 200 and "Thanks!" in page.text
    assert [r["unread"] for r in await inbox(http, coach)] == [0], "opening the conversation reads it"

    missing = await http.post(f"/api/v1/conversations/{uuid.uuid4()}/read", headers=coach.headers)
    assert missing.status_code == 404 and "conversation not found" in missing.text
    other = await make_coach("Other Reader")
    theirs = await http.post(f"/api/v1/conversations/{conversation}/read", headers=other.headers)
    assert theirs.status_code == 404, "another coach cannot touch it"


async def test_search_finds_client_names_and_message_text_and_bad_filters_are_clear_400s(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], llm_api: respx.MockRouter
) -> None:
    coach = await new_coach(http, make_coach)
    hana = await talk(http, coach, "Hana Ito", "My 100% honest question about procrastination")
    ivo = await talk(http, coach, "Ivo", "How do I stop snoozing?")

    assert [r["conversation_id"] for r in await inbox(http, coach, q="hana")] == [hana], "name, any case"
    assert [r["conversation_id"] for r in await inbox(http, coach, q="SNOOZ")] == [ivo], "message text"
    assert [r["conversation_id"] for r in await inbox(http, coach, q="100%")] == [hana], "% taken literally"
    assert await inbox(http, coach, q="_") == [], "_ is no wildcard either"
    assert await inbox(http, coach, q="nobody said this") == []
    assert {r["conversation_id"] for r in await inbox(http, coach, q="  ")} == {hana, ivo}, "blank: everything"

    for params, message in (
        ({"state": "sleeping"}, "state must be one of crisis, waiting, you, draft, ai"),
        ({"channel": "fax"}, "channel must be one of web, telegram"),
        ({"q": "x" * 201}, "q is longer than 200 characters"),
    ):
        bad = await http.get("/api/v1/inbox", headers=coach.headers, params=params)
        assert bad.status_code == 400 and bad.json()["detail"] == message, bad.text
    bad_bool = await http.get("/api/v1/inbox", headers=coach.headers, params={"unread": "maybe"})
    assert bad_bool.status_code == 400 and "unread" in bad_bool.text
    assert len(await inbox(http, coach)) == 2, "nothing changed"


async def test_the_dashboard_inbox_lists_filters_and_opens_a_conversation(
    http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    llm_api: respx.MockRouter,
) -> None:
    coach = await new_coach(http, make_coach)
    jo = await make_client(http, coach, "Jo")
    answered = await client_chat(http, jo["widget_token"], "How do I focus?")
    calm = str(answered["conversation_id"])
    rated = await http.post(
        f"/api/v1/messages/{answered['message_id']}/feedback",
        headers={"Authorization": f"Bearer {jo['widget_token']}"},
        json={"helpful": False, "rating": 2},
    )
    assert rated.status_code in (200, 201), rated.text
    urgent = await talk(http, coach, "Kit", CRISIS)
    await log_in(browser, coach)

    page = await browser.get("/dashboard/inbox")
    assert page.status_code == 200
    assert page.text.index(f'data-conversation="{urgent}"') < page.text.index(f'data-conversation="{calm}"')
    assert 'class="badge state crisis">Crisis<' in page.text and "Choose a conversation" in page.text
    assert page.text.count('class="unread-count"') == 2

    listing = await browser.get("/dashboard/inbox/list", params={"state": "ai"})
    assert listing.status_code == 200 and calm in listing.text and urgent not in listing.text
    empty = await browser.get("/dashboard/inbox/list", params={"q": "no such words"})
    assert "No conversation matches these filters." in empty.text

    opened = await browser.get("/dashboard/inbox", params={"conversation": calm})
    assert 'id="conversation-pane"' in opened.text and 'id="coach-composer"' in opened.text
    assert "How do I focus?" in opened.text and REPLY in opened.text
    assert "Client: not helpful · 2/5" in opened.text, "the client's thumbs on the reply"
    details = opened.text[opened.text.index('<details class="meta') :]
    assert details.index("<summary>Details</summary>") < details.index("gpt-4o-mini"), "model behind a toggle"
    assert opened.text.count('class="unread-count"') == 1, "the open conversation was read"
    assert (await browser.get("/dashboard/conversations")).status_code == 200, "the old address shows the inbox"

    bad = await browser.get("/dashboard/inbox", params={"state": "sleeping"})
    assert bad.status_code == 400 and "state must be one of" in bad.json()["detail"]
    token = await csrf(browser, "/dashboard/inbox")
    read = await browser.post(f"/dashboard/conversations/{urgent}/read", headers={"x-csrftoken": token})
    assert read.status_code == 204, read.text
    assert all(r["unread"] == 0 for r in await inbox(http, coach))


async def test_the_handoff_history_shows_duration_and_outcome(
    http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    llm_api: respx.MockRouter,
) -> None:
    coach = await new_coach(http, make_coach)
    dismissed = await talk(http, coach, "Lou", "Can I talk to a real person please?")
    handled = await talk(http, coach, "Mo", "Can I talk to a real person please?")
    assert (await http.post(f"/api/v1/conversations/{dismissed}/handback", headers=coach.headers)).is_success
    assert (await http.post(f"/api/v1/conversations/{handled}/takeover", headers=coach.headers)).is_success
    closed = await http.post(f"/api/v1/conversations/{handled}/handback?reply=false", headers=coach.headers)
    assert closed.status_code == 200, closed.text
    still_open = await talk(http, coach, "Nia", "Can I talk to a real person please?")

    await log_in(browser, coach)
    page = (await browser.get("/dashboard/handoffs")).text
    history = page[page.index('id="handoff-history"') :]
    assert "Lou" in history and "Mo" in history and "Nia" not in history, "closed handoffs only"
    assert history.count("Dismissed without taking over") == 1 and history.count(">Handed back<") == 1
    assert history.count("under a minute") >= 2, "durations"
    assert f"/dashboard/inbox?conversation={still_open}" not in history
