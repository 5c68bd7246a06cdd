"""The memory pipeline end to end: chat turns → chat sessions → the arq jobs (summary, insights, profile) →
recall into later prompts, on real PostgreSQL, Redis, the arq worker and the MiniLM embedder.

Tests that assert *what* is remembered (a goal is extracted, a restatement merges, a dropped goal retires)
run a coach switched to an OpenAI-compatible endpoint (BYOK) whose API is mocked with respx in OpenAI's
recorded wire format: chat replies stream as server-sent events; the memory jobs' Structured Outputs calls
are answered by :class:`FakeOpenAI`, which tells the jobs apart by their system prompt (the
``*_INSTRUCTIONS`` of :mod:`app.memory.prompts`) and answers like a careful model would, from the
transcript it was sent. One test runs the offline SmolLM2 on a real ESConv conversation.

Time passing between sessions is simulated by moving a client's rows back in time (:func:`shift_back`).
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from arq.jobs import Job, JobResult, JobStatus
from sqlalchemy import insert, select, update

from app.accounts.models import Coach as CoachRow
from app.accounts.unit_of_work import unit_of_work
from app.chat.prompt import MEMORY_HEADER
from app.chat.spotlight import unmark
from app.chat.turn import TurnResult
from app.container import Container
from app.conversations.metadata import client_view
from app.conversations.models import Conversation, Message, SenderType
from app.core.config import Settings
from app.db.engine import tenant_session
from app.db.jobs import SUMMARIZE_SESSION, UPDATE_PROFILE
from app.llm.schema import RETRY_TEMPERATURES
from app.memory.insights import InsightService, _Planned
from app.memory.models import ChatSession, ClientProfile, Episode, Insight, InsightStatus, SessionStatus
from app.memory.prompts import ECHO_UNSTATED, PROMPT_SHARE
from app.memory.retrieval import context_for, recall
from app.memory.schemas import ExtractedInsight, SessionSummary
from app.memory.summaries import (
    NO_CLIENT_MESSAGE,
    NOTHING_TO_SUMMARISE,
    SUMMARY_MAX_TOKENS,
    SummaryFailed,
    SummaryService,
)
from app.memory.transcript import LINE_PREFIX_TOKENS
from app.rag.chunking import count_tokens
from tests.conftest import Coach, make_client, seed_insight
from tests.integration.memory.memory_wire import LINE, client_lines, memory_job, new_client_lines
from tests.openai_wire import mock_openai, openai_completion, openai_sse, sse_response

ESCONV = Path(__file__).resolve().parents[4] / "shared" / "data" / "esconv" / "valid.jsonl"
LLM_BASE_URL = "https://llm.example.test/v1"
COMPLETIONS_URL = f"{LLM_BASE_URL}/chat/completions"
LLM_MODEL = "gpt-4o-mini"
LLM_KEY = f"sk-test-{secrets.token_hex(20)}"
REPLY = ["Let's", " take", " it", " one", " step", " at", " a", " time", "."]

# What the fake model notes when a client message contains the trigger (insight texts as a model writes them).
MARATHON = "Wants to run the Berlin marathon in September 2027"
PROMOTION = "Wants to be promoted to team lead by March 2027"
PROMOTION_RESTATED = "Hopes to become team lead by March 2027"  # MiniLM cosine 0.83: the model decides
NOVEL = "Wants to finish the novel manuscript by December 2026"
NOVEL_DROPPED = "Gave up on finishing the novel manuscript by December 2026"  # cosine 0.87: the model decides
SPANISH = "Wants to learn Spanish before the trip to Madrid in May"
SPANISH_RESTATED = "Still wants to learn Spanish before the Madrid trip in May"  # cosine 0.93 to the tombstone
SPANISH_TOPIC = "Feels pressure about learning Spanish for Madrid"  # what the profile job notes of it
HALF_MARATHON = "Wants to run a half marathon in October"
TEN_K = "Wants to run a 10k race in March instead of the half marathon in October"  # cosine 0.78: model says update
RULES: list[tuple[str, dict[str, Any]]] = [
    ("berlin marathon", {"kind": "goal", "text": MARATHON, "importance": 8, "status": "active"}),
    ("promoted to team lead", {"kind": "goal", "text": PROMOTION, "importance": 7, "status": "active"}),
    ("hope to become team lead", {"kind": "goal", "text": PROMOTION_RESTATED, "importance": 7, "status": "active"}),
    ("finish my novel", {"kind": "goal", "text": NOVEL, "importance": 6, "status": "active"}),
    ("give up on the novel", {"kind": "goal", "text": NOVEL_DROPPED, "importance": 6, "status": "dropped"}),
    ("want to learn spanish", {"kind": "goal", "text": SPANISH, "importance": 6, "status": "active"}),
    ("still want to learn spanish", {"kind": "goal", "text": SPANISH_RESTATED, "importance": 6, "status": "active"}),
    ("want to run a half marathon", {"kind": "goal", "text": HALF_MARATHON, "importance": 7, "status": "active"}),
    ("now want to run a 10k race", {"kind": "goal", "text": TEN_K, "importance": 7, "status": "active"}),
]
PROFILE = {
    "communication_preferences": ["Likes short, concrete plans"],
    "what_works": ["Breaking goals into weekly steps"],
    "what_doesnt_work": [],
    "tone": "warm and direct",
    "sensitive_topics": [],
}


@dataclass
class FakeOpenAI:
    """The coach's OpenAI endpoint. Streamed requests are chat turns (recorded, answered with ``REPLY``);
    the others are Structured Outputs calls of the memory jobs, routed by their system prompt and recorded
    by job (``summary``, ``extract``, ``decision``, ``profile``). ``summary_answers`` overrides the next
    summary answers with raw contents (e.g. invalid JSON); ``reply`` is the chat turns' streamed reply."""

    reply: list[str] = field(default_factory=lambda: REPLY)
    chat_requests: list[dict[str, Any]] = field(default_factory=list)
    structured: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"summary": [], "extract": [], "decision": [], "profile": []}
    )
    summary_answers: list[httpx.Response] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body.get("stream"):
            self.chat_requests.append(body)
            return sse_response(openai_sse(self.reply, usage=(412, len(self.reply))))
        assert body["response_format"]["type"] == "json_schema" and body["response_format"]["json_schema"]["strict"]
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        job = memory_job(system)
        if job is None:
            raise AssertionError(f"unexpected structured request: {system[:80]!r}")
        self.structured[job].append(body)
        if job == "summary" and self.summary_answers:
            return self.summary_answers.pop(0)
        answer = {
            "decision": self._decision,
            "summary": self._summary,
            "extract": self._extract,
            "profile": self._profile,
        }[job](user)
        return openai_completion(json.dumps(answer))

    @staticmethod
    def _extract(user: str) -> dict[str, Any]:
        new = new_client_lines(user)
        found = []
        for trigger, insight in RULES:
            evidence = [n for n, text in new if trigger in text.casefold()]
            if evidence:
                found.append({**insight, "evidence": evidence})
        return {"insights": found}

    @staticmethod
    def _profile(user: str) -> dict[str, Any]:
        """:data:`PROFILE`, plus :data:`SPANISH_TOPIC` as a sensitive topic when the session mentions Spanish."""
        return PROFILE | {"sensitive_topics": [SPANISH_TOPIC] if "spanish" in user.casefold() else []}

    @staticmethod
    def _summary(user: str) -> dict[str, Any]:
        """What the client said, its opening words as the topic and a next step on it (each from the session, as
        the job requires of a summary's lists)."""
        said = " ".join(text for _, text in client_lines(user))
        topic = " ".join(said.split()[:6])
        return {
            "summary": f"In this session the client said: {said}"[:1500],
            "topics": [topic],
            "insights": [],
            "action_items": [f"Follow up on {topic}"],
            "emotional_state": "hopeful",
        }

    @staticmethod
    def _decision(user: str) -> dict[str, str]:
        new = user.split("New note: ", 1)[1]
        return {"decision": "update" if new.startswith("Gave up") or new == TEN_K else "same"}


@pytest.fixture(scope="module")
async def coach(http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]) -> Coach:
    """One coach for the module, switched to the mocked OpenAI endpoint; each test has clients of its own."""
    coach = await make_coach("Coach Rivera")
    response = await http.patch(
        "/api/v1/settings",
        headers=coach.headers,
        json={"llm_provider": "openai", "llm_model": LLM_MODEL, "llm_base_url": LLM_BASE_URL, "llm_api_key": LLM_KEY},
    )
    assert response.status_code == 200, response.text
    return coach


@pytest.fixture
def llm() -> Iterator[FakeOpenAI]:
    """The coach's endpoint, mocked; requests to the app on 127.0.0.1 go through untouched."""
    fake = FakeOpenAI()
    with mock_openai() as router:
        router.route(host="127.0.0.1").pass_through()
        router.post(COMPLETIONS_URL).mock(side_effect=fake)
        yield fake


# --- helpers --------------------------------------------------------------------------------------------


async def new_client(http: httpx.AsyncClient, coach: Coach, name: str) -> uuid.UUID:
    return uuid.UUID((await make_client(http, coach, name))["id"])


async def say(
    container: Container, coach: Coach, client_id: uuid.UUID, text: str, conversation_id: uuid.UUID | None = None
) -> TurnResult:
    """One chat turn through the real pipeline; returns its result."""
    result = None
    async for item in container.chat.turn(uuid.UUID(coach.coach_id), client_id, text, conversation_id=conversation_id):
        if isinstance(item, TurnResult):
            result = item
    assert result is not None
    assert "error" not in result.metadata, result.metadata
    return result


