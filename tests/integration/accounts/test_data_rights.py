"""Widget tokens (rotate, revoke, the link exchanged for an HttpOnly session cookie) and data rights (export,
erasure of a client, deletion of a coach's account) through the real app, PostgreSQL, Redis and the arq
worker. Only the coach's OpenAI-compatible endpoint is mocked (OpenAI wire format: chat completions and
``DELETE /v1/files/{id}``).

Erasure is checked with canaries: unique strings in a client's messages, feedback, memory, interventions,
training examples and Redis caches; afterwards no row of any table in the public schema (cast to text, read
as the owner, past row-level security) and no Redis key or value holds them, while another client's are
intact."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx
import websockets
from redis.asyncio import Redis
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.accounts.disclosure import AI_DISCLOSURE_VERSION
from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.core.runtime import Services
from app.db.engine import tenant_session
from app.db.jobs import PURGE_ERASED_DATA
from app.handoff.live import LINK_REVOKED, LiveEvents
from app.learning.cache import ResponseCache
from app.learning.dashboard import FAILURE_PATTERNS_PREFIX
from app.learning.models import FineTuneJob, FineTuneStatus, Intervention, TrainingDataset
from app.learning.rights import ERASED_WHILE_TRAINING
from app.llm.base import EMBEDDING_DIMENSIONS
from app.memory.models import ChatSession, ClientProfile, Insight, SessionStatus
from app.web.dashboard.clients import erased_notice
from tests.conftest import Coach, make_client, seed_insight
from tests.integration.handoff.test_handoff_flow import Setup, chat, llm_api, new_setup, transcript
from tests.integration.learning.test_training_data import examples, refresh, seed_conversation
from tests.integration.web.test_dashboard import csrf, sign_up
from tests.openai_wire import MOCK_BASE_URL

__all__ = ["llm_api", "new_setup"]  # fixtures used by name below

PASSWORD = "correct horse battery"
"""The password :func:`tests.conftest.make_coach` signs up with."""


@pytest.fixture
def deleted_files(llm_api: respx.MockRouter) -> Iterator[list[str]]:
    """The mocked endpoint also deletes files (``DELETE /v1/files/{id}``, OpenAI "Delete file"); the ids asked
    for are recorded. ``file-gone…`` answers 404 (already deleted), ``file-broken…`` 500."""
    asked: list[str] = []

    def delete(request: httpx.Request) -> httpx.Response:
        file_id = request.url.path.rsplit("/", 1)[1]
        asked.append(file_id)
        if file_id.startswith("file-broken"):
            return httpx.Response(500, json={"error": {"message": "boom", "type": "server_error", "code": None}})
        if file_id.startswith("file-gone"):
            return httpx.Response(404, json={"error": {"message": "No such File", "type": "invalid_request_error"}})
        return httpx.Response(200, json={"id": file_id, "object": "file", "deleted": True})

    llm_api.delete(url__regex=rf"{MOCK_BASE_URL}/files/file-[A-Za-z0-9-]+$", name="delete_file").mock(
        side_effect=delete
    )
    yield asked


@pytest.fixture
def cancelled_jobs(llm_api: respx.MockRouter) -> Iterator[list[str]]:
    """The mocked endpoint also cancels fine-tunes (``POST /v1/fine_tuning/jobs/{id}/cancel``, OpenAI "Cancel
    fine-tuning"); the ids asked for are recorded. ``ftjob-stuck…`` answers 500."""
    asked: list[str] = []

    def cancel(request: httpx.Request) -> httpx.Response:
        job_id = request.url.path.split("/")[-2]
        asked.append(job_id)
        if job_id.startswith("ftjob-stuck"):
            return httpx.Response(500, json={"error": {"message": "boom", "type": "server_error", "code": None}})
        return httpx.Response(200, json={"id": job_id, "object": "fine_tuning.job", "status": "cancelled"})

    llm_api.post(url__regex=rf"{MOCK_BASE_URL}/fine_tuning/jobs/ftjob-[A-Za-z0-9-]+/cancel$", name="cancel").mock(
        side_effect=cancel
    )
    yield asked


# ------------------------------------------------------------------------------------------- widget tokens


def browser(base_url: str, **headers: str) -> httpx.AsyncClient:
    """A fresh cookie jar, like a new browser."""
    return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60)


@contextlib.asynccontextmanager
async def open_link(base_url: str, token: str) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.Response]]:
    """Open the chat link in a new browser; yields it (holding the cookie) and the link's response."""
    async with browser(base_url) as client:
        yield client, await client.get(f"/w/{token}")


