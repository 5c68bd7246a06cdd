"""The response cache on real Redis and experiments through the real API: storage, TTL, hit-rate counting,
invalidation; creating, assigning, measuring and concluding an experiment; bad input and tenancy."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.conversations.handoffs import Handoff, HandoffReason, HandoffStatus
from app.conversations.models import Conversation, Message, SenderType
from app.db.engine import tenant_session
from app.learning.cache import ResponseCache
from app.learning.experiments import ExperimentService, assign_variant
from tests.conftest import Coach, make_client

PROMPT = [{"role": "user", "content": "How do I start?"}]
WARMER = {
    "name": "warmer persona",
    "metric": "thumbs_up_rate",
    "variants": [{"name": "control"}, {"name": "warm", "persona": "You are a very warm coach."}],
    "min_samples": 20,
}
"""A two-arm persona experiment on the thumbs-up rate (:func:`rate` stores its arms' rated replies)."""


def cache_key(cache: ResponseCache, coach_id: uuid.UUID, persona: str = "You are Kim.") -> str:
    return cache.key(
        coach_id=coach_id,
        cache_epoch=0,
        model="gpt-4o-mini",
        model_version_id=None,
        persona=persona,
        temperature=0.3,
        messages=PROMPT,  # type: ignore[arg-type]
    )


async def test_cache_entries_expire_count_hits_and_can_be_dropped(container: Container) -> None:
    cache, coach_id = container.cache, uuid.uuid4()
    key = cache_key(cache, coach_id)
    assert await cache.get(coach_id, key) is None
    citations = [{"document_id": "d1", "title": "Notes", "page": 2, "chunk_id": "c1", "score": 0.8}]
    await cache.put(coach_id, key, "Start small.", citations, ttl_s=60)
    hit = await cache.get(coach_id, key)
    assert hit is not None and (hit.reply, hit.citations) == ("Start small.", citations)
    assert await cache.get(coach_id, cache_key(cache, coach_id, persona="You are Kim, warmer.")) is None

    await cache.put(coach_id, cache_key(cache, coach_id, persona="Short-lived"), "Soon gone.", [], ttl_s=1)
    await cache.put(coach_id, cache_key(cache, coach_id, persona="Off"), "Never stored.", [], ttl_s=0)
    await asyncio.sleep(1.5)
    assert await cache.get(coach_id, cache_key(cache, coach_id, persona="Short-lived")) is None
    assert await cache.get(coach_id, cache_key(cache, coach_id, persona="Off")) is None

    stats = await cache.stats(coach_id, days=7)
    assert (stats.hits, stats.misses, stats.hit_rate) == (1, 4, 0.2)
    assert len(stats.per_day) == 7 and stats.per_day[-1][0] == datetime.now(UTC).date()
    other = uuid.uuid4()
    await cache.put(other, cache_key(cache, other), "Another coach's.", [], ttl_s=60)
    assert await cache.invalidate(coach_id) == 1
    assert await cache.get(coach_id, key) is None
    assert await cache.get(other, cache_key(cache, other)) is not None  # other coaches keep theirs
    assert (await cache.stats(uuid.uuid4())).hit_rate is None


async def test_a_rejected_entry_reads_as_a_miss_and_is_not_stored_again(container: Container) -> None:
    cache, coach_id = container.cache, uuid.uuid4()
    key, other = cache_key(cache, coach_id), cache_key(cache, coach_id, persona="Off now")
    await cache.put(coach_id, key, "A bad answer.", [], ttl_s=60)
    await cache.put(coach_id, other, "Another bad answer.", [], ttl_s=60)
    await cache.reject(coach_id, key, 60)
    assert await cache.get(coach_id, key) is None
    await cache.put(coach_id, key, "A bad answer.", [], ttl_s=60)
    assert await cache.get(coach_id, key) is None
    await cache.reject(coach_id, other, 0)  # the cache is off now: the entry is only deleted
    assert await container.redis.exists(other) == 0
    with pytest.raises(ValueError, match="another coach"):
        await cache.reject(uuid.uuid4(), key, 60)


async def rate(
    container: Container,
    coach_id: uuid.UUID,
    client_id: uuid.UUID,
    experiment_id: uuid.UUID,
    *,
    control: int = 0,
    warm: int = 0,
    extra: dict[str, Any] | None = None,
) -> None:
    """Store 20 rated AI replies of each variant under the experiment, ``control`` and ``warm`` of them
    thumbs-up (both 0: none of that variant), with ``extra`` metadata, in a new conversation of the client."""
    async with tenant_session(container.sessionmaker, coach_id) as session:
        conversation = Conversation(coach_id=coach_id, client_id=client_id, channel="widget")
        session.add(conversation)
        await session.flush()
        for variant, ups in (("control", control), ("warm", warm)):
            for i in range(20 if ups else 0):
                meta = {"experiment": {"id": str(experiment_id), "variant": variant}, "feedback": {"helpful": i < ups}}
                session.add(
                    Message(
                        coach_id=coach_id,
                        conversation_id=conversation.id,
                        sender_type=SenderType.AI,
                        text="reply",
                        citations=[],
                        meta=meta | (extra or {}),
                    )
                )


async def test_an_experiment_assigns_stably_measures_and_concludes(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], container: Container
) -> None:
    coach = await make_coach("Experimenter")
    other = await make_coach("Bystander")
    coach_id = uuid.UUID(coach.coach_id)
    created = await http.post("/api/v1/learning/experiments", headers=coach.headers, json=WARMER)
    assert created.status_code == 201, created.text
    experiment = created.json()
    assert experiment["status"] == "running" and experiment["winner"] is None
    assert [r["trials"] for r in experiment["results"]] == [0, 0]
    again = await http.post("/api/v1/learning/experiments", headers=coach.headers, json=WARMER)
    assert again.status_code == 409 and "running" in again.json()["detail"]

    # the same client gets the same variant from this service and from a fresh one (another process)
    clients = [uuid.UUID((await make_client(http, coach, f"C{i}"))["id"]) for i in range(6)]
    fresh = ExperimentService(container.sessionmaker, container.accounts)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        first = [await container.experiments.assign(session, coach_id, c) for c in clients]
        second = [await fresh.assign(session, coach_id, c) for c in clients]
    assert [a.variant for a in first if a] == [a.variant for a in second if a] and None not in first
    experiment_id = uuid.UUID(experiment["id"])
    assert all(
        a.variant == ("control", "warm")[assign_variant(experiment_id, c, 2)]
        for a, c in zip(first, clients, strict=True)
        if a
    )

    # rated replies under the experiment: warm 19/20 thumbs-up, control 8/20 → Fisher p < 0.05; replies its
    # variant did not serve (the base model after the variant's failed, an apology, a notice) count for no arm
    await rate(container, coach_id, clients[0], experiment_id, control=8, warm=19)
    for kept_out in (
        {"model_fallback": {"from": "gpt-4o-mni", "error": "404"}},
        {"error": "timeout"},
        {"notice": "sla"},
    ):
        await rate(container, coach_id, clients[0], experiment_id, control=20, extra=kept_out)
    result = (await http.get(f"/api/v1/learning/experiments/{experiment_id}", headers=coach.headers)).json()
    assert [(r["name"], r["trials"], r["successes"]) for r in result["results"]] == [
        ("control", 20, 8),
        ("warm", 20, 19),
    ]
    assert result["test"] == "fisher_exact" and result["p_value"] < 0.05
    assert result["status"] == "concluded" and result["winner"] == "warm"
    warm = result["results"][1]
    assert warm["ci_low"] < 0.95 < warm["ci_high"]
    async with tenant_session(container.sessionmaker, coach_id) as session:  # a concluded experiment assigns no one
        assert await container.experiments.assign(session, coach_id, clients[0]) is None

    # tenancy: another coach sees nothing and cannot stop it
    assert (await http.get("/api/v1/learning/experiments", headers=other.headers)).json() == []
    for call in (
        http.get(f"/api/v1/learning/experiments/{experiment_id}", headers=other.headers),
        http.post(f"/api/v1/learning/experiments/{experiment_id}/stop", headers=other.headers),
    ):
        assert (await call).status_code == 404
    stopped = await http.post(f"/api/v1/learning/experiments/{experiment_id}/stop", headers=coach.headers)
    assert stopped.status_code == 409  # already concluded
    listed = (await http.get("/api/v1/learning/experiments", headers=coach.headers)).json()
    assert [e["id"] for e in listed] == [str(experiment_id)]