async def job_outcome(container: Container, job_id: str) -> JobResult | None:
    """The result of arq job ``job_id`` or, when its coach's memory slots were all taken and it queued itself
    again (:class:`app.worker.CoachSlots`), of the copy that did its work: the latest result, among the job's and
    its copies' (ids ``<job_id>:wait:…``), that is not a deferral. ``None`` while none is."""
    results = [
        result
        for result in await container.redis.all_job_results()
        if result.job_id == job_id or (result.job_id or "").startswith(f"{job_id}:wait:")
    ]
    done = [result for result in results if not str(result.result).startswith("deferred:")]
    return max(done, key=lambda result: result.finish_time, default=None)


async def shift_back(container: Container, coach: Coach, client_id: uuid.UUID, delta: timedelta) -> None:
    """Let ``delta`` pass: everything of the client so far (messages, sessions, watermarks, insights) moves
    ``delta`` into the past."""
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as s:
        conversations = select(Conversation.id).where(Conversation.client_id == client_id).scalar_subquery()
        await s.execute(
            update(Message)
            .where(Message.conversation_id.in_(conversations))
            .values(created_at=Message.created_at - delta)
        )
        await s.execute(
            update(ChatSession)
            .where(ChatSession.client_id == client_id)
            .values(
                started_at=ChatSession.started_at - delta,
                last_message_at=ChatSession.last_message_at - delta,
                ended_at=ChatSession.ended_at - delta,
            )
        )
        await s.execute(
            update(Conversation)
            .where(Conversation.client_id == client_id)
            .values(
                last_message_at=Conversation.last_message_at - delta,
                insights_extracted_through=Conversation.insights_extracted_through - delta,
            )
        )
        await s.execute(update(Episode).where(Episode.client_id == client_id).values(at=Episode.at - delta))
        await s.execute(
            update(Insight)
            .where(Insight.client_id == client_id)
            .values(first_seen_at=Insight.first_seen_at - delta, last_seen_at=Insight.last_seen_at - delta)
        )


async def sessions_of(container: Container, coach: Coach, client_id: uuid.UUID) -> list[ChatSession]:
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as s:
        stmt = select(ChatSession).where(ChatSession.client_id == client_id).order_by(ChatSession.started_at)
        return list((await s.scalars(stmt)).all())


async def insights_of(container: Container, coach: Coach, client_id: uuid.UUID) -> list[Insight]:
    """Every insight row of the client, tombstones included."""
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as s:
        stmt = select(Insight).where(Insight.client_id == client_id).order_by(Insight.first_seen_at)
        return list((await s.scalars(stmt)).all())


async def messages_by_id(container: Container, coach: Coach, ids: list[uuid.UUID]) -> dict[uuid.UUID, Message]:
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as s:
        return {msg.id: msg for msg in (await s.scalars(select(Message).where(Message.id.in_(ids)))).all()}


async def session_message_ids(container: Container, coach_id: uuid.UUID, session_id: uuid.UUID) -> set[uuid.UUID]:
    async with tenant_session(container.sessionmaker, coach_id) as s:
        return set((await s.scalars(select(Message.id).where(Message.session_id == session_id))).all())


async def end_and_run(
    container: Container, coach: Coach, conversation_id: uuid.UUID, run_jobs: Callable[[], Awaitable[None]]
) -> uuid.UUID:
    """The client says goodbye: end the open session and run the queued memory jobs."""
    async with unit_of_work(container.sessionmaker, uuid.UUID(coach.coach_id)) as uow:
        session_id = await container.sessions.end_session(uow, conversation_id)
    assert session_id is not None
    await run_jobs()
    return session_id


def insight_line(text: str) -> str:
    """How an insight's text shows in the prompt's memory block (``- [kind] text``)."""
    return f"] {text}\n"


def system_prompt(llm: FakeOpenAI) -> str:
    """The system message of the last chat turn sent to the endpoint (newline-terminated for line checks), its
    data blocks' datamarks read as spaces (:func:`app.chat.spotlight.unmark`)."""
    messages = llm.chat_requests[-1]["messages"]
    assert messages[0]["role"] == "system"
    return unmark(str(messages[0]["content"])) + "\n"


def assert_valid_summary(chat_session: ChatSession, message_ids: set[uuid.UUID]) -> None:
    assert chat_session.status == SessionStatus.SUMMARIZED, (chat_session.status, chat_session.summary_error)
    assert chat_session.summary is not None and chat_session.summary_error is None
    SessionSummary.model_validate(chat_session.summary)
    assert chat_session.source_message_ids, "a summary is grounded in the session's messages"
    assert set(chat_session.source_message_ids) <= message_ids
    assert chat_session.embedding is not None and chat_session.embedding_model == "all-MiniLM-L6-v2"


# --- multi-session memory -------------------------------------------------------------------------------


async def test_a_goal_stated_in_session_1_is_in_the_prompt_of_session_3(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """Session 1 states a goal; three days later the next message in the same conversation ends session 1
    by the idle gap (its jobs run); session 2 is ended on request. Two days later, in a new conversation (no
    L1 history), the session-3 prompt carries the goal (L3), both session summaries (L2) and the profile (L4),
    and the AI message records their ids in ``metadata["memory"]``."""
    client_id = await new_client(http, coach, "Maya")
    first = await say(container, coach, client_id, "I want to run the Berlin marathon in September 2027.")
    conversation = first.conversation_id
    await say(container, coach, client_id, "Right now I jog about 10 km a week, mostly on weekends.", conversation)
    await shift_back(container, coach, client_id, timedelta(days=3))

    await say(container, coach, client_id, "Work has been hectic this week and I barely slept.", conversation)
    s1, s2 = await sessions_of(container, coach, client_id)
    assert (s1.status, s2.status) == (SessionStatus.ENDED, SessionStatus.OPEN), "the gap ended session 1"
    assert s1.ended_at == s1.last_message_at and s1.message_count == 4 and s2.message_count == 2
    await end_and_run(container, coach, conversation, run_jobs)

    [goal] = await insights_of(container, coach, client_id)
    assert (goal.kind, goal.text, goal.status, goal.mentions, goal.importance) == ("goal", MARATHON, "active", 1, 8)
    assert goal.source_message_ids == [first.received_message_id], "sources are the messages the model cited"
    s1, s2 = await sessions_of(container, coach, client_id)
    assert_valid_summary(s1, await session_message_ids(container, uuid.UUID(coach.coach_id), s1.id))
    assert_valid_summary(s2, await session_message_ids(container, uuid.UUID(coach.coach_id), s2.id))
    assert "Berlin marathon" in s1.summary["summary"]  # type: ignore[index]
    assert s1.summary["profile_updated"] is True  # type: ignore[index]
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as s:
        profile = await s.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))
    assert profile is not None
    assert profile.communication_preferences == ["Likes short, concrete plans"], "two sessions, one entry"
    assert profile.tone == "warm and direct"
    assert sorted(profile.entry_sessions["tone"]["warm and direct"]) == sorted([str(s1.id), str(s2.id)]), (
        "the tone records the sessions that gave it, as the lists' lines do"
    )
    assert len(llm.structured["summary"]) == 2 and len(llm.structured["profile"]) == 2

    await shift_back(container, coach, client_id, timedelta(days=2))
    third = await say(container, coach, client_id, "How should I plan my training this month?")

    assert third.conversation_id != conversation
    memory = third.metadata["memory"]
    assert memory["insight_ids"] == [str(goal.id)]
    assert sorted(memory["summary_ids"]) == sorted([str(s1.id), str(s2.id)])
    assert memory["profile"] is True
    stored = await messages_by_id(container, coach, [third.message_id])
    assert stored[third.message_id].meta["memory"] == memory, "attribution is persisted on the AI message"
    sent = llm.chat_requests[-1]["messages"]
    assert [msg["role"] for msg in sent] == ["system", "user"], "no L1 history in a new conversation"
    system = system_prompt(llm)
    assert MEMORY_HEADER in system
    [goal] = await insights_of(container, coach, client_id)
    assert f"- [goal, {goal.first_seen_at:%Y-%m-%d}] {MARATHON}\n" in system, "each recalled item carries its date"
    s1, s2, _ = await sessions_of(container, coach, client_id)
    assert f"- [session of {s1.started_at:%Y-%m-%d}] In this session the client said: I want to run" in system
    assert f"- [session of {s2.started_at:%Y-%m-%d}] In this session the client said: Work has been" in system
    assert "Communication preferences: Likes short, concrete plans" in system
    assert "Tone: warm and direct" in system


