"""The episodic arms (:func:`app.memory.episodes.episode_arms`): the lexical one scores Okapi BM25 exactly as
the module docstring defines it, checked against :mod:`tests.bm25_oracle` fed each episode's stored
``tsvector`` (read whole with ``unnest``), over repeated words, an excluded message and a forgotten one; the
dense one ranks the same remembered episodes by cosine similarity."""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text

from app.container import Container
from app.conversations.models import Conversation, Message, SenderType
from app.db.engine import tenant_session
from app.memory.episodes import BM25_B, BM25_K1, episode_arms, insert_episodes
from tests.bm25_oracle import bm25_scores
from tests.conftest import Coach, make_client

MODEL = "test-bm25"
TEXTS = [
    "My sister moved to Tromsø and I miss my sister every single day.",
    "Running calms me down; I ran 10 km on Sunday and ran again on Monday.",
    "Work is stressful, my manager keeps moving deadlines.",
    "I called my sister yesterday and we talked about running together.",
    "Nothing much happened this week.",
    "Deadlines, deadlines, deadlines: my sister says I should quit.",
]
QUERY = "How is your sister doing with her running and the deadlines?"
ANGLE = 0.25
"""Radians between two consecutive episodes' vectors."""


async def test_the_lexical_arm_scores_bm25_over_the_clients_remembered_episodes(
    container: Container, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Coach Okapi")
    coach_id = uuid.UUID(coach.coach_id)
    client_id = uuid.UUID((await make_client(http, coach, "Bm25"))["id"])
    start = datetime.now(UTC) - timedelta(days=3)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        conversation = Conversation(coach_id=coach_id, client_id=client_id, channel="api")
        session.add(conversation)
        await session.flush()
        messages = [
            Message(coach_id=coach_id, conversation_id=conversation.id, sender_type=SenderType.CLIENT, text=body,
                    citations=[], meta={}, created_at=start + timedelta(minutes=i))
            for i, body in enumerate(TEXTS)
        ]  # fmt: skip
        session.add_all(messages)
        await session.flush()
        # in a plane, at angles growing with the message's index: cosine to the query falls from first to last
        vectors = [[math.cos(ANGLE * i), math.sin(ANGLE * i)] + [0.0] * 382 for i in range(len(messages))]
        await insert_episodes(session, coach_id, client_id, messages, vectors, MODEL)
        messages[4].forgotten_at = datetime.now(UTC)  # forgotten: neither a candidate nor counted
        excluded = messages[5].id  # the L1 window: neither a candidate nor counted
        await session.flush()

        rows = await session.execute(
            text(
                "SELECT e.message_id, t.lexeme, array_length(t.positions, 1) FROM episodes e "
                "CROSS JOIN LATERAL unnest(e.tsv) AS t(lexeme, positions, weights) WHERE e.client_id = :client"
            ),
            {"client": client_id},
        )
        docs: dict[uuid.UUID, dict[str, int]] = {}
        for message_id, lexeme, tf in rows.all():
            docs.setdefault(message_id, {})[lexeme] = tf
        remembered = [  # length: the number of distinct lexemes
            (m.id, len(docs[m.id]), lexeme, tf) for m in messages[:4] for lexeme, tf in docs[m.id].items()
        ]
        query_lexemes = set(
            await session.scalar(text("SELECT tsvector_to_array(to_tsvector('english', :q))"), {"q": QUERY})
        )
        expected = bm25_scores(remembered, query_lexemes, BM25_K1, BM25_B)

        arms = await episode_arms(
            session,
            coach_id,
            client_id,
            QUERY,
            [1.0] + [0.0] * 383,
            embedding_model=MODEL,
            limit=10,
            exclude_message_ids=[excluded],
        )
    hits = arms.lexical

    assert {"sister", "run", "deadlin"} <= query_lexemes
    assert max(tf for terms in docs.values() for tf in terms.values()) >= 3  # a repeated word: tf above 1
    assert [hit.message_id for hit in hits] == sorted(expected, key=lambda m: (-expected[m], str(m)))
    for hit in hits:
        assert math.isclose(hit.score, expected[hit.message_id], rel_tol=1e-9)
    assert {hit.message_id for hit in hits}.isdisjoint({messages[4].id, excluded})
    # dense: every remembered episode, nearest first, its cosine similarity (vectors stored as halfvec: each
    # component to 2^-11 relative, so a unit vectors' cosine to about 1e-3)
    assert [hit.message_id for hit in arms.dense] == [m.id for m in messages[:4]]
    for i, hit in enumerate(arms.dense):
        assert math.isclose(hit.score, math.cos(ANGLE * i), abs_tol=1e-3)
