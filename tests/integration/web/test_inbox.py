"""The coach's inbox (issue 17): every conversation with its state, last message, unread count and channel,
filters and search, through the API (``GET /api/v1/inbox``) and the dashboard (``/dashboard/inbox``), and
the handoff history on the queue page. The app, PostgreSQL and Redis are real; the coach's model is mocked."""

from __future__ import annotations

import base64
import html
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import Select, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.accounts.service import clients_query
from app.conversations.inbox import InboxFilter, inbox_query
from app.core.pagination import PageRequest
from app.core.runtime import APP_ROLE, Services
from app.db.engine import make_engine
from tests.conftest import Coach, make_client
from tests.integration.web.test_dashboard import browser, client_chat, csrf, log_in
from tests.openai_wire import MOCK_ENDPOINT_SETTINGS, mock_chat_endpoint

__all__ = ["browser"]  # fixture used by name
DELTAS = ["Small", " steps", " each", " day", "."]
REPLY = "".join(DELTAS)
CRISIS = "I want to end my life tonight"
DATA_CONVERSATION = re.compile(r'<li class="inbox-row[^"]*" data-conversation="([0-9a-f-]+)"')
LOAD_MORE = re.compile(r'<a id="inbox-more" class="button-link" href="([^"]+)"\s+hx-get="([^"]+)"')


@pytest.fixture
def llm_api() -> Iterator[respx.MockRouter]:
    """The coach's endpoint, mocked (see :func:`tests.openai_wire.mock_chat_endpoint`)."""
    with mock_chat_endpoint(DELTAS, (50, 5)) as router:
        yield router