async def test_the_handoff_rate_counts_only_messages_the_ai_could_answer(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], container: Container
) -> None:
    """A client's message opens a handoff, the client writes twice more while the coach has the conversation,
    and once after the handback. The two written while held counted as trials the AI did not hand off: an arm
    whose handoffs ran long diluted its own rate (4 trials, 1 handoff instead of 2 trials, 1 handoff)."""
    coach = await make_coach("Handoff Experimenter")
    coach_id = uuid.UUID(coach.coach_id)
    two = [{"name": "a"}, {"name": "b", "persona": "You are brief."}]
    created = await http.post(
        "/api/v1/learning/experiments",
        headers=coach.headers,
        json={"name": "h", "metric": "handoff_rate", "variants": two},
    )
    assert created.status_code == 201, created.text
    client_id = uuid.UUID((await make_client(http, coach, "Held"))["id"])
    start = datetime.now(UTC) + timedelta(seconds=1)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        conversation = Conversation(coach_id=coach_id, client_id=client_id)
        session.add(conversation)
        await session.flush()
        sent = []
        for minute, text in enumerate(("Help me, please", "Are you there?", "Hello?", "Thanks, that helped")):
            message = Message(
                coach_id=coach_id,
                conversation_id=conversation.id,
                sender_type=SenderType.CLIENT,
                text=text,
                meta={},
                created_at=start + timedelta(minutes=minute),
            )
            session.add(message)
            sent.append(message)
        await session.flush()
        session.add(
            Handoff(
                coach_id=coach_id,
                conversation_id=conversation.id,
                client_id=client_id,
                status=HandoffStatus.CLOSED,
                reason=HandoffReason.HUMAN_REQUEST,
                trigger_message_id=sent[0].id,
                created_at=start + timedelta(seconds=10),
                closed_at=start + timedelta(minutes=2, seconds=10),
            )
        )
    result = (await http.get(f"/api/v1/learning/experiments/{created.json()['id']}", headers=coach.headers)).json()
    assert sorted((r["trials"], r["successes"]) for r in result["results"]) == [(0, 0), (2, 1)]


