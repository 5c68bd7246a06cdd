"""Reading conversations (the coach's list and transcripts, the client's widget catching up after a reconnect)
and the client's feedback on a reply. Nothing here needs memory or handoffs: the chat turn lives in
:mod:`app.chat.turn`."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Client
from app.accounts.unit_of_work import UnitOfWork
from app.conversations.handoffs import Handoff, HandoffStatus
from app.conversations.metadata import ReplyMeta, is_notice
from app.conversations.models import REMEMBERED, Conversation, Message, SenderType
from app.core.errors import InvalidInput, NotFound
from app.core.pagination import MAX_PAGE_SIZE, Keyset, Page, PageRequest
from app.db import jobs

MAX_FEEDBACK_CHARS = 2000


@dataclass(frozen=True)
class ClientActivity:
    """A client's activity as the coach's client list shows it: ``last_seen`` (their latest message, UTC;
    ``None``: never wrote) and ``needs_you`` (a handoff of theirs is open or claimed)."""

    last_seen: datetime | None
    needs_you: bool


_MESSAGE_COUNT = select(func.count(Message.id)).where(Message.conversation_id == Conversation.id).scalar_subquery()
"""A conversation's message count, per row returned: PostgreSQL computes an expensive select-list expression
after the sort and limit (``make_sort_input_target``), so a page counts only its own conversations' messages."""


CitationsNow = Callable[[AsyncSession, Sequence[Any]], Awaitable[list[Any]]]
"""Reads stored citation lists (each message's, in order) as a listing shows them now, in the same order: each
citation naming where its passage is now, though its document was processed again since
(:func:`app.rag.passages.current_citations`, which the container passes in: chunks are the rag package's, above
this one). The stored lists are not changed."""


RejectCached = Callable[[uuid.UUID, str, int], Awaitable[None]]
"""Takes a reply the client gave a thumbs-down out of the response cache: ``(coach id, cache key, the coach's
cache TTL in seconds)`` (:meth:`app.learning.cache.ResponseCache.reject`, which the container passes in)."""


@dataclass(frozen=True)
class ListedMessage:
    """A stored message as a listing shows it: ``message`` as stored (never changed by the listing) and its
    ``citations`` as they read now (:data:`CitationsNow`: the title, page and locator of where each passage is
    now, which the passage a citation opens shows too)."""

    message: Message
    citations: list[dict[str, Any]]


