"""Privacy of what the learning loop and memory pass on, checked at the provider: every request the coach's
(mocked, OpenAI wire format) endpoint receives is read back.

- Few-shot examples built from a coach's takeover of client A carry no word of A into client B's prompt: the
  situation is described (mood, the coach's topic labels), the coach's reply loses A's name, e-mail, phone
  number and any run of A's own words it repeats.
- "Forget this" on an insight keeps its source message out of every later prompt (recent turns, insight
  extraction, the session summary) and out of the training data export.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx
import respx
from sqlalchemy import select

from app.accounts.unit_of_work import unit_of_work
from app.chat.spotlight import unmark
from app.container import Container
from app.conversations.models import Message
from app.db.engine import tenant_session
from app.learning.cache import PREFIX as CACHE_PREFIX
from app.learning.dashboard import FAILURE_PATTERNS_PREFIX
from app.learning.interventions import describe_situation
from app.learning.models import FineTuneJob, FineTuneStatus, Intervention, TrainingDataset, TrainingExample
from app.memory.models import Insight, InsightStatus
from tests.conftest import make_client, seed_insight
from tests.integration.accounts.test_data_rights import deleted_files  # noqa: F401 - a fixture used by name
from tests.integration.handoff.test_handoff_flow import (  # noqa: F401 - fixtures used by name
    Setup,
    chat,
    llm_api,
    new_setup,
    transcript,
)
from tests.integration.memory.memory_wire import memory_job

CANARY = "Bartholomew the iguana swallowed my grandmother's emerald ring at the lighthouse picnic"
A_MESSAGE = f"{CANARY}, and I feel so embarrassed and sad about it. Write to me at robin.vale@example.org."
B_MESSAGE = "My pet lizard swallowed my ring at a picnic and I feel embarrassed and sad."
COACH_STYLE = "Let us slow down and breathe together for a moment"
COACH_REPLY = f"Robin, I hear you: {CANARY}. {COACH_STYLE}, then pick one small step. Mail robin.vale@example.org"


def _bodies(router: respx.MockRouter, start: int = 0) -> list[str]:
    """The JSON bodies of every chat completion request from call ``start`` on, datamarks read as spaces
    (:func:`app.chat.spotlight.unmark`), so quoted text is found whether or not it sat in a data block."""
    return [unmark(call.request.content.decode()) for call in router.routes["completions"].calls[start:]]


def _calls(router: respx.MockRouter) -> int:
    return len(router.routes["completions"].calls)


async def _take_over(http: httpx.AsyncClient, setup: Setup, conversation_id: str, text: str) -> None:
    sent = await http.post(
        f"/api/v1/conversations/{conversation_id}/messages", headers=setup.coach.headers, json={"text": text}
    )
    assert sent.status_code == 201, sent.text


async def test_few_shot_examples_carry_no_words_of_another_client(
    http: httpx.AsyncClient,
    container: Container,
    new_setup: Callable[..., Awaitable[Setup]],  # noqa: F811
    llm_api: respx.MockRouter,  # noqa: F811
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """Client A writes a canary sentence; the coach takes over and quotes it back with A's name and e-mail.
    Client B's turn in a similar situation gets that intervention as a few-shot example — the coach's own
    words and the described situation — but no request for B contains the canary, A's name or e-mail."""
    # client A is "Robin"; a low threshold keeps the high-stakes topic from handing B's turn to the coach
    setup = await new_setup("Privacy Coach", high_stakes_topics=["ring"], confidence_threshold=0.01)
    first = await chat(http, setup, A_MESSAGE)
    await _take_over(http, setup, first["conversation_id"], COACH_REPLY)
    await chat(http, setup, "Thank you, that really helps, I feel calmer now.", first["conversation_id"])
    await run_jobs()  # analyse and score the intervention; A's memory jobs send their requests now

    client_b = await make_client(http, setup.coach, "Zed")
    start = _calls(llm_api)
    reply = await http.post(
        "/api/v1/chat", headers={"Authorization": f"Bearer {client_b['widget_token']}"}, json={"text": B_MESSAGE}
    )
    assert reply.status_code == 200, reply.text
    bodies = _bodies(llm_api, start)
    assert bodies, f"client B's turn asked the model: {reply.text}"
    [system] = [m["content"] for body in bodies for m in json.loads(body)["messages"] if m["role"] == "system"][:1]
    # the example is there: the coach's own words and an abstract situation ...
    assert COACH_STYLE in system
    assert describe_situation("negative", ["ring"]) in system
    # ... but nothing client A wrote, nor A's name or e-mail, in any request built for B
    for body in bodies:
        for secret in ("Bartholomew", "iguana", "emerald", "lighthouse", "Robin", "robin.vale"):
            assert secret not in body, f"{secret!r} of client A reached client B's prompt"