async def test_a_coachs_stop_is_not_overwritten_by_a_reading_that_concludes(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], container: Container
) -> None:
    """A dashboard read loaded the experiment as running; the coach stops it meanwhile; the read then finds a
    significant winner: the experiment stays stopped (the read checks again under the row's lock)."""
    coach = await make_coach("Stopper")
    coach_id = uuid.UUID(coach.coach_id)
    created = await http.post("/api/v1/learning/experiments", headers=coach.headers, json=WARMER)
    assert created.status_code == 201, created.text
    experiment_id = uuid.UUID(created.json()["id"])
    client_id = uuid.UUID((await make_client(http, coach, "Robin"))["id"])
    async with unit_of_work(container.sessionmaker, coach_id) as reader:
        [before] = await container.experiments.list_results(reader)  # loaded as running, no winner yet
        assert before.experiment.status == "running"
        stopped = await http.post(f"/api/v1/learning/experiments/{experiment_id}/stop", headers=coach.headers)
        assert stopped.status_code == 200, stopped.text
        await rate(container, coach_id, client_id, experiment_id, control=8, warm=19)
        [after] = await container.experiments.list_results(reader)
        assert after.experiment.status == "stopped" and after.experiment.winner is None
    shown = (await http.get(f"/api/v1/learning/experiments/{experiment_id}", headers=coach.headers)).json()
    assert shown["status"] == "stopped" and shown["winner"] is None


async def test_bad_experiments_are_refused_and_change_nothing(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Careful Experimenter")
    url = "/api/v1/learning/experiments"
    two = [{"name": "a"}, {"name": "b", "temperature": 0.9}]
    for body, message in (
        ({"name": "x", "metric": "revenue", "variants": two}, "metric must be one of"),
        ({"name": "x", "metric": "handoff_rate", "variants": [{"name": "a"}]}, "2 to 4 variants"),
        ({"name": "x", "metric": "handoff_rate", "variants": two, "alpha": 0.9}, "alpha"),
        (
            {"name": "x", "metric": "handoff_rate", "variants": [{"name": "a"}, {"name": "b", "temperature": 5}]},
            "temperature",
        ),
        (  # a blank persona would leave that arm's model with no instructions at all
            {"name": "x", "metric": "handoff_rate", "variants": [{"name": "a"}, {"name": "b", "persona": " \n "}]},
            "persona must be text of 1 to",
        ),
        (  # the local provider serves its packaged model only: that arm would run the base model unseen
            {"name": "x", "metric": "handoff_rate", "variants": [{"name": "a"}, {"name": "b", "model": "gpt-4o"}]},
            "OpenAI-compatible",
        ),
    ):
        response = await http.post(url, headers=coach.headers, json=body)
        assert response.status_code == 400 and message in response.json()["detail"], response.text
    assert (await http.post(url, headers=coach.headers, json={"name": "x"})).status_code == 400
    assert (await http.post(url, json={"name": "x", "metric": "handoff_rate", "variants": two})).status_code == 401
    assert (await http.get(url, headers=coach.headers)).json() == []

    started = await http.post(url, headers=coach.headers, json={"name": "t", "metric": "handoff_rate", "variants": two})
    experiment_id = started.json()["id"]
    assert (await http.post(f"{url}/{experiment_id}/stop", headers=coach.headers)).json()["status"] == "stopped"
    assert (await http.post(f"{url}/{experiment_id}/stop", headers=coach.headers)).status_code == 409
    assert (await http.get(f"{url}/{uuid.uuid4()}", headers=coach.headers)).status_code == 404
    # stopped: a new experiment may start
    assert (
        await http.post(url, headers=coach.headers, json={"name": "u", "metric": "handoff_rate", "variants": two})
    ).status_code == 201