class ConversationService:
    """Conversations of a coach's clients: lists, transcripts, catch-up reads and feedback on replies.
    ``citations_now`` reads the citations of the messages a transcript lists (:data:`CitationsNow`);
    ``reject_cached`` takes a disliked reply out of the response cache (:data:`RejectCached`)."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], citations_now: CitationsNow, reject_cached: RejectCached
    ) -> None:
        self._sessionmaker = sessionmaker
        self._citations_now = citations_now
        self._reject_cached = reject_cached

    async def list_conversations(
        self, uow: UnitOfWork, page: PageRequest, client_id: uuid.UUID | None = None
    ) -> Page[tuple[Conversation, str, int]]:
        """One page of the coach's conversations (only ``client_id``'s, when given), most recent first, as
        ``(conversation, client name, message count)``."""
        stmt = (
            select(Conversation, Client.name, _MESSAGE_COUNT)
            .join(Client, Client.id == Conversation.client_id)
            .where(Conversation.coach_id == uow.coach_id)
        )
        if client_id is not None:
            stmt = stmt.where(Conversation.client_id == client_id)
        stmt = page.apply(stmt, Conversation.last_message_at, Conversation.id, newest_first=True)
        rows = [(c, name, int(n)) for c, name, n in (await uow.session.execute(stmt)).all()]
        return page.page(rows, lambda row: Keyset(row[0].last_message_at, row[0].id))

    async def latest_conversation(self, uow: UnitOfWork, client_id: uuid.UUID) -> uuid.UUID | None:
        """The id of the client's conversation with the most recent message (``None``: the client has none)."""
        stmt = (
            select(Conversation.id)
            .where(Conversation.coach_id == uow.coach_id, Conversation.client_id == client_id)
            .order_by(Conversation.last_message_at.desc(), Conversation.id.desc())
            .limit(1)
        )
        return await uow.session.scalar(stmt)

    async def client_activity(
        self, uow: UnitOfWork, client_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, ClientActivity]:
        """Per id of ``client_ids`` (the coach's clients on one page): when the client last wrote (their latest
        message, any channel) and whether a handoff of theirs is open or claimed; clients with neither are
        absent."""
        session, coach_id, ids = uow.session, uow.coach_id, list(client_ids)
        last_seen = (
            select(Conversation.client_id, func.max(Message.created_at))
            .join(Message, Message.conversation_id == Conversation.id)
            .where(
                Conversation.coach_id == coach_id,
                Conversation.client_id.in_(ids),
                Message.sender_type == SenderType.CLIENT,
            )
            .group_by(Conversation.client_id)
        )
        waiting = select(Handoff.client_id).where(
            Handoff.coach_id == coach_id, Handoff.client_id.in_(ids), Handoff.status.in_(HandoffStatus.ACTIVE)
        )
        seen = {client_id: at for client_id, at in (await session.execute(last_seen)).all()}
        needs_you = set((await session.scalars(waiting)).all())
        return {cid: ClientActivity(seen.get(cid), cid in needs_you) for cid in seen.keys() | needs_you}

    async def history(
        self,
        uow: UnitOfWork,
        conversation_id: uuid.UUID,
        page: PageRequest,
        *,
        client_id: uuid.UUID | None = None,
        oldest_first: bool = False,
    ) -> tuple[Conversation, Page[ListedMessage]]:
        """A conversation and one page of its messages, newest first: the transcript read back from its end (the
        widget and the dashboard show the latest page and load earlier ones when asked); ``oldest_first``: read
        forward from its start (the coach's API). With ``client_id``, only that client's conversation. Each
        message comes with its citations as they read now (:class:`ListedMessage`; one query for the page).
        Raises ``NotFound`` (also for another coach's or another client's conversation)."""
        session = uow.session
        conversation = await _conversation(session, uow.coach_id, conversation_id, client_id)
        stmt = select(Message).where(Message.conversation_id == conversation_id)
        stmt = page.apply(stmt, Message.created_at, Message.id, newest_first=not oldest_first)
        found = page.page((await session.scalars(stmt)).all(), lambda m: Keyset(m.created_at, m.id))
        cited = await self._citations_now(session, [message.citations for message in found.items])
        return conversation, Page([ListedMessage(*row) for row in zip(found.items, cited, strict=True)], found.next)

    async def messages_after(
        self, uow: UnitOfWork, client_id: uuid.UUID, conversation_id: uuid.UUID, after: uuid.UUID | None
    ) -> Page[ListedMessage]:
        """The client's conversation's messages stored after message ``after`` (from its first with ``None``),
        oldest first, at most :data:`~app.core.pagination.MAX_PAGE_SIZE` of them, as :meth:`history` lists them:
        what a widget missed while it was disconnected. The page's ``next`` is set when more follow (ask again
        after its last message). Raises ``NotFound`` (not this client's conversation, or ``after`` is not one of
        its messages)."""
        mark: Keyset | None = None
        if after is not None:
            found = await uow.session.execute(
                select(Message.created_at, Message.id).where(
                    Message.id == after, Message.conversation_id == conversation_id
                )
            )
            if (row := found.one_or_none()) is None:
                raise NotFound("message not found in this conversation")
            mark = Keyset(row.created_at, row.id)
        page = PageRequest(mark, MAX_PAGE_SIZE)
        _, messages = await self.history(uow, conversation_id, page, client_id=client_id, oldest_first=True)
        return messages

    async def record_feedback(
        self,
        uow: UnitOfWork,
        client_id: uuid.UUID,
        message_id: uuid.UUID,
        *,
        helpful: bool,
        rating: int | None = None,
        comment: str | None = None,
    ) -> dict[str, Any]:
        """The client's thumbs up/down (optional 1–5 ``rating`` and ``comment``) on an AI or human-coach reply
        in one of their conversations, stored as ``metadata.feedback`` ``{"helpful", "rating", "text", "at"}``.
        A new call replaces the previous feedback (idempotent). It feeds the learning loop: the
        conversation's training examples are rebuilt and its interventions' outcomes rescored (outbox jobs in
        the same transaction), thumbs-down streaks lower the next turn's confidence
        (:mod:`app.handoff.confidence`, factor ``frustration``), and a thumbs-down takes the reply out of the
        response cache after the commit (``metadata.cache_key``, :data:`RejectCached`). Raises ``NotFound`` (not
        a reply in this client's conversation) and ``InvalidInput`` (rating outside 1–5, comment over 2,000
        characters; a notice or the crisis reply, :func:`~app.conversations.metadata.is_notice`)."""
        if rating is not None and not 1 <= rating <= 5:
            raise InvalidInput("rating must be a whole number from 1 to 5")
        comment = (comment or "").strip() or None
        if comment is not None and len(comment) > MAX_FEEDBACK_CHARS:
            raise InvalidInput(f"text is longer than {MAX_FEEDBACK_CHARS} characters")
        session, coach_id = uow.session, uow.coach_id
        message = await session.scalar(
            select(Message)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(
                Message.id == message_id,
                Message.sender_type.in_((SenderType.AI, SenderType.HUMAN_COACH)),
                Conversation.client_id == client_id,
            )
            .with_for_update(of=Message)
        )
        if message is None:
            raise NotFound("message not found", code="message_gone")
        if is_notice(message.meta):
            raise InvalidInput("a notice or crisis reply cannot be rated: rate a reply of the AI or the coach")
        at = datetime.now(UTC).isoformat()
        feedback = {"helpful": helpful, "rating": rating, "text": comment, "at": at}
        message.meta = dict(message.meta) | {"feedback": feedback}
        trigger = f"feedback:{message_id}:{at}"
        jobs.refresh_training_data(session, coach_id, message.conversation_id, trigger=trigger)
        jobs.score_interventions(session, coach_id, message.conversation_id, trigger=trigger)
        cache_key = ReplyMeta.from_json(message.meta).cache_key
        if not helpful and cache_key is not None:
            ttl_s = (await uow.coach()).response_cache_ttl_seconds
            uow.after_commit(functools.partial(self._reject_cached, coach_id, cache_key, ttl_s))
        return feedback


