"""The chat turn, top to bottom. Channel-neutral: the web channel (REST, WebSocket), the worker's handback
job and the Telegram adapter all call :meth:`ChatService.receive` then :meth:`ChatService.answer`.

1. intake — :meth:`~ChatService.receive` stores the client's message and returns once it is committed
   (idempotent on the client's message id); :meth:`~ChatService.answer` loads the history and signals.
2. decide before the model (pure, :func:`~app.chat.turn.decide.before_model`): crisis reply, paused AI,
   a rule's handoff, or "am I talking to a real person?" (the AI says it is the coach's AI assistant,
   :mod:`~app.chat.turn.honesty`) — stored in the same transaction, answered without the model.
3. gather the context: query embedding, passages, memory, few-shot interventions, experiment and version.
4. decide after retrieval (pure, :func:`~app.chat.turn.decide.after_retrieval`): low-confidence handoff,
   draft, or send.
5. generate: spotlighted prompt (:mod:`~app.chat.spotlight`), response cache, streamed model, fallback model,
   trim, the output checks — prompt injection (a reply leaking the system text or obeying a planted
   instruction is replaced, :mod:`~app.chat.turn.injection`), then honesty (a reply claiming to be human is
   replaced); a provider error or the deadline (``LLM_TIMEOUT_SECONDS`` for 3–5) gives the
   apology.
6. persist the reply or the draft, the handback bookkeeping and the follow-up jobs (outbox) in one
   transaction that marks the client's message answered.
7. after commit: the response cache and the live events.

Transactions: unlike a request handler (one unit of work for the request, the ``uow`` dependency), the turn
opens its own short units of work with :func:`~app.accounts.unit_of_work.unit_of_work`, on purpose: the
client's message is committed first (transaction 1: it is never lost, whatever happens next), the context is
read in a second, and the reply is stored in a last one, so no transaction (nor pooled connection) is held
open while the model streams, which can take as long as ``LLM_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import HandoffMode
from app.accounts.unit_of_work import unit_of_work
from app.chat.turn.admission import FairSlots
from app.chat.turn.decide import After, Before, BeforeModel, after_retrieval, before_model, cache_after
from app.chat.turn.gather import Gatherer
from app.chat.turn.generate import Generator
from app.chat.turn.intake import Intake, clean_client_message_id, clean_text
from app.chat.turn.persist import Outcome, Persister, handoff_status, result
from app.chat.turn.state import Received, Reply, Turn, TurnResult
from app.chat.turn.timing import Deadline, Stages
from app.conversations.models import Conversation, Message
from app.conversations.service import unanswered_client_message
from app.core.config import Settings
from app.core.errors import DomainError, NotFound, Unavailable
from app.core.ratelimit import IdThrottle
from app.db import jobs
from app.db.engine import commit_asynchronously
from app.handoff.catalogue import say
from app.handoff.confidence import Confidence
from app.handoff.crisis import needs_crisis_protocol
from app.handoff.languages import Language
from app.handoff.service import HandoffService
from app.handoff.signals import asks_if_ai
from app.learning.cache import ResponseCache
from app.learning.experiments import ExperimentService
from app.learning.interventions import InterventionService
from app.learning.versions import ModelVersionService
from app.llm.base import ProviderError
from app.llm.registry import ProviderRegistry

log = logging.getLogger(__name__)

ANSWER_LATER = say("refused_answer_later", "en")
"""What a channel tells the client when a stored message's live answer failed and
:meth:`ChatService.answer_later` queued it for the worker."""

ToClient = Callable[[], bool]
"""Asked after commit: should the stored reply also go to the client's live channel (its own connection is
gone, or there is none: a worker job)?"""


OnAnswering = Callable[[], None]
"""Called once a turn goes on to the model for a reply the client will get (:meth:`ChatService.answer`)."""


def _never() -> bool:
    return False


def _unheard() -> None:
    return None


class _NoCrisis(Exception):
    """:meth:`ChatService.answer_crisis`: the message needs no crisis protocol (its transaction rolls back)."""


def _decide(turn: Turn) -> BeforeModel:
    """Step 2, the decision before the model, on the state :meth:`Intake.load` read."""
    return before_model(
        crisis=needs_crisis_protocol(turn.risk),
        handoff_active=turn.active is not None,
        signals=turn.signals,
        mode=turn.coach.handoff_mode,
        asks_if_ai=asks_if_ai(turn.message.text, coach_name=turn.coach.name),
    )


async def _before_model(persister: Persister, session: AsyncSession, turn: Turn) -> Outcome | None:
    """Step 2 in the intake's transaction: store what :func:`_decide` calls for before the model (a crisis reply,
    a handoff, the AI's disclosure…) and return it, or ``None`` when the model answers. Then the transaction
    holds only the message's episode, stored again if the message is answered again, so it commits
    asynchronously (:func:`~app.db.engine.commit_asynchronously`)."""
    decision = _decide(turn)
    if decision.action is Before.ANSWER:
        await commit_asynchronously(session)
        return None
    return await persister.before_model(session, turn, decision)


def _timed_result(
    turn: Turn, outcome: Outcome, started: float, stages: Stages, *, persist_ms: float | None = None
) -> TurnResult:
    """The turn's :class:`TurnResult` with every stage's time in its ``stages`` metadata, also logged (one
    ``turn stages {json}`` line at INFO: ``bench/chat.py --instant`` reads it)."""
    done = result(turn, outcome, started, persist_ms=persist_ms)
    done.metadata["stages"] = dict(stages.ms)
    log.info("turn stages %s", json.dumps({"message_id": str(turn.message.id), "stages": stages.ms}))
    return done


class ChatService:
    """Runs chat turns for the clients of a coach."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        registry: ProviderRegistry,
        handoffs: HandoffService,
        *,
        throttle: IdThrottle,
        interventions: InterventionService,
        model_versions: ModelVersionService,
        cache: ResponseCache,
        experiments: ExperimentService,
        defences: bool = True,
    ) -> None:
        """``throttle``: each client's message rate limit (``CHAT_RATE_LIMIT``). ``defences``: spotlighting and
        the injection output check (:mod:`app.chat.spotlight`, :mod:`app.chat.turn.injection`); ``False`` only
        for ``opencoach eval injection``'s undefended run."""
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._registry = registry
        self._handoffs = handoffs
        self._cache = cache
        self._intake = Intake(handoffs, registry, throttle)
        self._gatherer = Gatherer(
            sessionmaker,
            settings,
            registry,
            interventions=interventions,
            model_versions=model_versions,
            experiments=experiments,
        )
        self._generator = Generator(settings, registry, cache, defences=defences)
        self._persister = Persister(sessionmaker, handoffs)
        self._slots = FairSlots(settings.turn_concurrency, settings.turn_slots_per_coach())
        self._screens = asyncio.Semaphore(settings.turn_concurrency)  # early crisis screens (answer_crisis)

    async def receive(
        self,
        coach_id: uuid.UUID,
        client_id: uuid.UUID,
        text: str,
        *,
        conversation_id: uuid.UUID | None,
        channel: str,
        client_message_id: str | None = None,
        app_language: Language | None = None,
    ) -> Received:
        """Store a client's message (in ``conversation_id``, or a new conversation on ``channel``) and return
        once it is committed. Sent again with the same ``client_message_id`` it is stored once: the stored
        message is returned (``created`` false). ``app_language`` is the language the client's app is set to,
        when the channel tells one (the widget's page or browser, Telegram's ``language_code``): kept with the
        message, it is the conversation's language while nothing the client wrote tells one
        (:func:`app.handoff.sla.told_language`), so a first message ``/human`` is answered in it. Raises, storing
        nothing, ``InvalidInput`` (empty or over 4,000 characters, a bad ``client_message_id``), ``TooManyAttempts``
        (the client is over ``CHAT_RATE_LIMIT``; a message sent again is not counted again), ``NotFound`` (not this
        client's conversation). Ids are each client's own: another client's message with the same id is another
        message."""
        text, client_message_id = clean_text(text), clean_client_message_id(client_message_id)
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            return await self._intake.store(
                uow,
                client_id,
                text,
                conversation_id=conversation_id,
                channel=channel,
                client_message_id=client_message_id,
                app_language=app_language,
                # the turn's embedding starts now when the turn can start at once; when every turn slot is
                # taken, the turn waits anyway and embeds when its slot comes (an embedding made now could be
                # dropped before then, and made twice on an overloaded process)
                prefetch=not self._slots.locked(coach_id),
            )

    async def answer(
        self,
        coach_id: uuid.UUID,
        client_id: uuid.UUID,
        message_id: uuid.UUID,
        *,
        to_client: ToClient = _never,
        on_answering: OnAnswering = _unheard,
    ) -> AsyncGenerator[str | TurnResult, None]:
        """Answer the client's stored message ``message_id``: yields reply text deltas as they are generated,
        then one :class:`TurnResult`. A message answered before yields only a result with no reply.

        Before the model: a crisis gets the crisis reply (always, even during a takeover); an active handoff
        means the AI is paused (no reply); an explicit ask for a human, an always-escalate topic or
        ``human_only`` mode hand the conversation to the coach. After retrieval, confidence below the coach's
        threshold hands off in ``auto`` mode; in ``draft`` mode the reply is kept as a draft for the coach
        (nothing is streamed). Raises ``NotFound`` (not this client's message).

        At most ``TURN_CONCURRENCY`` answers run at once in this process, and at most
        ``TURN_CONCURRENCY_PER_COACH`` of one coach; the others wait for a slot, coaches served in turn and each
        coach's turns in the order they came (:class:`FairSlots`; their wait is the ``admission`` stage). A turn
        that has to wait is screened for a crisis first, as :meth:`answer_crisis` does: a crisis reply and its
        alert do not wait behind other turns.

        ``on_answering`` is called once the decision before the model lets the AI answer, before retrieval, unless
        the reply is a draft for the coach: a channel shows "typing…" from then on, and not for a message only the
        coach answers (the AI paused) or one answered at once without the model."""
        async for item in self._answer_admitted(coach_id, client_id, message_id, to_client, Stages(), on_answering):
            yield item

    async def _answer_admitted(
        self,
        coach_id: uuid.UUID,
        client_id: uuid.UUID,
        message_id: uuid.UUID,
        to_client: ToClient,
        stages: Stages,
        on_answering: OnAnswering = _unheard,
    ) -> AsyncIterator[str | TurnResult]:
        """:meth:`answer` with ``stages`` (which may hold ``receive`` already): the early crisis screen when
        the turn has to wait, then the turn in its slot."""
        if self._slots.locked(coach_id) and (screened := await self._screened(coach_id, client_id, message_id, stages)):
            async for item in self._handed_off(*screened, to_client, stages):
                yield item
            return
        async with self._admitted(coach_id, stages):
            async for item in self._answer(coach_id, client_id, message_id, to_client, stages, on_answering):
                yield item

    @asynccontextmanager
    async def _admitted(self, coach_id: uuid.UUID, stages: Stages) -> AsyncIterator[None]:
        """Hold one of the process's turn slots for a turn of ``coach_id`` (admission control). Overload then
        queues turns before they take a pooled connection or CPU, instead of running hundreds at once: each
        would wait for connections in every stage, and those waiting past the pool's timeout would fail after
        their work was done, to be answered again by a job (stop 21's ``bench/load.py`` fell to about 1 turn/s
        that way). One coach holds at most ``TURN_CONCURRENCY_PER_COACH`` slots and the waiting turns are served
        coach by coach in turn (:class:`FairSlots`), so one tenant's burst or slow model does not hold back every
        other tenant's turns."""
        with stages.time("admission"):
            await self._slots.acquire(coach_id)
        try:
            yield
        finally:
            self._slots.release(coach_id)

    async def _answer(
        self,
        coach_id: uuid.UUID,
        client_id: uuid.UUID,
        message_id: uuid.UUID,
        to_client: ToClient,
        stages: Stages,
        on_answering: OnAnswering,
    ) -> AsyncIterator[str | TurnResult]:
        """:meth:`answer`, timing its stages in ``stages`` (which may hold ``receive`` already)."""
        started = time.perf_counter()
        outcome: Outcome | None = None
        with stages.time("intake"):
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                turn = await self._intake.load(uow, client_id, message_id, stages)  # 1. intake
                if turn is not None:
                    outcome = await _before_model(self._persister, uow.session, turn)  # 2. decide before the model
        if turn is None:
            yield await self._answered_before(coach_id, message_id)
        elif outcome is not None:
            async for item in self._handed_off(turn, outcome, started, to_client, stages):
                yield item
        else:
            if turn.coach.handoff_mode != HandoffMode.DRAFT:
                on_answering()
            async for item in self._answer_with_model(turn, started, to_client, stages):
                yield item

    async def answer_crisis(self, coach_id: uuid.UUID, client_id: uuid.UUID, message_id: uuid.UUID) -> Message | None:
        """Run the crisis protocol for stored client message ``message_id`` at once, ahead of the answers of
        the client's earlier messages. A channel answers a client's messages one at a time, and one answer can
        take up to ``LLM_TIMEOUT_SECONDS``; a crisis must not wait behind it.

        When the turn's own crisis screen (the same first step as :meth:`answer`'s) calls for the protocol, this
        stores the crisis reply, hands the conversation to the coach with its alert, and publishes the reply to
        the client's live channels (widget socket, Telegram). The message's own answer then finds it answered,
        and the earlier answer still running is kept out, as with any handoff. Returns the stored crisis reply
        then. Otherwise it stores nothing (the message's embedding is kept for its turn), the message waits for
        its turn, and it returns ``None``. At most ``TURN_CONCURRENCY`` screens run at once in this process,
        apart from the turn slots (admission), so a screen never waits behind the turns it overtakes. Raises
        ``NotFound`` (not this client's message)."""
        stages = Stages()
        screened = await self._screened(coach_id, client_id, message_id, stages)
        if screened is None:
            return None
        async for _ in self._handed_off(*screened, lambda: True, stages):
            pass
        return screened[1].reply

    async def _screened(
        self, coach_id: uuid.UUID, client_id: uuid.UUID, message_id: uuid.UUID, stages: Stages
    ) -> tuple[Turn, Outcome, float] | None:
        """The crisis protocol stored for a message ahead of its turn (the turn, its outcome and when it
        started), or ``None`` when the message does not call for it or was answered (nothing stored; its
        embedding is kept for its turn). Holds one of the screen slots, apart from the turn slots."""
        started = time.perf_counter()
        async with self._screens:
            try:
                async with unit_of_work(self._sessionmaker, coach_id) as uow:
                    turn = await self._intake.load(uow, client_id, message_id, stages)
                    if turn is None:
                        return None
                    decision = _decide(turn)
                    if decision.action is not Before.CRISIS:
                        self._intake.keep_embedding(turn)
                        raise _NoCrisis  # rolled back: the message's own turn stores its episode
                    outcome = await self._persister.before_model(uow.session, turn, decision)
            except _NoCrisis:
                return None
        return turn, outcome, started

    async def _answer_with_model(
        self, turn: Turn, started: float, to_client: ToClient, stages: Stages
    ) -> AsyncIterator[str | TurnResult]:
        """Steps 3–7 for a turn the AI answers."""
        coach = turn.coach
        metadata: dict[str, Any] = {"mode": coach.handoff_mode, "stages": stages.ms}
        drafting = coach.handoff_mode == HandoffMode.DRAFT
        reply = Reply(metadata, turn.signals, drafting=drafting, stages=stages, language=turn.risk.language)
        low: tuple[str, Confidence] | None = None
        deadline = Deadline(self._settings.llm_timeout_seconds)
        try:
            async with deadline.within():
                base = await self._registry.chat_for(coach)  # (raises ProviderError for a key it cannot use)
                metadata.update(provider=base.provider, model=base.model)
                with stages.time("gather"):
                    gathered = await self._gatherer.gather(turn, reply)  # 3. gather
            after = after_retrieval(  # 4. decide after retrieval
                mode=coach.handoff_mode,
                confidence=gathered.before,
                threshold=coach.confidence_threshold,
                handed_back=turn.handed_back,
            )
            if after.action is After.HAND_OFF:
                low = (after.detail, gathered.before)
            else:
                with stages.time("generate"):
                    async for delta in self._generator.generate_within(deadline, turn, gathered, reply):  # 5.
                        yield delta
                    # the output checks: prompt injection (leak, planted payload), then honesty
                    correction = self._generator.guard(turn, reply) or self._generator.honest(turn, reply)
                if correction is not None:
                    yield correction
        except (ProviderError, TimeoutError) as exc:
            yield self._generator.apology(turn, reply, exc)
        if low is not None:
            with stages.time("persist"):  # the handoff, its brief and the notice to the client
                outcome = await self._persister.low_confidence(turn, reply.signals, confidence=low[1], detail=low[0])
            async for item in self._handed_off(turn, outcome, started, to_client, stages):
                yield item
            return
        with stages.time("persist"):
            outcome = await self._persister.reply(turn, reply)  # 6. persist
        with stages.time("after_commit"):  # 7. after commit
            if reply.cache_key is not None and cache_after(
                cache=reply.metadata.get("cache"),
                failed=reply.failed or "deadline_cut" in reply.metadata,
                replaced="honesty" in reply.metadata or "injection" in reply.metadata,
                fallback="model_fallback" in reply.metadata,
                sent=outcome.reply is not None and outcome.handoff is None,
            ):
                await self._cache.put(
                    coach.id, reply.cache_key, reply.text, reply.citations, coach.response_cache_ttl_seconds
                )
            if outcome.draft is not None:
                await self._handoffs.announce_draft(coach.id, outcome.draft, turn.client_name)
            if outcome.announce and outcome.handoff is not None:
                await self._handoffs.announce(coach, outcome.handoff, turn.client_name, turn.message)
            if outcome.reply is not None:
                await self._publish(turn, outcome.reply, to_client)
        yield _timed_result(turn, outcome, started, stages, persist_ms=reply.metadata.get("persist_ms"))

    async def _handed_off(
        self, turn: Turn, outcome: Outcome, started: float, to_client: ToClient, stages: Stages
    ) -> AsyncIterator[str | TurnResult]:
        """A turn answered without the model (crisis reply, handoff notice) or not at all (the AI is paused).
        The client gets the stored reply first; the coach's queue, alert and live transcript follow."""
        if outcome.reply is not None:
            yield outcome.reply.text
        with stages.time("after_commit"):
            if outcome.announce and outcome.handoff is not None:
                await self._handoffs.announce(turn.coach, outcome.handoff, turn.client_name, turn.message)
            if outcome.reply is not None:
                await self._publish(turn, outcome.reply, to_client)
        yield _timed_result(turn, outcome, started, stages)

    async def _publish(self, turn: Turn, reply: Message, to_client: ToClient) -> None:
        await self._handoffs.publish_message(turn.coach.id, turn.conversation.client_id, reply, to_client=to_client())

    async def _answered_before(self, coach_id: uuid.UUID, message_id: uuid.UUID) -> TurnResult:
        """The result for a message that was answered before: no reply (the answer went out then), and the active
        handoff as the answer's own result gave it (a crisis message sent again: the coach has it, not ``null``)."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            conversation_id = await session.scalar(select(Message.conversation_id).where(Message.id == message_id))
            if conversation_id is None:  # deleted since (the client's data was erased)
                raise NotFound("message not found")
            active = await self._handoffs.active_for(session, conversation_id)
        return TurnResult(conversation_id, message_id, None, "", [], {}, handoff_status(active) if active else None)

    async def turn(
        self,
        coach_id: uuid.UUID,
        client_id: uuid.UUID,
        text: str,
        *,
        conversation_id: uuid.UUID | None = None,
        channel: str = "widget",
        client_message_id: str | None = None,
        app_language: Language | None = None,
    ) -> AsyncIterator[str | TurnResult]:
        """:meth:`receive` then :meth:`answer` (REST, benchmarks): yields deltas, then one ``TurnResult``.
        Raises as :meth:`receive` does, before anything is stored; an answer that fails after the message was
        stored queues it for the worker (:meth:`answer_later`) and raises ``Unavailable`` (503, naming the
        message), instead of leaving it to the stranded-message sweep minutes later."""
        stages = Stages()
        with stages.time("receive"):
            received = await self.receive(
                coach_id,
                client_id,
                text,
                conversation_id=conversation_id,
                channel=channel,
                client_message_id=client_message_id,
                app_language=app_language,
            )
        try:
            async for item in self._answer_admitted(coach_id, client_id, received.message_id, _never, stages):
                yield item
        except DomainError:
            raise
        except Exception as exc:
            log.exception("the live answer of message %s failed: queued for the worker", received.message_id)
            await self.answer_later(coach_id, received.message_id)
            raise Unavailable(f"{ANSWER_LATER} (message {received.message_id})", code="answer_later") from exc

    async def answer_later(self, coach_id: uuid.UUID, message_id: uuid.UUID) -> None:
        """Queue the ``answer_pending`` job for stored client message ``message_id`` (its live answer failed,
        for example on a database pool exhausted by overload): the worker answers it, once."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            jobs.answer_pending(uow.session, coach_id, message_id, occasion="live")

    async def answer_stranded(self, *, older_than_s: float, within_s: float, in_handoff_within_s: float) -> int:
        """Cron (worker): queue the answer (``answer_pending``) of every client message stored between
        ``within_s`` and ``older_than_s`` seconds ago that nobody answered and nothing waits on: the latest of its
        conversation, no coach message after it, no handoff active (the coach has it; a handback without a reply
        marks it answered, and a draft's turn claimed it). Such a message was acknowledged to the widget, which
        forgets it, before a web process that died ran its turn. ``older_than_s`` must outlast a live turn; a message is
        answered once whatever runs. A message the coach has (a handoff active) is queued too while it is newer
        than ``in_handoff_within_s`` seconds: its turn only screens it (the crisis protocol, else nothing), but a
        crisis in it must not go unseen. Candidates come from the ``stranded_messages()`` SECURITY DEFINER
        function (migrations 0046, 0055); each is checked again in its own tenant's transaction. Returns how many
        were queued."""
        async with self._sessionmaker() as session:
            candidates = (
                await session.execute(
                    text("SELECT coach_id, message_id FROM stranded_messages(:older, :within, :in_handoff)"),
                    {"older": int(older_than_s), "within": int(within_s), "in_handoff": int(in_handoff_within_s)},
                )
            ).all()
        queued = screened = 0
        for coach_id, message_id in candidates:
            async with unit_of_work(self._sessionmaker, coach_id) as uow:
                session = uow.session
                conversation_id = await session.scalar(select(Message.conversation_id).where(Message.id == message_id))
                if conversation_id is None or await unanswered_client_message(session, conversation_id) != message_id:
                    continue
                jobs.answer_pending(session, coach_id, message_id, occasion="stranded")
                if await self._handoffs.active_for(session, conversation_id) is None:
                    queued += 1
                else:
                    screened += 1
        if queued:
            log.warning("%d client messages left unanswered by a stopped turn queued for an answer", queued)
        if screened:
            log.info("%d client messages the coach has queued for their crisis screen", screened)
        return queued + screened

    async def answer_pending(self, coach_id: uuid.UUID, message_id: uuid.UUID) -> str:
        """Worker job body (after a handback, or after the live answer failed: :meth:`answer_later`): answer
        client message ``message_id`` if it is still the conversation's unanswered latest one
        (:func:`~app.conversations.service.unanswered_client_message`), delivering the reply to the client's
        live channel. Returns a short status for arq."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            row = (
                await session.execute(
                    select(Conversation.id, Conversation.client_id)
                    .join(Message, Message.conversation_id == Conversation.id)
                    .where(Message.id == message_id)
                )
            ).one_or_none()
            pending = await unanswered_client_message(session, row.id) if row is not None else None
        if row is None or pending != message_id:
            return "nothing to answer"
        async for item in self.answer(coach_id, row.client_id, message_id, to_client=lambda: True):
            if isinstance(item, TurnResult):
                return "answered" if item.message_id is not None else "nothing sent"
        return "nothing sent"
