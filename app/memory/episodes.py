"""The episodic memory layer: every client and coach message recallable on its own, whatever the extractor
made of it (L2 summaries and L3 insights depend on the model; this layer does not).

Writing: the chat turn stores its client message with the query vector it computed anyway
(:func:`store_episodes`, at intake in :mod:`app.chat.turn.intake`, or in gather when the vector came later);
AI and human-coach messages are embedded by the ``embed_messages`` job (:meth:`EpisodeService.embed_messages`,
queued through the outbox by :func:`app.memory.messages.store_message`, one per conversation and embedding
window: :func:`app.db.jobs.embed_messages`), which embeds every message of the conversation that has no episode,
so it also catches up on the messages no turn embedded (a message the coach answered while the AI was paused,
a crisis turn). The product's canned text (a handoff notice, the crisis reply, an SLA holding message, the apology
after a failure: :data:`~app.conversations.metadata.PRODUCT_TEXT_KEYS`) gets no episode: it tells nothing about
the client, and recalled it read as "[you, <date>] I'm passing this to …" (those stored before were deleted by
migration 0064; recall leaves out any still there).

Reading: two arms over one client's episodes, fused in :func:`app.memory.retrieval.recall` — the dense arm
(exact cosine over every vector of the client, ``halfvec``, read from an index that carries them: an index-only
scan of one range, migration 0039) and a lexical arm scoring Okapi BM25 (Robertson & Zaragoza 2009,
"The Probabilistic Relevance Framework: BM25 and Beyond"; k1 = 1.2, b = 0.75, their usual values, which
also did best of b ∈ {0, 0.5, 0.75, 1} on LoCoMo's dev part) in PostgreSQL from the
stored ``tsvector``: term frequency is a lexeme's position count, document length the number of distinct
lexemes, IDF ``ln(1 + (N − df + 0.5) / (df + 0.5))`` over the client's own episodes. The arm runs in the
database function ``episode_bm25`` (migration 0037): it scores only the episodes holding a query lexeme (found
through a GIN index of each episode's lexemes), reading just their query lexemes (``setweight`` marks them,
weight A, where ``to_tsvector`` wrote D, and ``ts_filter`` keeps them), and takes N and the average length from
an index of the stored lengths (``episodes.dl``). Reading every episode of the client on every turn, as the arm
did before, made recall linear in the client's history (98–123 ms p50 at 20,000 episodes, ``bench/recall.py``).
Forgotten messages (:data:`app.conversations.models.REMEMBERED`, read as an anti-join: migration 0033) and
the excluded ids (the L1 window) are never candidates; canned text (:data:`CANNED`) is never returned.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ARRAY, DateTime, Text, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.conversations.metadata import PRODUCT_TEXT_KEYS
from app.conversations.metadata_sql import product_text
from app.conversations.models import REMEMBERED, Conversation, Message
from app.llm.registry import ProviderRegistry, lock_embedding_model
from app.memory.models import Episode

log = logging.getLogger(__name__)

BM25_K1 = 1.2
BM25_B = 0.75
EMBED_BATCH = 64
"""Messages embedded per batch by the ``embed_messages`` job."""
CANNED = product_text()
"""SQL filter: the message is the product's canned text (:func:`~app.conversations.metadata_sql.product_text`),
never an episode."""


@dataclass(frozen=True)
class EpisodeHit:
    """A candidate message of one arm: ``score`` is the cosine similarity (dense arm) or the BM25 score
    (lexical arm); ``sender_type`` as on :class:`Message`; ``at`` the message's time (UTC)."""

    message_id: uuid.UUID
    sender_type: str
    text: str
    at: datetime
    score: float


async def store_episodes(
    session: AsyncSession,
    coach_id: uuid.UUID,
    client_id: uuid.UUID,
    messages: Sequence[Message],
    vectors: Sequence[list[float]],
    embedding_model: str,
) -> bool:
    """Store one episode per message (``vectors[i]`` is ``messages[i].text``'s embedding by
    ``embedding_model``); a message that already has one is left as it is (the job and the turn may race).
    Returns ``False``, storing nothing, when the coach's embedding model in use is no longer
    ``embedding_model`` (a switch committed since the vectors' model was chosen: they would never be found
    nor re-embedded, or the coach is gone); otherwise the check holds until the transaction ends
    (:func:`lock_embedding_model`)."""
    if not messages:
        return True
    if await lock_embedding_model(session, coach_id) != embedding_model:
        return False
    await insert_episodes(session, coach_id, client_id, messages, vectors, embedding_model)
    return True


