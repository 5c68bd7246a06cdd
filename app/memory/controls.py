"""Memory controls: what the coach and the client see of a client's memory, and their edits and deletes
(insights, session summaries, the L4 profile). A deleted item becomes a tombstone: it is never recalled
or re-learnt; a deleted insight's source messages are forgotten (kept out of every later prompt and of the
training data), and the summaries built on them are written again without them."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exists, func, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased, defer

from app.accounts.models import Client
from app.accounts.service import AccountService
from app.accounts.unit_of_work import UnitOfWork
from app.conversations.models import Conversation, Message, SenderType
from app.core.errors import InvalidInput, NotFound
from app.core.pagination import Keyset, PageRequest
from app.db import jobs
from app.llm.registry import ProviderRegistry
from app.memory.models import ChatSession, ClientProfile, Insight, InsightKind, InsightStatus, SessionStatus
from app.memory.profile import (
    PROFILE_LIST_MAX,
    PROFILE_LISTS,
    forget_sessions,
    keep_sources_of_held_lines,
    profile_for_update,
)


async def _forget_replies(session: AsyncSession, forgotten: list[uuid.UUID]) -> None:
    """Mark forgotten the replies to the ``forgotten`` client messages: every AI and coach message of the same
    conversation after one of them and before the client's next message. A reply quoting "my secret: …" would
    otherwise carry the forgotten words into later prompts, recall and the training data."""
    source, client_next = aliased(Message), aliased(Message)
    await session.execute(
        update(Message)
        .where(
            source.id.in_(forgotten),
            source.sender_type == SenderType.CLIENT,
            Message.conversation_id == source.conversation_id,
            Message.sender_type != SenderType.CLIENT,
            Message.created_at > source.created_at,
            ~exists().where(
                client_next.conversation_id == source.conversation_id,
                client_next.sender_type == SenderType.CLIENT,
                client_next.created_at > source.created_at,
                client_next.created_at < Message.created_at,
            ),
        )
        .values(forgotten_at=func.coalesce(Message.forgotten_at, func.now()))
        .execution_options(synchronize_session=False)
    )


_NAME = re.compile(r"(?<![.!?:]\s)(?<!^)(?<!\n)\b(?!I\b|I['’])[A-Z][\w'’-]+")
"""A capitalised word not opening a sentence: a name (a person, a place, an employer) in a client's message."""


async def _forget_repeats(
    session: AsyncSession, client_id: uuid.UUID, fact: str, sources: list[uuid.UUID]
) -> list[uuid.UUID]:
    """Mark forgotten the AI and coach messages of the client that repeat a forgotten insight, wherever they are:
    a reply quoting the fact in a later turn or session ("given your sister's diagnosis…") carried it back into
    recall, summaries and the training data after :func:`_forget_replies` marked only the replies right after its
    source messages. A message repeats the fact when it shares, stemmed and without stop words (PostgreSQL's
    ``english`` text search configuration, as episodic recall uses), two of the words of the insight's ``fact``
    other than the client's name, or one name (:data:`_NAME`) the client wrote in a source message. Meant to
    over-forget rather than leak: a forgotten message only leaves the AI's memory and training data, and stays in
    the coach's transcript. Returns the ids marked."""

    def lexemes(text: Any) -> Any:
        return func.tsvector_to_array(func.to_tsvector("english", text))

    said = (await session.scalars(select(Message.text).where(Message.id.in_(sources)))).all()
    names = " ".join(name for text in said for name in _NAME.findall(text))
    own, terms, named = (
        set(words or ())
        for words in (
            await session.execute(
                select(lexemes(Client.name), lexemes(fact), lexemes(names)).where(Client.id == client_id)
            )
        ).one()
    )
    terms, named = terms - own, named - own
    if not terms and not named:
        return []
    since = await session.scalar(select(func.min(Message.created_at)).where(Message.id.in_(sources)))
    candidates = await session.execute(
        select(Message.id, func.tsvector_to_array(func.to_tsvector("english", Message.text)))
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Conversation.client_id == client_id,
            Message.sender_type != SenderType.CLIENT,
            Message.forgotten_at.is_(None),
            Message.created_at > since if since is not None else true(),
        )
    )
    needed = min(2, len(terms) + 2 * len(named))
    repeats = [
        message_id
        for message_id, words in candidates
        if len(terms.intersection(words)) + 2 * len(named.intersection(words)) >= needed
    ]
    if repeats:
        await session.execute(
            update(Message)
            .where(Message.id.in_(repeats))
            .values(forgotten_at=func.coalesce(Message.forgotten_at, func.now()))
            .execution_options(synchronize_session=False)
        )
    return repeats


