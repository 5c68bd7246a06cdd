"""Training data end to end through the real app, PostgreSQL and the arq worker: a draft edit and a takeover
yield SFT examples and preference pairs in one split; thumbs up/down make examples appear and disappear; the
export endpoint per format and split; tenancy and bad parameters.

Only the coach's OpenAI-compatible endpoint is mocked (OpenAI wire format)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from arq.worker import Retry
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from app import worker
from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.conversations.models import Conversation, Message, SenderType
from app.db import jobs
from app.db.engine import tenant_session
from app.learning.models import ExampleKind, ExampleSource, Intervention, InterventionSource, Split, TrainingExample
from app.learning.training import MAX_CLIENT_RATED_EXAMPLES, content_hash, split_for
from tests.conftest import make_client
from tests.integration.handoff.test_handoff_flow import REPLY, Setup, chat, llm_api, new_setup
from tests.openai_wire import MOCK_BASE_URL, openai_sse, sse_response
from tests.unit.test_training_data import check_preference_line, check_sft_line

__all__ = ["llm_api", "new_setup"]  # fixtures used by name below


def conversation_id_in(split: str) -> uuid.UUID:
    """A new conversation id that :func:`split_for` puts in ``split``."""
    while True:
        candidate = uuid.uuid4()
        if split_for(candidate) == split:
            return candidate


async def seed_conversation(
    container: Container,
    coach_id: uuid.UUID,
    client_id: uuid.UUID,
    turns: list[tuple[str, str]],
    *,
    split: str,
    ai_draft: str | None = None,
) -> uuid.UUID:
    """A stored conversation in ``split``: each turn a client message and the coach's takeover reply (an
    edited draft with ``ai_draft`` when given). Returns its id."""
    conversation_id = conversation_id_in(split)
    start = datetime.now(UTC) - timedelta(hours=1)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        session.add(Conversation(id=conversation_id, coach_id=coach_id, client_id=client_id))
        await session.flush()
        for index, (client_text, coach_text) in enumerate(turns):
            at = start + timedelta(minutes=2 * index)
            session.add(
                Message(
                    coach_id=coach_id,
                    conversation_id=conversation_id,
                    sender_type=SenderType.CLIENT,
                    text=client_text,
                    meta={},
                    created_at=at,
                )
            )
            meta: dict[str, Any] = {"is_handoff": True}
            if ai_draft is not None:
                meta = {"edited": True, "ai_draft": ai_draft, "approved_by_coach": True}
            session.add(
                Message(
                    coach_id=coach_id,
                    conversation_id=conversation_id,
                    sender_type=SenderType.HUMAN_COACH,
                    text=coach_text,
                    meta=meta,
                    created_at=at + timedelta(minutes=1),
                )
            )
    return conversation_id


async def refresh(container: Container, run_jobs: Callable[[], Awaitable[None]], coach_id: str, conv: Any) -> None:
    """Queue the conversation's training-data refresh as the app does, and run the worker."""
    async with tenant_session(container.sessionmaker, uuid.UUID(coach_id)) as session:
        jobs.refresh_training_data(session, uuid.UUID(coach_id), uuid.UUID(str(conv)), trigger=f"test:{uuid.uuid4()}")
    await run_jobs()


async def examples(container: Container, coach_id: str, conversation_id: Any = None) -> list[TrainingExample]:
    """The coach's stored examples (of one conversation when given), looked up as the tenant."""
    async with tenant_session(container.sessionmaker, uuid.UUID(coach_id)) as session:
        stmt = select(TrainingExample).where(TrainingExample.coach_id == uuid.UUID(coach_id))
        if conversation_id is not None:
            stmt = stmt.where(TrainingExample.conversation_id == uuid.UUID(str(conversation_id)))
        return list((await session.scalars(stmt.order_by(TrainingExample.created_at))).all())