async def test_forgetting_an_insight_keeps_its_source_out_of_prompts_and_training_data(
    http: httpx.AsyncClient,
    container: Container,
    new_setup: Callable[..., Awaitable[Setup]],  # noqa: F811
    llm_api: respx.MockRouter,  # noqa: F811
    run_jobs: Callable[[], Awaitable[None]],
    deleted_files: list[str],  # noqa: F811
) -> None:
    """The canary message is the source of an insight and, through a takeover, of an SFT example. After the
    insight is forgotten: no later request — the AI's answer on handback and next turn (recent turns),
    insight extraction and the summary at the session's end — contains it, nor does any training export or
    dataset snapshot, and the provider's training file of a fine-tune that trained on it is deleted (as for an
    erasure; another fine-tune's file stays); the coach's transcript still shows it."""
    setup = await new_setup("Forgetting Coach")
    first = await chat(http, setup, A_MESSAGE)
    conversation_id = first["conversation_id"]
    await _take_over(http, setup, conversation_id, "That sounds hard. What would help you most right now?")
    await chat(http, setup, "Maybe a plan for telling my family.", conversation_id)
    await run_jobs()

    async def exports() -> str:
        lines = []
        for params in ({"format": "sft"}, {"format": "preference"}, {"format": "sft", "scrub_pii": "false"}):
            response = await http.get("/api/v1/learning/export", headers=setup.coach.headers, params=params)
            assert response.status_code == 200, response.text
            lines.append(response.text)
        return "\n".join(lines)

    assert CANARY in await exports(), "before forgetting, the takeover's SFT example holds the canary"
    coach_id = uuid.UUID(setup.coach.coach_id)
    trained_on, kept_file = f"file-{uuid.uuid4().hex[:12]}", f"file-{uuid.uuid4().hex[:12]}"
    async with tenant_session(container.sessionmaker, coach_id) as session:
        example_ids = list(
            (
                await session.scalars(
                    select(TrainingExample.id).where(TrainingExample.conversation_id == uuid.UUID(conversation_id))
                )
            ).all()
        )
        snapshot = TrainingDataset(coach_id=coach_id, kind="sft", example_ids=example_ids, counts={"train": 1})
        other = TrainingDataset(coach_id=coach_id, kind="sft", example_ids=[], counts={})
        session.add_all([snapshot, other])
        await session.flush()
        for dataset, file_id in ((snapshot, trained_on), (other, kept_file)):
            session.add(FineTuneJob(coach_id=coach_id, dataset_id=dataset.id, base_model="gpt-4o-mini-2024-07-18",
                                    status=FineTuneStatus.SUCCEEDED, training_file_id=file_id))  # fmt: skip

    [source] = [m for m in await transcript(http, setup, conversation_id) if m["text"] == A_MESSAGE]
    client_id = uuid.UUID(setup.client_id)
    insight = await seed_insight(
        container, coach_id, client_id, "Robin lost a family ring", kind="blocker", sources=[uuid.UUID(source["id"])]
    )
    start = _calls(llm_api)
    forgotten = await http.delete(
        f"/api/v1/clients/{client_id}/memory/insights/{insight.id}", headers=setup.coach.headers
    )
    assert forgotten.status_code == 204, forgotten.text
    assert CANARY not in await exports(), "an export read before the rebuild job runs leaves the example out"
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        assert not set((await container.training.snapshot(uow, "sft")).example_ids) & set(example_ids)
    await run_jobs()
    assert deleted_files == [trained_on], "the file of the fine-tune that trained on the forgotten message"
    async with tenant_session(container.sessionmaker, coach_id) as session:
        left = await session.scalars(
            select(TrainingExample.prompt).where(
                TrainingExample.id.in_((await session.get_one(TrainingDataset, snapshot.id)).example_ids)
            )
        )
        assert all(CANARY not in json.dumps(prompt) for prompt in left.all()), "no snapshot keeps the example"

    back = await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=setup.coach.headers)
    assert back.status_code == 200, back.text
    await run_jobs()  # the AI answers the client's waiting message
    later = await chat(http, setup, "What should my first step be?", conversation_id)
    assert later["reply"]
    ended = await http.post(f"/api/v1/conversations/{conversation_id}/end-session", headers=setup.coach.headers)
    assert ended.status_code == 200 and ended.json()["session_id"], ended.text
    await run_jobs()  # insight extraction and the session summary

    bodies = _bodies(llm_api, start)
    systems = [json.loads(body)["messages"][0]["content"] for body in bodies]
    assert sum("What should my first step be?" in body for body in bodies) >= 1, "a chat turn was prompted"
    assert "summary" in {memory_job(system) for system in systems}, "the session summary was prompted"
    for body in bodies:
        assert "Bartholomew" not in body and "iguana" not in body, "a forgotten message reached a prompt"
    assert "Bartholomew" not in await exports() and "iguana" not in await exports()

    async with tenant_session(container.sessionmaker, coach_id) as session:
        message = await session.get_one(Message, uuid.UUID(source["id"]))
        tombstone = await session.get_one(Insight, insight.id)
        interventions = (
            await session.scalars(
                select(Intervention).where(Intervention.conversation_id == uuid.UUID(conversation_id))
            )
        ).all()
    assert message.forgotten_at is not None and tombstone.status == InsightStatus.DELETED
    assert interventions and all(CANARY not in json.dumps(i.context) + i.client_text for i in interventions)
    assert any(m["text"] == A_MESSAGE for m in await transcript(http, setup, conversation_id)), "kept for the coach"