async def test_a_restated_goal_is_merged_not_duplicated(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """A week later the client restates the goal in other words (cosine 0.83: the model is asked and says
    'same'): one insight row, mentions 2, sources from both sessions, wording of the first kept."""
    client_id = await new_client(http, coach, "Tom")
    first = await say(container, coach, client_id, "My goal is to be promoted to team lead by March 2027.")
    s1 = await end_and_run(container, coach, first.conversation_id, run_jobs)
    [stored] = await insights_of(container, coach, client_id)
    assert (stored.text, stored.mentions) == (PROMOTION, 1)
    await shift_back(container, coach, client_id, timedelta(days=7))

    second = await say(
        container,
        coach,
        client_id,
        "I still hope to become team lead by March 2027, I talked to my manager about it.",
        first.conversation_id,
    )
    s2 = await end_and_run(container, coach, first.conversation_id, run_jobs)

    [merged] = await insights_of(container, coach, client_id)
    assert merged.id == stored.id
    assert (merged.text, merged.status, merged.mentions) == (PROMOTION, "active", 2)
    assert merged.source_message_ids == [first.received_message_id, second.received_message_id]
    sources = await messages_by_id(container, coach, merged.source_message_ids)
    assert {msg.session_id for msg in sources.values()} == {s1, s2}, "sources from both sessions"
    assert merged.first_seen_at == sources[first.received_message_id].created_at
    assert merged.last_seen_at == sources[second.received_message_id].created_at
    [decision] = llm.structured["decision"]
    assert decision["messages"][-1]["content"] == f"Stored note: {PROMOTION}\nNew note: {PROMOTION_RESTATED}"
    extraction = llm.structured["extract"][-1]["messages"][-1]["content"]
    assert f"Already noted:\n- {PROMOTION}" in extraction, "the model is told what is already known"


async def test_the_coachs_status_and_importance_stand_when_the_client_restates_the_fact(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """The coach marks a goal achieved and lowers its importance; the client then says the same sentence again
    (a merge): the mention counts, but the coach's status and importance stand (before: the merge set the
    extracted ``active`` and importance 7 back, and the dashboard promises "Edits are kept")."""
    client_id = await new_client(http, coach, "Tom")
    sentence = "My goal is to be promoted to team lead by March 2027."
    first = await say(container, coach, client_id, sentence)
    await end_and_run(container, coach, first.conversation_id, run_jobs)
    [stored] = await insights_of(container, coach, client_id)
    edited = await http.patch(
        f"/api/v1/clients/{client_id}/memory/insights/{stored.id}",
        headers=coach.headers,
        json={"status": "achieved", "importance": 3},
    )
    assert edited.status_code == 200 and edited.json()["edited_by_coach"] is True, edited.text
    await shift_back(container, coach, client_id, timedelta(days=7))

    second = await say(container, coach, client_id, sentence, first.conversation_id)
    await end_and_run(container, coach, first.conversation_id, run_jobs)

    [merged] = await insights_of(container, coach, client_id)
    assert merged.id == stored.id and merged.mentions == 2, "the restatement was merged into it"
    assert second.received_message_id in merged.source_message_ids
    assert (merged.status, merged.importance, merged.text) == ("achieved", 3, PROMOTION), "the coach's edit stands"
    assert merged.edited_by_coach is True


async def test_a_dropped_goal_is_retired_and_no_longer_recalled(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """The client gives the goal up: the model's 'dropped' note updates the stored goal (status ``dropped``,
    new wording); recall never returns it, even for a query that is its own text, and a later prompt does
    not carry it."""
    client_id = await new_client(http, coach, "Ines")
    coach_id = uuid.UUID(coach.coach_id)
    first = await say(container, coach, client_id, "I want to finish my novel manuscript by December.")
    await end_and_run(container, coach, first.conversation_id, run_jobs)
    [goal] = await insights_of(container, coach, client_id)
    assert (goal.text, goal.status) == (NOVEL, "active")
    await shift_back(container, coach, client_id, timedelta(days=10))

    await say(
        container,
        coach,
        client_id,
        "I've decided to give up on the novel, writing just drains me now.",
        first.conversation_id,
    )
    await end_and_run(container, coach, first.conversation_id, run_jobs)

    [retired] = await insights_of(container, coach, client_id)
    assert retired.id == goal.id
    assert (retired.status, retired.text, retired.mentions) == ("dropped", NOVEL_DROPPED, 2)
    [decision] = llm.structured["decision"]
    assert decision["messages"][-1]["content"] == f"Stored note: {NOVEL}\nNew note: {NOVEL_DROPPED}"
    embedder = container.registry.local_embedder()
    for query in (NOVEL, NOVEL_DROPPED, "How is my novel going?"):
        [vector] = await embedder.embed([query])
        async with tenant_session(container.sessionmaker, coach_id) as s:
            items = await recall(
                s,
                coach_id,
                client_id,
                query=query,
                query_embedding=vector,
                embedding_model=embedder.model,
                now=datetime.now(UTC),
                limit=20,
            )
        assert goal.id not in {item.id for item in items}
        assert all(item.layer in ("summary", "message") for item in items)

    await shift_back(container, coach, client_id, timedelta(days=1))
    later = await say(container, coach, client_id, "Any thoughts on my novel?")
    assert later.metadata["memory"]["insight_ids"] == []
    system = system_prompt(llm)
    assert insight_line(NOVEL) not in system and insight_line(NOVEL_DROPPED) not in system
    assert "- [goal" not in system
    assert "learn Spanish before my trip" not in system, "nor inside a session summary"


async def test_an_updated_goal_is_dated_when_the_new_goal_was_said(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """Session 1 sets a goal; 21 days later the client changes it and the model says 'update': the insight now
    reads the new goal and is dated the day it was said, in the row and in the next prompt's label (before: the
    old goal's date, so "when did I tell you about my 10k goal" got session 1's day)."""
    client_id = await new_client(http, coach, "Ruth")
    first = await say(container, coach, client_id, "I want to run a half marathon in October.")
    await end_and_run(container, coach, first.conversation_id, run_jobs)
    [goal] = await insights_of(container, coach, client_id)
    assert goal.text == HALF_MARATHON
    await shift_back(container, coach, client_id, timedelta(days=21))

    second = await say(
        container,
        coach,
        client_id,
        "I changed my goal: I now want to run a 10k race in March instead of the half marathon in October.",
        first.conversation_id,
    )
    await end_and_run(container, coach, first.conversation_id, run_jobs)

    [updated] = await insights_of(container, coach, client_id)
    said = (await messages_by_id(container, coach, [second.received_message_id]))[second.received_message_id]
    assert (updated.id, updated.text, updated.mentions) == (goal.id, TEN_K, 2), "the model's update rewrote it"
    assert updated.first_seen_at == updated.last_seen_at == said.created_at, "dated when the new goal was said"
    await say(container, coach, client_id, "When did I first tell you about my 10k race goal?")
    system = system_prompt(llm)
    assert f"- [goal, {said.created_at:%Y-%m-%d}] {TEN_K}\n" in system
    assert f"[goal, {goal.first_seen_at - timedelta(days=21):%Y-%m-%d}]" not in system


async def profile_of(container: Container, coach_id: uuid.UUID, client_id: uuid.UUID) -> ClientProfile:
    async with tenant_session(container.sessionmaker, coach_id) as session:
        profile = await session.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))
    assert profile is not None
    return profile


async def test_a_deleted_insight_never_reappears(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """The coach deletes an insight: the summary built on its message is written again without it, and the
    profile line learnt from that session goes. The client restates it and extraction runs again: the tombstone
    stops it (no new row, no decision asked, the tombstone keeps no text, only its message ids), and the next
    prompt carries it neither as an insight nor inside a summary."""
    client_id = await new_client(http, coach, "Jonas")
    coach_id = uuid.UUID(coach.coach_id)
    first = await say(container, coach, client_id, "I want to learn Spanish before my trip to Madrid in May.")
    # (an exchange after it: forgetting the message forgets the reply to it, and the summary is written from the rest)
    await say(container, coach, client_id, "Thanks, that helps.", first.conversation_id)
    await end_and_run(container, coach, first.conversation_id, run_jobs)
    [insight] = await insights_of(container, coach, client_id)
    assert insight.text == SPANISH
    assert (await profile_of(container, coach_id, client_id)).sensitive_topics == [SPANISH_TOPIC]
    summaries_before = len(llm.structured["summary"])
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        await container.memory.delete_insight(uow, client_id, insight.id)
    await run_jobs()
    assert (await profile_of(container, coach_id, client_id)).sensitive_topics == [], "the line learnt from it"
    assert len(llm.structured["summary"]) > summaries_before, "the session's summary was written again"
    resummarised = llm.structured["summary"][-1]["messages"][-1]["content"]
    assert "learn Spanish before my trip" not in resummarised, "without the forgotten message"
    async with tenant_session(container.sessionmaker, coach_id) as s:
        first_session = await s.scalar(select(ChatSession).where(ChatSession.conversation_id == first.conversation_id))
        assert first_session is not None and first_session.status in ("summarized", "failed")
        assert "Spanish" not in json.dumps(first_session.summary or {})
    await shift_back(container, coach, client_id, timedelta(days=2))

    await say(
        container, coach, client_id, "I really still want to learn Spanish before Madrid in May.", first.conversation_id
    )
    await end_and_run(container, coach, first.conversation_id, run_jobs)

    extraction = llm.structured["extract"][-1]["messages"][-1]["content"]
    assert "still want to learn Spanish" in extraction, "extraction ran over the restatement"
    assert SPANISH not in extraction.split("New messages:")[0], "a deleted insight is not offered as known"
    [tombstone] = await insights_of(container, coach, client_id)
    assert tombstone.id == insight.id
    assert (tombstone.status, tombstone.text, tombstone.mentions) == ("deleted", "", 1)
    assert tombstone.source_message_ids == insight.source_message_ids, "kept to leave them out of summaries"
    assert llm.structured["decision"] == []
    async with tenant_session(container.sessionmaker, coach_id) as s:
        assert (await container.memory.client_memory(s, coach_id, client_id)).insights == []

    later = await say(container, coach, client_id, "What should I practise this week?")
    assert later.metadata["memory"]["insight_ids"] == []
    system = system_prompt(llm)
    assert insight_line(SPANISH) not in system and insight_line(SPANISH_RESTATED) not in system
    assert "- [goal" not in system


async def test_a_session_whose_every_message_is_forgotten_ends_without_a_summary_and_without_failing(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """The client forgets the insight of a one-exchange session (its message and the reply to it): the summary
    job written again finds nothing to summarise and ends quietly — the arq result a success, no model asked, the
    session neither failed nor listed, and its old summary, vector and profile line gone for good."""
    client_id = await new_client(http, coach, "Ines")
    coach_id = uuid.UUID(coach.coach_id)
    turn = await say(container, coach, client_id, "I want to learn Spanish before my trip to Madrid in May.")
    session_id = await end_and_run(container, coach, turn.conversation_id, run_jobs)
    [insight] = await insights_of(container, coach, client_id)
    [summarised] = await sessions_of(container, coach, client_id)
    assert summarised.status == SessionStatus.SUMMARIZED and "Spanish" in json.dumps(summarised.summary)
    assert (await profile_of(container, coach_id, client_id)).sensitive_topics == [SPANISH_TOPIC]
    summaries_before = len(llm.structured["summary"])

    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        await container.memory.delete_insight(uow, client_id, insight.id)
    await run_jobs()

    result = await job_outcome(container, f"{SUMMARIZE_SESSION}:{session_id}:forget:{insight.id}")
    assert result is not None and result.success is True, result and result.result
    assert result.result == NOTHING_TO_SUMMARISE
    assert len(llm.structured["summary"]) == summaries_before, "no model asked to summarise nothing"
    [emptied] = await sessions_of(container, coach, client_id)
    assert (emptied.status, emptied.summary, emptied.summary_error) == (SessionStatus.DELETED, None, None)
    assert emptied.embedding is None and emptied.source_message_ids == []
    assert (await profile_of(container, coach_id, client_id)).sensitive_topics == [], "the line learnt from it"
    async with tenant_session(container.sessionmaker, coach_id) as s:
        assert (await container.memory.client_memory(s, coach_id, client_id)).summaries == []
    memory = await http.get(f"/api/v1/clients/{client_id}/memory", headers=coach.headers)
    assert memory.status_code == 200 and memory.json()["summaries"] == [], "not listed, as failed or otherwise"


async def test_a_session_holding_only_the_coachs_check_in_gets_no_summary_and_does_not_fail(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """A day after the client's session the coach sends a check-in the client does not answer; the session
    holding only it ends: no model is asked to summarise it, the job succeeds and the session is neither failed
    nor listed (before: three summary calls, then ``failed`` with "only 0% of its sentences are grounded")."""
    client_id = await new_client(http, coach, "Lea")
    turn = await say(container, coach, client_id, "I want to learn Spanish before my trip to Madrid in May.")
    first = await end_and_run(container, coach, turn.conversation_id, run_jobs)
    await shift_back(container, coach, client_id, timedelta(days=1))
    summaries_before = len(llm.structured["summary"])

    sent = await http.post(
        f"/api/v1/conversations/{turn.conversation_id}/messages",
        headers=coach.headers,
        json={"text": "Hi Lea, how did your Spanish lesson go this week?"},
    )
    assert sent.status_code == 201, sent.text
    check_in = await end_and_run(container, coach, turn.conversation_id, run_jobs)

    assert check_in != first
    result = await job_outcome(container, f"{SUMMARIZE_SESSION}:{check_in}:ended")
    assert result is not None and result.success is True, result and result.result
    assert result.result == NO_CLIENT_MESSAGE
    assert len(llm.structured["summary"]) == summaries_before, "no model asked to summarise the coach's words"
    summarised, unsummarised = await sessions_of(container, coach, client_id)
    assert summarised.status == SessionStatus.SUMMARIZED
    assert (unsummarised.status, unsummarised.summary, unsummarised.summary_error) == (
        SessionStatus.DELETED,
        None,
        None,
    )
    memory = await http.get(f"/api/v1/clients/{client_id}/memory", headers=coach.headers)
    assert [row["id"] for row in memory.json()["summaries"]] == [str(first)], "no failed summary listed"


async def test_an_insight_forgotten_while_extraction_decides_does_not_come_back(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client restates a goal, and forgets it while the extraction job has planned to merge the restatement
    into it: the job stores nothing (it inserted the restatement as a new, active insight, the forgotten goal
    back in every prompt)."""
    client_id = await new_client(http, coach, "Ines")
    coach_id = uuid.UUID(coach.coach_id)
    first = await say(container, coach, client_id, "I want to learn Spanish before my trip to Madrid in May.")
    await end_and_run(container, coach, first.conversation_id, run_jobs)
    [insight] = await insights_of(container, coach, client_id)
    await shift_back(container, coach, client_id, timedelta(days=2))
    plan, forgotten = InsightService._plan, []

    async def forgotten_meanwhile(self: InsightService, *args: Any, **kwargs: Any) -> Any:
        planned = await plan(self, *args, **kwargs)
        if not forgotten:
            async with unit_of_work(container.sessionmaker, coach_id) as uow:
                await container.memory.delete_insight(uow, client_id, insight.id)
            forgotten.append(insight.id)
        return planned

    monkeypatch.setattr(InsightService, "_plan", forgotten_meanwhile)
    await say(
        container, coach, client_id, "I really still want to learn Spanish before Madrid in May.", first.conversation_id
    )
    await end_and_run(container, coach, first.conversation_id, run_jobs)
    assert forgotten == [insight.id], "the extraction planned over the restatement"
    rows = await insights_of(container, coach, client_id)
    assert [(row.id, row.status, row.text) for row in rows] == [(insight.id, "deleted", "")]


async def test_an_update_plan_made_before_a_forget_does_not_write_the_forgotten_fact_into_another_insight(
    container: Container, http: httpx.AsyncClient, coach: Coach
) -> None:
    """The extraction planned to update insight X with a fact; the client then deleted insight Y holding that
    fact. Applying the plan re-checks the tombstones for an update as for an insert: the fact stays forgotten
    (the update wrote it into X, back in every prompt)."""
    client_id = await new_client(http, coach, "Ola")
    coach_id = uuid.UUID(coach.coach_id)
    fact = "Plans to leave Acme"
    [vector] = await container.registry.local_embedder().embed([fact])
    now = datetime.now(UTC)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        session.add(
            Insight(
                coach_id=coach_id,
                client_id=client_id,
                kind="goal",
                text="",
                importance=5,
                status=InsightStatus.DELETED,
                source_message_ids=[],
                first_seen_at=now,
                last_seen_at=now,
                embedding=vector,
                embedding_model="all-MiniLM-L6-v2",
                tombstone_embedding=vector,
            )
        )
        extracted = ExtractedInsight(kind="goal", text=fact, importance=5, status="active", evidence=[1])
        for action in ("update", "insert", "merge"):
            plan = _Planned(action, extracted, vector, [], now, uuid.uuid4(), vector)
            stopped = await InsightService._forgotten_since(session, client_id, "all-MiniLM-L6-v2", plan)
            assert stopped is (action != "merge"), action  # a merge keeps the target's own text


async def test_what_the_model_copies_from_the_worked_example_is_not_remembered(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A small model copies the worked example's words, as written or nearly ("Knee pain.", "Nervous, but
    motivated!", the example's insight "Sam's knee hurts after long runs." word for word, the example's summary
    sentence with the client's name), into a real client's insights, summary and profile: those are dropped (the
    insight reached the coach's page, a made-up sensitive topic every later prompt), a summary whose prose
    repeats the example is sampled again; the client's own stay."""
    summary, profile, extract = FakeOpenAI._summary, FakeOpenAI._profile, FakeOpenAI._extract

    def echoing_summary(user: str) -> dict[str, Any]:
        answer = summary(user)
        return answer | {"topics": [*answer["topics"], "Knee pain."], "emotional_state": "Nervous, but motivated!"}

    def echoing_profile(user: str) -> dict[str, Any]:
        answer = profile(user)
        return answer | {"sensitive_topics": ["knee injury"], "tone": "warm and encouraging"}

    def echoing_extract(user: str) -> dict[str, Any]:
        copied = {"kind": "blocker", "text": "Sam's knee hurts after long runs.", "importance": 6, "status": "active"}
        answer = extract(user)
        return {"insights": [*answer["insights"], copied | {"evidence": [1]}]}

    monkeypatch.setattr(FakeOpenAI, "_summary", staticmethod(echoing_summary))
    monkeypatch.setattr(FakeOpenAI, "_profile", staticmethod(echoing_profile))
    monkeypatch.setattr(FakeOpenAI, "_extract", staticmethod(echoing_extract))
    said = "I want to run the Berlin marathon in September 2027, my knee hurts after long runs."
    prose = f"In this session the client said: {said} Pia is nervous because the knee hurts after long runs and "
    copied_prose = prose + "will see a physiotherapist on Friday."
    llm.summary_answers.append(openai_completion(json.dumps(echoing_summary("") | {"summary": copied_prose})))
    client_id = await new_client(http, coach, "Pia")
    turn = await say(container, coach, client_id, said)
    await end_and_run(container, coach, turn.conversation_id, run_jobs)
    assert [insight.text for insight in await insights_of(container, coach, client_id)] == [MARATHON]
    [ended] = await sessions_of(container, coach, client_id)
    assert len(llm.structured["summary"]) == 2, "the answer that copied the example's prose was sampled again"
    assert ended.summary is not None and "physiotherapist" not in ended.summary["summary"]
    assert ended.summary["topics"] == summary(llm.structured["summary"][-1]["messages"][-1]["content"])["topics"]
    assert ended.summary["emotional_state"] == ECHO_UNSTATED
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as s:
        stored = await s.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))
    assert stored is not None and stored.sensitive_topics == [] and stored.tone != "warm and encouraging"
    assert stored.communication_preferences == PROFILE["communication_preferences"]


async def test_an_insight_stands_on_the_clients_own_words_not_the_ais(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bruno only greets and asks a question. The model notes the AI's reply as his goal (citing the AI's
    message), and a goal that resembles his greeting by his name alone: neither is stored (both reached his
    memory page). What he did say is stored, its sources his own message, not the AI's it also cited."""
    said = ("Hello! 😀🎉 I'm Bruno.", "I have a question about my summer plans.")
    question = "Bruno has a question about his summer plans"

    def extract(user: str) -> dict[str, Any]:
        lines = [LINE.match(raw) for raw in user.split("New messages:\n", 1)[1].splitlines()]
        ai = [int(line[1]) for line in lines if line and line[2] == "Assistant"]
        own = [int(line[1]) for line in lines if line and line[2] == "Bruno"]
        note = {"kind": "goal", "importance": 6, "status": "active"}
        return {
            "insights": [
                note | {"text": "".join(REPLY), "evidence": ai},
                note | {"text": "Bruno wants to improve his creative writing", "evidence": own[:1]},
                note | {"kind": "commitment", "text": question, "evidence": [*ai, own[-1]]},
            ]
        }

    monkeypatch.setattr(FakeOpenAI, "_extract", staticmethod(extract))
    client_id = await new_client(http, coach, "Bruno")
    first = await say(container, coach, client_id, said[0])
    await say(container, coach, client_id, said[1], first.conversation_id)
    await end_and_run(container, coach, first.conversation_id, run_jobs)
    assert llm.structured["extract"], "the extraction ran"
    [stored] = await insights_of(container, coach, client_id)
    assert stored.text == question
    sources = await messages_by_id(container, coach, stored.source_message_ids)
    assert [(m.sender_type, m.text) for m in sources.values()] == [(SenderType.CLIENT, said[1])]


async def test_the_coachs_own_profile_line_restated_by_a_session_stays_when_that_session_is_forgotten(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """The coach writes a profile line before any session; a session's profile update then says the same. The
    line stays the coach's: no session is recorded as its source, so forgetting that session keeps it."""
    client_id = await new_client(http, coach, "Noor")
    url = f"/api/v1/clients/{client_id}/memory"
    own = {"communication_preferences": ["Likes short, concrete plans"]}  # what the fake model's profile says
    assert (await http.patch(f"{url}/profile", headers=coach.headers, json=own)).status_code == 200
    turn = await say(container, coach, client_id, "I want to run the Berlin marathon in September 2027.")
    session_id = await end_and_run(container, coach, turn.conversation_id, run_jobs)
    assert len(llm.structured["profile"]) == 1, "the session's profile update ran"
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as s:
        profile = await s.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))
    assert profile is not None and "likes short, concrete plans" not in profile.entry_sessions.get(
        "communication_preferences", {}
    )
    assert (await http.delete(f"{url}/summaries/{session_id}", headers=coach.headers)).status_code == 204
    shown = (await http.get(url, headers=coach.headers)).json()["profile"]
    assert shown["communication_preferences"] == ["Likes short, concrete plans"]


async def test_a_summary_written_while_the_client_forgets_more_of_its_session_leaves_that_out(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two insights of one session are forgotten one after the other, the second while the summary the first
    asked for is being written: that summary, built on the second's message, is not stored, and the session is
    summarised again without either message (it was stored, and the second forget queued no rewrite)."""
    client_id = await new_client(http, coach, "Mara")
    coach_id = uuid.UUID(coach.coach_id)
    first = await say(container, coach, client_id, "I want to run the Berlin marathon in September.")
    await say(container, coach, client_id, "And I want to finish my novel this year.", first.conversation_id)
    await say(container, coach, client_id, "Long walks on Sundays help me think.", first.conversation_id)
    session_id = await end_and_run(container, coach, first.conversation_id, run_jobs)
    marathon, novel = sorted(await insights_of(container, coach, client_id), key=lambda i: i.text != MARATHON)
    assert (marathon.text, novel.text) == (MARATHON, NOVEL)

    summarize, forgotten = SummaryService._summarize, []

    async def novel_forgotten_meanwhile(self: SummaryService, *args: Any, **kwargs: Any) -> Any:
        output = await summarize(self, *args, **kwargs)
        if not forgotten:
            async with unit_of_work(container.sessionmaker, coach_id) as uow:
                await container.memory.delete_insight(uow, client_id, novel.id)
            forgotten.append(novel.id)
        return output

    monkeypatch.setattr(SummaryService, "_summarize", novel_forgotten_meanwhile)
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        await container.memory.delete_insight(uow, client_id, marathon.id)
    await run_jobs()
    assert forgotten == [novel.id]
    [summarised] = await sessions_of(container, coach, client_id)
    assert summarised.status == "summarized", summarised.summary_error
    assert "Long walks" in json.dumps(summarised.summary)
    assert "marathon" not in json.dumps(summarised.summary) and "novel" not in json.dumps(summarised.summary)
    assert not {*marathon.source_message_ids, *novel.source_message_ids} & set(summarised.source_message_ids)
    # each summary stored queued its own profile update, the rewrite's within the hour arq keeps the first's id
    profile_jobs = [
        await job_outcome(container, f"{UPDATE_PROFILE}:{session_id}:{n}") for n in (1, summarised.summary_attempts)
    ]
    assert summarised.summary_attempts == 3  # the first, the one stored meanwhile not kept, the rewrite
    assert [job.success for job in profile_jobs] == [True, True]  # type: ignore[union-attr]


# --- session summaries ----------------------------------------------------------------------------------


async def test_invalid_model_output_fails_the_summary_job_and_stores_nothing(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """Three answers that do not validate, one per retry temperature — a cut-off JSON, a well-formed summary
    not grounded in the session's messages, too many topics: the session ends ``failed`` with the reason in
    ``summary_error``, ``summary`` stays NULL, no profile update is queued, and the arq job result is a
    failure (not retried)."""
    client_id = await new_client(http, coach, "Ravi")
    coach_id = uuid.UUID(coach.coach_id)
    turn = await say(container, coach, client_id, "I keep putting off my thesis chapter every single day.")
    good = {
        "summary": "Ravi keeps postponing the thesis chapter.",
        "topics": ["thesis"],
        "insights": [],
        "action_items": [],
        "emotional_state": "stuck",
    }
    llm.summary_answers = [
        openai_completion(json.dumps(good)[:50], finish_reason="length"),
        openai_completion(
            json.dumps({**good, "summary": "Ravi described a holiday in Portugal and a new recipe for fish stew."})
        ),
        openai_completion(json.dumps({**good, "topics": [f"topic {i}" for i in range(9)]})),
    ]

    session_id = await end_and_run(container, coach, turn.conversation_id, run_jobs)

    async with tenant_session(container.sessionmaker, coach_id) as s:
        failed = await s.get_one(ChatSession, session_id)
        profile = await s.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))
    assert failed.status == SessionStatus.FAILED
    assert failed.summary is None and failed.embedding is None and failed.source_message_ids == []
    assert failed.summary_error and failed.summary_error.startswith("SessionSummaryOutput: 3 answers failed")
    assert "topics" in failed.summary_error, "the reason names the last error"
    assert failed.summary_attempts == 1
    assert [body["temperature"] for body in llm.structured["summary"]] == list(RETRY_TEMPERATURES)
    assert llm.summary_answers == []
    assert profile is None and llm.structured["profile"] == []
    result = await job_outcome(container, f"{SUMMARIZE_SESSION}:{session_id}:ended")
    assert result is not None and result.success is False
    assert isinstance(result.result, SummaryFailed) and result.job_try == 1
    assert await Job(f"{UPDATE_PROFILE}:{session_id}:1", container.redis).status() == JobStatus.not_found


SWIMMING = (
    "I want to learn to swim 1 km by summer, but I am afraid of deep water.",
    "My brother Luis swims every day and offered to help me on Saturdays.",
)
SORRY = "I'm so sorry to hear that your brother was willing to help you."
"""The AI's reply that SmolLM2 stored as the client's summary (found by a tester)."""
HONEST = {
    "summary": "Maria wants to learn to swim 1 km by summer but is afraid of deep water. Her brother Luis swims "
    "every day and offered to help her on Saturdays.",
    "topics": ["swimming 1 km by summer", "fear of deep water"],
    "insights": ["Luis can help Maria train"],
    "action_items": ["Practise with Luis on Saturdays"],
    "emotional_state": "motivated but anxious",
}


async def swimming_session(
    container: Container, http: httpx.AsyncClient, coach: Coach, llm: FakeOpenAI, reply: str = SORRY
) -> tuple[uuid.UUID, dict[str, str]]:
    """Maria Lopez's two messages of the tester's session, each answered with ``reply``; returns the
    conversation's id and her widget's headers."""
    llm.reply = [reply]
    client = await make_client(http, coach, "Maria Lopez")
    first = await say(container, coach, uuid.UUID(client["id"]), SWIMMING[0])
    await say(container, coach, uuid.UUID(client["id"]), SWIMMING[1], first.conversation_id)
    return first.conversation_id, {"Authorization": f"Bearer {client['widget_token']}"}


@pytest.mark.parametrize(
    ("junk", "reason"),
    [
        (  # the reply, credited to the client, in the transcript's form
            {"summary": f"Maria Lopez (2026-12-07 21:13): {SORRY}"},
            "copies a transcript line's 'Name (date time):'",
        ),
        ({"topics": ["Maria Lopez (2019-3-8 17:56): swimming"]}, "copies a transcript line's 'Name (date time):'"),
        (  # the reply as what the client said, without the transcript's form
            {"summary": f"Maria said: {SORRY} She wants to learn to swim 1 km by summer."},
            "summary: gives the Assistant's or the Coach's words as the client's",
        ),
    ],
)
async def test_a_summary_that_copies_the_transcript_or_the_reply_is_refused(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
    junk: dict[str, Any],
    reason: str,
) -> None:
    """A tester's session with SmolLM2 was stored as ``summarized`` with the summary "Maria Lopez (2026-12-07
    21:13): I'm so sorry to hear that your brother was willing to help you…" (the AI's reply credited to the
    client) and the topic "Soccer player (2019-3-8 17:56)", all shown to the client on her memory page and recalled
    in place of her own words. Each such answer is now refused: sampled again at every retry temperature, then the
    session ends ``failed`` with the reason, and nothing is stored. (List entries nobody spoke of are dropped from
    a summary kept: ``test_an_honest_summary_is_kept_and_a_next_step_nobody_spoke_of_is_dropped``.)"""
    conversation_id, as_maria = await swimming_session(container, http, coach, llm)
    llm.summary_answers = [openai_completion(json.dumps(HONEST | junk)) for _ in RETRY_TEMPERATURES]

    session_id = await end_and_run(container, coach, conversation_id, run_jobs)

    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as s:
        failed = await s.get_one(ChatSession, session_id)
    assert len(llm.structured["summary"]) == len(RETRY_TEMPERATURES), "each answer was refused"
    assert failed.status == SessionStatus.FAILED and failed.summary is None and failed.embedding is None
    assert failed.summary_error is not None and reason in failed.summary_error, failed.summary_error
    assert llm.structured["profile"] == [], "no profile update learns from it"
    assert (await http.get("/api/v1/widget/memory", headers=as_maria)).json()["summaries"] == []


async def test_a_summary_of_the_replys_words_and_invention_is_refused_one_of_the_clients_words_kept(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """Half of a summary's sentences had to be grounded in any message of the session: one retelling the AI's reply
    and one nobody said ("excited about the upcoming marathon") passed. A sentence grounded only in the Assistant's
    or the Coach's words now counts half (:data:`~app.memory.summaries.OTHERS_WEIGHT`): that summary is refused,
    and the next, which retells the same reply beside what the client said, is kept."""
    stretch = "Stretch your shoulders for five minutes before every practice."
    conversation_id, _ = await swimming_session(container, http, coach, llm, reply=stretch)
    retold = "The assistant recommended stretching the shoulders before every practice."
    invented = {"summary": f"{retold} Maria is excited about the upcoming marathon."}
    kept = {"summary": f"Maria wants to learn to swim 1 km by summer but is afraid of deep water. {retold}"}
    llm.summary_answers = [openai_completion(json.dumps(HONEST | answer)) for answer in (invented, kept)]

    session_id = await end_and_run(container, coach, conversation_id, run_jobs)

    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as s:
        stored = await s.get_one(ChatSession, session_id)
    assert len(llm.structured["summary"]) == 2, "the first answer was refused"
    assert stored.status == SessionStatus.SUMMARIZED and stored.summary is not None
    assert stored.summary["summary"] == kept["summary"]


async def test_an_honest_summary_is_kept_and_a_next_step_nobody_spoke_of_is_dropped(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """A careful model's summary of the same session — third person, in its own words, a next step from the
    reply — is stored at the first answer; an action item that shares no word with the session is dropped from it
    (a weak model lists what nobody said)."""
    conversation_id, as_maria = await swimming_session(container, http, coach, llm)
    invented = "Sign up for the city marathon"
    answer = HONEST | {"action_items": [*HONEST["action_items"], invented]}
    llm.summary_answers = [openai_completion(json.dumps(answer))]

    session_id = await end_and_run(container, coach, conversation_id, run_jobs)

    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as s:
        kept = await s.get_one(ChatSession, session_id)
    assert_valid_summary(kept, await session_message_ids(container, uuid.UUID(coach.coach_id), session_id))
    assert len(llm.structured["summary"]) == 1, "accepted at the first answer"
    assert kept.summary is not None and kept.summary["summary"] == HONEST["summary"]
    assert (kept.summary["topics"], kept.summary["insights"]) == (HONEST["topics"], HONEST["insights"])
    assert kept.summary["action_items"] == HONEST["action_items"], "the invented next step is dropped"
    [shown] = (await http.get("/api/v1/widget/memory", headers=as_maria)).json()["summaries"]
    assert (shown["summary"], shown["action_items"]) == (HONEST["summary"], HONEST["action_items"])


async def test_the_memory_jobs_read_the_session_dated_in_the_coachs_zone(
    container: Container,
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """A coach in Kiritimati (UTC+14): the chat prompt dates the client's memory and "today" there, but the summary,
    extraction and profile requests dated the messages in UTC, unmarked — the day before, there, in the evening
    hours — so a summary read "(2026-12-07 21:13)" under ``[session of 2026-12-08]`` and "tomorrow" was counted
    from UTC's day. Each job's transcript now dates the messages in the coach's zone and says which."""
    zone = ZoneInfo("Pacific/Kiritimati")
    kiritimati = await make_coach("Coach Teiwaki")
    availability = {"timezone": zone.key, "days": list(range(7)), "start": "00:00", "end": "23:59"}
    settings = {"llm_provider": "openai", "llm_model": LLM_MODEL, "llm_base_url": LLM_BASE_URL, "llm_api_key": LLM_KEY}
    patched = await http.patch(
        "/api/v1/settings", headers=kiritimati.headers, json=settings | {"availability": availability}
    )
    assert patched.status_code == 200, patched.text
    client_id = await new_client(http, kiritimati, "Maria Lopez")
    turn = await say(container, kiritimati, client_id, "I want to run the Berlin marathon, I start tomorrow.")
    sent = (await messages_by_id(container, kiritimati, [turn.received_message_id]))[turn.received_message_id]
    await end_and_run(container, kiritimati, turn.conversation_id, run_jobs)

    there = sent.created_at.astimezone(zone)
    line = f"] Maria Lopez ({there:%a %Y-%m-%d %H:%M} +14): I want to run the Berlin marathon"
    utc = f"({sent.created_at:%Y-%m-%d %H:%M}"
    for job in ("summary", "extract", "profile"):
        [request] = llm.structured[job]
        transcript = request["messages"][-1]["content"]
        assert line in transcript and utc not in transcript, (job, transcript)


def _esconv_dialog(max_tokens: int) -> dict[str, Any]:
    """The first ESConv conversation of the validation split whose transcript fits one summary window."""
    with ESCONV.open() as lines:
        for line in lines:
            record = json.loads(line)
            if sum(count_tokens(turn["text"]) + LINE_PREFIX_TOKENS for turn in record["dialog"]) <= max_tokens:
                return record
    raise AssertionError("no ESConv conversation fits")


async def test_local_model_summarises_a_real_esconv_session_or_fails_cleanly(
    container: Container,
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    settings: Settings,
) -> None:
    """A real emotional-support conversation (ESConv; seeker → client, supporter → human coach) loaded as one
    session, ended, summarised by the offline SmolLM2 through the arq worker: the session ends either
    ``summarized`` with a summary that validates and is grounded in its own messages, or ``failed`` with the
    reason — never anything else, never a half-valid summary.

    The conversation is imported as already read for insights (watermark at its last message), so only the
    summary (and, on success, the profile) runs on the slow local model."""
    local = await make_coach("Local Coach")
    coach_id = uuid.UUID(local.coach_id)
    client_id = await new_client(http, local, "Sam")
    window = int((settings.llm_context_tokens - SUMMARY_MAX_TOKENS) * PROMPT_SHARE)
    record = _esconv_dialog(min(window, 700))
    start = datetime.now(UTC) - timedelta(days=1)
    times = [start + timedelta(minutes=i) for i in range(len(record["dialog"]))]
    async with tenant_session(container.sessionmaker, coach_id) as s:
        conversation = Conversation(coach_id=coach_id, client_id=client_id, channel="api")
        s.add(conversation)
        await s.flush()
        chat_session = ChatSession(
            coach_id=coach_id,
            client_id=client_id,
            conversation_id=conversation.id,
            status=SessionStatus.OPEN,
            started_at=times[0],
            last_message_at=times[-1],
            message_count=len(times),
            source_message_ids=[],
        )
        s.add(chat_session)
        await s.flush()
        for turn, at in zip(record["dialog"], times, strict=True):
            sender = SenderType.CLIENT if turn["speaker"] == "usr" else SenderType.HUMAN_COACH
            s.add(
                Message(
                    coach_id=coach_id,
                    conversation_id=conversation.id,
                    session_id=chat_session.id,
                    sender_type=sender,
                    text=turn["text"],
                    citations=[],
                    meta={},
                    created_at=at,
                )
            )
        conversation.last_message_at = times[-1]
        conversation.insights_extracted_through = times[-1]
    message_ids = await session_message_ids(container, coach_id, chat_session.id)
    assert len(message_ids) == len(record["dialog"])

    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        assert await container.sessions.end_session(uow, conversation.id) == chat_session.id
    await run_jobs()

    async with tenant_session(container.sessionmaker, coach_id) as s:
        done = await s.get_one(ChatSession, chat_session.id)
    result = await job_outcome(container, f"{SUMMARIZE_SESSION}:{chat_session.id}:ended")
    assert result is not None
    assert done.status in (SessionStatus.SUMMARIZED, SessionStatus.FAILED), done.status
    assert done.summary_attempts == 1
    if done.status == SessionStatus.SUMMARIZED:
        assert_valid_summary(done, message_ids)
        summary = SessionSummary.model_validate(done.summary)
        assert summary.message_count == len(message_ids)
        assert (summary.started_at, summary.ended_at) == (times[0], times[-1])
        assert result.success is True and result.result == SessionStatus.SUMMARIZED
    else:
        assert done.summary is None and done.embedding is None
        assert done.summary_error and "failed validation" in done.summary_error
        assert result.success is False and isinstance(result.result, SummaryFailed)


async def test_an_idle_session_is_ended_by_the_sweep_and_summarised(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """An open session whose last message is older than the coach's gap is ended by the sweep (ended at its
    last message), its summary job is queued once (a second sweep changes nothing) and runs."""
    client_id = await new_client(http, coach, "Omar")
    coach_id = uuid.UUID(coach.coach_id)
    turn = await say(container, coach, client_id, "Quick check-in: I did my morning walk again today.")
    [open_session] = await sessions_of(container, coach, client_id)
    assert open_session.status == SessionStatus.OPEN
    async with tenant_session(container.sessionmaker, coach_id) as s:
        gap = (await s.get_one(CoachRow, coach_id)).session_idle_minutes

    await container.sessions.close_idle_sessions()
    [still_open] = await sessions_of(container, coach, client_id)
    assert still_open.status == SessionStatus.OPEN, "a session within the gap stays open"

    await shift_back(container, coach, client_id, timedelta(minutes=gap + 5))
    assert await container.sessions.close_idle_sessions() >= 1

    [ended] = await sessions_of(container, coach, client_id)
    assert ended.status == SessionStatus.ENDED
    assert ended.ended_at == ended.last_message_at
    job = Job(f"{SUMMARIZE_SESSION}:{ended.id}:ended", container.redis)
    assert await job.status() == JobStatus.queued
    await container.sessions.close_idle_sessions()
    [again] = await sessions_of(container, coach, client_id)
    assert (again.status, again.ended_at) == (SessionStatus.ENDED, ended.ended_at), "ended once"

    await run_jobs()

    [summarised] = await sessions_of(container, coach, client_id)
    assert_valid_summary(summarised, {turn.received_message_id, turn.message_id})
    assert len(llm.structured["summary"]) == 1, "the summary job ran once"
    result = await job_outcome(container, job.job_id)
    assert result is not None and result.success is True and result.result == SessionStatus.SUMMARIZED


# --- tenancy --------------------------------------------------------------------------------------------


async def test_another_coach_recalls_none_of_a_clients_memory(
    container: Container, http: httpx.AsyncClient, coach: Coach, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """Coach B's recall — even given coach A's client id, even given coach A's id — finds nothing, and raw
    selects of the memory tables in B's tenant transaction return no row of A (row-level security)."""
    coach_a = uuid.UUID(coach.coach_id)
    coach_b = uuid.UUID((await make_coach("Coach B")).coach_id)
    client_a = await new_client(http, coach, "Lena")
    embedder = container.registry.local_embedder()
    goal_text = "Wants to move to Lisbon next year"
    [vector] = await embedder.embed([goal_text])
    now = datetime.now(UTC)
    async with tenant_session(container.sessionmaker, coach_a) as s:
        conversation = Conversation(coach_id=coach_a, client_id=client_a, channel="widget")
        s.add(conversation)
        await s.flush()
        s.add(
            ChatSession(
                coach_id=coach_a,
                client_id=client_a,
                conversation_id=conversation.id,
                status=SessionStatus.SUMMARIZED,
                started_at=now - timedelta(days=1),
                last_message_at=now - timedelta(days=1),
                ended_at=now - timedelta(days=1),
                message_count=2,
                summary={"summary": "Lena talked about moving to Lisbon next year.", "action_items": []},
                source_message_ids=[],
                embedding=vector,
                embedding_model=embedder.model,
            )
        )
        s.add(
            Insight(
                coach_id=coach_a,
                client_id=client_a,
                kind="goal",
                text=goal_text,
                importance=8,
                status=InsightStatus.ACTIVE,
                mentions=1,
                source_message_ids=[],
                first_seen_at=now,
                last_seen_at=now,
                embedding=vector,
                embedding_model=embedder.model,
            )
        )
        s.add(
            ClientProfile(
                coach_id=coach_a,
                client_id=client_a,
                communication_preferences=["Prefers voice notes"],
                what_works=[],
                what_doesnt_work=[],
                tone="",
                sensitive_topics=[],
            )
        )

    def recall_for(session: Any, tenant: uuid.UUID) -> Awaitable[list[Any]]:
        return recall(
            session,
            tenant,
            client_a,
            query=goal_text,
            query_embedding=vector,
            embedding_model=embedder.model,
            now=now,
            limit=10,
        )

    async with tenant_session(container.sessionmaker, coach_a) as s:
        assert {item.layer for item in await recall_for(s, coach_a)} == {"insight", "summary"}, "A sees its own"

    async with tenant_session(container.sessionmaker, coach_b) as s:
        assert await recall_for(s, coach_b) == []
        assert await recall_for(s, coach_a) == [], "row-level security hides A's rows even when asked for A"
        coach_row = await s.get_one(CoachRow, coach_b)
        context = await context_for(
            s,
            coach_row,
            client_a,
            query=goal_text,
            query_embedding=vector,
            embedding_model=embedder.model,
            exclude_session_id=None,
        )
        assert (context.profile_lines, context.items) == ([], [])
        for model in (Insight, ChatSession, ClientProfile):
            rows = (await s.scalars(select(model))).all()
            assert all(row.coach_id == coach_b for row in rows), model.__name__
            assert not (await s.scalars(select(model).where(model.client_id == client_a))).all(), model.__name__


async def test_a_conversation_moves_to_its_newest_message(
    container: Container, http: httpx.AsyncClient, coach: Coach, llm: FakeOpenAI
) -> None:
    """PostgreSQL keeps a conversation's ``last_message_at`` (the inbox's order; the ``messages_added``
    trigger): after a turn it is the reply's time; messages stored later by any path, here one ``INSERT`` of
    three rows into two conversations, move each conversation to its own newest one."""
    client_id = await new_client(http, coach, "Ines")
    first = await say(container, coach, client_id, "How do I plan my week?")
    second = await say(container, coach, client_id, "And how do I plan my month?")  # a conversation of its own
    reply = (await messages_by_id(container, coach, [first.message_id]))[first.message_id]
    later = datetime.now(UTC) + timedelta(minutes=10)
    rows = [(first.conversation_id, later - timedelta(minutes=1)), (first.conversation_id, later)]
    rows.append((second.conversation_id, later - timedelta(minutes=2)))
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as s:
        conversations = select(Conversation.id, Conversation.last_message_at).where(
            Conversation.id.in_([first.conversation_id, second.conversation_id])
        )
        assert dict((await s.execute(conversations)).all())[first.conversation_id] == reply.created_at
        await s.execute(
            insert(Message),
            [
                {
                    "coach_id": uuid.UUID(coach.coach_id),
                    "conversation_id": conversation_id,
                    "sender_type": SenderType.HUMAN_COACH,
                    "text": "Checking in.",
                    "created_at": at,
                }
                for conversation_id, at in rows
            ],
        )
        moved = dict((await s.execute(conversations)).all())
    assert moved == {first.conversation_id: later, second.conversation_id: later - timedelta(minutes=2)}


# --- the episodic layer ---------------------------------------------------------------------------------

SISTER = "My sister Ingrid moved to Tromsø and works there as a glacier guide."


async def test_a_fact_said_in_an_old_session_is_recalled_in_a_later_sessions_prompt(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """No model extracted anything (the fake notes nothing for these words, no session was summarised): the
    client's own message of a month ago is still recalled, on its own, dated, in a new conversation's prompt;
    the AI's reply was embedded by the ``embed_messages`` job; the attribution lists the message id for the
    coach and never reaches the client; the L1 window is not recalled a second time."""
    client_id = await new_client(http, coach, "Nora")
    first = await say(container, coach, client_id, SISTER)
    await run_jobs()
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as s:
        episodes = {e.message_id: e for e in (await s.scalars(select(Episode))).all() if e.client_id == client_id}
    assert set(episodes) == {first.received_message_id, first.message_id}, "client message by the turn, AI by the job"
    assert episodes[first.message_id].embedding_model == "all-MiniLM-L6-v2"
    await shift_back(container, coach, client_id, timedelta(days=30))
    assert await insights_of(container, coach, client_id) == []

    later = await say(container, coach, client_id, "Remind me, where does Ingrid live these days?")

    assert later.conversation_id != first.conversation_id
    stored = (await messages_by_id(container, coach, [first.received_message_id]))[first.received_message_id]
    system = system_prompt(llm)
    assert MEMORY_HEADER in system
    assert f"- [client, {stored.created_at:%Y-%m-%d}] {SISTER}\n" in system, "recalled with its date"
    assert str(first.received_message_id) in later.metadata["memory"]["message_ids"]
    reply = (await messages_by_id(container, coach, [later.message_id]))[later.message_id]
    assert reply.meta["memory"]["message_ids"] == later.metadata["memory"]["message_ids"]
    assert "memory" not in client_view(reply.meta), "attribution is coach-only"
    assert str(first.received_message_id) not in json.dumps(client_view(reply.meta))

    again = await say(container, coach, client_id, "And what does Ingrid do in Tromsø?", later.conversation_id)
    in_l1 = {str(later.received_message_id), str(later.message_id)}
    assert not in_l1 & set(again.metadata["memory"]["message_ids"]), "the L1 window is not recalled"
    assert str(first.received_message_id) in again.metadata["memory"]["message_ids"]


async def test_recalled_dates_and_today_are_the_coachs_days(
    container: Container,
    http: httpx.AsyncClient,
    coach: Coach,
    llm: FakeOpenAI,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """A coach in Los Angeles: a message sent at 23:30 there (07:30 UTC the next day) is recalled under the day it
    was written on, and the prompt says which day today is there, so "last week" can be counted."""
    zone = "America/Los_Angeles"
    availability = {"timezone": zone, "days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"}
    patched = await http.patch("/api/v1/settings", headers=coach.headers, json={"availability": availability})
    assert patched.status_code == 200, patched.text
    client_id = await new_client(http, coach, "Nora")
    first = await say(container, coach, client_id, SISTER)
    await run_jobs()
    sent = (await messages_by_id(container, coach, [first.received_message_id]))[first.received_message_id]
    late_evening = (sent.created_at - timedelta(days=9)).replace(hour=7, minute=30, second=0, microsecond=0)
    await shift_back(container, coach, client_id, sent.created_at - late_evening)

    await say(container, coach, client_id, "Remind me, where does Ingrid live these days?")

    system = system_prompt(llm)
    written = late_evening.astimezone(ZoneInfo(zone)).date()
    assert written == late_evening.date() - timedelta(days=1)
    assert f"- [client, {written:%Y-%m-%d}] {SISTER}\n" in system, "dated the day it was written there"
    today = datetime.now(ZoneInfo(zone))
    assert f"{MEMORY_HEADER}\nToday is {today:%A %Y-%m-%d}.\n" in system


async def test_a_message_answered_without_the_model_is_recalled_later_too(
    container: Container, http: httpx.AsyncClient, coach: Coach, llm: FakeOpenAI
) -> None:
    """A crisis message gets the crisis reply before any retrieval: its episode is stored by the turn's
    intake all the same (once), so a later turn in a new conversation recalls it."""
    client_id = await new_client(http, coach, "Per")
    crisis = await say(container, coach, client_id, "I want to kill myself, I cannot go on.")
    assert crisis.metadata["crisis"] is True and llm.chat_requests == [], "answered without the model"
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as s:
        stored = (await s.scalars(select(Episode.message_id).where(Episode.client_id == client_id))).all()
    assert stored == [crisis.received_message_id]
    # the coach hands back (while a crisis handoff is active, every message of the client goes to its conversation)
    handback = f"/api/v1/conversations/{crisis.conversation_id}/handback"
    assert (await http.post(handback, headers=coach.headers)).status_code == 200
    await shift_back(container, coach, client_id, timedelta(days=30))

    # (in the past tense: "I cannot go on" now reads as the crisis it says, and would get the crisis reply again)
    later = await say(container, coach, client_id, "Do you remember how I felt that time I said I could not go on?")

    assert str(crisis.received_message_id) in later.metadata["memory"]["message_ids"]


async def test_forgetting_a_message_forgets_the_replies_that_may_quote_it(
    container: Container, http: httpx.AsyncClient, coach: Coach, llm: FakeOpenAI
) -> None:
    """The client forgets the insight a message of theirs gave: the AI's reply to that message (which quoted it)
    is forgotten with it and leaves the recent turns of the next prompt; the replies to later messages stay."""
    client_id = await new_client(http, coach, "Pia")
    secret = await say(container, coach, client_id, "My secret: I am pregnant and have not told my boss yet.")
    after = await say(container, coach, client_id, "Anyway, how do I plan my week?", secret.conversation_id)
    coach_id = uuid.UUID(coach.coach_id)
    async with tenant_session(container.sessionmaker, coach_id) as s:  # the model quoted the client
        quoting = await s.get_one(Message, secret.message_id)
        quoting.text = "You said you are pregnant and have not told your boss yet. That is a lot to carry."
    insight = await seed_insight(
        container, coach_id, client_id, "Pia is pregnant", kind="blocker", sources=[secret.received_message_id]
    )
    forgotten = await http.delete(f"/api/v1/clients/{client_id}/memory/insights/{insight.id}", headers=coach.headers)
    assert forgotten.status_code == 204, forgotten.text

    await say(container, coach, client_id, "What should I do first?", secret.conversation_id)

    sent = json.dumps(llm.chat_requests[-1]["messages"])
    assert "pregnant" not in sent, "neither the message nor the reply quoting it is in the prompt"
    assert "how do I plan my week?" in sent and "".join(REPLY) in sent, "the later exchange stays"
    by_id = await messages_by_id(container, coach, [secret.message_id, after.message_id])
    assert by_id[secret.message_id].forgotten_at is not None and by_id[after.message_id].forgotten_at is None


async def test_forgetting_an_insight_forgets_the_later_replies_that_repeat_it(
    container: Container, http: httpx.AsyncClient, coach: Coach, llm: FakeOpenAI
) -> None:
    """A reply several turns later, or in another conversation, repeated the forgotten fact ("your sister's
    diabetes", her name): only the reply right after the source message was forgotten, so the fact came back in
    the next prompt's recall and in the training data (found by a privacy run). Replies sharing two of the
    fact's words, or a name the client wrote, are forgotten too; the others, and the client's messages, stay."""
    client_id = await new_client(http, coach, "Lea")
    secret = await say(container, coach, client_id, "My sister Ingrid was diagnosed with diabetes last week.")
    later = await say(container, coach, client_id, "How do I plan my week?", secret.conversation_id)
    other = await say(container, coach, client_id, "Any tips for better sleep?")  # another conversation
    kept = await say(container, coach, client_id, "How do I keep a journal?", other.conversation_id)
    coach_id = uuid.UUID(coach.coach_id)
    async with tenant_session(container.sessionmaker, coach_id) as s:  # the model came back to it
        (await s.get_one(Message, later.message_id)).text = "With your sister's diabetes on your mind, plan lightly."
        (await s.get_one(Message, other.message_id)).text = "Ask Ingrid how she sleeps: a shared routine helps."
        (await s.get_one(Message, kept.message_id)).text = "Write three lines each night about your day."
    insight = await seed_insight(
        container, coach_id, client_id, "Lea's sister was diagnosed with diabetes", sources=[secret.received_message_id]
    )
    forgotten = await http.delete(f"/api/v1/clients/{client_id}/memory/insights/{insight.id}", headers=coach.headers)
    assert forgotten.status_code == 204, forgotten.text

    await say(container, coach, client_id, "What should I do first?", other.conversation_id)

    sent = json.dumps(llm.chat_requests[-1]["messages"])
    assert "diabetes" not in sent and "Ingrid" not in sent, "no reply repeating it is recalled or in the turns"
    by_id = await messages_by_id(
        container, coach, [later.message_id, other.message_id, kept.message_id, later.received_message_id]
    )
    assert by_id[later.message_id].forgotten_at is not None and by_id[other.message_id].forgotten_at is not None
    assert by_id[kept.message_id].forgotten_at is None, "a reply sharing nothing with the fact stays"
    assert by_id[later.received_message_id].forgotten_at is None, "the client's own later messages stay"


async def test_a_forgotten_message_is_never_recalled(
    container: Container, http: httpx.AsyncClient, coach: Coach, llm: FakeOpenAI
) -> None:
    """A message marked forgotten (the privacy controls set ``forgotten_at``) keeps its episode row but is
    neither in the prompt nor in the attribution, by either arm (dense or BM25)."""
    client_id = await new_client(http, coach, "Ola")
    first = await say(container, coach, client_id, SISTER)
    await shift_back(container, coach, client_id, timedelta(days=30))
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as s:
        await s.execute(
            update(Message).where(Message.id == first.received_message_id).values(forgotten_at=datetime.now(UTC))
        )
        assert await s.scalar(select(Episode.id).where(Episode.message_id == first.received_message_id))

    later = await say(container, coach, client_id, "Remind me, where does Ingrid live these days?")

    assert "Tromsø" not in system_prompt(llm)
    assert str(first.received_message_id) not in later.metadata["memory"]["message_ids"]
