"""Interventions end to end: a draft edit and a takeover message are recorded with their context and the
AI draft they replaced; the worker analyses them and, once the client answers, scores them and updates the
coach's style profile, the client's ``what_works`` and the cross-coach patterns; ``similar`` finds the
coach's own interventions and never another coach's.

The app, PostgreSQL, Redis, the worker and the local embedder are real; the coach's chat endpoint is mocked
in the OpenAI wire format (only a paid API is faked)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import httpx
import respx
from sqlalchemy import select

from app.accounts.models import Coach
from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.db.engine import tenant_session
from app.learning.interventions import what_doesnt_work_line, what_works_line
from app.learning.models import Intervention, InterventionPattern
from app.learning.strategy import STRATEGIES
from app.llm.registry import lock_embedding_model
from app.memory.models import ClientProfile
from app.memory.profile import PROFILE_LIST_MAX
from tests.integration.handoff.test_handoff_flow import (  # noqa: F401 - fixtures used by name
    REPLY,
    Setup,
    chat,
    llm_api,
    new_setup,
)

SAD = "I failed my exam today and I feel awful, I can't stop crying."
COACH_EDIT = "That sounds really painful. Have you tried writing down what went well this term?"
SECOND = "I'm also scared to tell my parents."
COACH_TAKEOVER = "It sounds like you feel ashamed and afraid of disappointing them. Is that right?"
BETTER = "Yes, thank you, that really helps. I feel a bit better now."


async def pending_draft(http: httpx.AsyncClient, setup: Setup) -> dict:
    [draft] = (await http.get("/api/v1/drafts?status=pending", headers=setup.coach.headers)).json()
    return draft  # type: ignore[no-any-return]


async def interventions(container: Container, coach_id: str) -> list[Intervention]:
    async with tenant_session(container.sessionmaker, uuid.UUID(coach_id)) as session:
        rows = await session.scalars(
            select(Intervention).where(Intervention.coach_id == uuid.UUID(coach_id)).order_by(Intervention.created_at)
        )
        return list(rows.all())


async def record_takeover_history(
    http: httpx.AsyncClient, setup: Setup, run_jobs: Callable[[], Awaitable[None]]
) -> str:
    """Draft edit, then a takeover message while a second draft is pending, then the client's better mood."""
    first = await chat(http, setup, SAD)
    conversation_id: str = first["conversation_id"]
    draft = await pending_draft(http, setup)
    edited = await http.post(
        f"/api/v1/drafts/{draft['id']}/approve", headers=setup.coach.headers, json={"text": COACH_EDIT}
    )
    assert edited.status_code == 201, edited.text
    await chat(http, setup, SECOND, conversation_id)
    assert (await pending_draft(http, setup))["text"] == REPLY
    sent = await http.post(
        f"/api/v1/conversations/{conversation_id}/messages", headers=setup.coach.headers, json={"text": COACH_TAKEOVER}
    )
    assert sent.status_code == 201, sent.text
    paused = await chat(http, setup, BETTER, conversation_id)
    assert paused["reply"] == ""
    await run_jobs()
    return conversation_id


