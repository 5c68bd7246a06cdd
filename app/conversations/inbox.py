"""The coach's inbox: every conversation as one row with its state (who has to act), the last message, the
client's unread messages, filtered by state, channel, unread and a search over client names and messages,
read a page at a time with a keyset cursor (:class:`InboxCursor`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, exists, func, or_, select, true, update
from sqlalchemy.orm import aliased

from app.accounts.models import Client
from app.accounts.unit_of_work import UnitOfWork
from app.conversations.handoffs import Draft, DraftStatus, Handoff, HandoffReason, HandoffStatus
from app.conversations.models import Conversation, Message, SenderType
from app.core.errors import InvalidInput, NotFound
from app.core.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, decode_cursor, decode_cursor_time, encode_cursor
from app.db.search import contains_pattern

PREVIEW_CHARS = 120
"""Longest last-message preview; longer texts end with an ellipsis."""
MAX_QUERY_CHARS = 200
BAD_CURSOR = "cursor is not a valid inbox cursor: use the next value of the previous page"


class InboxState:
    """Who has to act in a conversation, most urgent first: ``crisis`` (an open crisis handoff, or one the coach
    holds with a crisis message they have not read yet), ``waiting`` (an open handoff: the AI stopped, nobody
    took it yet), ``you`` (the coach holds it), ``draft`` (an AI draft waits for approval), ``ai`` (the AI
    answers)."""

    CRISIS = "crisis"
    WAITING = "waiting"
    YOU = "you"
    DRAFT = "draft"
    AI = "ai"
    ALL = (CRISIS, WAITING, YOU, DRAFT, AI)
    PRIORITY = {CRISIS: 0, WAITING: 1, DRAFT: 2, YOU: 3, AI: 3}
    """The inbox's order: crisis, then the clients waiting for the coach (``waiting``, and ``you`` while the
    client's message is the newest: it waits for the coach's answer), the longest wait first, then draft, then the
    rest (crisis and the rest most recent first)."""
    LABELS = {
        CRISIS: "Crisis",
        WAITING: "Waiting for you",
        YOU: "You",
        DRAFT: "Draft pending",
        AI: "AI answering",
    }


WAITING_PRIORITY = InboxState.PRIORITY[InboxState.WAITING]
"""The rank of the clients waiting for the coach, ordered by how long they have waited (:func:`_waiting_since`)."""

CHANNELS = {"widget": "Widget", "api": "API", "telegram": "Telegram"}
"""A conversation's ``channel`` as stored, as the API (conversations, transcripts, the inbox and its filter) gives
it, and the dashboard's label for it: the widget page's socket, the widget token's REST API, the Telegram bot."""


def channel_label(channel: str) -> str:
    """The dashboard's label of a stored ``channel`` (:data:`CHANNELS`; an unknown one as it is)."""
    return CHANNELS.get(channel, channel)


@dataclass(frozen=True)
class InboxCursor:
    """Where the next inbox page starts: just after the row with this sort key (the state's
    :data:`InboxState.PRIORITY`, ``last_at`` and ``conversation_id``). Keyset pagination: a page is as fast
    deep in the inbox as on top, and rows added or moved meanwhile (a new message lifts a conversation to
    the top) are never shown twice on the pages after the cursor, although one that moved up is then seen on
    the first page only. Sent as an opaque URL-safe string (:meth:`encode`, :meth:`decode`)."""

    priority: int
    last_at: datetime
    conversation_id: uuid.UUID

    def encode(self) -> str:
        """The cursor as a URL-safe string (:func:`~app.core.pagination.encode_cursor` of ``[priority, ISO time,
        id]``)."""
        return encode_cursor([self.priority, self.last_at.isoformat(), str(self.conversation_id)])

    @classmethod
    def decode(cls, value: str) -> InboxCursor:
        """The cursor :meth:`encode` wrote. Raises ``InvalidInput`` for anything else (a truncated or edited
        cursor, a priority that is none of :data:`InboxState.PRIORITY`, a time
        :func:`~app.core.pagination.decode_cursor_time` refuses)."""
        try:
            priority, at, conversation_id = decode_cursor(value, 3)
            cursor = cls(priority, decode_cursor_time(at), uuid.UUID(conversation_id))
        except (ValueError, TypeError, AttributeError) as exc:
            raise InvalidInput(BAD_CURSOR) from exc
        if type(cursor.priority) is not int or cursor.priority not in InboxState.PRIORITY.values():
            raise InvalidInput(BAD_CURSOR)
        return cursor