async def test_the_link_token_becomes_an_httponly_session_cookie_and_leaves_the_url(
    base_url: str, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Cookie Coach")
    client = await make_client(http, coach, "Robin")
    token = client["widget_token"]
    async with open_link(base_url, token) as (tab, opened):
        assert opened.status_code == 303 and opened.headers["location"] == "/w/chat"
        cookie = opened.headers["set-cookie"].lower()
        assert cookie.startswith("oc_widget=") and token.lower() not in cookie
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie and "max-age=43200" in cookie
        assert "secure" not in cookie, "plain http (the test's PUBLIC_URL): Lax, not Secure"
        query = await tab.get(f"/w?token={token}")
        assert query.status_code == 303 and query.headers["location"] == "/w/chat"

        page = await tab.get("/w/chat")
        assert page.status_code == 200 and "/static/chat.js" in page.text and token not in page.text
        assert "oc_widget=" in page.headers.get("set-cookie", ""), "each page renews the session (sliding)"
        memory = await tab.get("/w/memory")
        assert memory.status_code == 200 and token not in memory.text and "/api/v1/widget/export" in memory.text
        assert (await tab.get("/api/v1/widget/memory")).status_code == 200, "the widget API takes the cookie"

        # an unsafe method or a WebSocket with the cookie only from the widget page itself (CSRF, CSWSH)
        missing = f"/api/v1/widget/memory/insights/{uuid.uuid4()}"
        assert (await tab.delete(missing)).status_code == 401
        assert (await tab.delete(missing, headers={"Origin": "https://evil.example"})).status_code == 401
        assert (await tab.delete(missing, headers={"Origin": base_url})).status_code == 404, "authenticated"
        ws_url = base_url.replace("http://", "ws://") + "/ws/chat"
        jar = "; ".join(f"{name}={value}" for name, value in tab.cookies.items())
        async with websockets.connect(ws_url, additional_headers={"Cookie": jar}, origin=base_url) as ws:
            await ws.ping()
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(ws_url, additional_headers={"Cookie": jar}, origin="https://evil.example"):
                pass

    async with browser(base_url) as stranger:
        assert (await stranger.get("/w/chat")).status_code == 401, "no session: the 'link not valid' page"
        stranger.cookies.set("oc_widget", "forged")
        assert (await stranger.get("/w/chat")).status_code == 401
        assert (await stranger.get("/api/v1/widget/memory")).status_code == 401
        assert (await stranger.get("/w/ocw_not-a-token")).status_code == 404


async def test_rotating_and_revoking_a_widget_token_stop_the_old_token_and_its_sessions_at_once(
    base_url: str, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach, other = await make_coach("Rotating Coach"), await make_coach("Other Coach")
    client = await make_client(http, coach, "Robin")
    old = client["widget_token"]
    as_token = {"Authorization": f"Bearer {old}"}
    assert (await http.get("/api/v1/widget/memory", headers=as_token)).status_code == 200
    async with open_link(base_url, old) as (tab, _):
        assert (await tab.get("/api/v1/widget/memory")).status_code == 200

        rotated = await http.post(f"/api/v1/clients/{client['id']}/widget-token", headers=coach.headers)
        assert rotated.status_code == 201, rotated.text
        new = rotated.json()["widget_token"]
        assert new != old and rotated.json()["link"].endswith(f"/w/{new}")
        assert (await http.get("/api/v1/widget/memory", headers=as_token)).status_code == 401
        assert (await tab.get("/api/v1/widget/memory")).status_code == 401, "the old session ends with its token"
        assert (await tab.get("/w/chat")).status_code == 401
        assert (await http.get(f"/w/{old}")).status_code == 404
        as_new = {"Authorization": f"Bearer {new}"}
        assert (await http.get("/api/v1/widget/memory", headers=as_new)).status_code == 200
        page = (await http.get(f"/api/v1/clients/{client['id']}/export", headers=coach.headers)).json()
        assert page["client"]["id"] == client["id"]

    async with open_link(base_url, new) as (fresh, opened):
        assert opened.status_code == 303
        revoked = await http.delete(f"/api/v1/clients/{client['id']}/widget-token", headers=coach.headers)
        assert revoked.status_code == 204
        assert (await http.get("/api/v1/widget/memory", headers=as_new)).status_code == 401
        assert (await fresh.get("/api/v1/widget/memory")).status_code == 401
        assert (await http.get(f"/w/{new}")).status_code == 404
    listed = (await http.get("/api/v1/clients", headers=coach.headers)).json()
    assert [c["id"] for c in listed] == [client["id"]], "a revoked client stays"
    again = await http.post(f"/api/v1/clients/{client['id']}/widget-token", headers=coach.headers)
    third = {"Authorization": f"Bearer {again.json()['widget_token']}"}
    assert (await http.get("/api/v1/widget/memory", headers=third)).status_code == 200, "rotation revives it"

    for method in ("post", "delete"):
        theirs = await getattr(http, method)(f"/api/v1/clients/{client['id']}/widget-token", headers=other.headers)
        assert theirs.status_code == 404, f"another coach's client ({method})"
        bad = await getattr(http, method)("/api/v1/clients/not-a-uuid/widget-token", headers=coach.headers)
        assert bad.status_code == 400 and "detail" in bad.json()
    assert (await http.get("/api/v1/widget/memory", headers=third)).status_code == 200, "nothing changed"


async def test_an_open_widget_socket_ends_when_its_link_is_rotated_or_revoked(
    base_url: str, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chat link that leaked is replaced: the sockets opened with it close at once (4401), so no more of the
    client's live events reach them; a socket whose closing event was lost (Redis) closes at its next message,
    which is not stored."""
    coach = await make_coach("Socket Coach")
    client = await make_client(http, coach, "Robin")

    def socket_url(token: str) -> str:
        return base_url.replace("http://", "ws://") + f"/ws/chat?token={token}"

    async def closed_with(ws: websockets.ClientConnection) -> int | None:
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        return closed.value.rcvd.code if closed.value.rcvd else None

    async with websockets.connect(socket_url(client["widget_token"])) as ws:
        rotated = await http.post(f"/api/v1/clients/{client['id']}/widget-token", headers=coach.headers)
        assert rotated.status_code == 201, rotated.text
        assert await closed_with(ws) == 4401

    publish = LiveEvents.publish

    async def revocations_lost(self: LiveEvents, event: dict[str, Any], **channels: Any) -> None:
        if event.get("type") != LINK_REVOKED:
            await publish(self, event, **channels)

    monkeypatch.setattr(LiveEvents, "publish", revocations_lost)
    async with websockets.connect(socket_url(rotated.json()["widget_token"])) as ws:
        revoked = await http.delete(f"/api/v1/clients/{client['id']}/widget-token", headers=coach.headers)
        assert revoked.status_code == 204
        await ws.send(json.dumps({"text": "Anyone there?", "client_message_id": "after-revocation"}))
        assert await closed_with(ws) == 4401
    assert (await http.get("/api/v1/conversations", headers=coach.headers)).json() == []


# ---------------------------------------------------------------------------------------------- data rights


async def canary_rows(services: Services, canary: str) -> dict[str, int]:
    """``{table: rows whose text form contains canary}`` over every table of the public schema, read as the
    owner (row-level security does not hide anything from it)."""
    engine = create_async_engine(services.migration_database_url)
    found: dict[str, int] = {}
    try:
        async with engine.connect() as conn:
            tables = (
                await conn.scalars(
                    text(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                    )
                )
            ).all()
            assert "messages" in tables and "training_examples" in tables
            for table in tables:
                count = await conn.scalar(
                    text(f'SELECT count(*) FROM "{table}" AS t WHERE strpos(t::text, :canary) > 0'),
                    {"canary": canary},
                )
                if count:
                    found[table] = count
    finally:
        await engine.dispose()
    return found


async def canary_keys(services: Services, canary: str) -> list[str]:
    """The Redis keys whose name or value (of any type) contains ``canary``."""
    redis = Redis.from_url(services.redis_url)
    needle = canary.encode()
    found = []
    try:
        async for key in redis.scan_iter(count=1000):
            kind = (await redis.type(key)).decode()
            if kind == "string":
                values = [await redis.get(key) or b""]
            elif kind == "hash":
                values = [b"".join(k + v for k, v in (await redis.hgetall(key)).items())]
            elif kind == "list":
                values = await redis.lrange(key, 0, -1)
            elif kind == "set":
                values = list(await redis.smembers(key))
            elif kind == "zset":
                values = await redis.zrange(key, 0, -1)
            elif kind == "stream":
                values = [json.dumps(str(await redis.xrange(key))).encode()]
            else:
                values = []
            if needle in key or any(needle in value for value in values):
                found.append(key.decode())
    finally:
        await redis.aclose()
    return found


async def seed_client(
    http: httpx.AsyncClient,
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    setup: Setup,
    client_id: str,
    token: str,
    canary: str,
) -> dict[str, Any]:
    """A client's data with ``canary`` everywhere: chat messages, feedback, an insight, a session summary, the
    profile, an intervention, training examples in a dataset snapshot a fine-tune uploaded (``file_id``), a
    cached reply and cached failure patterns. Returns ``{"conversation_id", "file_id"}``."""
    coach_id, client_uuid = uuid.UUID(setup.coach.coach_id), uuid.UUID(client_id)
    auth = {"Authorization": f"Bearer {token}"}
    sent = await http.post("/api/v1/chat", headers=auth, json={"text": f"My secret is {canary}, please help."})
    assert sent.status_code == 200, sent.text
    conversation_id = sent.json()["conversation_id"]
    messages = await transcript(http, setup, conversation_id)
    [reply] = [m for m in messages if m["sender_type"] == "ai"]
    rated = await http.post(
        f"/api/v1/messages/{reply['id']}/feedback", headers=auth, json={"helpful": False, "text": f"meh {canary}"}
    )
    assert rated.status_code == 200, rated.text
    seeded = await seed_conversation(
        container,
        coach_id,
        client_uuid,
        [(f"I keep {canary} to myself.", f"Tell me more about {canary}.")],
        split="train",
    )
    await refresh(container, run_jobs, setup.coach.coach_id, seeded)
    example_ids = [e.id for e in await examples(container, setup.coach.coach_id, seeded)]
    assert example_ids, "the takeover reply became a training example"
    now, vector = datetime.now(UTC), [0.01] * EMBEDDING_DIMENSIONS
    file_id = f"file-{uuid.uuid4().hex[:12]}"
    async with tenant_session(container.sessionmaker, coach_id) as session:
        [client_message] = [m for m in messages if m["sender_type"] == "client"]
        session.add(
            Insight(
                coach_id=coach_id,
                client_id=client_uuid,
                kind="goal",
                text=f"wants {canary}",
                importance=7,
                first_seen_at=now,
                last_seen_at=now,
                embedding=vector,
                embedding_model="test",
            )  # fmt: skip
        )
        session.add(
            ChatSession(
                coach_id=coach_id,
                client_id=client_uuid,
                conversation_id=uuid.UUID(conversation_id),
                status=SessionStatus.SUMMARIZED,
                started_at=now,
                last_message_at=now,
                message_count=2,
                summary={"summary": f"talked about {canary}", "topics": [canary]},
            )  # fmt: skip
        )
        session.add(ClientProfile(coach_id=coach_id, client_id=client_uuid, what_works=[f"naming {canary}"]))
        session.add(
            Intervention(
                coach_id=coach_id,
                conversation_id=uuid.UUID(conversation_id),
                client_id=client_uuid,
                message_id=uuid.UUID(reply["id"]),
                source="takeover",
                text=f"coach on {canary}",
                client_text=client_message["text"],
                context=[{"role": "user", "content": canary}],
            )  # fmt: skip
        )
        dataset = TrainingDataset(coach_id=coach_id, kind="sft", example_ids=example_ids, counts={"train": 1})
        session.add(dataset)
        await session.flush()
        session.add(
            FineTuneJob(
                coach_id=coach_id,
                dataset_id=dataset.id,
                base_model="gpt-4o-mini-2024-07-18",
                status=FineTuneStatus.SUCCEEDED,
                training_file_id=file_id,
            )  # fmt: skip
        )
    cache = ResponseCache(container.redis)
    key = ResponseCache.key(coach_id=coach_id, cache_epoch=0, model="gpt-4o-mini", model_version_id=None,
                            persona="p", temperature=0.7, messages=[{"role": "user", "content": canary}])  # fmt: skip
    await cache.put(coach_id, key, f"About {canary}: breathe.", [], 3600)
    await container.redis.set(f"{FAILURE_PATTERNS_PREFIX}:{coach_id}:abc", json.dumps([{"example": canary}]))
    return {"conversation_id": conversation_id, "file_id": file_id}


async def test_export_holds_the_clients_messages_memory_and_feedback_for_the_coach_and_the_client(
    base_url: str,
    http: httpx.AsyncClient,
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    new_setup: Callable[..., Awaitable[Setup]],
    make_coach: Callable[..., Awaitable[Coach]],
    llm_api: respx.MockRouter,
) -> None:
    setup = await new_setup("Export Coach")
    canary = f"canary{uuid.uuid4().hex[:12]}"
    await seed_client(http, container, run_jobs, setup, setup.client_id, setup.widget_token, canary)
    response = await http.get(f"/api/v1/clients/{setup.client_id}/export", headers=setup.coach.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"].startswith("attachment")
    data = response.json()
    assert data["format"] == "opencoach.client-export.v1" and data["client"]["id"] == setup.client_id
    texts = [m["text"] for c in data["conversations"] for m in c["messages"]]
    assert f"My secret is {canary}, please help." in texts and f"Tell me more about {canary}." in texts
    assert [f["text"] for f in data["feedback"]] == [f"meh {canary}"] and data["feedback"][0]["helpful"] is False
    memory = data["memory"]
    assert [i["text"] for i in memory["insights"]] == [f"wants {canary}"]
    summarized = [s["summary"]["summary"] for s in memory["session_summaries"] if s["status"] == "summarized"]
    assert summarized == [f"talked about {canary}"] and len(memory["session_summaries"]) == 2, "and the open one"
    assert memory["profile"]["what_works"] == [f"naming {canary}"]
    ai = [m for c in data["conversations"] for m in c["messages"] if m["sender_type"] == "ai"]
    assert ai and all("confidence" not in m["metadata"] and "model" not in m["metadata"] for m in ai), "client view"

    async with open_link(base_url, setup.widget_token) as (tab, _):
        mine = await tab.get("/api/v1/widget/export")
        assert mine.status_code == 200 and mine.headers["content-disposition"].startswith("attachment")
        assert mine.json()["conversations"] == data["conversations"] and mine.json()["memory"] == memory
    as_client = {"Authorization": f"Bearer {setup.widget_token}"}
    assert (await http.get("/api/v1/widget/export", headers=as_client)).json()["client"]["id"] == setup.client_id
    assert (await http.get("/api/v1/widget/export")).status_code == 401

    other = await make_coach("Nosy Coach")
    theirs = await http.get(f"/api/v1/clients/{setup.client_id}/export", headers=other.headers)
    assert theirs.status_code == 404 and canary not in theirs.text
    bad = await http.get("/api/v1/clients/not-a-uuid/export", headers=setup.coach.headers)
    assert bad.status_code == 400 and "detail" in bad.json()


async def test_an_export_says_which_messages_a_forget_took_out_of_the_ais_memory(
    http: httpx.AsyncClient,
    container: Container,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
) -> None:
    """The client forgot an insight: its source message and the reply to it stay in the transcript, out of the
    AI's memory and training data. The export did not say so (found by a privacy run); each message now carries
    ``forgotten_at``."""
    setup = await new_setup("Forgetful Coach")
    coach_id, client_id = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id)
    conversation_id = (await chat(http, setup, "My landlord Tomas wants to raise the rent."))["conversation_id"]
    await chat(http, setup, "How do I plan my week?", conversation_id)
    messages = await transcript(http, setup, conversation_id)
    [source] = [m["id"] for m in messages if m["text"].startswith("My landlord")]
    insight = await seed_insight(container, coach_id, client_id, "Tomas raises the rent", sources=[uuid.UUID(source)])
    url = f"/api/v1/clients/{client_id}/memory/insights/{insight.id}"
    assert (await http.delete(url, headers=setup.coach.headers)).status_code == 204

    data = (await http.get(f"/api/v1/clients/{client_id}/export", headers=setup.coach.headers)).json()
    exported = [m for c in data["conversations"] for m in c["messages"]]
    forgotten = [m["text"] for m in exported if m["forgotten_at"] is not None]
    assert forgotten[0] == "My landlord Tomas wants to raise the rent." and len(forgotten) == 2, "and its reply"
    assert [m["forgotten_at"] for m in exported[2:]] == [None, None], "the later exchange is remembered"


async def test_an_export_while_a_conversation_starts_holds_it_whole_or_not_at_all(
    http: httpx.AsyncClient, container: Container, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """A client's first message starts a conversation while the coach exports (a race a browser test met: the
    export read the conversations, then the messages, and failed with a 500 on a message whose conversation it
    had not read). Here a new conversation with its messages commits right after the export's first statement
    that reads conversations: the export holds the conversations of one moment, each with all its messages."""
    coach = await make_coach("Race Coach")
    client = await make_client(http, coach, "Quinn")
    coach_id, client_id = uuid.UUID(coach.coach_id), uuid.UUID(client["id"])
    await seed_conversation(container, coach_id, client_id, [("first words", "first reply")], split="train")
    started: list[uuid.UUID] = []

    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        execute = uow.session.execute

        async def then_start_one(statement: Any, *args: Any, **kwargs: Any) -> Any:
            result = await execute(statement, *args, **kwargs)
            if not started and "conversations" in str(statement):
                started.append(
                    await seed_conversation(container, coach_id, client_id, [("new words", "new reply")], split="train")
                )
            return result

        uow.session.execute = then_start_one  # type: ignore[method-assign]
        raced = await container.rights.export_client(uow, client_id)
    assert started, "the new conversation committed during the export"
    assert [[m["text"] for m in c["messages"]] for c in raced["conversations"]] == [["first words", "first reply"]]

    after = (await http.get(f"/api/v1/clients/{client_id}/export", headers=coach.headers)).json()
    assert [c["id"] for c in after["conversations"]][1:] == [str(started[0])]
    assert [m["text"] for m in after["conversations"][1]["messages"]] == ["new words", "new reply"]


async def test_export_lists_the_clients_acceptance_of_the_ai_disclosure(
    base_url: str, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """The consent a client gives: accepting the widget's AI disclosure (recorded by the chat page's first
    message, with the version of the text shown) is in the coach's and the client's exports."""
    coach = await make_coach("Consent Coach")
    client = await make_client(http, coach, "Robin")
    export_url = f"/api/v1/clients/{client['id']}/export"
    assert (await http.get(export_url, headers=coach.headers)).json()["consent"] == {"ai_disclosure": None, "tone": []}
    shown = "You're chatting with Consent Coach's AI assistant. Consent Coach can join the conversation."

    async with open_link(base_url, client["widget_token"]) as (tab, _):
        page = (await tab.get("/w/chat")).text
        assert f'data-version="{AI_DISCLOSURE_VERSION}"' in page and shown.replace("'", "&#39;") in page
        same_origin = {"Origin": base_url}
        for body in ({"version": "1999-01-01"}, {"version": ""}, {}, {"version": AI_DISCLOSURE_VERSION, "x": 1}):
            refused = await tab.post("/api/v1/widget/disclosure", json=body, headers=same_origin)
            assert refused.status_code == 400 and "detail" in refused.json(), body
        assert (await http.get(export_url, headers=coach.headers)).json()["consent"] == {
            "ai_disclosure": None,
            "tone": [],
        }
        accepted = await tab.post(
            "/api/v1/widget/disclosure", json={"version": AI_DISCLOSURE_VERSION}, headers=same_origin
        )
        assert accepted.status_code == 200, accepted.text
        first = accepted.json()["accepted_at"]
        again = await tab.post(
            "/api/v1/widget/disclosure", json={"version": AI_DISCLOSURE_VERSION}, headers=same_origin
        )
        assert again.json() == {"version": AI_DISCLOSURE_VERSION, "accepted_at": first}, "the first time is kept"
        mine = (await tab.get("/api/v1/widget/export")).json()["consent"]

    consent = (await http.get(export_url, headers=coach.headers)).json()["consent"]
    assert consent == mine
    assert consent["ai_disclosure"]["version"] == AI_DISCLOSURE_VERSION and consent["ai_disclosure"]["text"] == shown
    assert datetime.fromisoformat(consent["ai_disclosure"]["accepted_at"]) == datetime.fromisoformat(first)
    anonymous = await http.post("/api/v1/widget/disclosure", json={"version": AI_DISCLOSURE_VERSION})
    assert anonymous.status_code == 401


async def test_erasing_a_client_leaves_no_row_or_redis_key_with_their_words(
    http: httpx.AsyncClient,
    services: Services,
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    new_setup: Callable[..., Awaitable[Setup]],
    make_coach: Callable[..., Awaitable[Coach]],
    deleted_files: list[str],
) -> None:
    setup = await new_setup("Erasing Coach")
    other = await make_client(http, setup.coach, "Kept")
    gone, kept = f"canary{uuid.uuid4().hex[:12]}", f"canary{uuid.uuid4().hex[:12]}"
    erased = await seed_client(http, container, run_jobs, setup, setup.client_id, setup.widget_token, gone)
    await seed_client(http, container, run_jobs, setup, other["id"], other["widget_token"], kept)
    before = await canary_rows(services, gone)
    assert {"messages", "insights", "chat_sessions", "client_profiles", "interventions", "training_examples"} <= set(
        before
    ), before
    assert await canary_keys(services, gone), "the cached reply and failure patterns quote the canary"

    nosy = await make_coach("Nosy Coach")
    refused = await http.delete(f"/api/v1/clients/{setup.client_id}", headers=nosy.headers)
    assert refused.status_code == 404 and await canary_rows(services, gone) == before, "another coach: nothing"

    deleted = await http.delete(f"/api/v1/clients/{setup.client_id}", headers=setup.coach.headers)
    assert deleted.status_code == 204, deleted.text
    await run_jobs()
    assert await canary_rows(services, gone) == {}
    assert await canary_keys(services, gone) == []
    assert deleted_files == [erased["file_id"]], "the uploaded training file is deleted at the provider"
    assert (await http.get(f"/api/v1/clients/{setup.client_id}/export", headers=setup.coach.headers)).status_code == 404
    as_erased = {"Authorization": f"Bearer {setup.widget_token}"}
    assert (await http.get("/api/v1/widget/memory", headers=as_erased)).status_code == 401
    again = await http.delete(f"/api/v1/clients/{setup.client_id}", headers=setup.coach.headers)
    assert again.status_code == 404

    survivor = await canary_rows(services, kept)
    assert {"messages", "insights", "chat_sessions", "client_profiles", "interventions", "training_examples"} <= set(
        survivor
    ), "the other client's data is intact"
    export = (await http.get(f"/api/v1/clients/{other['id']}/export", headers=setup.coach.headers)).json()
    assert any(kept in m["text"] for c in export["conversations"] for m in c["messages"])


async def test_erasing_a_client_deletes_the_training_file_even_after_their_examples_were_rebuilt(
    http: httpx.AsyncClient,
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    new_setup: Callable[..., Awaitable[Setup]],
    deleted_files: list[str],
) -> None:
    """A fine-tune trained on a snapshot of the client's examples; then the coach changed the persona and the
    conversation's examples were rebuilt with new ids. Erasing the client still deletes that fine-tune's training
    file at the provider: the snapshot records its conversations. Before, the erasure looked for the examples' new
    ids, found no snapshot, and the file with the client's words stayed."""
    setup = await new_setup("Rebuilding Coach")
    coach_id, client_id = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id)
    conversation = await seed_conversation(
        container, coach_id, client_id, [("I keep my diary in Portuguese.", "Tell me what you write in it.")],
        split="train",
    )  # fmt: skip
    await refresh(container, run_jobs, setup.coach.coach_id, conversation)
    file_id = f"file-{uuid.uuid4().hex[:12]}"
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        dataset = await container.training.snapshot(uow, "sft")
        assert dataset.conversation_ids == [conversation]
        uow.session.add(FineTuneJob(coach_id=coach_id, dataset_id=dataset.id, base_model="gpt-4o-mini-2024-07-18",
                                    status=FineTuneStatus.SUCCEEDED, training_file_id=file_id))  # fmt: skip
    before = {e.id for e in await examples(container, setup.coach.coach_id, conversation)}
    patched = await http.patch("/api/v1/settings", headers=setup.coach.headers, json={"persona": "You are Noor."})
    assert patched.status_code == 200, patched.text
    await refresh(container, run_jobs, setup.coach.coach_id, conversation)
    after = {e.id for e in await examples(container, setup.coach.coach_id, conversation)}
    assert after and not after & before, "rebuilt with new ids"

    deleted = await http.delete(f"/api/v1/clients/{setup.client_id}", headers=setup.coach.headers)
    assert deleted.status_code == 204, deleted.text
    await run_jobs()
    assert deleted_files == [file_id]