async def _conversation(
    session: AsyncSession, coach_id: uuid.UUID, conversation_id: uuid.UUID, client_id: uuid.UUID | None
) -> Conversation:
    """The coach's conversation (only ``client_id``'s when given). Raises ``NotFound``."""
    stmt = select(Conversation).where(Conversation.id == conversation_id, Conversation.coach_id == coach_id)
    if client_id is not None:
        stmt = stmt.where(Conversation.client_id == client_id)
    conversation = await session.scalar(stmt)
    if conversation is None:
        raise NotFound("conversation not found")
    return conversation


async def unanswered_client_message(session: AsyncSession, conversation_id: uuid.UUID) -> uuid.UUID | None:
    """The conversation's latest client message when nobody answered it: the AI did not (``answered_at``) and
    the coach wrote nothing after it. That is what a handback leaves for the AI to answer; ``None`` when
    there is no such message. A forgotten message (:attr:`Message.forgotten_at`) is never answered."""
    last = await session.scalar(
        select(Message)
        .where(Message.conversation_id == conversation_id, Message.sender_type == SenderType.CLIENT, REMEMBERED)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
    )
    if last is None or last.answered_at is not None:
        return None
    coach_after = await session.scalar(
        select(Message.id)
        .where(
            Message.conversation_id == conversation_id,
            Message.sender_type == SenderType.HUMAN_COACH,
            Message.created_at > last.created_at,
        )
        .limit(1)
    )
    return None if coach_after is not None else last.id