@dataclass(frozen=True)
class ClientMemory:
    """What is remembered about a client, for the coach's and the client's views: the profile, every visible
    insight and one page of the ended sessions (``more_summaries``: the position of the next, older page;
    ``None``: this page reaches the first session)."""

    profile: ClientProfile | None
    insights: list[Insight]
    summaries: list[ChatSession]
    more_summaries: Keyset | None = None


@dataclass(frozen=True)
class MemoryDigest:
    """The head of a client's memory, for a few lines about them (the handoff brief, an intervention's context):
    the profile, the top active insights (by importance, then recency) and the last summarised session's
    summary (``None``: none yet)."""

    profile: ClientProfile | None
    insights: list[Insight]
    last_summary: dict[str, Any] | None


_INSIGHT_WITHOUT_VECTOR, _SESSION_WITHOUT_VECTOR = defer(Insight.embedding), defer(ChatSession.embedding)
"""The views and the digest show insights and sessions, never their vectors (384 floats each to read and
decode): loaded without them."""


async def _profile_of(session: AsyncSession, coach_id: uuid.UUID, client_id: uuid.UUID) -> ClientProfile | None:
    """The client's L4 profile (``None``: none yet). Raises ``NotFound`` for an unknown or another coach's client."""
    if await session.scalar(select(Client.id).where(Client.id == client_id, Client.coach_id == coach_id)) is None:
        raise NotFound("client not found")
    return await session.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))