async def fine_tuned_on(
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    setup: Setup,
    exchange: tuple[str, str],
    **job: Any,
) -> str:
    """A fine-tune (``job``'s fields: its status…) on a dataset snapshot holding the client's training example of one
    ``(client, coach)`` exchange; returns its training file's id."""
    coach_id = uuid.UUID(setup.coach.coach_id)
    conversation = await seed_conversation(container, coach_id, uuid.UUID(setup.client_id), [exchange], split="train")
    await refresh(container, run_jobs, setup.coach.coach_id, conversation)
    file_id = f"file-{uuid.uuid4().hex[:12]}"
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        dataset = await container.training.snapshot(uow, "sft")
        uow.session.add(FineTuneJob(coach_id=coach_id, dataset_id=dataset.id, base_model="gpt-4o-mini-2024-07-18",
                                    training_file_id=file_id, **job))  # fmt: skip
    return file_id


async def test_erasing_a_client_of_a_coach_now_on_the_local_model_deletes_their_training_file(
    http: httpx.AsyncClient,
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    new_setup: Callable[..., Awaitable[Setup]],
    deleted_files: list[str],
) -> None:
    """A coach who fine-tuned on their OpenAI endpoint, then switched to the local model, erases a client: the
    fine-tune's training file with the client's words is still deleted at that endpoint with the key stored for it
    (the local model has no files; before, the purge refused for want of an OpenAI endpoint and the file stayed)."""
    setup = await new_setup("Switched Coach")
    coach_id = uuid.UUID(setup.coach.coach_id)
    exchange = ("My sister Ana lives in Porto.", "Tell me more about her.")
    file_id = await fine_tuned_on(container, run_jobs, setup, exchange, status=FineTuneStatus.SUCCEEDED)
    local = await http.patch("/api/v1/settings", headers=setup.coach.headers, json={"llm_provider": "local"})
    assert local.status_code == 200, local.text

    deleted = await http.delete(f"/api/v1/clients/{setup.client_id}", headers=setup.coach.headers)
    assert deleted.status_code == 204, deleted.text
    await run_jobs()
    assert deleted_files == [file_id]
    async with tenant_session(container.sessionmaker, coach_id) as session:
        job = await session.scalar(select(FineTuneJob).where(FineTuneJob.coach_id == coach_id))
    assert job is not None and job.training_file_id is None, "the deleted file is forgotten on the job"