async def test_takeover_and_draft_edit_are_recorded_analysed_and_scored(
    http: httpx.AsyncClient,
    container: Container,
    new_setup: Callable[..., Awaitable[Setup]],  # noqa: F811
    llm_api: respx.MockRouter,  # noqa: F811
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """Both coach messages become interventions with context, client text, memory and the AI draft; the
    worker analyses and scores them (the client's next turns), and the three levels learn from them."""
    setup = await new_setup(handoff_mode="draft")
    async with tenant_session(container.sessionmaker, uuid.UUID(setup.coach.coach_id)) as session:
        before = {
            (p.strategy, p.situation): (p.uses, p.successes)
            for p in (await session.scalars(select(InterventionPattern))).all()
        }
    conversation_id = await record_takeover_history(http, setup, run_jobs)

    edit, takeover = await interventions(container, setup.coach.coach_id)
    assert (edit.source, edit.text, edit.ai_draft) == ("draft_edit", COACH_EDIT, REPLY)
    assert edit.client_text == SAD and edit.context == [{"role": "user", "content": SAD}]
    assert set(edit.memory) == {"profile", "insight_ids"}
    assert (takeover.source, takeover.text, takeover.ai_draft) == ("takeover", COACH_TAKEOVER, REPLY)
    assert takeover.handoff_id is not None and takeover.client_text == SECOND
    assert [c["content"] for c in takeover.context] == [SAD, COACH_EDIT, SECOND]
    assert str(takeover.conversation_id) == conversation_id

    for item in (edit, takeover):
        assert item.analysed_at is not None and item.strategy in STRATEGIES
        assert item.analysis["strategy"] == item.strategy and 0 <= item.analysis["formality"] <= 1
        assert item.embedding is not None and item.embedding_model == "all-MiniLM-L6-v2"
        assert item.pattern_counted is True
    # the client answered the takeover with a better mood: success by sentiment (no thumbs)
    assert takeover.outcome["thumbs"] is None and takeover.outcome["sentiment_change"] > 0
    assert takeover.success is True
    assert edit.outcome["sentiment"] < 0 and edit.success is False  # the next turn still read negative

    async with tenant_session(container.sessionmaker, uuid.UUID(setup.coach.coach_id)) as session:
        coach = await session.get_one(Coach, uuid.UUID(setup.coach.coach_id))
        profile = await session.scalar(
            select(ClientProfile).where(ClientProfile.client_id == uuid.UUID(setup.client_id))
        )
        patterns = {
            (p.strategy, p.situation): (p.uses, p.successes)
            for p in (await session.scalars(select(InterventionPattern))).all()
        }
    style = coach.style_profile
    assert style["n"] == 2 and abs(sum(style["strategies"].values()) - 1) < 0.01
    assert style["success"][takeover.strategy]["successes"] >= 1
    assert profile is not None and profile.what_works.count(what_works_line(str(takeover.strategy))) == 1
    key = (str(takeover.strategy), takeover.analysis["client_mood"])
    uses, successes = patterns[key]
    old_uses, old_successes = before.get(key, (0, 0))
    assert uses >= old_uses + 1 and successes >= old_successes + 1

    # idempotent: running the jobs again counts nothing twice
    assert await container.interventions.analyse(uuid.UUID(setup.coach.coach_id), takeover.id) == "already analysed"
    async with unit_of_work(container.sessionmaker, uuid.UUID(setup.coach.coach_id)) as uow:
        await container.interventions.score_outcomes(uow, uuid.UUID(conversation_id))
    async with tenant_session(container.sessionmaker, uuid.UUID(setup.coach.coach_id)) as session:
        again = await session.scalar(
            select(InterventionPattern).where(
                InterventionPattern.strategy == key[0], InterventionPattern.situation == key[1]
            )
        )
        profile = await session.scalar(
            select(ClientProfile).where(ClientProfile.client_id == uuid.UUID(setup.client_id))
        )
    assert again is not None and (again.uses, again.successes) == (uses, successes)
    assert profile is not None and profile.what_works.count(what_works_line(str(takeover.strategy))) == 1


async def test_similar_finds_the_coachs_own_interventions_only(
    http: httpx.AsyncClient,
    container: Container,
    new_setup: Callable[..., Awaitable[Setup]],  # noqa: F811
    llm_api: respx.MockRouter,  # noqa: F811
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """``similar`` ranks by the situation's embedding within the coach's own interventions; another coach
    with the very same situation never sees them, and the current conversation can be left out."""
    mine = await new_setup("Learning Coach A", handoff_mode="draft")
    other = await new_setup("Learning Coach B", handoff_mode="draft")
    mine_conversation = await record_takeover_history(http, mine, run_jobs)
    await record_takeover_history(http, other, run_jobs)
    own_ids = {i.id for i in await interventions(container, mine.coach.coach_id)}
    other_ids = {i.id for i in await interventions(container, other.coach.coach_id)}
    assert len(own_ids) == 2 and len(other_ids) == 2

    embedder = container.registry.local_embedder()
    [query] = await embedder.embed(["I am afraid to tell my mum and dad about my grades."])
    for setup, expected, foreign in ((mine, own_ids, other_ids), (other, other_ids, own_ids)):
        coach_id = uuid.UUID(setup.coach.coach_id)
        async with tenant_session(container.sessionmaker, coach_id) as session:
            found = await container.interventions.similar(session, coach_id, query, embedder.model, k=3)
        assert found, "the coach's own similar intervention is found"
        assert {f.id for f in found} <= expected and not {f.id for f in found} & foreign
        assert found[0].coach_text == COACH_TAKEOVER and SECOND not in found[0].situation
        assert found[0].situation.startswith("the client's message read ")
        assert found == sorted(found, key=lambda f: -f.similarity) and found[0].similarity >= 0.35

    coach_id = uuid.UUID(mine.coach.coach_id)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        excluded = await container.interventions.similar(
            session, coach_id, query, embedder.model, exclude_conversation_id=uuid.UUID(mine_conversation)
        )
        other_model = await container.interventions.similar(session, coach_id, query, "text-embedding-3-small")
    assert excluded == [] and other_model == []


async def test_a_thumbs_down_on_the_coachs_message_rescores_it(
    http: httpx.AsyncClient,
    container: Container,
    new_setup: Callable[..., Awaitable[Setup]],  # noqa: F811
    llm_api: respx.MockRouter,  # noqa: F811
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """Thumbs beat sentiment: the client rates the takeover message down after answering happily; the
    outcome turns to failure and the pattern's success count is corrected, its use count unchanged."""
    setup = await new_setup(handoff_mode="draft")
    await record_takeover_history(http, setup, run_jobs)
    takeover = (await interventions(container, setup.coach.coach_id))[-1]
    assert takeover.success is True
    key = (str(takeover.strategy), takeover.analysis["client_mood"])
    pattern = select(InterventionPattern).where(
        InterventionPattern.strategy == key[0], InterventionPattern.situation == key[1]
    )
    async with tenant_session(container.sessionmaker, uuid.UUID(setup.coach.coach_id)) as session:
        counted = await session.scalar(pattern)
        assert counted is not None
        uses, successes = counted.uses, counted.successes

    rated = await http.post(
        f"/api/v1/messages/{takeover.message_id}/feedback", headers=setup.client_auth, json={"helpful": False}
    )
    assert rated.status_code in (200, 201), rated.text
    await run_jobs()

    rescored = (await interventions(container, setup.coach.coach_id))[-1]
    assert rescored.outcome["thumbs"] is False and rescored.success is False
    async with tenant_session(container.sessionmaker, uuid.UUID(setup.coach.coach_id)) as session:
        after = await session.scalar(pattern)
        coach = await session.get_one(Coach, uuid.UUID(setup.coach.coach_id))
    assert after is not None and (after.uses, after.successes) == (uses, successes - 1)
    assert coach.style_profile["success"][key[0]]["uses"] >= 1


async def test_two_analyses_of_one_coach_finishing_together_do_not_deadlock(
    container: Container,
    make_coach: Callable[..., Awaitable[Coach]],
) -> None:
    """Every job that stores vectors first takes the coach's row ``FOR KEY SHARE``
    (:func:`~app.llm.registry.lock_embedding_model`); an analysis then refreshes the style profile under the
    coach's row lock. Two such transactions at once: a refresh must not wait for the other's key share (with
    ``FOR UPDATE`` each waited for the other, and PostgreSQL's deadlock detector failed one of them)."""
    coach = await make_coach()
    coach_id = uuid.UUID(coach.coach_id)
    both_hold_the_key_share = asyncio.Barrier(2)

    async def analysis() -> None:
        async with tenant_session(container.sessionmaker, coach_id) as session:
            assert await lock_embedding_model(session, coach_id) == "all-MiniLM-L6-v2"
            await both_hold_the_key_share.wait()
            await container.interventions.refresh_style(session, coach_id)

    await asyncio.wait_for(asyncio.gather(analysis(), analysis()), 30)


async def test_a_failed_intervention_withdraws_its_what_works_line_unless_another_supports_it(
    http: httpx.AsyncClient,
    container: Container,
    new_setup: Callable[..., Awaitable[Setup]],  # noqa: F811
    llm_api: respx.MockRouter,  # noqa: F811
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """The takeover's success added a ``what_works`` line. While another successful intervention of the same
    strategy backs the line, a thumbs-down on the takeover leaves it; once none does, the takeover judged a
    failure takes its line out of the client's profile (it stayed there for good)."""
    setup = await new_setup(handoff_mode="draft")
    await record_takeover_history(http, setup, run_jobs)
    edit, takeover = await interventions(container, setup.coach.coach_id)
    line = what_works_line(str(takeover.strategy))
    coach_id, client_id = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id)

    async def backed_by_the_edit(success: bool) -> None:
        async with tenant_session(container.sessionmaker, coach_id) as session:
            row = await session.get_one(Intervention, edit.id)
            row.strategy, row.success = takeover.strategy, success

    async def rate_takeover(helpful: bool) -> list[str]:
        url = f"/api/v1/messages/{takeover.message_id}/feedback"
        rated = await http.post(url, headers=setup.client_auth, json={"helpful": helpful})
        assert rated.status_code == 200, rated.text
        await run_jobs()
        async with tenant_session(container.sessionmaker, coach_id) as session:
            profile = await session.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))
        assert profile is not None
        return profile.what_works

    await backed_by_the_edit(True)
    assert line in await rate_takeover(False)  # the edit still supports it
    assert (await interventions(container, setup.coach.coach_id))[-1].success is False
    assert line in await rate_takeover(True)
    await backed_by_the_edit(False)
    assert line not in await rate_takeover(False)


async def test_a_failed_intervention_records_what_does_not_work_once_and_a_success_takes_it_back(
    http: httpx.AsyncClient,
    container: Container,
    new_setup: Callable[..., Awaitable[Setup]],  # noqa: F811
    llm_api: respx.MockRouter,  # noqa: F811
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """The draft edit and the takeover share a strategy; the edit failed (the client's next message still read
    negative), the takeover then helped: the strategy is in ``what_works`` only. The takeover rated down, nothing
    backs the strategy any more: its ``what_works`` line goes and a ``what_doesnt_work`` line comes (it added
    nothing there), once however many of its interventions fail; rated up again, the strategy moves back. A full
    list (``PROFILE_LIST_MAX`` lines) takes no more."""
    setup = await new_setup(handoff_mode="draft")
    await record_takeover_history(http, setup, run_jobs)
    edit, takeover = await interventions(container, setup.coach.coach_id)
    assert (edit.success, takeover.success, edit.strategy) == (False, True, takeover.strategy)
    coach_id, client_id = uuid.UUID(setup.coach.coach_id), uuid.UUID(setup.client_id)
    works, fails = what_works_line(str(takeover.strategy)), what_doesnt_work_line(str(takeover.strategy))
    assert works is not None and fails is not None

    async def rate(message_id: uuid.UUID, helpful: bool) -> ClientProfile:
        rated = await http.post(
            f"/api/v1/messages/{message_id}/feedback", headers=setup.client_auth, json={"helpful": helpful}
        )
        assert rated.status_code == 200, rated.text
        await run_jobs()
        async with tenant_session(container.sessionmaker, coach_id) as session:
            profile = await session.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))
        assert profile is not None
        return profile

    async with tenant_session(container.sessionmaker, coach_id) as session:
        learnt = await session.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))
    assert learnt is not None and works in learnt.what_works and fails not in learnt.what_doesnt_work

    failed = await rate(takeover.message_id, False)
    assert works not in failed.what_works and failed.what_doesnt_work == [fails]
    again = await rate(edit.message_id, False)  # the edit scored again (its thumbs), a failure of the strategy too
    assert {i.id: i for i in await interventions(container, setup.coach.coach_id)}[edit.id].outcome["thumbs"] is False
    assert again.what_doesnt_work == [fails], "the line is not written twice"

    helped = await rate(takeover.message_id, True)
    assert works in helped.what_works and fails not in helped.what_doesnt_work

    full = [f"Coach's note {n}" for n in range(PROFILE_LIST_MAX)]
    async with tenant_session(container.sessionmaker, coach_id) as session:
        (await session.get_one(ClientProfile, helped.id)).what_doesnt_work = full
    assert (await rate(takeover.message_id, False)).what_doesnt_work == full