class MemoryControls:
    """The coach's and the client's view of a client's memory and their edits. Every method takes the
    tenant (``coach_id``) explicitly; another coach's ids are ``NotFound``."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], registry: ProviderRegistry, accounts: AccountService
    ) -> None:
        self._sessionmaker = sessionmaker
        self._registry = registry
        self._accounts = accounts

    async def client_memory(
        self,
        session: AsyncSession,
        coach_id: uuid.UUID,
        client_id: uuid.UUID,
        summaries: PageRequest = PageRequest(),  # noqa: B008 - immutable: the first page
    ) -> ClientMemory:
        """A client's profile, visible insights (active first, then by importance and recency) and the
        ``summaries`` page of their ended sessions (newest first: summarised, pending (``ended``) and failed ones
        with their error; the first :data:`~app.core.pagination.DEFAULT_PAGE_SIZE` by default: a client of
        years has thousands). Raises ``NotFound``.

        Takes the session (not the unit of work), as :meth:`digest` does; controllers pass ``uow.session,
        uow.coach_id``."""
        profile = await _profile_of(session, coach_id, client_id)
        insights = (
            await session.scalars(
                select(Insight)
                .options(_INSIGHT_WITHOUT_VECTOR)
                .where(Insight.client_id == client_id, Insight.status.in_(InsightStatus.VISIBLE))
                .order_by(
                    (Insight.status == InsightStatus.ACTIVE).desc(),
                    Insight.importance.desc(),
                    Insight.last_seen_at.desc(),
                )
            )
        ).all()
        stmt = (
            select(ChatSession)
            .options(_SESSION_WITHOUT_VECTOR)
            .where(ChatSession.client_id == client_id, ChatSession.status.in_(SessionStatus.LISTED))
        )
        stmt = summaries.apply(stmt, ChatSession.started_at, ChatSession.id, newest_first=True)
        page = summaries.page((await session.scalars(stmt)).all(), lambda s: Keyset(s.started_at, s.id))
        return ClientMemory(profile, list(insights), page.items, page.next)

    async def session_status(self, session: AsyncSession, client_id: uuid.UUID, session_id: uuid.UUID) -> str | None:
        """The status of the client's ended session ``session_id`` (one of :data:`SessionStatus.LISTED`);
        ``None`` when it is not one of the client's ended sessions (another client's, still open, or deleted).
        Runs in the coach's tenant transaction (row-level security scopes it)."""
        return await session.scalar(
            select(ChatSession.status).where(
                ChatSession.id == session_id,
                ChatSession.client_id == client_id,
                ChatSession.status.in_(SessionStatus.LISTED),
            )
        )

    async def digest(
        self, session: AsyncSession, coach_id: uuid.UUID, client_id: uuid.UUID, *, insights: int
    ) -> MemoryDigest:
        """A client's :class:`MemoryDigest` with at most ``insights`` insights: reads only those and one summary,
        however long the client's history (:meth:`client_memory` reads every insight and a page of sessions).
        Raises ``NotFound`` (also for another coach's client). Takes the session (not the unit of work) because
        the handoff brief and an intervention's record read it inside their callers' transactions."""
        profile = await _profile_of(session, coach_id, client_id)
        top = (
            await session.scalars(
                select(Insight)
                .options(_INSIGHT_WITHOUT_VECTOR)
                .where(Insight.client_id == client_id, Insight.status == InsightStatus.ACTIVE)
                .order_by(Insight.importance.desc(), Insight.last_seen_at.desc())
                .limit(insights)
            )
        ).all()
        last_summary = await session.scalar(
            select(ChatSession.summary)
            .where(
                ChatSession.client_id == client_id,
                ChatSession.status == SessionStatus.SUMMARIZED,
                ChatSession.summary.is_not(None),
            )
            .order_by(ChatSession.started_at.desc())
            .limit(1)
        )
        return MemoryDigest(profile, list(top), last_summary)

    async def _visible_insight(
        self, session: AsyncSession, coach_id: uuid.UUID, client_id: uuid.UUID, insight_id: uuid.UUID
    ) -> Insight:
        insight = await session.scalar(
            select(Insight)
            .where(
                Insight.id == insight_id,
                Insight.coach_id == coach_id,
                Insight.client_id == client_id,
                Insight.status.in_(InsightStatus.VISIBLE),
            )
            .with_for_update()
        )
        if insight is None:
            raise NotFound("insight not found")
        return insight

    async def edit_insight(
        self,
        uow: UnitOfWork,
        client_id: uuid.UUID,
        insight_id: uuid.UUID,
        *,
        text: str | None = None,
        kind: str | None = None,
        importance: int | None = None,
        status: str | None = None,
    ) -> Insight:
        """The coach corrects an insight; ``None`` leaves a field as is. A new text is re-embedded. Any field
        that actually changes marks the insight ``edited_by_coach``: later extractions that restate or update the
        fact then keep its text, kind, importance and status (:meth:`~app.memory.insights.InsightService._apply`).
        Raises ``InvalidInput`` for an empty text, an unknown kind or status, importance outside 0–10;
        ``NotFound`` for an unknown or deleted insight."""
        session, coach_id = uow.session, uow.coach_id
        insight = await self._visible_insight(session, coach_id, client_id, insight_id)
        if kind is not None and kind not in InsightKind.ALL:
            raise InvalidInput(f"kind must be one of {', '.join(InsightKind.ALL)}")
        if importance is not None and not 0 <= importance <= 10:
            raise InvalidInput("importance must be between 0 and 10")
        if status is not None and status not in InsightStatus.VISIBLE:
            raise InvalidInput(f"status must be one of {', '.join(InsightStatus.VISIBLE)}")
        for name, value in (("kind", kind), ("importance", importance), ("status", status)):
            if value is not None and value != getattr(insight, name):
                setattr(insight, name, value)
                insight.edited_by_coach = True
        if text is not None:
            cleaned = text.strip()
            if not cleaned:
                raise InvalidInput("text must not be empty")
            if len(cleaned) > 500:
                raise InvalidInput("text is longer than 500 characters")
            if cleaned != insight.text:
                coach = await uow.coach()
                embedder = await self._registry.embedder_for(coach)
                [insight.embedding] = await embedder.embed([cleaned])
                insight.embedding_model = embedder.model
                insight.text = cleaned
                insight.edited_by_coach = True
        await session.flush()
        return insight

    async def delete_insight(self, uow: UnitOfWork, client_id: uuid.UUID, insight_id: uuid.UUID) -> None:
        """Forget an insight: its text is erased and it never enters a prompt again. The row stays as a
        tombstone: its embeddings (the coach's model's, and the offline model's in
        :attr:`~app.memory.models.Insight.tombstone_embedding`) stop the same fact from being re-extracted. The
        messages it came from are marked forgotten (:attr:`Message.forgotten_at`), and so are the replies to them
        (:func:`_forget_replies`: a reply may quote the message it answers): they stay in the coach's
        transcript but leave every later prompt (recent turns, summaries, insight extraction, few-shot examples)
        and the training data — the summaries built on them are cleared and written again without them, their
        conversations' training examples rebuilt (the provider files of fine-tunes trained on the examples
        removed deleted), and the coach's response cache and cached failure patterns in Redis purged (as after
        an erasure: a cached reply can quote a message its prompt held); all queued in this transaction.
        Raises ``NotFound``."""
        session, coach_id = uow.session, uow.coach_id
        insight = await self._visible_insight(session, coach_id, client_id, insight_id)
        # the text in the offline model's space, which a later switch of the coach's embedder leaves valid
        [insight.tombstone_embedding] = await self._registry.local_embedder().embed([insight.text])
        repeats = await _forget_repeats(session, client_id, insight.text, insight.source_message_ids)
        insight.status = InsightStatus.DELETED
        insight.text = ""
        conversations = (
            await session.scalars(
                update(Message)
                .where(
                    Message.id.in_(insight.source_message_ids),
                    Message.conversation_id.in_(select(Conversation.id).where(Conversation.client_id == client_id)),
                )
                .values(forgotten_at=func.coalesce(Message.forgotten_at, func.now()))
                .returning(Message.conversation_id)
                .execution_options(synchronize_session=False)
            )
        ).all()
        await _forget_replies(session, insight.source_message_ids)
        forgotten = [*insight.source_message_ids, *repeats]
        conversations = [
            *conversations,
            *(await session.scalars(select(Message.conversation_id).where(Message.id.in_(repeats)))).all(),
        ]
        for conversation_id in set(conversations):
            jobs.refresh_training_data(session, coach_id, conversation_id, trigger=f"forget:{insight_id}", erase=True)
        if conversations:  # cached replies (and failure patterns) may quote the forgotten messages
            jobs.purge_erased_data(session, coach_id, [], reason=f"forget:{insight_id}")
        affected = (
            await session.scalars(
                select(ChatSession)
                .where(
                    ChatSession.client_id == client_id,
                    # an ended one too: its summary may be being written from the messages forgotten now
                    ChatSession.status.in_((SessionStatus.ENDED, *SessionStatus.FINISHED)),
                    ChatSession.id.in_(select(Message.session_id).where(Message.id.in_(forgotten))),
                )
                .with_for_update()
            )
        ).all()
        for chat_session in affected:
            chat_session.erase_summary(SessionStatus.ENDED)
            jobs.summarize_session(session, coach_id, chat_session.id, cause=f"forget:{insight_id}")
        # the profile lines learnt from those sessions go; their new summaries' profile jobs add back the rest
        await forget_sessions(session, coach_id, client_id, [chat_session.id for chat_session in affected])
        jobs.rebuild_briefs(session, coach_id, client_id, reason=f"forget:{insight_id}")  # they may quote it

    async def delete_summary(self, uow: UnitOfWork, client_id: uuid.UUID, session_id: uuid.UUID) -> None:
        """Forget a session summary (or one still being written: the session ended, its summary pending): summary,
        sources and vector are erased, so it is neither listed nor recalled again (a summary being written is not
        stored), the profile lines learnt from that session alone go too
        (:func:`~app.memory.profile.forget_sessions`; the session's messages stay in the transcript), and the
        briefs of the client's active handoffs are written again without it. Raises ``NotFound``."""
        session, coach_id = uow.session, uow.coach_id
        chat_session = await session.scalar(
            select(ChatSession)
            .where(
                ChatSession.id == session_id,
                ChatSession.coach_id == coach_id,
                ChatSession.client_id == client_id,
                ChatSession.status.in_((SessionStatus.ENDED, *SessionStatus.FINISHED)),
            )
            .with_for_update()
        )
        if chat_session is None:
            raise NotFound("session summary not found")
        chat_session.erase_summary(SessionStatus.DELETED)
        await forget_sessions(session, coach_id, client_id, [session_id])  # and the profile lines it alone gave
        jobs.rebuild_briefs(session, coach_id, client_id, reason=f"forget-summary:{session_id}")
        await session.flush()

    async def edit_profile(self, uow: UnitOfWork, client_id: uuid.UUID, changes: dict[str, Any]) -> ClientProfile:
        """The coach edits the L4 profile: ``changes`` maps list fields to lists of statements and ``tone`` to
        a string; anything else is ``InvalidInput``. Raises ``NotFound`` for another coach's client."""
        session, coach_id = uow.session, uow.coach_id
        await self._accounts.get_client(uow, client_id)
        profile = await profile_for_update(session, coach_id, client_id)
        for name, value in changes.items():
            if name == "tone":
                if not isinstance(value, str) or len(value) > 200:
                    raise InvalidInput("tone must be a string of at most 200 characters")
                profile.tone = value.strip()
            elif name in PROFILE_LISTS:
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise InvalidInput(f"{name} must be a list of strings")
                entries = [v.strip() for v in value if v.strip()]
                if len(entries) > PROFILE_LIST_MAX or any(len(v) > 300 for v in entries):
                    raise InvalidInput(f"{name} takes at most {PROFILE_LIST_MAX} entries of at most 300 characters")
                if any("\n" in v or "\r" in v for v in entries):  # the dashboard's form is one entry a line
                    raise InvalidInput(f"{name}: each entry must be one line (send several lines as several entries)")
                setattr(profile, name, entries)
            else:
                raise InvalidInput(f"unknown profile field {name!r}")
        keep_sources_of_held_lines(profile)
        profile.coach_edited_at = datetime.now(UTC)
        await session.flush()
        return profile