async def test_erasing_a_client_cancels_a_fine_tune_still_training_on_their_words(
    http: httpx.AsyncClient,
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    new_setup: Callable[..., Awaitable[Setup]],
    deleted_files: list[str],
    cancelled_jobs: list[str],
) -> None:
    """A fine-tune still training on a snapshot of the client's examples when the client is erased: its file was
    deleted but the job went on at the provider, and would have delivered a model of the erased words (found by a
    privacy run). The purge now cancels it there first and marks it cancelled, saying why."""
    setup = await new_setup("Training Coach")
    coach_id = uuid.UUID(setup.coach.coach_id)
    exchange = ("My brother Ivo owes money.", "How do you feel about it?")
    file_id = await fine_tuned_on(
        container, run_jobs, setup, exchange, status=FineTuneStatus.RUNNING, provider_job_id="ftjob-training1"
    )
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        uow.session.add(FineTuneJob(coach_id=coach_id, base_model="gpt-4o-mini-2024-07-18", status="running",
                                    training_file_id="file-other1", provider_job_id="ftjob-other1"))  # fmt: skip

    deleted = await http.delete(f"/api/v1/clients/{setup.client_id}", headers=setup.coach.headers)
    assert deleted.status_code == 204, deleted.text
    await run_jobs()
    assert deleted_files == [file_id]
    assert cancelled_jobs == ["ftjob-training1"], "a job on other data trains on"
    async with tenant_session(container.sessionmaker, coach_id) as session:
        jobs = {j.provider_job_id: j for j in await session.scalars(select(FineTuneJob))}
    assert jobs["ftjob-training1"].status == FineTuneStatus.CANCELLED
    assert jobs["ftjob-training1"].error == ERASED_WHILE_TRAINING
    assert jobs["ftjob-other1"].status == FineTuneStatus.RUNNING
    # the snapshot it trained on keeps no trace of the client: its counts and conversations went with the examples
    async with tenant_session(container.sessionmaker, coach_id) as session:
        [dataset] = (await session.scalars(select(TrainingDataset))).all()
    assert dataset.example_ids == [] and dataset.conversation_ids == []
    assert set(dataset.counts.values()) <= {0}, dataset.counts