async def export(http: httpx.AsyncClient, setup: Setup, **params: str) -> list[dict[str, Any]]:
    response = await http.get("/api/v1/learning/export", headers=setup.coach.headers, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/jsonl")
    validate = check_preference_line if params.get("format") == "preference" else check_sft_line
    return [validate(line) for line in response.text.splitlines()]


async def test_a_draft_edit_and_a_takeover_yield_sft_examples_and_preference_pairs_in_one_split(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """Draft mode: the coach edits the AI draft (SFT example + pair with the draft as rejected); then a
    takeover message whose intervention kept the AI draft it replaced (SFT example + pair). All examples share
    the conversation's split; a second refresh changes nothing."""
    setup = await new_setup("Trainer", handoff_mode="draft", response_cache_ttl_seconds=0, persona="You are Kim.")
    coach_id = setup.coach.coach_id
    body = await chat(http, setup, "I procrastinate on my thesis every single day.")
    conversation_id = body["conversation_id"]
    [draft] = (await http.get("/api/v1/drafts", headers=setup.coach.headers, params={"status": "pending"})).json()
    assert draft["text"] == REPLY
    edited = "What usually happens in the minute before you switch away from the thesis?"
    approved = await http.post(
        f"/api/v1/drafts/{draft['id']}/approve", headers=setup.coach.headers, json={"text": edited}
    )
    assert approved.status_code == 201, approved.text

    await chat(http, setup, "I open social media, then the day is gone.", conversation_id)
    takeover_text = "Let's try one thing: put the phone in another room for 25 minutes tomorrow morning."
    sent = await http.post(
        f"/api/v1/conversations/{conversation_id}/messages", headers=setup.coach.headers, json={"text": takeover_text}
    )
    assert sent.status_code == 201, sent.text
    replaced = "You should just be more disciplined."
    async with tenant_session(container.sessionmaker, uuid.UUID(coach_id)) as session:
        message_id = uuid.UUID(sent.json()["id"])
        intervention = await session.scalar(select(Intervention).where(Intervention.message_id == message_id))
        if intervention is None:  # recorded by the handoff flow once it is wired; the draft is what matters here
            session.add(
                Intervention(
                    coach_id=uuid.UUID(coach_id),
                    conversation_id=uuid.UUID(conversation_id),
                    client_id=uuid.UUID(setup.client_id),
                    message_id=message_id,
                    source=InterventionSource.TAKEOVER,
                    text=takeover_text,
                    ai_draft=replaced,
                )
            )
        else:
            intervention.ai_draft = replaced

    await refresh(container, run_jobs, coach_id, conversation_id)
    stored = await examples(container, coach_id, conversation_id)
    assert {e.split for e in stored} == {split_for(uuid.UUID(conversation_id))}
    sft = {e.chosen: e for e in stored if e.kind == ExampleKind.SFT}
    pairs = {e.chosen: e for e in stored if e.kind == ExampleKind.PREFERENCE}
    assert set(sft) == {edited, takeover_text}
    assert sft[edited].source == ExampleSource.DRAFT_EDIT and sft[takeover_text].source == ExampleSource.COACH_REPLY
    assert pairs[edited].rejected == REPLY and pairs[takeover_text].rejected == replaced
    assert all(0 < e.quality <= 1 for e in stored)
    # the prompt is the persona and the conversation before the reply
    prompt = sft[takeover_text].prompt
    assert prompt[0] == {"role": "system", "content": "You are Kim."}
    assert [p["role"] for p in prompt[1:]] == ["user", "assistant", "user"]
    assert prompt[-1]["content"] == "I open social media, then the day is gone." and prompt[2]["content"] == edited

    await refresh(container, run_jobs, coach_id, conversation_id)
    assert [e.id for e in await examples(container, coach_id, conversation_id)] == [e.id for e in stored]

    sft_lines = await export(http, setup, format="sft", split="all")
    assert sorted(line["messages"][-1]["content"] for line in sft_lines) == sorted([edited, takeover_text])
    pair_lines = await export(http, setup, format="preference", split=split_for(uuid.UUID(conversation_id)))
    assert {(p["preferred_output"][0]["content"], p["non_preferred_output"][0]["content"]) for p in pair_lines} == {
        (edited, REPLY),
        (takeover_text, replaced),
    }


async def test_thumbs_up_and_down_make_examples_appear_and_disappear(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """A thumbs-up reply (rating 5) is an SFT example; with a thumbs-down reply to the same client text it
    forms a preference pair. Changing the thumbs up to a rating of 3 (not ≥ 4), or to a thumbs down, removes
    both; an error reply never qualifies."""
    setup = await new_setup("Thumbs Coach", response_cache_ttl_seconds=0)
    coach_id = setup.coach.coach_id
    question = "How do I stop checking e-mail at night?"
    first = await chat(http, setup, question)
    conversation_id = first["conversation_id"]
    worse = "Just stop."
    llm_api.post(f"{MOCK_BASE_URL}/chat/completions", name="completions").mock(
        side_effect=lambda request: sse_response(openai_sse([worse], (50, 2)))
    )
    second = await chat(http, setup, question + "  ", conversation_id)
    assert second["reply"] == worse

    async def feedback(message_id: str, **body: Any) -> None:
        response = await http.post(f"/api/v1/messages/{message_id}/feedback", headers=setup.client_auth, json=body)
        assert response.status_code == 200, response.text

    await feedback(first["message_id"], helpful=True, rating=5)
    await feedback(second["message_id"], helpful=False)
    await refresh(container, run_jobs, coach_id, conversation_id)
    stored = await examples(container, coach_id, conversation_id)
    [sft] = [e for e in stored if e.kind == ExampleKind.SFT]
    [pair] = [e for e in stored if e.kind == ExampleKind.PREFERENCE]
    assert sft.chosen == REPLY and sft.source == ExampleSource.THUMBS_UP and sft.quality == 1.0
    assert (pair.chosen, pair.rejected, pair.source) == (REPLY, worse, ExampleSource.FEEDBACK_PAIR)
    assert pair.rejected_message_id == uuid.UUID(second["message_id"])

    await feedback(first["message_id"], helpful=True, rating=3)
    await refresh(container, run_jobs, coach_id, conversation_id)
    assert await examples(container, coach_id, conversation_id) == []

    await feedback(first["message_id"], helpful=True)
    await refresh(container, run_jobs, coach_id, conversation_id)
    [again] = [e for e in await examples(container, coach_id, conversation_id) if e.kind == ExampleKind.SFT]
    assert again.quality < 1.0, "an unrated thumbs up counts less than a 5"

    await feedback(first["message_id"], helpful=False)
    await refresh(container, run_jobs, coach_id, conversation_id)
    assert await examples(container, coach_id, conversation_id) == []

    async with tenant_session(container.sessionmaker, uuid.UUID(coach_id)) as session:
        message = await session.get(Message, uuid.UUID(first["message_id"]))
        assert message is not None
        message.meta = dict(message.meta) | {"error": "ProviderError", "feedback": {"helpful": True, "rating": 5}}
    await refresh(container, run_jobs, coach_id, conversation_id)
    assert await examples(container, coach_id, conversation_id) == []


async def test_export_per_split_and_format_with_pii_scrubbing_tenancy_and_bad_parameters(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """One conversation per split: each split's export holds exactly its examples, ``all`` holds every one;
    PII is scrubbed unless ``scrub_pii=false``; identical examples are stored once; another coach's export
    is empty; bad parameters are a 400."""
    setup = await new_setup("Export Coach")
    coach_id = uuid.UUID(setup.coach.coach_id)
    client_id = uuid.UUID(setup.client_id)
    reply = "Write down one worry, then close the notebook: e-mail me at kim@coach.example if it helps."
    conversations = {}
    for split in Split.ALL:
        conversations[split] = await seed_conversation(
            container, coach_id, client_id, [(f"I cannot sleep ({split}).", reply)], split=split, ai_draft="Relax."
        )
        await refresh(container, run_jobs, setup.coach.coach_id, conversations[split])
    # the same exchange in a second train conversation: identical examples are stored once
    duplicate = await seed_conversation(
        container, coach_id, client_id, [("I cannot sleep (train).", reply)], split="train", ai_draft="Relax."
    )
    await refresh(container, run_jobs, setup.coach.coach_id, duplicate)
    assert await examples(container, setup.coach.coach_id, duplicate) == []

    for split in Split.ALL:
        [line] = await export(http, setup, format="sft", split=split)
        assert line["messages"][1]["content"] == f"I cannot sleep ({split})."
        assert line["messages"][-1]["content"] == reply.replace("kim@coach.example", "[EMAIL]")
        [pair] = await export(http, setup, format="preference", split=split)
        assert pair["non_preferred_output"][0]["content"] == "Relax."
    assert len(await export(http, setup, format="sft", split="all")) == 3
    assert len(await export(http, setup, format="sft")) == 3
    raw = await export(http, setup, format="sft", split="train", scrub_pii="false")
    assert raw[0]["messages"][-1]["content"] == reply

    stats = (await http.get("/api/v1/learning/training", headers=setup.coach.headers)).json()
    assert stats["stats"]["sft"] == {"train": 1, "validation": 1, "test": 1}
    assert stats["stats"]["preference"] == {"train": 1, "validation": 1, "test": 1}
    assert stats["stats"]["by_source"] == {"draft_edit": 6} and stats["stats"]["total"] == 6
    assert stats["readiness"]["ready"] is False

    other = await new_setup("Other Coach")
    assert await export(http, other, format="sft", split="all") == []
    other_stats = (await http.get("/api/v1/learning/training", headers=other.coach.headers)).json()
    assert other_stats["stats"]["total"] == 0

    for params in ({"format": "csv"}, {"split": "holdout"}, {"format": "sft", "scrub_pii": "maybe"}):
        response = await http.get("/api/v1/learning/export", headers=setup.coach.headers, params=params)
        assert response.status_code == 400, (params, response.text)
        assert response.headers["content-type"] == "application/json", "an error is JSON, not the download's JSONL"
        assert response.json()["detail"]
    assert (await http.get("/api/v1/learning/export")).status_code == 401
    assert len(await export(http, setup, format="sft")) == 3, "nothing lost after bad requests"


async def test_learning_settings_through_the_api(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]]
) -> None:
    """The learning settings are read and changed with the others; a bad value is a 400 that changes nothing."""
    setup = await new_setup("Settings Coach")
    changes = {
        "fine_tune_enabled": True,
        "fine_tune_min_examples": 20,
        "fine_tune_min_days": 3,
        "fine_tune_base_model": "gpt-4.1-mini-2025-04-14",
        "judge_model": "gpt-4o",
        "response_cache_ttl_seconds": 600,
    }
    patched = await http.patch("/api/v1/settings", headers=setup.coach.headers, json=changes)
    assert patched.status_code == 200, patched.text
    assert {k: patched.json()[k] for k in changes} == changes
    bad = await http.patch(
        "/api/v1/settings", headers=setup.coach.headers, json={"persona": "New", "fine_tune_min_days": 999}
    )
    assert bad.status_code == 400 and "fine_tune_min_days" in bad.text
    now = (await http.get("/api/v1/settings", headers=setup.coach.headers)).json()
    assert now["persona"] != "New" and now["fine_tune_min_days"] == 3
    assert json.loads(json.dumps(now))["judge_model"] == "gpt-4o"


async def test_a_reply_to_a_forgotten_message_is_no_training_example(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """Two turns (client, coach's reply); the client's second message is forgotten (an insight built on it was
    deleted). The coach's reply to it answers, and may restate, what the client asked to forget: it is no example
    (before, it became one, paired with the client's first message instead). The first turn still is one, and no
    prompt holds the forgotten message."""
    setup = await new_setup("Forgetting Trainer")
    coach_id = setup.coach.coach_id
    secret = "My brother owes money to a loan shark in Leeds."
    conversation_id = await seed_conversation(
        container,
        uuid.UUID(coach_id),
        uuid.UUID(setup.client_id),
        [
            ("I struggle to get up early.", "Try one small change tomorrow."),
            (secret, "A debt to a loan shark is frightening: is your brother safe?"),
        ],  # fmt: skip
        split="train",
    )
    await refresh(container, run_jobs, coach_id, conversation_id)
    assert len(await examples(container, coach_id, conversation_id)) == 2
    async with tenant_session(container.sessionmaker, uuid.UUID(coach_id)) as session:
        forgotten = await session.scalar(select(Message).where(Message.text == secret))
        assert forgotten is not None
        forgotten.forgotten_at = datetime.now(UTC)
    await refresh(container, run_jobs, coach_id, conversation_id)
    [kept] = await examples(container, coach_id, conversation_id)
    assert kept.chosen == "Try one small change tomorrow."
    assert "loan shark" not in json.dumps(kept.prompt)


@pytest.mark.parametrize(
    ("asked", "product_reply"),
    [
        ("I can't go on, I want to end my life tonight", {"crisis": True}),
        ("Are you a real person?", {"honesty": "asked"}),
    ],
)
async def test_a_reply_after_a_crisis_reply_or_the_bot_question_is_no_training_example(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    asked: str,
    product_reply: dict[str, Any],
) -> None:
    """The product answered a crisis (the crisis reply) or "are you a real person?" (the honest disclosure), then
    the coach took over and wrote. Those takeover replies became SFT examples with the crisis, or the question and
    the coach's "this is Ada herself", in their prompt: a fine-tune learnt to claim to be the coach, and the
    client's crisis went to the fine-tuning provider. The conversation's earlier turn stays an example."""
    setup = await new_setup("Careful Trainer")
    coach_id = uuid.UUID(setup.coach.coach_id)
    conversation_id = await seed_conversation(
        container,
        coach_id,
        uuid.UUID(setup.client_id),
        [("I struggle to get up early.", "Try one small change tomorrow."), (asked, "Hi Bob, this is Ada herself.")],
        split="train",
    )
    async with tenant_session(container.sessionmaker, coach_id) as session:
        question = await session.scalar(select(Message).where(Message.text == asked))
        assert question is not None
        session.add(  # the product's reply, between the client's message and the coach's
            Message(
                coach_id=coach_id,
                conversation_id=conversation_id,
                sender_type=SenderType.AI,
                text="I'm the coach's AI assistant." if "honesty" in product_reply else "Please call 988 now.",
                meta=product_reply,
                created_at=question.created_at + timedelta(seconds=1),
            )
        )
    await refresh(container, run_jobs, str(coach_id), conversation_id)
    [kept] = await examples(container, str(coach_id), conversation_id)
    assert kept.chosen == "Try one small change tomorrow."


async def test_notices_are_no_context_and_only_the_chosen_reply_is_trained_on(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """A handoff notice and an SLA holding message between two coach replies: the product's text stayed in the next
    example's prompt as assistant turns, and OpenAI's fine-tuning trains on every assistant message of a line unless
    its weight is 0, so a fine-tune learnt the notices and replies nobody vetted. Now the notices leave the prompt
    and only the chosen reply has weight 1."""
    setup = await new_setup("Notice Trainer")
    coach_id = uuid.UUID(setup.coach.coach_id)
    turns = [("I struggle to get up early.", "Try one small change tomorrow."), ("/human", "Hi Bob, Ada here.")]
    conversation_id = await seed_conversation(container, coach_id, uuid.UUID(setup.client_id), turns, split="train")
    async with tenant_session(container.sessionmaker, coach_id) as session:
        asked = await session.scalar(select(Message).where(Message.text == "/human"))
        assert asked is not None
        for seconds, (text, notice) in enumerate(
            [("I've asked Ada to join.", "handoff"), ("Thanks for waiting.", "sla")]
        ):
            session.add(
                Message(
                    coach_id=coach_id,
                    conversation_id=conversation_id,
                    sender_type=SenderType.AI,
                    text=text,
                    meta={"notice": notice},
                    created_at=asked.created_at + timedelta(seconds=1 + seconds),
                )
            )
    await refresh(container, run_jobs, str(coach_id), conversation_id)
    lines = {line["messages"][-1]["content"]: line["messages"] for line in await export(http, setup)}
    assert set(lines) == {"Try one small change tomorrow.", "Hi Bob, Ada here."}
    later = lines["Hi Bob, Ada here."]
    assert [m["content"] for m in later[1:]] == [
        "I struggle to get up early.",
        "Try one small change tomorrow.",
        "/human",
        "Hi Bob, Ada here.",
    ], "no notice in the prompt"
    assert [m.get("weight") for m in later if m["role"] == "assistant"] == [0, 1]


async def test_a_coach_reply_whose_context_lost_a_forgotten_message_is_no_longer_a_few_shot_example(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """A takeover reply quotes the client's earlier message, which the client then forgets. The rebuild removed
    the text from the intervention's context but left the intervention searchable: few-shot scrubbing had
    nothing left to redact the quote against, so another client's prompt got the forgotten words whole."""
    setup = await new_setup("Quoting Coach")
    coach_id, secret = uuid.UUID(setup.coach.coach_id), "I was fired from Acme Corp last Tuesday after the audit."
    quote = "You told me you were fired from Acme Corp last Tuesday after the audit: start with your CV."
    conversation_id = await seed_conversation(
        container,
        coach_id,
        uuid.UUID(setup.client_id),
        [(secret, "That must hurt."), ("What should I do next?", quote)],
        split="train",
    )
    async with tenant_session(container.sessionmaker, coach_id) as session:
        messages = {m.text: m for m in (await session.scalars(select(Message))).all()}
        session.add(
            Intervention(
                coach_id=coach_id,
                conversation_id=conversation_id,
                client_id=uuid.UUID(setup.client_id),
                message_id=messages[quote].id,
                source=InterventionSource.TAKEOVER,
                text=quote,
                client_text="What should I do next?",
                context=[
                    {"role": "user", "content": secret},
                    {"role": "assistant", "content": "That must hurt."},
                    {"role": "user", "content": "What should I do next?"},
                ],
                embedding=[1.0] + [0.0] * 383,
                embedding_model="all-MiniLM-L6-v2",
            )
        )
        messages[secret].forgotten_at = datetime.now(UTC)
    await refresh(container, run_jobs, str(coach_id), conversation_id)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        [intervention] = (
            await session.scalars(select(Intervention).where(Intervention.conversation_id == conversation_id))
        ).all()
    assert secret not in json.dumps(intervention.context) and intervention.client_text == "What should I do next?"
    assert intervention.embedding is None, "never found as a similar situation again"


async def test_a_training_data_rebuild_the_database_dropped_is_tried_again(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebuild a forget queues once (``erase``: it deletes the provider files trained on the forgotten
    messages) meets a dropped database connection: arq is asked to run it again later, up to the last try,
    which fails for the record. A bug is not tried again."""
    ids = (str(uuid.uuid4()), str(uuid.uuid4()))
    failure: BaseException = DBAPIError("SELECT 1", {}, ConnectionResetError("reset"), connection_invalidated=True)

    async def refresh(*args: Any, **kwargs: Any) -> str:
        raise failure

    monkeypatch.setattr(container.training, "refresh", refresh)
    with pytest.raises(Retry) as retried:
        await worker.refresh_training_data({"container": container, "job_try": 1}, *ids, True)
    assert retried.value.defer_score == worker.STORE_RETRY_S * 1000
    with pytest.raises(DBAPIError):
        await worker.refresh_training_data({"container": container, "job_try": worker.STORE_JOB_TRIES}, *ids, True)
    failure = ValueError("a bug")
    with pytest.raises(ValueError):
        await worker.refresh_training_data({"container": container, "job_try": 1}, *ids, True)


async def test_a_snapshot_of_more_examples_than_a_query_takes_parameters_is_read(container: Container) -> None:
    """A fine-tune reads its snapshot's examples by id: 40,000 ids (over PostgreSQL's 32,767 parameters of one
    statement) are one array parameter, not an error."""
    async with unit_of_work(container.sessionmaker, uuid.uuid4()) as uow:
        ids = [uuid.uuid4() for _ in range(40_000)]
        assert await container.training.examples(uow, kind="sft", ids=ids) == []


async def store_rated_examples(
    container: Container, coach_id: uuid.UUID, client_id: uuid.UUID, split: str, source: str, count: int
) -> None:
    """``count`` stored SFT examples of ``source`` in a new conversation of the client in ``split`` (as a refresh
    stored them before the per-client cap existed)."""
    conversation_id = conversation_id_in(split)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        session.add(Conversation(id=conversation_id, coach_id=coach_id, client_id=client_id))
        reply = Message(
            coach_id=coach_id, conversation_id=conversation_id, sender_type=SenderType.AI, text="Try it.", meta={}
        )
        session.add(reply)
        await session.flush()
        for index in range(count):
            prompt = [{"role": "system", "content": "Coach"}, {"role": "user", "content": f"{conversation_id} {index}"}]
            session.add(
                TrainingExample(
                    coach_id=coach_id,
                    conversation_id=conversation_id,
                    kind=ExampleKind.SFT,
                    source=source,
                    message_id=reply.id,
                    prompt=prompt,
                    chosen=f"Reply {index} of {client_id}",
                    quality=0.8,
                    split=split,
                    content_hash=content_hash(ExampleKind.SFT, prompt, f"{index}", None),
                )
            )


async def test_one_client_contributes_at_most_the_cap_of_client_rated_examples(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], container: Container
) -> None:
    """A client who thumbed up many replies (over two splits) gives the export and a fine-tune snapshot at most
    :data:`MAX_CLIENT_RATED_EXAMPLES` of them, their oldest; the coach's takeover replies in their chats and the
    other client's examples all stay; the splits' exports together are the ``all`` export."""
    setup = await new_setup("Capped Coach")
    coach_id, flooder = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id)
    other = uuid.UUID((await make_client(http, setup.coach, "Sam"))["id"])
    await store_rated_examples(container, coach_id, flooder, Split.TRAIN, ExampleSource.THUMBS_UP, 40)
    await store_rated_examples(container, coach_id, flooder, Split.VALIDATION, ExampleSource.THUMBS_UP, 40)
    await store_rated_examples(container, coach_id, flooder, Split.TRAIN, ExampleSource.COACH_REPLY, 7)
    await store_rated_examples(container, coach_id, other, Split.TRAIN, ExampleSource.THUMBS_UP, 5)

    def by_client(lines: list[dict[str, Any]]) -> Counter[str]:
        return Counter(line["messages"][-1]["content"].split(" of ")[-1] for line in lines)

    everything = await export(http, setup, format="sft", split="all")
    assert by_client(everything) == {str(flooder): MAX_CLIENT_RATED_EXAMPLES + 7, str(other): 5}
    per_split = [line for split in Split.ALL for line in await export(http, setup, format="sft", split=split)]
    assert len(per_split) == len(everything)
    assert len(await export(http, setup, format="sft", split="validation")) == MAX_CLIENT_RATED_EXAMPLES - 40

    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        dataset = await container.training.snapshot(uow, ExampleKind.SFT)
        assert len(dataset.example_ids) == MAX_CLIENT_RATED_EXAMPLES + 7 + 5
        assert dataset.counts == {"train": 40 + 7 + 5, "validation": MAX_CLIENT_RATED_EXAMPLES - 40, "test": 0}
        train = await container.training.examples(uow, kind=ExampleKind.SFT, split="train", ids=dataset.example_ids)
    assert Counter(e.source for e in train) == {ExampleSource.THUMBS_UP: 45, ExampleSource.COACH_REPLY: 7}


async def test_one_clients_thumbs_beyond_the_cap_count_nowhere_and_never_make_the_coach_ready(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], container: Container
) -> None:
    """The example counts (``/learning/training``, the dashboard) and the fine-tune readiness count what an export
    takes: a client's thumbs-ups beyond :data:`MAX_CLIENT_RATED_EXAMPLES` count nowhere, so one client alone never
    makes the coach ready for a fine-tune whose data would then be capped below the minimum."""
    minimum = MAX_CLIENT_RATED_EXAMPLES + 5
    setup = await new_setup("Flooded Coach", fine_tune_enabled=True, fine_tune_min_examples=minimum)
    coach_id, flooder = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id)
    await store_rated_examples(container, coach_id, flooder, Split.TRAIN, ExampleSource.THUMBS_UP, minimum + 20)
    await store_rated_examples(container, coach_id, flooder, Split.TEST, ExampleSource.THUMBS_UP, 3)

    async def figures() -> tuple[dict[str, Any], dict[str, Any]]:
        training = (await http.get("/api/v1/learning/training", headers=setup.coach.headers)).json()
        dashboard = (await http.get("/api/v1/learning/dashboard", headers=setup.coach.headers)).json()
        assert dashboard["training"] == training["stats"] and dashboard["readiness"] == training["readiness"]
        exported = {split: len(await export(http, setup, format="sft", split=split)) for split in Split.ALL}
        assert training["stats"]["sft"] == exported
        assert training["stats"]["total"] == sum(exported.values())
        assert training["readiness"]["new_examples"] == exported[Split.TRAIN]
        return training["stats"], training["readiness"]

    stats, readiness = await figures()
    assert stats["sft"] == {"train": MAX_CLIENT_RATED_EXAMPLES, "validation": 0, "test": 0}
    assert stats["by_source"] == {ExampleSource.THUMBS_UP: MAX_CLIENT_RATED_EXAMPLES}
    assert not readiness["ready"] and f"{MAX_CLIENT_RATED_EXAMPLES} of {minimum}" in readiness["reason"]

    other = uuid.UUID((await make_client(http, setup.coach, "Sam"))["id"])
    await store_rated_examples(container, coach_id, other, Split.TRAIN, ExampleSource.THUMBS_UP, 5)
    stats, readiness = await figures()
    assert stats["sft"]["train"] == minimum and readiness["ready"], "a second client's thumbs count"
    # a ready coach left behind would get a fine-tune from a later test's sweep (the sweep takes every coach)
    off = await http.patch("/api/v1/settings", headers=setup.coach.headers, json={"fine_tune_enabled": False})
    assert off.status_code == 200, off.text
