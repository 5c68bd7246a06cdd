"""Intake: store the client's message the moment it arrives (idempotent on the client's own message id), and
later load what answering it needs (history, signals, the conversation's handoff state).

Storing and answering are separate transactions on purpose: a message is committed before any answer is
attempted, so nothing the client sent is lost when the answer fails, times out or the connection drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections import OrderedDict
from datetime import UTC, datetime

from sqlalchemy import DateTime, bindparam, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Client, Coach
from app.accounts.unit_of_work import UnitOfWork
from app.chat.turn.state import Received, Turn
from app.chat.turn.timing import Stages
from app.conversations.handoffs import Handoff, HandoffReason, HandoffStatus
from app.conversations.metadata import helpful, is_notice
from app.conversations.models import CLIENT_MESSAGE_ID_MAX, Conversation, Message, SenderType
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.ratelimit import IdThrottle
from app.core.validation import NUL, NUL_REFUSED
from app.db import jobs
from app.db.engine import after_commit
from app.handoff.crisis import needs_crisis_protocol
from app.handoff.crisis_model import minilm, windows
from app.handoff.detector import (
    CONVERSATION_WINDOW,
    CrisisDetector,
    conversation_risk,
    with_fragment,
    with_unanswered,
)
from app.handoff.languages import Language
from app.handoff.queue import HANDOFF_LOCK
from app.handoff.risk import RiskAssessment
from app.handoff.service import HandoffService
from app.handoff.signals import turn_signals
from app.llm.registry import ProviderRegistry
from app.memory.episodes import store_episodes
from app.memory.insights import extraction_due
from app.memory.messages import store_message

MAX_MESSAGE_CHARS = 4000
PREFETCHED_MAX = 256
"""Message embeddings started at intake and not yet taken by their turn, kept at most (the oldest are dropped:
a message whose turn never comes, because the AI is paused or the answer moved to the worker)."""
SENTENCE_ENDS = (".", "!", "?", "…")
"""How a message that does not break off ends (:meth:`Intake._joined_risk`)."""
SIGNAL_WINDOW_MESSAGES = 20
"""Earlier messages read for the signals (repeated questions, sentiment trend, thumbs-down streak)."""


_TURN = (
    select(Message, Conversation, Client.name, Coach)  # the coach: uow.coach() finds it loaded
    .join(Conversation, Conversation.id == Message.conversation_id)
    .join(Client, Client.id == Conversation.client_id)
    .join(Coach, Coach.id == Message.coach_id)
    .where(
        Message.id == bindparam("message_id"),
        Message.sender_type == SenderType.CLIENT,
        Conversation.client_id == bindparam("client_id"),
    )
    .with_for_update(of=(Message, Conversation), **HANDOFF_LOCK)  # the conversation: before_model may open a handoff
)
_EARLIER = (
    select(Message)
    .where(
        Message.conversation_id == bindparam("conversation_id"),
        Message.id != bindparam("message_id"),
        or_(
            Message.created_at < bindparam("created_at", type_=DateTime(timezone=True)),
            Message.sender_type != SenderType.CLIENT,
        ),
    )
    .order_by(Message.created_at.desc())
    .limit(bindparam("limit"))
)
_LATEST_SENDER = (
    select(Message.sender_type)
    .where(Message.conversation_id == Conversation.id)
    .order_by(Message.created_at.desc())
    .limit(1)
    .scalar_subquery()
)
_CRISIS_CONVERSATION = (
    select(Handoff.conversation_id)
    .where(
        Handoff.coach_id == bindparam("coach_id"),
        Handoff.client_id == bindparam("client_id"),
        Handoff.status.in_(HandoffStatus.ACTIVE),
        Handoff.reason == HandoffReason.CRISIS,
    )
    .order_by(Handoff.created_at.desc())
    .limit(1)
    .scalar_subquery()
)
"""The conversation of the client's active crisis handoff, if any (the partial index ``ix_handoffs_active_client``):
every message of the client goes there while it lasts (:func:`_conversation_for`)."""
_CONVERSATION_ID = bindparam("conversation_id", type_=Conversation.id.type)  # typed: it may be NULL
_CONVERSATION = (
    select(Conversation, _LATEST_SENDER, Coach)
    .join(Coach, Coach.id == Conversation.coach_id)
    .where(
        Conversation.id == func.coalesce(_CRISIS_CONVERSATION, _CONVERSATION_ID),
        Conversation.coach_id == bindparam("coach_id"),
        Conversation.client_id == bindparam("client_id"),
    )
    .with_for_update(of=Conversation, **HANDOFF_LOCK)  # the conversation first (the lock order of HANDOFF_LOCK)
)
"""The turn's reads (:func:`_conversation_for`, :meth:`Intake.load`, :func:`_earlier`): built once and run with
bound parameters, so SQLAlchemy reuses their cache keys and compiled forms (building them cost about 0.2 ms of
CPU each, per turn)."""


def clean_text(text: str | None) -> str:
    """The message text, stripped. Raises ``InvalidInput`` when empty, over :data:`MAX_MESSAGE_CHARS` or holding
    a NUL character."""
    text = (text or "").strip()
    if not text:
        raise InvalidInput("text must not be empty", code="empty")
    if NUL in text:  # refused before anything is stored, on every channel (the socket too)
        raise InvalidInput(NUL_REFUSED, code="nul")
    if len(text) > MAX_MESSAGE_CHARS:
        raise InvalidInput(
            f"text is longer than {MAX_MESSAGE_CHARS} characters", code="too_long", fields={"max": MAX_MESSAGE_CHARS}
        )
    return text


def clean_client_message_id(value: str | None) -> str | None:
    """The client app's message id, stripped (``None`` when absent). Raises ``InvalidInput`` when blank, longer
    than 64 characters or holding a NUL character."""
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > CLIENT_MESSAGE_ID_MAX:
        length = f" (it has {len(value)})" if value else ""  # (its length, not the value: it may be long)
        raise InvalidInput(f"client_message_id must be 1 to {CLIENT_MESSAGE_ID_MAX} characters{length}")
    if NUL in value:
        raise InvalidInput("client_message_id must not contain the NUL character (U+0000)")
    return value


class Intake:
    """Stores client messages and loads the state a turn starts from."""

    def __init__(self, handoffs: HandoffService, registry: ProviderRegistry, throttle: IdThrottle) -> None:
        self._handoffs = handoffs
        self._registry = registry
        self._throttle = throttle
        # the learned crisis component embeds with the process's one MiniLM instance
        self._risk = CrisisDetector(embed=minilm(registry.local_embedder))
        self._prefetched: OrderedDict[tuple[object, ...], asyncio.Future[list[float] | None]] = OrderedDict()

    async def store(
        self,
        uow: UnitOfWork,
        client_id: uuid.UUID,
        text: str,
        *,
        conversation_id: uuid.UUID | None,
        channel: str,
        client_message_id: str | None,
        app_language: Language | None = None,
        prefetch: bool = True,
    ) -> Received:
        """Store the client's message (validated by the caller) in ``session``'s transaction, or return the
        one stored before with the same ``client_message_id``. A new message is shown on the coach's dashboard
        after commit, and when it answers the coach's message the outcome scoring of the coach's interventions
        is queued. ``app_language`` (the client's app's language, when the channel tells one) is kept in the message's
        ``metadata.app_language``. With ``prefetch``, the message's embedding starts now, for the turn that answers it
        (:meth:`load`). Raises ``TooManyAttempts`` (a new message over the client's rate limit), ``NotFound`` (not
        this client's conversation) and ``Conflict`` (the client's message with that id, stored by another request
        meanwhile, is gone again: erased; or that id was used for another text)."""
        session, coach_id = uow.session, uow.coach_id
        if client_message_id is not None:
            stored = await _stored(session, client_id, client_message_id)
            if stored is not None:
                return _sent_again(stored, text)
        await self._throttle.hit(client_id)  # a message sent again (above) is not counted twice
        conversation, previous, coach = await _conversation_for(uow, client_id, conversation_id, channel)
        if prefetch:  # the turn's embedding runs while the message is stored
            self._prefetch(coach, text)
        # a savepoint only where a duplicate can fail the INSERT: the same client_message_id stored meanwhile
        savepoint = session.begin_nested() if client_message_id is not None else contextlib.nullcontext()
        try:
            async with savepoint:
                message, _ = await store_message(
                    session,
                    coach,
                    conversation.id,
                    SenderType.CLIENT,
                    text,
                    at=datetime.now(UTC),
                    meta={"app_language": app_language} if app_language else None,
                    client_message_id=client_message_id,
                    client_id=client_id if client_message_id is not None else None,
                )
        except IntegrityError:  # the same message sent again at the same moment (another socket) was stored
            stored = await _stored(session, client_id, client_message_id) if client_message_id else None
            if stored is None:
                raise Conflict("client_message_id belongs to a message that was deleted meanwhile") from None
            return _sent_again(stored, text)
        if previous == SenderType.HUMAN_COACH:  # the client's answer is the outcome of the coach's intervention
            jobs.score_interventions(session, coach_id, conversation.id, trigger=f"client:{message.id}")
        after_commit(
            session, functools.partial(self._handoffs.publish_message, coach_id, client_id, message, to_client=False)
        )
        return _received(message, created=True)

    async def load(self, uow: UnitOfWork, client_id: uuid.UUID, message_id: uuid.UUID, stages: Stages) -> Turn | None:
        """The turn that answers client message ``message_id`` (locked for ``session``'s transaction), or
        ``None`` when it was answered already. History is what the client saw before it: earlier messages and
        the replies to earlier messages, not the client's later ones. When the message's one embedding serves
        retrieval too (``Turn.query_embedding``), the message's episode is stored with it in this transaction
        (:func:`app.memory.episodes.store_episodes`), whatever the turn then does; otherwise the turn's
        gather stores it. Times ``intake.embed`` (waiting for the message's one embedding, started when it was
        stored, or else now, and computed while the other reads run), ``intake.risk`` (the crisis screen) and
        ``intake.episode`` in ``stages``. Raises ``NotFound``."""
        session = uow.session
        row = (await session.execute(_TURN, {"message_id": message_id, "client_id": client_id})).one_or_none()
        if row is None:
            raise NotFound("message not found")
        message, conversation, client_name, _ = row
        if message.answered_at is not None:
            return None
        coach = await uow.coach()
        # the message's embedding (a worker thread) runs while the rest of the turn's state is read
        embedding = self._embedding(coach, message.text)
        try:
            earlier = await _earlier(session, coach, message)
            active = await self._handoffs.active_for(session, conversation.id)
        except BaseException:
            embedding.cancel()
            raise
        with stages.time("intake.embed"):
            query_embedding = await embedding
        client_texts = [msg.text for msg in earlier if msg.sender_type == SenderType.CLIENT]
        ai_feedback = [
            helpful(msg.meta)
            for msg in reversed(earlier)
            if msg.sender_type == SenderType.AI and not is_notice(msg.meta)
        ]
        # this message (lexicon OR learned, off the event loop), then the run of the client's recent messages:
        # several moderately concerning ones in a row raise the level
        with stages.time("intake.risk"):
            risk = await asyncio.to_thread(self._risk.assess, message.text, query_embedding)
        if query_embedding is not None:  # the message's episode, so later turns recall it (this one excludes it)
            with stages.time("intake.episode"):
                model = (await self._registry.query_embedder(coach)).model
                await store_episodes(session, coach.id, conversation.client_id, [message], [query_embedding], model)
        earlier_risks = [self._risk.lexicon.assess(t) for t in client_texts[-CONVERSATION_WINDOW + 1 :]]
        if client_texts:  # a crisis written across this message and the one before it
            risk = with_fragment(risk, earlier_risks[-1], await self._joined_risk(client_texts[-1], message.text))
        risk = conversation_risk([*earlier_risks, risk])
        risk = with_unanswered(risk, [self._risk.lexicon.assess(m.text) for m in _unanswered_since_a_reply(earlier)])
        signals = turn_signals(
            message.text,
            risk=risk,
            earlier_client_messages=client_texts,
            high_stakes_topics=coach.high_stakes_topics,
            escalate_topics=coach.always_escalate_topics,
            helpful_newest_first=ai_feedback,
            coach_name=coach.name,
            answered_earlier=_answered_by_a_reply(earlier),
        )
        watermark = conversation.insights_extracted_through
        reaches_watermark = len(earlier) < _earlier_limit(coach) or (
            watermark is not None and earlier[0].created_at <= watermark
        )
        return Turn(
            coach=coach,
            conversation=conversation,
            message=message,
            client_name=client_name,
            # L1: forgotten messages (the source of an insight the client or coach forgot) never enter a prompt, nor
            # the apology of a failed reply (a model shown it answers the question asked again with it)
            history=[m for m in earlier if m.forgotten_at is None and not _failed(m)][-coach.recent_messages :]
            if coach.recent_messages
            else [],
            risk=risk,
            signals=signals,
            active=active,
            query_embedding=query_embedding,
            insights_due=extraction_due([*earlier, message], watermark, reaches_watermark=reaches_watermark),
        )

    async def _joined_risk(self, previous: str, text: str) -> RiskAssessment:
        """The risk of two client messages read as one (:func:`~app.handoff.detector.with_fragment`): the lexicon's,
        and the learned component's too (off the event loop: a MiniLM call) only when the lexicon found some concern
        without a crisis and the ``previous`` message breaks off (it ends without a sentence's end: "i think tonight
        im finally going to"), so an ordinary turn pays for no second embedding."""
        joined = self._risk.lexicon.assess(f"{previous} {text}")
        if joined.level == "none" or needs_crisis_protocol(joined) or previous.rstrip().endswith(SENTENCE_ENDS):
            return joined
        return await asyncio.to_thread(self._risk.assess, f"{previous} {text}")

    def _embedding(self, coach: Coach, text: str) -> asyncio.Future[list[float] | None]:
        """The message's embedding (:meth:`_shared_embedding`): the one started when it was stored
        (:meth:`_prefetch`), or one started now."""
        prefetched = self._prefetched.pop(_prefetch_key(coach, text), None)
        return prefetched or asyncio.ensure_future(self._shared_embedding(coach, text))

    def _prefetch(self, coach: Coach, text: str) -> None:
        """Start the embedding of a client message that is being stored, for :meth:`load` to take: the turn
        that answers it then does not wait for it. Keyed by the coach, its embedding settings and the text, so a
        coach who switched embedders meanwhile gets a new embedding; at most :data:`PREFETCHED_MAX` are kept."""
        key = _prefetch_key(coach, text)
        if key in self._prefetched:
            return
        task = asyncio.ensure_future(self._shared_embedding(coach, text))
        task.add_done_callback(_consume)
        self._keep(key, task)

    def keep_embedding(self, turn: Turn) -> None:
        """Keep the embedding :meth:`load` took for ``turn``'s message for the turn that will answer it (a crisis
        screen that answered nothing rolled its transaction back)."""
        kept: asyncio.Future[list[float] | None] = asyncio.get_running_loop().create_future()
        kept.set_result(turn.query_embedding)
        self._keep(_prefetch_key(turn.coach, turn.message.text), kept)

    def _keep(self, key: tuple[object, ...], embedding: asyncio.Future[list[float] | None]) -> None:
        self._prefetched[key] = embedding
        while len(self._prefetched) > PREFETCHED_MAX:
            self._prefetched.popitem(last=False)

    async def _shared_embedding(self, coach: Coach, text: str) -> list[float] | None:
        """The message's one embedding for both the crisis screen and retrieval, or ``None`` when one vector
        cannot serve both: the coach retrieves with another embedder than the screen's all-MiniLM-L6-v2, or the
        message is longer than one screen window (:func:`app.handoff.crisis_model.windows`, 128 words; the
        screen then embeds each window and retrieval embeds the message again). The text embedded is the
        screen's normalised window; for retrieval it reads as the message itself (MiniLM's tokenizer
        lower-cases and strips accents anyway; only obfuscated risk words read plainly). 384 floats."""
        if coach.embedding_provider == "openai" and coach.embedding_model:
            return None
        parts = windows(text)
        if len(parts) != 1 or not parts[0]:
            return None
        [vector] = await (await self._registry.query_embedder(coach)).embed(parts)
        return vector


def _prefetch_key(coach: Coach, text: str) -> tuple[object, ...]:
    return (coach.id, coach.embedding_provider, coach.embedding_model, text)


def _consume(task: asyncio.Future[list[float] | None]) -> None:
    """Read a prefetched embedding's error, so one that no turn takes is not reported as never retrieved (the
    turn that takes it gets the error again when it awaits it)."""
    if not task.cancelled():
        task.exception()


def _received(message: Message, *, created: bool) -> Received:
    return Received(
        message.id,
        message.conversation_id,
        message.client_message_id,
        created,
        message.answered_at is not None,
        message.created_at,
    )


def _sent_again(stored: Message, text: str) -> Received:
    """The :class:`Received` of a message sent again with the ``client_message_id`` of ``stored``. Raises
    ``Conflict`` when ``text`` is another message than the stored one (a client reusing an id would otherwise
    see a 200 with nothing stored nor answered); a forgotten message's text is gone, so any text matches it."""
    if stored.forgotten_at is None and stored.text != text:
        raise Conflict("client_message_id was used for another message: send a new id with a new message")
    return _received(stored, created=False)


async def _stored(session: AsyncSession, client_id: uuid.UUID, client_message_id: str) -> Message | None:
    """The client's message stored with ``client_message_id``, if any."""
    return await session.scalar(
        select(Message).where(Message.client_id == client_id, Message.client_message_id == client_message_id)
    )


def _earlier_limit(coach: Coach) -> int:
    """How many earlier messages a turn reads: its L1 window or the signals' window, the longer."""
    return max(coach.recent_messages, SIGNAL_WINDOW_MESSAGES)


def _failed(message: Message) -> bool:
    """Whether ``message`` is the apology stored for a reply the model failed to give (its ``error``:
    :meth:`app.chat.turn.generate.Generator.apology`): it never enters a prompt (shown it, a model answers the
    question asked again with it)."""
    return message.sender_type == SenderType.AI and "error" in message.meta


def _answered_by_a_reply(earlier: list[Message]) -> list[str]:
    """The texts of the client's messages in ``earlier`` (oldest first) that a reply answered: a message of the AI or
    the coach came after them that is neither a failed reply's apology (which asks the client to try again) nor a
    notice. Those followed by nothing yet, or only by the apology or a notice, got no answer to repeat."""
    answered: list[str] = []
    waiting: list[str] = []
    for msg in earlier:
        if msg.sender_type == SenderType.CLIENT:
            waiting.append(msg.text)
            continue
        if not _failed(msg) and not is_notice(msg.meta):
            answered += waiting
        waiting = []
    return answered


def _unanswered_since_a_reply(earlier: list[Message]) -> list[Message]:
    """The client's messages after the last message of anyone else in ``earlier`` (oldest first) that no turn
    answered: those nothing has replied to yet. One answered by a later reply (the crisis protocol run for it at
    the next turn, the coach's message) is left out, so it is acted on once."""
    trailing: list[Message] = []
    for msg in reversed(earlier):
        if msg.sender_type != SenderType.CLIENT:
            break
        trailing.append(msg)
    return [msg for msg in reversed(trailing) if msg.answered_at is None]


async def _earlier(session: AsyncSession, coach: Coach, message: Message) -> list[Message]:
    """Up to :func:`_earlier_limit` messages before ``message``, oldest first; replies stored after it (to
    client messages queued before it) count as before it."""
    params = {
        "conversation_id": message.conversation_id,
        "message_id": message.id,
        "created_at": message.created_at,
        "limit": _earlier_limit(coach),
    }
    rows = await session.scalars(_EARLIER, params)
    return list(reversed(rows.all()))


async def _conversation_for(
    uow: UnitOfWork, client_id: uuid.UUID, conversation_id: uuid.UUID | None, channel: str
) -> tuple[Conversation, str | None, Coach]:
    """The client's conversation ``conversation_id``, the sender type of its latest message (``None``: no
    message yet) and the coach, in one query; or a new conversation on ``channel`` (with no latest message).

    While the client has an active crisis handoff, the message goes to that handoff's conversation instead,
    whichever conversation it names or none (a new one): the AI stays paused for the client and the coach sees
    every message in the crisis thread, which the client's widget keeps showing (its latest conversation), so a
    new conversation (REST without ``conversation_id``, a Telegram chat bound to another conversation, an old
    widget tab) cannot sidestep the crisis protocol. The channel learns the conversation from the stored
    message's ``conversation_id``. Raises ``NotFound`` (``conversation_id`` is not the client's, and no crisis
    handoff is active)."""
    params = {"conversation_id": conversation_id, "coach_id": uow.coach_id, "client_id": client_id}
    row = (await uow.session.execute(_CONVERSATION, params)).one_or_none()
    if row is not None:
        return row[0], row[1], await uow.coach()  # the coach row just loaded (the session's identity map)
    if conversation_id is not None:
        raise NotFound("conversation not found")
    coach = await uow.coach()
    conversation = Conversation(coach_id=coach.id, client_id=client_id, channel=channel)
    uow.session.add(conversation)
    await uow.session.flush()
    return conversation, None, coach