async def insert_episodes(
    session: AsyncSession,
    coach_id: uuid.UUID,
    client_id: uuid.UUID,
    messages: Sequence[Message],
    vectors: Sequence[list[float]],
    embedding_model: str,
) -> None:
    """Insert one episode per message in one statement, as :func:`store_episodes` does, without its check of
    the model: for a caller whose transaction holds :func:`lock_embedding_model` already (the job, through
    :meth:`~app.llm.registry.ProviderRegistry.store_embedded`)."""
    if not messages:
        return
    rows = [
        {
            "coach_id": coach_id,
            "client_id": client_id,
            "message_id": message.id,
            "at": message.created_at,
            "embedding": vector,
            "embedding_model": embedding_model,
            "tsv": func.to_tsvector("english", message.text),
        }
        for message, vector in zip(messages, vectors, strict=True)
    ]
    await session.execute(insert(Episode).values(rows).on_conflict_do_nothing(index_elements=["message_id"]))


_ARMS = text(
    """
    WITH remembered AS (
        SELECT e.message_id, e.at, e.embedding
        FROM episodes e
        WHERE e.coach_id = :coach_id AND e.client_id = :client_id AND e.embedding_model = :model
          AND NOT EXISTS (SELECT FROM messages f WHERE f.id = e.message_id AND f.forgotten_at IS NOT NULL)
          AND NOT (e.message_id = ANY(:exclude))
    ),
    nearest AS (
        SELECT r.message_id, r.at, r.embedding <=> :embedding AS distance
        FROM remembered r ORDER BY distance, r.message_id LIMIT :limit
    ),
    ranked AS (
        SELECT b.message_id, b.score
        FROM episode_bm25(:client_id, :model, CAST(:query AS text), :exclude, CAST(:k1 AS float8), CAST(:b AS float8),
                          CAST(:limit AS integer)) b
    ),
    arms AS (
        SELECT 'dense' AS arm, n.message_id, n.at, 1 - n.distance AS score,
               row_number() OVER (ORDER BY n.distance, n.message_id) AS position
        FROM nearest n
        UNION ALL
        SELECT 'lexical', r.message_id, NULL, r.score, row_number() OVER (ORDER BY r.score DESC, r.message_id)
        FROM ranked r
    )
    SELECT a.arm, a.message_id, m.sender_type, m.text, coalesce(a.at, m.created_at) AS at, a.score
    FROM arms a JOIN messages m ON m.id = a.message_id
    WHERE NOT (m.metadata ?| :canned)
    ORDER BY a.arm, a.position
    """
).bindparams(
    bindparam("exclude", type_=ARRAY(UUID(as_uuid=True))),
    bindparam("embedding", type_=Episode.embedding.type),
    bindparam("canned", list(PRODUCT_TEXT_KEYS), type_=ARRAY(Text)),
)
"""Both arms over one client's remembered episodes in one round trip. Dense: the ``limit`` nearest by cosine
distance (pgvector's ``<=>``, exact: every remembered episode of the client), score ``1 − distance``. Lexical:
the ``limit`` best by BM25 as the module docstring defines it (``episode_bm25``), over the same episodes:
forgotten messages left out by an anti-join on their partial index (migration 0033), and the excluded ids.
Canned text (:data:`CANNED`, ``canned``: its keys) is left out as the hits' messages are read: no such episode is
written any more and migration 0064 deleted those stored before, so this only catches one an older worker still
running wrote, at no cost to the arms' index scans. Ties: by message id."""


@dataclass(frozen=True)
class EpisodeArms:
    """One client's episodic candidates for a query, best first in each arm: ``dense`` (score: cosine
    similarity, −1..1) and ``lexical`` (score: BM25, > 0)."""

    dense: list[EpisodeHit]
    lexical: list[EpisodeHit]