async def test_deleting_the_coach_account_needs_the_password_and_erases_everything(
    http: httpx.AsyncClient,
    services: Services,
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    new_setup: Callable[..., Awaitable[Setup]],
    deleted_files: list[str],
    cancelled_jobs: list[str],
) -> None:
    setup = await new_setup("Leaving Coach")
    canary = f"canary{uuid.uuid4().hex[:12]}"
    seeded = await seed_client(http, container, run_jobs, setup, setup.client_id, setup.widget_token, canary)
    async with tenant_session(container.sessionmaker, uuid.UUID(setup.coach.coach_id)) as session:
        session.add(FineTuneJob(coach_id=uuid.UUID(setup.coach.coach_id), base_model="gpt-4o-mini-2024-07-18",
                                status=FineTuneStatus.FAILED, training_file_id="file-broken1",
                                validation_file_id="file-gone1"))  # fmt: skip
        for provider_job_id, status in (
            ("ftjob-run1", "running"),
            ("ftjob-stuck1", "queued"),
            ("ftjob-old1", "succeeded"),
        ):
            session.add(FineTuneJob(coach_id=uuid.UUID(setup.coach.coach_id), base_model="gpt-4o-mini-2024-07-18",
                                    status=status, provider_job_id=provider_job_id))  # fmt: skip
    await chat(http, setup, "Hello again")  # a cache hit/miss counter for the coach

    wrong = await http.post("/api/v1/account/delete", headers=setup.coach.headers, json={"password": "nope"})
    assert wrong.status_code == 403 and "password" in wrong.json()["detail"]
    assert (await http.get("/api/v1/clients", headers=setup.coach.headers)).status_code == 200, "nothing deleted"
    assert deleted_files == []
    empty = await http.post("/api/v1/account/delete", headers=setup.coach.headers, json={})
    assert empty.status_code == 400 and "detail" in empty.json()

    done = await http.post("/api/v1/account/delete", headers=setup.coach.headers, json={"password": PASSWORD})
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["deleted"] is True and sorted(body["files_deleted"]) == sorted([seeded["file_id"], "file-gone1"])
    assert [f.split(":")[0] for f in body["files_failed"]] == ["file-broken1"] and "500" in body["files_failed"][0]
    assert body["jobs_cancelled"] == ["ftjob-run1"] and set(cancelled_jobs) == {"ftjob-run1", "ftjob-stuck1"}
    assert [j.split(":")[0] for j in body["jobs_failed"]] == ["ftjob-stuck1"], "the coach learns what still trains"
    assert "boom" not in done.text, "a status and short reason, never the provider's body"
    assert (await http.get("/api/v1/clients", headers=setup.coach.headers)).status_code == 401
    await run_jobs()
    assert await canary_rows(services, canary) == {}
    assert await canary_keys(services, canary) == []
    left = [key for key in await canary_keys(services, setup.coach.coach_id) if not key.startswith("arq:")]
    assert left == [], "no cache entry or counter of the coach is left (arq's own job records name it)"