async def inbox(http: httpx.AsyncClient, coach: Coach, **params: Any) -> list[dict[str, Any]]:
    """The first page's rows."""
    response = await http.get("/api/v1/inbox", headers=coach.headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()["rows"]  # type: ignore[no-any-return]


async def every_page(http: httpx.AsyncClient, coach: Coach, **params: Any) -> list[list[str]]:
    """The conversation ids of each page, following ``next`` to the last page."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        response = await http.get(
            "/api/v1/inbox", headers=coach.headers, params=params | ({"cursor": cursor} if cursor else {})
        )
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([row["conversation_id"] for row in body["rows"]])
        cursor = body["next"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "the pages never end"


async def seed_conversations(services: Services, coach: Coach, count: int) -> list[str]:
    """``count`` clients ("Client 1"…), each with one conversation holding one client message ("note number
    i"), three conversations per minute of ``last_message_at`` (ties broken by id); written directly by the
    schema owner. Returns the conversation ids in the inbox's order (newest first, then by id)."""
    coach_id, start = uuid.UUID(coach.coach_id), datetime(2026, 11, 1, 9, tzinfo=UTC)
    rows = [(i, uuid.uuid4(), uuid.uuid4(), start + timedelta(minutes=i // 3)) for i in range(1, count + 1)]
    engine = create_async_engine(services.migration_database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO clients (id, coach_id, name) VALUES (:id, :coach, :name)"),
                [{"id": client, "coach": coach_id, "name": f"Client {i}"} for i, client, _, _ in rows],
            )
            await conn.execute(
                text(
                    "INSERT INTO conversations (id, coach_id, client_id, channel, last_message_at)"
                    " VALUES (:id, :coach, :client, 'widget', :at)"
                ),
                [{"id": talk, "coach": coach_id, "client": client, "at": at} for _, client, talk, at in rows],
            )
            await conn.execute(
                text(
                    "INSERT INTO messages (id, coach_id, conversation_id, sender_type, text, citations, metadata,"
                    " created_at) VALUES (:id, :coach, :talk, 'client', :text, '[]', '{}', :at)"
                ),
                [
                    {"id": uuid.uuid4(), "coach": coach_id, "talk": talk, "text": f"note number {i}", "at": at}
                    for i, _, talk, at in rows
                ],
            )
    finally:
        await engine.dispose()
    return [str(talk) for _, _, talk, _ in sorted(rows, key=lambda row: (-(row[0] // 3), str(row[2])))]


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
    # the channel as stored, as GET /api/v1/conversations gives it (the inbox said "web" for "api" and "widget")
    listed = (await http.get("/api/v1/conversations", headers=coach.headers)).json()
    assert {row["conversation_id"]: row["channel"] for row in rows} == {c["id"]: c["channel"] for c in listed}
    assert {cid: row["channel"] for cid, row in by_id.items()} == {
        ai: "api",
        waiting: "api",
        crisis: "api",
        yours: "telegram",
        draft: "api",
    }

    assert [r["conversation_id"] for r in await inbox(http, coach, channel="telegram")] == [yours]
    assert yours not in {r["conversation_id"] for r in await inbox(http, coach, channel="api")}
    assert await inbox(http, coach, channel="widget") == []
    assert [r["conversation_id"] for r in await inbox(http, coach, state="waiting")] == [waiting]
    assert [r["conversation_id"] for r in await inbox(http, coach, state="draft")] == [draft]
    other = await make_coach("Someone Else")
    assert await inbox(http, other) == [], "another coach's conversations never show"
    assert len(await every_page(http, coach, limit=2)) == 3, "5 conversations, 2 a page"


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


async def search_count(services: Services, coach_id: str | None) -> int:
    """How many conversations ``inbox_search('%')`` returns to the app role with ``app.coach_id`` set to
    ``coach_id`` (``None``: not set)."""
    engine = make_engine(services.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            if coach_id is not None:
                await conn.execute(text("SELECT set_config('app.coach_id', :cid, true)"), {"cid": coach_id})
            return int(await conn.scalar(text("SELECT count(*) FROM inbox_search('%')")) or 0)
    finally:
        await engine.dispose()


async def test_search_finds_client_names_and_message_text_and_bad_filters_are_clear_400s(
    http: httpx.AsyncClient,
    services: Services,
    make_coach: Callable[..., Awaitable[Coach]],
    llm_api: respx.MockRouter,
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
    other = await make_coach("Other Searcher")
    assert await inbox(http, other, q="snooz") == [] and await inbox(http, other, q="hana") == [], "own only"
    assert await search_count(services, coach.coach_id) == 2
    assert await search_count(services, other.coach_id) == 0, "inbox_search() keeps to the current tenant"
    assert await search_count(services, None) == 0, "and finds nothing without one"

    for params, message in (
        ({"state": "sleeping"}, "state must be one of crisis, waiting, you, draft, ai"),
        ({"channel": "fax"}, "channel must be one of widget, api, telegram"),
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
    # the channel the API calls "api" (it was "web" here): one label in the rows, the filter and the pane
    assert page.text.count('class="badge channel">API<') == 2 and ">web<" not in page.text
    assert '<option value="api" >API</option>' in page.text and '<option value="widget" >Widget</option>' in page.text

    listing = await browser.get("/dashboard/inbox/list", params={"state": "ai"})
    assert listing.status_code == 200 and calm in listing.text and urgent not in listing.text
    empty = await browser.get("/dashboard/inbox/list", params={"q": "no such words"})
    assert "No conversation matches these filters." in empty.text

    opened = await browser.get("/dashboard/inbox", params={"conversation": calm})
    assert 'id="conversation-pane"' in opened.text and 'id="coach-composer"' in opened.text
    assert "How do I focus?" in opened.text and REPLY in opened.text
    assert re.search(r"Started \d{4}-\d\d-\d\d \d\d:\d\d · API\s", opened.text), "the pane's channel"
    by_channel = await browser.get("/dashboard/inbox/list", params={"channel": "api"})
    assert calm in by_channel.text and urgent in by_channel.text
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


async def test_250_conversations_page_through_with_no_duplicate_and_no_gap(
    http: httpx.AsyncClient, services: Services, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """Keyset pages of the API (default 50 rows, or ``limit``) cover every conversation once, in the inbox's
    order, also across ties of ``last_message_at``; a search pages the same way."""
    coach = await make_coach("Busy Coach")
    expected = await seed_conversations(services, coach, 250)

    pages = await every_page(http, coach)
    assert [len(page) for page in pages] == [50, 50, 50, 50, 50]
    assert [cid for page in pages for cid in page] == expected, "no duplicate, no gap, newest first"
    odd = await every_page(http, coach, limit=33)
    assert [cid for page in odd for cid in page] == expected and len(odd) == 8

    # "note number 1", "…10".."…19", "…100".."…199": 111 conversations, by message text, paged by 20
    found = [cid for page in await every_page(http, coach, q="note number 1", limit=20) for cid in page]
    assert len(found) == len(set(found)) == 111
    assert found == [cid for cid in expected if cid in set(found)], "in the inbox's order"
    names = await every_page(http, coach, q="client 25", limit=200)
    assert len(names) == 1 and len(names[0]) == 2, "Client 25 and Client 250 by name"


async def test_the_dashboard_inbox_loads_more_with_and_without_javascript(
    http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    services: Services,
    make_coach: Callable[..., Awaitable[Coach]],
) -> None:
    """The dashboard shows the first 50 rows and a "Load more" that htmx swaps for the next rows
    (``/dashboard/inbox/rows``) and that opens the next page without JavaScript (``/dashboard/inbox?cursor=``)."""
    coach = await make_coach("Paging Coach")
    expected = await seed_conversations(services, coach, 120)
    await log_in(browser, coach)

    first = await browser.get("/dashboard/inbox", params={"q": "note"})
    assert first.status_code == 200
    shown = DATA_CONVERSATION.findall(first.text)
    assert shown == expected[:50] and "Back to the newest" not in first.text
    more = LOAD_MORE.search(first.text)
    assert more, "a Load more link"
    href, hx_get = (html.unescape(part) for part in more.groups())
    assert href.startswith("/dashboard/inbox?") and hx_get.startswith("/dashboard/inbox/rows?")
    assert "q=note" in href and "q=note" in hx_get, "the filters go along"

    rows = await browser.get(hx_get)
    assert rows.status_code == 200 and "<html" not in rows.text and "<li" in rows.text
    shown += DATA_CONVERSATION.findall(rows.text)
    last = LOAD_MORE.search(rows.text)
    assert last, "another Load more"
    rest = await browser.get(html.unescape(last.group(2)))
    shown += DATA_CONVERSATION.findall(rest.text)
    assert shown == expected and LOAD_MORE.search(rest.text) is None, "all 120, once each, then no Load more"

    page_two = await browser.get(href)
    assert page_two.status_code == 200 and "Back to the newest" in page_two.text
    assert DATA_CONVERSATION.findall(page_two.text) == expected[50:100], "without JavaScript: the next page"


def cursor_of(value: Any) -> str:
    """``value`` written the way a cursor is (URL-safe base64 of its JSON): a cursor the app never made."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


ZERO = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"cursor": "not-a-cursor!"}, "cursor is not a valid inbox cursor"),
        ({"cursor": cursor_of([])}, "cursor is not a valid inbox cursor"),
        ({"cursor": cursor_of(None)}, "cursor is not a valid inbox cursor"),
        ({"cursor": cursor_of([0, "2026-11-01T09:00:00+00:00", 7])}, "cursor is not a valid inbox cursor"),
        ({"cursor": cursor_of([0, "yesterday", ZERO])}, "cursor is not a valid inbox cursor"),
        ({"cursor": cursor_of([9, "2026-11-01T09:00:00+00:00", ZERO])}, "cursor is not a valid inbox cursor"),
        ({"cursor": cursor_of([0, "2026-11-01T09:00:00", ZERO])}, "cursor is not a valid inbox cursor"),
        ({"cursor": cursor_of([0, "0001-01-01T00:00:00+05:00", ZERO])}, "cursor is not a valid inbox cursor"),
        ({"cursor": cursor_of([float("inf"), "2026-11-01T09:00+00:00", ZERO])}, "cursor is not a valid inbox cursor"),
        ({"cursor": cursor_of([True, "2026-11-01T09:00:00+00:00", ZERO])}, "cursor is not a valid inbox cursor"),
        ({"limit": "0"}, "limit must be between 1 and 200"),
        ({"limit": "201"}, "limit must be between 1 and 200"),
    ],
)
async def test_a_bad_cursor_or_limit_is_a_clear_400_and_changes_nothing(
    http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    llm_api: respx.MockRouter,
    params: dict[str, str],
    message: str,
) -> None:
    coach = await new_coach(http, make_coach)
    conversation = await talk(http, coach, "Pia", "How do I rest?")
    bad = await http.get("/api/v1/inbox", headers=coach.headers, params=params)
    assert bad.status_code == 400 and bad.json()["detail"].startswith(message), bad.text
    await log_in(browser, coach)
    for page in ("/dashboard/inbox", "/dashboard/inbox/list", "/dashboard/inbox/rows"):
        refused = await browser.get(page, params=params)
        assert refused.status_code == 400 and refused.json()["detail"].startswith(message), (page, refused.text)
    assert [r["conversation_id"] for r in await inbox(http, coach)] == [conversation], "nothing changed"


async def explain(url: str, statement: Select[Any] | str, coach_id: uuid.UUID, *params: Any, first: str = "") -> str:
    """``EXPLAIN`` of ``statement`` (a SQL text with ``$1``… for ``params``, or a statement with its parameters
    bound as the app binds them) as the role of ``url`` in a transaction scoped to ``coach_id``, after the
    SQL ``first`` (statements separated by ``;``); the transaction is rolled back."""
    engine = make_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            if not isinstance(statement, str):
                compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
                statement, params = compiled.string, tuple(compiled.params[k] for k in compiled.positiontup or ())
            await conn.execute(text("SELECT set_config('app.coach_id', :cid, true)"), {"cid": str(coach_id)})
            for sql in filter(None, (part.strip() for part in first.split(";"))):
                await conn.exec_driver_sql(sql)
            plan = await conn.exec_driver_sql("EXPLAIN " + statement, tuple(params))
            lines = "\n".join(str(line) for (line,) in plan.all())
            await conn.rollback()
            return lines
    finally:
        await engine.dispose()


OWNER_LIKE = """
CREATE ROLE alert_probe NOLOGIN NOSUPERUSER NOBYPASSRLS;
GRANT SELECT ON clients, conversations, messages TO alert_probe;
CREATE POLICY probe_all ON messages FOR SELECT TO alert_probe USING (true);
CREATE POLICY probe_all ON clients FOR SELECT TO alert_probe USING (true);
SET LOCAL ROLE alert_probe
"""
"""Run by the superuser, rolled back after: a role like the schema owner in production (neither superuser nor
BYPASSRLS, FORCE ROW LEVEL SECURITY applies to it) with the read-all policies migration 0027 (``messages``)
and 0001 (``clients``) give the owner, which ``inbox_search()`` runs as."""


async def test_the_searches_can_read_the_trigram_indexes_only_through_their_functions(
    services: Services, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """On a few thousand conversations: the inbox query calls ``inbox_search()`` and the clients list's name
    search ``client_search()``; their ILIKEs (message text, client name), run as an owner-like role under
    row-level security with its read-all policies, read the trigram GIN indexes of migration 0027, while the
    app role's own ILIKE cannot (its tenant policy comes first and ILIKE is not LEAKPROOF): why the functions
    exist. Whether an index *can* serve them is asked with sequential scans off and the coach_id indexes
    dropped (rolled back after); at this size the planner rightly prefers a sequential scan otherwise. The
    plans are printed (``-s``)."""
    coach = await make_coach("Searching Coach")
    coach_id = uuid.UUID(coach.coach_id)
    await seed_conversations(services, coach, 3000)
    owner = create_async_engine(services.migration_database_url)
    try:
        async with owner.begin() as conn:
            await conn.execute(text("ANALYZE clients, conversations, messages"))
    finally:
        await owner.dispose()
    inbox_plan = await explain(services.database_url, inbox_query(coach_id, InboxFilter(q="number 2718")), coach_id)
    assert "inbox_search" in inbox_plan, inbox_plan
    clients_plan = await explain(
        services.database_url, clients_query(coach_id, PageRequest(), name_contains="Client 2718"), coach_id
    )
    assert "client_search" in clients_plan, clients_plan
    no_seqscan = (  # every index that reads by coach_id, so that only the trigram indexes remain to the planner
        "DROP INDEX ix_messages_coach_id; DROP INDEX ix_clients_coach_id; DROP INDEX ix_clients_coach_time; "
        "SET LOCAL enable_seqscan = off"
    )
    url, pattern = services.migration_database_url, "%number 2718%"
    for table, column, index in (
        ("messages", "text", "ix_messages_text_trgm"),
        ("clients", "name", "ix_clients_name_trgm"),
    ):
        ilike = f"SELECT id FROM {table} WHERE coach_id = app_current_coach_id() AND {column} ILIKE $1"  # noqa: S608
        natural = await explain(url, ilike, coach_id, pattern, first=OWNER_LIKE)
        as_owner = await explain(url, ilike, coach_id, pattern, first=f"{no_seqscan}; {OWNER_LIKE}")
        as_app = await explain(url, ilike, coach_id, pattern, first=f"{no_seqscan}; SET LOCAL ROLE {APP_ROLE}")
        print(f"\n{table}, owner-like:\n{natural}\nwithout seq scans:\n{as_owner}\napp role, same:\n{as_app}")
        assert f"Bitmap Index Scan on {index}" in as_owner, as_owner
        assert "trgm" not in as_app, as_app


async def test_a_client_waiting_for_the_coachs_answer_comes_first_the_longest_wait_first(
    http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    llm_api: respx.MockRouter,
) -> None:
    """A conversation the coach holds whose client wrote last (waiting for the coach's answer) sorted among the
    ones the AI answered, by its last message: below every conversation answered after it. The clients waiting for
    the coach (held with the client's message unanswered, or an open handoff) now come first (after a crisis), the
    longest wait first, in the API, its pages and the dashboard."""
    coach = await new_coach(http, make_coach)

    async def held(name: str, *then: str) -> str:
        """A conversation the coach took over and wrote in, then the client's messages ``then``."""
        client = await make_client(http, coach, name)
        conversation_id = str((await client_chat(http, client["widget_token"], "How do I rest?"))["conversation_id"])
        wrote = await http.post(
            f"/api/v1/conversations/{conversation_id}/messages", headers=coach.headers, json={"text": "I'm here."}
        )
        assert wrote.status_code == 201, wrote.text
        for text_ in then:
            await client_chat(http, client["widget_token"], text_, conversation_id)
        return conversation_id

    dee = await held("Dee", "Are you still there?")  # waits the longest
    ben = await talk(http, coach, "Ben", "Can I talk to a real person please?")  # open handoff
    fay = await held("Fay", "Hello?", "Anyone?")  # waits since "Hello?", wrote again since
    ana = await talk(http, coach, "Ana", "How do I start my mornings?")  # the AI answered, after them all
    gus = await held("Gus")  # the coach answered last: nobody waits

    rows = await inbox(http, coach)
    assert [row["conversation_id"] for row in rows] == [dee, ben, fay, gus, ana]
    assert [row["state"] for row in rows] == ["you", "waiting", "you", "you", "ai"]
    since = [row["waiting_since"] for row in rows]
    assert None not in since[:3] and since[:3] == sorted(since[:3]) and since[3:] == [None, None]
    assert [cid for page in await every_page(http, coach, limit=1) for cid in page] == [dee, ben, fay, gus, ana]
    assert [cid for page in await every_page(http, coach, limit=2) for cid in page] == [dee, ben, fay, gus, ana]

    await log_in(browser, coach)
    page = await browser.get("/dashboard/inbox")
    assert page.status_code == 200
    assert DATA_CONVERSATION.findall(page.text) == [dee, ben, fay, gus, ana]