@dataclass(frozen=True)
class InboxFilter:
    """What the coach asked to see; empty values mean "all". ``cursor``: the page after it (``None``: the
    first page); ``limit``: rows per page. Build it with :meth:`parse`."""

    state: str | None = None
    channel: str | None = None
    unread: bool = False
    q: str = ""
    cursor: InboxCursor | None = None
    limit: int = DEFAULT_PAGE_SIZE

    @classmethod
    def parse(
        cls,
        state: str | None,
        channel: str | None,
        unread: bool,
        q: str | None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> InboxFilter:
        """Check the query values. Raises ``InvalidInput`` for an unknown state or channel, a search over
        :data:`MAX_QUERY_CHARS` characters, a cursor :meth:`InboxCursor.decode` refuses, or a ``limit`` outside
        1–:data:`MAX_PAGE_SIZE`."""
        state, channel, q = (state or None), (channel or None), (q or "").strip()
        if state is not None and state not in InboxState.ALL:
            raise InvalidInput(f"state must be one of {', '.join(InboxState.ALL)}")
        if channel is not None and channel not in CHANNELS:
            raise InvalidInput(f"channel must be one of {', '.join(CHANNELS)}")
        if len(q) > MAX_QUERY_CHARS:
            raise InvalidInput(f"q is longer than {MAX_QUERY_CHARS} characters")
        if limit is not None and not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        after = InboxCursor.decode(cursor) if cursor else None
        return cls(state, channel, unread, q, after, DEFAULT_PAGE_SIZE if limit is None else limit)


@dataclass(frozen=True)
class InboxRow:
    """One conversation in the inbox. ``unread``: the client's messages since the coach last opened it;
    ``last_*``: the newest message (``None`` for an empty conversation), ``last_text`` cut to
    :data:`PREVIEW_CHARS`; ``channel`` is the conversation's, as stored (a key of :data:`CHANNELS`);
    ``waiting_since``: when the client began to wait for the coach (:func:`_waiting_since`), ``None`` unless the
    row ranks with ``waiting`` (:data:`InboxState.PRIORITY`)."""

    conversation_id: uuid.UUID
    client_id: uuid.UUID
    client_name: str
    channel: str
    state: str
    unread: int
    last_sender: str | None
    last_text: str | None
    last_at: datetime
    waiting_since: datetime | None = None

    @property
    def state_label(self) -> str:
        """The state as the dashboard words it."""
        return InboxState.LABELS[self.state]

    @property
    def channel_label(self) -> str:
        """The channel as the dashboard words it."""
        return channel_label(self.channel)

    def cursor(self) -> InboxCursor:
        """The cursor of the page that starts just after this row (a waiting client's: by ``waiting_since``)."""
        if self.waiting_since is not None:
            return InboxCursor(WAITING_PRIORITY, self.waiting_since, self.conversation_id)
        return InboxCursor(InboxState.PRIORITY[self.state], self.last_at, self.conversation_id)

    def as_json(self) -> dict[str, Any]:
        """The row as the API returns it (ids and times as strings, plus ``state_label``)."""
        return {
            "conversation_id": str(self.conversation_id),
            "client_id": str(self.client_id),
            "client_name": self.client_name,
            "channel": self.channel,
            "state": self.state,
            "state_label": self.state_label,
            "unread": self.unread,
            "last_sender": self.last_sender,
            "last_text": self.last_text,
            "last_at": self.last_at.isoformat(),
            "waiting_since": self.waiting_since.isoformat() if self.waiting_since else None,
        }


def _preview(text: str | None) -> str | None:
    if text is None or len(text) <= PREVIEW_CHARS:
        return text
    return text[: PREVIEW_CHARS - 1].rstrip() + "…"


@dataclass(frozen=True)
class InboxPage:
    """One page of the inbox: its ``rows`` and the cursor of the page after it (``None``: this is the last)."""

    rows: list[InboxRow]
    next: InboxCursor | None

    def as_json(self) -> dict[str, Any]:
        """``{"rows": [row, ...], "next": "<cursor>" | null}`` as the API returns it."""
        return {"rows": [row.as_json() for row in self.rows], "next": self.next.encode() if self.next else None}


def _states() -> list[tuple[ColumnElement[bool], str]]:
    """When each :class:`InboxState` but ``ai`` holds, first match wins, for a conversation joined with its
    active handoff: an open crisis handoff or a held one with a crisis message the coach has not read yet
    (``urgent_at`` after ``coach_read_at``), an open handoff, a held one, a pending draft."""
    has_draft = exists().where(Draft.conversation_id == Conversation.id, Draft.status == DraftStatus.PENDING)
    unread_crisis = and_(
        Handoff.reason == HandoffReason.CRISIS,
        Conversation.urgent_at.is_not(None),
        or_(Conversation.coach_read_at.is_(None), Conversation.urgent_at > Conversation.coach_read_at),
    )
    return [
        (and_(Handoff.status == HandoffStatus.OPEN, Handoff.reason == HandoffReason.CRISIS), InboxState.CRISIS),
        (and_(Handoff.status == HandoffStatus.CLAIMED, unread_crisis), InboxState.CRISIS),
        (Handoff.status == HandoffStatus.OPEN, InboxState.WAITING),
        (Handoff.status == HandoffStatus.CLAIMED, InboxState.YOU),
        (has_draft, InboxState.DRAFT),
    ]


def _search(q: str) -> ColumnElement[bool]:
    """Conversations whose client's name or any message contains ``q`` (case-insensitive), found by the
    database function ``inbox_search(pattern)`` (migration 0027): its ILIKEs read the trigram GIN indexes
    ``ix_messages_text_trgm`` and ``ix_clients_name_trgm``, which row-level security keeps the app role's own
    ILIKE from using (ILIKE is not LEAKPROOF). The function returns the current tenant's conversations only,
    and the outer query is scoped to the tenant as always."""
    found = func.inbox_search(contains_pattern(q)).table_valued("conversation_id")
    return Conversation.id.in_(select(found.c.conversation_id))


def _waiting_since() -> ColumnElement[datetime]:
    """When the client of a waiting conversation (joined with its active handoff) began to wait for the coach: an
    open handoff's opening, else (the coach holds it) the client's first message since anyone else last wrote."""
    answer = aliased(Message)
    answered = (
        select(func.max(answer.created_at))
        .where(answer.conversation_id == Conversation.id, answer.sender_type != SenderType.CLIENT)
        .correlate(Conversation)
        .scalar_subquery()
    )
    unanswered = (
        select(func.min(Message.created_at))
        .where(
            Message.conversation_id == Conversation.id,
            Message.sender_type == SenderType.CLIENT,
            or_(answered.is_(None), Message.created_at > answered),
        )
        .correlate(Conversation)
        .scalar_subquery()
    )
    return case((Handoff.status == HandoffStatus.OPEN, Handoff.created_at), else_=unanswered)


def _after(
    priority: ColumnElement[int], waiting_since: ColumnElement[datetime], cursor: InboxCursor
) -> ColumnElement[bool]:
    """The rows after ``cursor`` in the inbox's order (priority, then ``waiting_since`` longest wait first for the
    waiting clients, ``last_message_at`` newest first for the others, then id)."""
    if cursor.priority == WAITING_PRIORITY:
        later = or_(
            waiting_since > cursor.last_at,
            and_(waiting_since == cursor.last_at, Conversation.id > cursor.conversation_id),
        )
    else:
        later = or_(
            Conversation.last_message_at < cursor.last_at,
            and_(Conversation.last_message_at == cursor.last_at, Conversation.id > cursor.conversation_id),
        )
    return or_(priority > cursor.priority, and_(priority == cursor.priority, later))


def inbox_query(coach_id: uuid.UUID, wanted: InboxFilter) -> Select[Any]:
    """The statement of one inbox page (``wanted.limit`` + 1 rows, to tell whether a next page exists):
    ``(Conversation, client name, state, unread, last sender, last text, waiting since)`` in the order of
    :data:`InboxState.PRIORITY`: crisis, then the clients waiting for the coach (an open handoff, or a held one
    whose newest message is the client's) the longest wait first, then draft, then the rest (crisis and the rest
    most recent first). One query (the last message is a lateral join)."""
    last = (
        select(Message.sender_type, Message.text)
        .where(Message.conversation_id == Conversation.id)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
        .lateral("last")
    )
    states = _states()
    state = case(*states, else_=InboxState.AI)
    held_waiting = and_(state == InboxState.YOU, last.c.sender_type == SenderType.CLIENT)
    priority = case(
        (held_waiting, WAITING_PRIORITY),
        *((when, InboxState.PRIORITY[name]) for when, name in states),
        else_=InboxState.PRIORITY[InboxState.AI],
    )
    waiting_since = case((priority == WAITING_PRIORITY, _waiting_since()))
    unread = (
        select(func.count(Message.id))
        .where(
            Message.conversation_id == Conversation.id,
            Message.sender_type == SenderType.CLIENT,
            or_(Conversation.coach_read_at.is_(None), Message.created_at > Conversation.coach_read_at),
        )
        .scalar_subquery()
    )
    stmt = (
        select(
            Conversation,
            Client.name,
            state.label("state"),
            unread.label("unread"),
            last.c.sender_type,
            last.c.text,
            waiting_since.label("waiting_since"),
        )
        .join(Client, Client.id == Conversation.client_id)
        .outerjoin(Handoff, and_(Handoff.conversation_id == Conversation.id, Handoff.status.in_(HandoffStatus.ACTIVE)))
        .outerjoin(last, true())
        .where(Conversation.coach_id == coach_id)
        .order_by(
            priority,
            waiting_since,  # (NULL but for the waiting clients)
            case((priority != WAITING_PRIORITY, Conversation.last_message_at)).desc(),
            Conversation.id,
        )
        .limit(wanted.limit + 1)
    )
    if wanted.state is not None:
        stmt = stmt.where(state == wanted.state)
    if wanted.channel is not None:
        stmt = stmt.where(Conversation.channel == wanted.channel)
    if wanted.unread:
        stmt = stmt.where(unread > 0)
    if wanted.q:
        stmt = stmt.where(_search(wanted.q))
    if wanted.cursor is not None:
        stmt = stmt.where(_after(priority, waiting_since, wanted.cursor))
    return stmt


async def inbox_page(uow: UnitOfWork, wanted: InboxFilter) -> InboxPage:
    """One page of the coach's inbox (:func:`inbox_query`): at most ``wanted.limit`` rows after
    ``wanted.cursor``, and the cursor of the next page when there are more."""
    result = (await uow.session.execute(inbox_query(uow.coach_id, wanted))).all()
    rows = [
        InboxRow(c.id, c.client_id, name, c.channel, state, int(n), sender, _preview(text), c.last_message_at, since)
        for c, name, state, n, sender, text, since in result[: wanted.limit]
    ]
    more = len(result) > wanted.limit
    return InboxPage(rows, rows[-1].cursor() if more else None)


async def mark_read(uow: UnitOfWork, conversation_id: uuid.UUID) -> None:
    """The coach has read the conversation through its newest message (its unread count drops to 0; never
    moves back). Raises ``NotFound`` (also for another coach's conversation)."""
    newest = select(func.max(Message.created_at)).where(Message.conversation_id == conversation_id).scalar_subquery()
    result = await uow.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.coach_id == uow.coach_id)
        .values(coach_read_at=func.greatest(Conversation.coach_read_at, newest))
        .returning(Conversation.id)
    )
    if result.first() is None:
        raise NotFound("conversation not found")