async def test_forgetting_an_insight_purges_the_cached_replies_that_could_replay_its_source(
    http: httpx.AsyncClient,
    container: Container,
    new_setup: Callable[..., Awaitable[Setup]],  # noqa: F811
    llm_api: respx.MockRouter,  # noqa: F811
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """A reply cached for a prompt that held the forgotten message (its words may be quoted) is deleted from
    Redis, like the cached failure patterns of the coach, once the insight is forgotten."""
    setup = await new_setup("Cache Forgetting Coach")
    first = await chat(http, setup, A_MESSAGE)
    await chat(http, setup, "Maybe a plan for telling my family.", first["conversation_id"])
    await run_jobs()
    coach_id, client_id = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id)
    cached = f"{CACHE_PREFIX}:{coach_id}:*"
    patterns = f"{FAILURE_PATTERNS_PREFIX}:{coach_id}:x"
    await container.redis.set(patterns, json.dumps([{"example": CANARY}]))
    assert [key async for key in container.redis.scan_iter(match=cached)], "the turns' replies are cached"

    [source] = [m for m in await transcript(http, setup, first["conversation_id"]) if m["text"] == A_MESSAGE]
    [vector] = await container.registry.local_embedder().embed(["Robin lost a family ring"])
    now = datetime.now(UTC)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        insight = Insight(coach_id=coach_id, client_id=client_id, kind="blocker", text="Robin lost a family ring",
                          source_message_ids=[uuid.UUID(source["id"])], first_seen_at=now, last_seen_at=now,
                          embedding=vector, embedding_model="all-MiniLM-L6-v2")  # fmt: skip
        session.add(insight)
    forgotten = await http.delete(
        f"/api/v1/clients/{client_id}/memory/insights/{insight.id}", headers=setup.coach.headers
    )
    assert forgotten.status_code == 204, forgotten.text
    await run_jobs()
    assert [key async for key in container.redis.scan_iter(match=cached)] == []
    assert await container.redis.get(patterns) is None


async def test_a_takeover_records_what_memory_held_by_reference_so_a_forgotten_insight_leaves_no_copy(
    http: httpx.AsyncClient,
    container: Container,
    new_setup: Callable[..., Awaitable[Setup]],  # noqa: F811
    llm_api: respx.MockRouter,  # noqa: F811
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """The intervention of a takeover notes which insights memory held about the client, by id: it copied their
    text, which stayed after the insight was forgotten."""
    setup = await new_setup("Reference Coach")
    first = await chat(http, setup, "I keep thinking about what I lost last spring.")
    coach_id, client_id = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id)
    [vector] = await container.registry.local_embedder().embed(["Robin lost a family ring"])
    now = datetime.now(UTC)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        insight = Insight(coach_id=coach_id, client_id=client_id, kind="blocker", text="Robin lost a family ring",
                          importance=7, source_message_ids=[], first_seen_at=now, last_seen_at=now,
                          embedding=vector, embedding_model="all-MiniLM-L6-v2")  # fmt: skip
        session.add(insight)
    await _take_over(http, setup, first["conversation_id"], "That sounds hard. What would help you most right now?")
    await run_jobs()

    async def recorded() -> list[Intervention]:
        async with tenant_session(container.sessionmaker, coach_id) as session:
            return list((await session.scalars(select(Intervention).where(Intervention.client_id == client_id))).all())

    [intervention] = await recorded()
    assert intervention.memory == {"insight_ids": [str(insight.id)], "profile": False}
    forgotten = await http.delete(
        f"/api/v1/clients/{client_id}/memory/insights/{insight.id}", headers=setup.coach.headers
    )
    assert forgotten.status_code == 204, forgotten.text
    await run_jobs()
    [intervention] = await recorded()
    stored = json.dumps([intervention.memory, intervention.context, intervention.client_text, intervention.analysis])
    assert "family ring" not in stored