async def test_two_accounts_deleted_one_after_the_other_each_get_their_caches_purged(
    http: httpx.AsyncClient,
    services: Services,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """Each deleted account's purge job runs (the second shared the first's job id, which arq refused for the
    hour it keeps a result: the second account's cached replies stayed in Redis until they expired)."""
    leaving = [await make_coach("First Leaver"), await make_coach("Second Leaver")]
    redis = Redis.from_url(services.redis_url)
    try:
        for coach in leaving:
            await redis.set(f"{FAILURE_PATTERNS_PREFIX}:{coach.coach_id}:canary", "quotes a client")
            done = await http.post("/api/v1/account/delete", headers=coach.headers, json={"password": PASSWORD})
            assert done.status_code == 200, done.text
            await run_jobs()
        left = [await redis.exists(f"{FAILURE_PATTERNS_PREFIX}:{coach.coach_id}:canary") for coach in leaving]
    finally:
        await redis.aclose()
    assert left == [0, 0]


async def test_a_purge_left_on_the_default_queue_by_an_older_version_still_runs(
    container: Container, make_coach: Callable[..., Awaitable[Coach]], run_jobs: Callable[[], Awaitable[None]]
) -> None:
    """Purges now go to the erasure worker's own queue (:data:`~app.db.jobs.ERASURE_QUEUE`); one that a version
    before it queued on the default queue is still run, by the main worker."""
    coach = await make_coach("Old Purge")
    cached = f"{FAILURE_PATTERNS_PREFIX}:{coach.coach_id}:canary"
    await container.redis.set(cached, "quotes a client")
    job_id = f"{PURGE_ERASED_DATA}:{coach.coach_id}:client:{uuid.uuid4()}"
    assert await container.redis.enqueue_job(PURGE_ERASED_DATA, coach.coach_id, [], _job_id=job_id) is not None
    await run_jobs()
    assert not await container.redis.exists(cached)


# ------------------------------------------------------------------------------------------------ dashboard


async def test_dashboard_rotates_revokes_exports_and_deletes_a_client_then_the_account(base_url: str) -> None:
    """The client page's buttons (each form carries the CSRF token and asks for confirmation) and the settings
    page's account deletion, which needs the password."""
    async with browser(base_url) as tab:
        await sign_up(tab, "Dash Rights Coach")
        token = await csrf(tab, "/dashboard/clients")
        await tab.post("/dashboard/clients", data={"name": "Ada", "_csrf_token": token})
        listing = (await tab.get("/dashboard/clients")).text
        client_id = re.search(r'href="/dashboard/clients/([0-9a-f-]{36})"', listing).group(1)  # type: ignore[union-attr]
        old = re.search(r"/w/(ocw_[A-Za-z0-9_-]+)", listing).group(1)  # type: ignore[union-attr]
        page = (await tab.get(f"/dashboard/clients/{client_id}")).text
        for action in ("widget-token", "widget-token/revoke", "delete"):
            assert f'action="/dashboard/clients/{client_id}/{action}"' in page, action
        assert page.count("data-confirm=") >= 3 and f"/dashboard/clients/{client_id}/export" in page

        rotated = await tab.post(f"/dashboard/clients/{client_id}/widget-token", data={"_csrf_token": token})
        assert rotated.status_code in (302, 303)
        page = (await tab.get(f"/dashboard/clients/{client_id}")).text
        new = re.search(r"/w/(ocw_[A-Za-z0-9_-]+)", page).group(1)  # type: ignore[union-attr]
        assert new != old and (await tab.get(f"/w/{old}")).status_code == 404
        no_csrf = await tab.post(f"/dashboard/clients/{client_id}/widget-token/revoke")
        assert no_csrf.status_code == 403 and new in (await tab.get(f"/dashboard/clients/{client_id}")).text
        revoked = await tab.post(f"/dashboard/clients/{client_id}/widget-token/revoke", data={"_csrf_token": token})
        assert revoked.status_code in (302, 303)
        page = (await tab.get(f"/dashboard/clients/{client_id}")).text
        assert "/w/ocw_" not in page and "revoked" in page and (await tab.get(f"/w/{new}")).status_code == 404

        export = await tab.get(f"/dashboard/clients/{client_id}/export")
        assert export.status_code == 200 and export.json()["client"]["name"] == "Ada"
        deleted = await tab.post(f"/dashboard/clients/{client_id}/delete", data={"_csrf_token": token})
        assert deleted.status_code in (302, 303) and deleted.headers["location"] == "/dashboard/clients"
        listing = (await tab.get("/dashboard/clients")).text  # says once what went (it said nothing)
        assert erased_notice("Ada") in listing and f"/dashboard/clients/{client_id}" not in listing
        assert "Ada" not in (await tab.get("/dashboard/clients")).text
        assert (await tab.get(f"/dashboard/clients/{client_id}")).status_code == 404

        settings = (await tab.get("/dashboard/settings")).text
        assert 'action="/dashboard/account/delete"' in settings
        wrong = await tab.post("/dashboard/account/delete", data={"password": "nope", "_csrf_token": token})
        assert wrong.status_code == 403 and "password is not correct" in wrong.text
        assert (await tab.get("/dashboard/clients")).status_code == 200, "still there"
        gone = await tab.post("/dashboard/account/delete", data={"password": PASSWORD, "_csrf_token": token})
        assert gone.status_code in (302, 303) and gone.headers["location"] == "/signup"
        assert (await tab.get("/dashboard/clients")).status_code in (302, 303), "logged out"