async def episode_arms(
    session: AsyncSession,
    coach_id: uuid.UUID,
    client_id: uuid.UUID,
    query: str,
    query_embedding: list[float],
    *,
    embedding_model: str,
    limit: int,
    exclude_message_ids: Sequence[uuid.UUID] = (),
) -> EpisodeArms:
    """The ``limit`` best episodes of the client by each arm (:data:`_ARMS`): none lexical when the query has no
    indexable word. Only episodes of ``embedding_model``; never a forgotten message nor one of
    ``exclude_message_ids``. Tenant transaction."""
    rows = await session.execute(
        _ARMS,
        {
            "query": query,
            "embedding": query_embedding,
            "coach_id": coach_id,
            "client_id": client_id,
            "model": embedding_model,
            "exclude": list(exclude_message_ids),
            "k1": BM25_K1,
            "b": BM25_B,
            "limit": limit,
        },
    )
    arms = EpisodeArms([], [])
    for arm, message_id, sender_type, text_, at, score in rows.all():
        (arms.dense if arm == "dense" else arms.lexical).append(
            EpisodeHit(message_id, sender_type, text_, at, float(score))
        )
    return arms


async def _insert_batch(
    uow: UnitOfWork,
    vectors: list[list[float]],
    embedding_model: str,
    *,
    coach_id: uuid.UUID,
    client_id: uuid.UUID,
    messages: Sequence[Message],
) -> None:
    await insert_episodes(uow.session, coach_id, client_id, messages, vectors, embedding_model)


_UNEMBEDDED = (
    select(Message, Conversation.client_id)
    .join(Conversation, Conversation.id == Message.conversation_id)
    .outerjoin(Episode, Episode.message_id == Message.id)
    .where(
        Message.conversation_id == bindparam("conversation_id"),
        Message.created_at <= bindparam("until", type_=DateTime(timezone=True)),
        Episode.id.is_(None),
        REMEMBERED,
        ~CANNED,
    )
    .order_by(Message.created_at)
    .limit(bindparam("limit"))
)
"""The oldest messages of a conversation sent up to a time with no episode, not forgotten and not canned text (a
notice, the crisis reply, a failed reply's apology: :data:`CANNED`), with the conversation's client."""
_END_OF_TIME = datetime.max.replace(tzinfo=UTC)


class EpisodeService:
    """Embeds messages the turn did not (the ``embed_messages`` job)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], registry: ProviderRegistry) -> None:
        self._sessionmaker = sessionmaker
        self._registry = registry

    async def embed_messages(
        self, coach_id: uuid.UUID, conversation_id: uuid.UUID, *, until: datetime | None = None
    ) -> str:
        """Store an episode for every message of the conversation that has none (not forgotten ones, nor canned text:
        :data:`CANNED`; sent up to ``until`` when given, timezone-aware), oldest first, in batches of
        ``EMBED_BATCH``; no transaction is held across the embedding call; each batch is stored with the coach's
        embedding model in use (:meth:`~app.llm.registry.ProviderRegistry.store_embedded`). A batch shorter than
        ``EMBED_BATCH`` was the last: the job then ends without reading again. Idempotent (a message the turn
        embedded meanwhile keeps its episode); a conversation gone by now (erased, or its whole account deleted) is a
        no-op. Returns a short result line. Raises ``ProviderError`` (the embedding call; the worker retries) and
        ``EmbedderSwitched``."""
        stored = 0
        while True:
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                pending, client_id = await self._pending(uow.session, conversation_id, until)
                if not pending or client_id is None:  # (the coach is read only now: an account deleted meanwhile)
                    return f"conversation {conversation_id}: {stored} episodes stored"
                embedder = await self._registry.embedder_for(await uow.coach())
            texts = [message.text for message in pending]
            store = functools.partial(_insert_batch, coach_id=coach_id, client_id=client_id, messages=pending)
            await self._registry.store_embedded(self._sessionmaker, coach_id, embedder, texts, store)
            stored += len(pending)
            if len(pending) < EMBED_BATCH:
                return f"conversation {conversation_id}: {stored} episodes stored"

    @staticmethod
    async def _pending(
        session: AsyncSession, conversation_id: uuid.UUID, until: datetime | None
    ) -> tuple[list[Message], uuid.UUID | None]:
        """Up to ``EMBED_BATCH`` messages of the conversation sent up to ``until`` (``None``: any time) that have
        no episode and are not forgotten, oldest first, with the conversation's client (``None`` when there are
        none)."""
        params = {"conversation_id": conversation_id, "until": until or _END_OF_TIME, "limit": EMBED_BATCH}
        rows = (await session.execute(_UNEMBEDDED, params)).all()
        return [message for message, _ in rows], rows[0].client_id if rows else None
