"""Training data: SFT examples and preference pairs built from feedback and interventions; export.

Where examples come from (rebuilt per conversation by :meth:`TrainingDataService.refresh`, an arq job):

- **SFT** (``kind="sft"``): an AI reply with thumbs up (``meta.feedback.helpful`` and, when rated, rating ≥ 4;
  source ``thumbs_up``); a human-coach message written during a takeover (``meta.is_handoff``; source
  ``coach_reply``); an AI draft the coach edited before sending (``meta.edited``; source ``draft_edit``).
  Replies that are error apologies, notices or crisis replies (``meta.error``, ``meta.notice``,
  ``meta.crisis``, ``meta.partial_reply``) never qualify, nor do coach messages the client gave a thumbs down,
  nor any reply whose prompt holds a crisis reply or the product's answer to "am I talking to a bot?"
  (``meta.honesty``).
- **Preference pairs** (``kind="preference"``): chosen = the coach's reply, rejected = the AI draft it
  replaced (``meta.ai_draft`` of an edited draft; for a takeover message the ``Intervention.ai_draft`` when
  set); and chosen = a thumbs-up AI reply, rejected = a thumbs-down AI reply to the same context (the same
  preceding client message, e.g. a regenerated reply, or the same normalised client text in the
  conversation; source ``feedback_pair``).
- None from the coach's own preview chat ("Preview (you)", :func:`~app.conversations.models.outside_preview`):
  the coach trying the clone is no client served.

``prompt``: the system message (the coach's persona) and the conversation before the reply as chat messages,
at most ``coach.recent_messages`` of them (at least the last one), and it must hold a client message.
``quality`` (0–1) = ``0.7 · signal + 0.3 · length`` where ``signal`` is an AI reply's rating / 5 when rated, else
0.9 for an edited draft, 0.85 for a takeover reply, 0.8 for an unrated thumbs-up, plus 0.1 (capped at 1) when the
client gave the coach's own message a thumbs up; ``length`` is 1 for 20–2,000 characters, ``chars / 20``
below and 0.5 above. The split is fixed per conversation (:func:`split_for`), so a conversation's examples
never leak across train/validation/test; ``content_hash`` (SHA-256 of prompt, chosen, rejected)
de-duplicates per coach and kind. Examples that no longer qualify (changed feedback) are deleted.

Per-client cap (contribution bounding): an export and a dataset snapshot (hence a fine-tune's files) take at
most :data:`MAX_CLIENT_RATED_EXAMPLES` examples of each kind that one client's ratings made
(:data:`CLIENT_RATED`: ``thumbs_up``, ``feedback_pair``), that client's oldest first, counted over all splits of
the set, so one client (or whoever holds their widget token) thumbing up the replies they steered cannot
dominate the coach's fine-tune. The coach's own takeover replies and edited drafts are not counted. The cap is
applied when the set is read (:func:`_capped`, one SQL window function), so it also holds for examples stored
before it, and the counts (:meth:`TrainingDataService.stats`, :meth:`~TrainingDataService.count_since`, hence the
fine-tune readiness and the learning dashboard) read the same set as an export.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Subquery, any_, bindparam, delete, func, or_, select
from sqlalchemy.dialects.postgresql import ARRAY, UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Coach
from app.accounts.service import AccountService
from app.accounts.unit_of_work import UnitOfWork
from app.conversations.metadata import CRISIS_NOTICE, feedback_of
from app.conversations.models import Conversation, Message, SenderType, outside_preview
from app.core.errors import InvalidInput, NotFound
from app.db import jobs
from app.learning.models import (
    ExampleKind,
    ExampleSource,
    FineTuneJob,
    Intervention,
    Split,
    TrainingDataset,
    TrainingExample,
)
from app.learning.pii import scrub_pii

SPLIT_BUCKETS = ((Split.TRAIN, 80), (Split.VALIDATION, 90), (Split.TEST, 100))
"""Cumulative percent buckets: 80 % train, 10 % validation, 10 % test (by conversation id hash)."""
MIN_GOOD_CHARS = 20
MAX_GOOD_CHARS = 2000
EXPORT_FORMATS = ExampleKind.ALL
EXPORT_SPLITS = (*Split.ALL, "all")
MAX_CLIENT_RATED_EXAMPLES = 50
"""Most examples of one kind one client's ratings contribute to an export or a dataset snapshot."""
CLIENT_RATED = (ExampleSource.THUMBS_UP, ExampleSource.FEEDBACK_PAIR)
"""Sources of the examples a client's thumbs made (counted against :data:`MAX_CLIENT_RATED_EXAMPLES`)."""
_SPACES = re.compile(r"\s+")
_ROLE = {SenderType.CLIENT: "user", SenderType.AI: "assistant", SenderType.HUMAN_COACH: "assistant"}


def split_for(conversation_id: uuid.UUID) -> str:
    """The conversation's split: the first 8 hex digits of SHA-256 of its id, mod 100, into
    :data:`SPLIT_BUCKETS` (deterministic across processes and runs; all examples of one conversation share
    it)."""
    bucket = int(hashlib.sha256(conversation_id.bytes).hexdigest()[:8], 16) % 100
    return next(name for name, upper in SPLIT_BUCKETS if bucket < upper)


def length_score(text: str) -> float:
    """1 for a reply of 20–2,000 characters, ``chars / 20`` for a shorter one, 0.5 for a longer one."""
    chars = len(text.strip())
    if chars < MIN_GOOD_CHARS:
        return chars / MIN_GOOD_CHARS
    return 1.0 if chars <= MAX_GOOD_CHARS else 0.5


def quality_score(text: str, signal: float) -> float:
    """``0.7 · signal + 0.3 · length_score(text)``, clamped to 0–1 and rounded to 3 places."""
    return round(min(1.0, max(0.0, 0.7 * signal + 0.3 * length_score(text))), 3)


def content_hash(kind: str, prompt: list[dict[str, Any]], chosen: str, rejected: str | None) -> str:
    """SHA-256 (hex) of the canonical JSON of kind, prompt, chosen and rejected."""
    payload = json.dumps([kind, prompt, chosen, rejected], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def text_key(text: str) -> str:
    """Lower case, collapsed white space, no surrounding punctuation: to find the same client text again."""
    return _SPACES.sub(" ", text.strip().lower()).strip(" .!?")


def sft_line(prompt: list[dict[str, Any]], chosen: str) -> dict[str, Any]:
    """An SFT example in the OpenAI chat fine-tuning format: ``{"messages": [..., {"role": "assistant",
    "content": chosen, "weight": 1}]}``. The context's earlier assistant messages (replies nobody vetted for this
    example) carry ``"weight": 0``: OpenAI trains on every assistant message of a line unless its weight is 0
    (platform.openai.com/docs/guides/supervised-fine-tuning, "multi-turn chat examples"), so only ``chosen`` is
    learnt."""
    context = [msg | {"weight": 0} if msg.get("role") == "assistant" else msg for msg in prompt]
    return {"messages": [*context, {"role": "assistant", "content": chosen, "weight": 1}]}


def preference_line(prompt: list[dict[str, Any]], chosen: str, rejected: str) -> dict[str, Any]:
    """A preference pair in the OpenAI preference (DPO) fine-tuning format: ``{"input": {"messages": [...]},
    "preferred_output": [{"role": "assistant", ...}], "non_preferred_output": [...]}``."""
    return {
        "input": {"messages": prompt},
        "preferred_output": [{"role": "assistant", "content": chosen}],
        "non_preferred_output": [{"role": "assistant", "content": rejected}],
    }


def _scrub_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [msg | {"content": scrub_pii(str(msg.get("content", "")))} for msg in messages]


def example_line(example: TrainingExample, *, scrub: bool) -> str:
    """One JSONL line (no newline) for ``example`` in its kind's OpenAI format, PII-scrubbed when ``scrub``."""
    prompt = [dict(msg) for msg in example.prompt]
    chosen, rejected = example.chosen, example.rejected or ""
    if scrub:
        prompt, chosen, rejected = _scrub_messages(prompt), scrub_pii(chosen), scrub_pii(rejected)
    line = sft_line(prompt, chosen) if example.kind == ExampleKind.SFT else preference_line(prompt, chosen, rejected)
    return json.dumps(line, ensure_ascii=False)


@dataclass(frozen=True)
class _Candidate:
    kind: str
    source: str
    message_id: uuid.UUID
    rejected_message_id: uuid.UUID | None
    prompt: list[dict[str, Any]]
    chosen: str
    rejected: str | None
    quality: float

    @property
    def content_hash(self) -> str:
        return content_hash(self.kind, self.prompt, self.chosen, self.rejected)


def _example_row(
    c: _Candidate, coach_id: uuid.UUID, conversation_id: uuid.UUID, split: str, content_hash: str
) -> dict[str, Any]:
    """The ``training_examples`` row of candidate ``c`` (a new id) in the conversation's ``split``."""
    return {
        "id": uuid.uuid4(),
        "coach_id": coach_id,
        "conversation_id": conversation_id,
        "kind": c.kind,
        "source": c.source,
        "message_id": c.message_id,
        "rejected_message_id": c.rejected_message_id,
        "prompt": c.prompt,
        "chosen": c.chosen,
        "rejected": c.rejected,
        "quality": c.quality,
        "split": split,
        "content_hash": content_hash,
    }


def _thumbs(message: Message) -> bool | None:
    """True for a thumbs up (rating ≥ 4 when rated), False for a thumbs down or a low rating
    (:attr:`~app.conversations.metadata.FeedbackMeta.approves` false), else None (a thumbs up rated 3)."""
    feedback = feedback_of(message.meta)
    if feedback is None or feedback.approves is None:
        return None
    if feedback.approves:
        return True if feedback.rating is None or feedback.rating >= 4 else None
    return False


def _excluded(message: Message) -> bool:
    return not message.text.strip() or message.reply_meta.not_ai_content


def _context(before: list[Message], window: int) -> list[Message]:
    """The last ``window`` usable messages of ``before`` (the conversation before a reply): not blank, not a
    failed reply's apology, not a handoff notice or SLA holding message (the product's text, which no model wrote
    and none should learn). A crisis reply or acknowledgement stays, for :func:`_sensitive` to keep the example
    out."""
    usable = [
        msg
        for msg in before
        if msg.text.strip() and not msg.reply_meta.failed and (msg.reply_meta.notice is None or _sensitive(msg))
    ]
    return usable[-window:]


def _sensitive(message: Message) -> bool:
    """Whether a reply whose context holds ``message`` is kept out of the training data: a crisis reply or the
    crisis acknowledgement (the client's crisis is no coaching example, and would go to the fine-tuning provider)
    or the product's answer to
    "am I talking to a bot?" (``honesty``: the coach's own "this is me" after it would teach a model to claim
    to be the coach)."""
    meta = message.reply_meta
    return meta.crisis or meta.notice == CRISIS_NOTICE or meta.honesty is not None


async def _forget_in_interventions(session: AsyncSession, conversation_id: uuid.UUID) -> None:
    """Remove the conversation's forgotten messages (:attr:`Message.forgotten_at`) from the copies its
    interventions keep: their text leaves ``context`` and ``client_text``, and an intervention that held one
    loses its embedding, so it is never found as a similar situation again: its coach reply may quote the
    forgotten text, which few-shot scrubbing (:func:`app.learning.interventions.private_coach_text`) could then no
    longer redact."""
    forgotten = set(
        (
            await session.scalars(
                select(Message.text).where(
                    Message.conversation_id == conversation_id, Message.forgotten_at.is_not(None)
                )
            )
        ).all()
    )
    if not forgotten:
        return
    rows = await session.scalars(
        select(Intervention).where(Intervention.conversation_id == conversation_id).with_for_update()
    )
    for intervention in rows.all():
        kept = [c for c in intervention.context if c.get("content") not in forgotten]
        if len(kept) < len(intervention.context) or intervention.client_text in forgotten:
            intervention.embedding = None
            intervention.embedding_model = None
        intervention.context = kept
        if intervention.client_text in forgotten:
            intervention.client_text = ""


async def forget_examples(
    session: AsyncSession,
    coach_id: uuid.UUID,
    example_ids: set[uuid.UUID],
    conversation_ids: Sequence[uuid.UUID] = (),
    *,
    erased: bool = False,
) -> list[str]:
    """Drop ``example_ids`` from the coach's dataset snapshots (so no later fine-tune uploads them), and from their
    per-split ``counts``; returns the provider file ids of the fine-tune jobs trained on a snapshot holding any of
    them or any example of ``conversation_ids`` (a refresh gives a conversation's examples new ids: a snapshot's old
    ids of it are found by its :attr:`~app.learning.models.TrainingDataset.conversation_ids`), for the purge to
    delete (:func:`app.db.jobs.purge_erased_data`). ``erased``: the conversations are being deleted (a client's
    erasure), so the snapshots forget their ids too."""
    if not example_ids and not conversation_ids:
        return []
    datasets = (
        await session.scalars(
            select(TrainingDataset).where(
                TrainingDataset.coach_id == coach_id,
                or_(
                    TrainingDataset.example_ids.overlap(list(example_ids)),
                    TrainingDataset.conversation_ids.overlap(list(conversation_ids)),
                ),
            )
        )
    ).all()
    if not datasets:
        return []
    splits = dict(
        (await session.execute(select(TrainingExample.id, TrainingExample.split).where(
            TrainingExample.id.in_(example_ids)
        ))).tuples().all()
    )  # fmt: skip
    gone = set(conversation_ids)
    for dataset in datasets:
        counts = Counter(dataset.counts)
        counts.subtract(splits[i] for i in dataset.example_ids if i in splits)
        dataset.counts = {split: max(n, 0) for split, n in counts.items()}
        dataset.example_ids = [i for i in dataset.example_ids if i not in example_ids]
        if erased:
            dataset.conversation_ids = [c for c in dataset.conversation_ids if c not in gone]
    rows = await session.execute(
        select(FineTuneJob.training_file_id, FineTuneJob.validation_file_id).where(
            FineTuneJob.coach_id == coach_id, FineTuneJob.dataset_id.in_([d.id for d in datasets])
        )
    )
    return sorted({file_id for row in rows.all() for file_id in row if file_id})


def _quotes_forgotten() -> Any:
    """SQL: the training example holds a message forgotten since it was built (its reply or rejected reply, or a
    message of its prompt, matched by text), so it waits for its conversation's rebuild
    (:meth:`TrainingDataService.refresh`, queued by the forget) and leaves no export or snapshot meanwhile."""
    return (
        select(Message.id)
        .where(
            Message.conversation_id == TrainingExample.conversation_id,
            Message.forgotten_at.is_not(None),
            or_(
                Message.id == TrainingExample.message_id,
                Message.id == TrainingExample.rejected_message_id,
                TrainingExample.prompt.contains(
                    func.jsonb_build_array(func.jsonb_build_object("content", Message.text))
                ),
            ),
        )
        .exists()
    )


def _exportable() -> tuple[Any, ...]:
    """SQL filters of the examples an export or a snapshot takes: none that holds a forgotten message
    (:func:`_quotes_forgotten`), none of the coach's preview chat (:func:`~app.conversations.models.
    outside_preview`; :meth:`TrainingDataService.refresh` builds none there, older ones wait for its rebuild)."""
    return ~_quotes_forgotten(), outside_preview(TrainingExample.conversation_id)


def _capped(*where: Any) -> Subquery:
    """SQL: the ids (column ``id``) of the coach's examples that an export or a snapshot takes among those matching
    ``where`` (:func:`_exportable` applies too), without each client's client-rated examples (:data:`CLIENT_RATED`)
    beyond their first :data:`MAX_CLIENT_RATED_EXAMPLES` of a kind, oldest first, counted over every split; the
    other examples all stay. Every reader of the set (:meth:`TrainingDataService.examples`, ``snapshot``,
    ``stats``, ``count_since``) selects from it, so counts and exports agree."""
    rated = TrainingExample.source.in_(CLIENT_RATED)
    rank = func.row_number().over(
        partition_by=(Conversation.client_id, TrainingExample.kind, rated),
        order_by=(TrainingExample.created_at, TrainingExample.id),
    )
    ranked = (
        select(TrainingExample.id, rated.label("rated"), rank.label("rank"))
        .join(Conversation, Conversation.id == TrainingExample.conversation_id)
        .where(*_exportable(), *where)
        .subquery("ranked")
    )
    return (
        select(ranked.c.id)
        .where(or_(ranked.c.rated.is_(False), ranked.c.rank <= MAX_CLIENT_RATED_EXAMPLES))
        .subquery("capped")
    )


class TrainingDataService:
    """Builds, de-duplicates, splits and exports a coach's training examples."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], accounts: AccountService) -> None:
        self._sessionmaker = sessionmaker
        self._accounts = accounts

    async def refresh(self, uow: UnitOfWork, conversation_id: uuid.UUID, *, erase: bool = False) -> str:
        """Rebuild the conversation's SFT examples and preference pairs from its messages, forgotten ones left
        out (and out of its interventions' copies, :func:`_forget_in_interventions`) (arq job, idempotent:
        the same messages give the same rows). ``erase`` (a rebuild after messages were forgotten): the examples
        it removes also leave the dataset snapshots, and the provider's training files of the fine-tunes trained on
        a snapshot of this conversation are deleted (:func:`forget_examples`, then the purge job), as when the
        client is erased. An example built again for the same reply (a new persona or history window changes its
        prompt) keeps its ``created_at``: it is no new example for the fine-tune readiness.
        Returns a one-line summary; a deleted conversation leaves nothing to do."""
        session, coach_id = uow.session, uow.coach_id
        conversation = await session.scalar(
            select(Conversation)
            .where(Conversation.id == conversation_id, Conversation.coach_id == coach_id)
            .with_for_update()
        )
        if conversation is None:
            return "conversation gone"
        coach = await uow.coach()
        messages = list(  # forgotten ones too: a reply to a forgotten message is left out (_candidates)
            (
                await session.scalars(
                    select(Message)
                    .where(Message.conversation_id == conversation_id)
                    .order_by(Message.created_at, Message.id)
                )
            ).all()
        )
        await _forget_in_interventions(session, conversation_id)
        drafts = dict(
            (
                await session.execute(
                    select(Intervention.message_id, Intervention.ai_draft).where(
                        Intervention.conversation_id == conversation_id, Intervention.ai_draft.is_not(None)
                    )
                )
            ).all()
        )
        # the coach's own preview chat teaches nothing: the coach tried the clone, no client was served
        preview = conversation.client_id == coach.preview_client_id
        wanted = {} if preview else {c.content_hash: c for c in self._candidates(coach, messages, drafts)}
        existing = list(
            (
                await session.scalars(select(TrainingExample).where(TrainingExample.conversation_id == conversation_id))
            ).all()
        )
        removed: set[uuid.UUID] = set()
        born: dict[tuple[str, uuid.UUID, uuid.UUID | None], datetime] = {}
        for example in existing:
            candidate = wanted.pop(example.content_hash, None)
            if candidate is None:
                await session.delete(example)
                removed.add(example.id)
                born[(example.kind, example.message_id, example.rejected_message_id)] = example.created_at
            else:
                example.quality, example.source = candidate.quality, candidate.source
        if erase and (file_ids := await forget_examples(session, coach_id, removed, [conversation_id])):
            files_key = hashlib.sha256(",".join(file_ids).encode()).hexdigest()[:16]  # one purge per set of files
            jobs.purge_erased_data(session, coach_id, file_ids, reason=f"forgotten-examples:{files_key}")
        split = split_for(conversation_id)
        added = 0
        for hash_, c in wanted.items():
            # the same reply (and rejected reply) built again, e.g. under a new persona: not a new example, so it
            # keeps its age (the fine-tune readiness counts examples newer than the last job)
            kept_age = born.get((c.kind, c.message_id, c.rejected_message_id))
            row = _example_row(c, coach_id, conversation_id, split, hash_) | {"created_at": kept_age or func.now()}
            result = await session.execute(
                insert(TrainingExample)
                .values(**row)
                .on_conflict_do_nothing(index_elements=["coach_id", "kind", "content_hash"])
            )
            added += int(getattr(result, "rowcount", 0) or 0)
        total = len(existing) - len(removed) + added
        return f"{total} examples ({added} added, {len(removed)} removed, split {split})"

    def _candidates(
        self, coach: Coach, messages: list[Message], drafts: dict[uuid.UUID, str | None]
    ) -> list[_Candidate]:
        """Every example the conversation's messages (forgotten ones included) support, in message order. A
        forgotten message is in no prompt, and a reply to a forgotten client message is no example: it answers
        (and may restate) what the client asked to forget, and without it the reply would be paired with the
        client's message before."""
        window = max(coach.recent_messages, 1)
        out: list[_Candidate] = []
        client_before: dict[uuid.UUID, Message | None] = {}
        last_client: Message | None = None
        for message in messages:
            client_before[message.id] = last_client
            if message.sender_type == SenderType.CLIENT:
                last_client = message
        for index, message in enumerate(messages):
            answered = client_before[message.id]
            if message.sender_type == SenderType.CLIENT or _excluded(message) or answered is None:
                continue
            if message.forgotten_at is not None or answered.forgotten_at is not None:
                continue
            context = _context([m for m in messages[:index] if m.forgotten_at is None], window)
            if not any(m.sender_type == SenderType.CLIENT for m in context) or any(map(_sensitive, context)):
                continue
            prompt = self._prompt(coach, context)
            thumbs = _thumbs(message)
            if message.sender_type == SenderType.HUMAN_COACH:
                if thumbs is False:
                    continue
                meta = message.reply_meta
                edited = meta.edited
                source = ExampleSource.DRAFT_EDIT if edited else ExampleSource.COACH_REPLY
                signal = min(1.0, (0.9 if edited else 0.85) + (0.1 if thumbs else 0.0))
                quality = quality_score(message.text, signal)
                out.append(_Candidate(ExampleKind.SFT, source, message.id, None, prompt, message.text, None, quality))
                draft = meta.ai_draft if edited else drafts.get(message.id)
                if isinstance(draft, str) and draft.strip() and draft.strip() != message.text.strip():
                    out.append(
                        _Candidate(
                            ExampleKind.PREFERENCE, source, message.id, None, prompt, message.text, draft, quality
                        )
                    )
            elif thumbs:
                feedback = feedback_of(message.meta)
                rating = None if feedback is None else feedback.rating
                signal = rating / 5 if rating is not None else 0.8
                quality = quality_score(message.text, signal)
                out.append(
                    _Candidate(
                        ExampleKind.SFT,
                        ExampleSource.THUMBS_UP,
                        message.id,
                        None,
                        prompt,
                        message.text,
                        None,
                        quality,
                    )
                )
                for other in self._rejected_twins(message, messages, client_before):
                    out.append(
                        _Candidate(
                            ExampleKind.PREFERENCE,
                            ExampleSource.FEEDBACK_PAIR,
                            message.id,
                            other.id,
                            prompt,
                            message.text,
                            other.text,
                            quality,
                        )
                    )
        return out

    @staticmethod
    def _rejected_twins(
        chosen: Message, messages: list[Message], client_before: dict[uuid.UUID, Message | None]
    ) -> list[Message]:
        """Thumbs-down AI replies to the same context as ``chosen``: the same preceding client message, or a
        client message with the same normalised text."""
        mine = client_before.get(chosen.id)
        if mine is None:
            return []
        twins: list[Message] = []
        for other in messages:
            if other.id == chosen.id or other.sender_type != SenderType.AI or _excluded(other):
                continue
            if _thumbs(other) is not False or other.text.strip() == chosen.text.strip():
                continue
            theirs = client_before.get(other.id)
            if theirs is not None and (theirs.id == mine.id or text_key(theirs.text) == text_key(mine.text)):
                twins.append(other)
        return twins

    @staticmethod
    def _prompt(coach: Coach, context: list[Message]) -> list[dict[str, Any]]:
        """System persona and the ``context`` messages (:func:`_context`) as chat messages, oldest first."""
        prompt: list[dict[str, Any]] = [{"role": "system", "content": coach.persona}]
        prompt += [{"role": _ROLE[msg.sender_type], "content": msg.text} for msg in context]
        return prompt

    # ------------------------------------------------------------------ export, stats, snapshots

    async def examples(
        self,
        uow: UnitOfWork,
        *,
        kind: str,
        split: str = "all",
        ids: list[uuid.UUID] | None = None,
    ) -> list[TrainingExample]:
        """The coach's examples of ``kind`` in ``split`` (``all``: every split), oldest first; ``ids``
        restricts them to a snapshot's. An example holding a message forgotten since it was built is left out
        (:func:`_quotes_forgotten`), and so is one client's client-rated example beyond the cap of the whole set
        (:func:`_capped`, counted over every split, so the splits' exports together are the ``all`` one).
        Raises ``InvalidInput`` for an unknown kind or split."""
        if kind not in EXPORT_FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(EXPORT_FORMATS)}")
        if split not in EXPORT_SPLITS:
            raise InvalidInput(f"split must be one of {', '.join(EXPORT_SPLITS)}")
        where = [TrainingExample.coach_id == uow.coach_id, TrainingExample.kind == kind]
        if ids is not None:
            # one array parameter: an IN list takes one per id, and PostgreSQL's protocol allows 32,767
            where.append(TrainingExample.id == any_(bindparam("ids", ids, type_=ARRAY(UUID(as_uuid=True)))))
        capped = _capped(*where)
        stmt = select(TrainingExample).join(capped, capped.c.id == TrainingExample.id)
        if split != "all":
            stmt = stmt.where(TrainingExample.split == split)
        stmt = stmt.order_by(TrainingExample.created_at, TrainingExample.id)
        return list((await uow.session.scalars(stmt)).all())

    async def export(self, uow: UnitOfWork, *, kind: str, split: str = "all", scrub_pii: bool = True) -> list[str]:
        """JSONL lines (no newlines) of the coach's ``kind`` examples in ``split``: SFT in the OpenAI chat
        fine-tuning format, preference pairs in the OpenAI preference format (:func:`sft_line`,
        :func:`preference_line`); e-mails and phone numbers become placeholders when ``scrub_pii``
        (:mod:`app.learning.pii`). Raises ``InvalidInput`` for an unknown kind or split."""
        return [example_line(e, scrub=scrub_pii) for e in await self.examples(uow, kind=kind, split=split)]

    async def stats(self, uow: UnitOfWork) -> dict[str, Any]:
        """Counts of the examples an export takes (:func:`_capped`): ``{"sft": {"train", "validation",
        "test"}, "preference": {...}, "by_source": {source: n}, "total": n}``."""
        capped = _capped(TrainingExample.coach_id == uow.coach_id)
        rows = (
            await uow.session.execute(
                select(TrainingExample.kind, TrainingExample.split, TrainingExample.source, func.count())
                .join(capped, capped.c.id == TrainingExample.id)
                .group_by(TrainingExample.kind, TrainingExample.split, TrainingExample.source)
            )
        ).all()
        out: dict[str, Any] = {kind: dict.fromkeys(Split.ALL, 0) for kind in ExampleKind.ALL}
        by_source: Counter[str] = Counter()
        for kind, split, source, count in rows:
            out.setdefault(kind, dict.fromkeys(Split.ALL, 0))[split] += count
            by_source[source] += count
        out["by_source"] = dict(by_source)
        out["total"] = sum(by_source.values())
        return out

    async def count_since(
        self, session: AsyncSession, coach_id: uuid.UUID, since: datetime | None, *, split: str
    ) -> int:
        """SFT examples in ``split`` created after ``since`` (``None``: all) among those an export takes
        (:func:`_capped`: a client's client-rated examples beyond the cap never count, however new), in the
        caller's session."""
        capped = _capped(TrainingExample.coach_id == coach_id, TrainingExample.kind == ExampleKind.SFT)
        stmt = (
            select(func.count())
            .select_from(TrainingExample)
            .join(capped, capped.c.id == TrainingExample.id)
            .where(TrainingExample.split == split)
        )
        if since is not None:
            stmt = stmt.where(TrainingExample.created_at > since)
        return int(await session.scalar(stmt) or 0)

    async def snapshot(self, uow: UnitOfWork, kind: str, *, scrub_pii: bool = True) -> TrainingDataset:
        """Freeze the coach's current ``kind`` examples as a dataset (ids and per-split counts), e.g. for a
        fine-tune job; an example holding a message forgotten since it was built is left out, and so is one
        client's client-rated example beyond the cap (:func:`_capped`). Raises ``InvalidInput`` for an unknown
        kind."""
        if kind not in ExampleKind.ALL:
            raise InvalidInput(f"kind must be one of {', '.join(ExampleKind.ALL)}")
        session, coach_id = uow.session, uow.coach_id
        capped = _capped(TrainingExample.coach_id == coach_id, TrainingExample.kind == kind)
        rows = (
            await session.execute(
                select(TrainingExample.id, TrainingExample.split, TrainingExample.conversation_id)
                .join(capped, capped.c.id == TrainingExample.id)
                .order_by(TrainingExample.created_at, TrainingExample.id)
            )
        ).all()
        counts = dict.fromkeys(Split.ALL, 0) | dict(Counter(split for _, split, _ in rows))
        dataset = TrainingDataset(
            coach_id=coach_id,
            kind=kind,
            example_ids=[id_ for id_, _, _ in rows],
            conversation_ids=sorted({conversation for _, _, conversation in rows}),
            counts=counts,
            scrub_pii=scrub_pii,
        )
        session.add(dataset)
        await session.flush()
        return dataset

    async def dataset(self, session: AsyncSession, coach_id: uuid.UUID, dataset_id: uuid.UUID) -> TrainingDataset:
        """One of the coach's datasets, in the caller's session. Raises ``NotFound``."""
        dataset = await session.scalar(
            select(TrainingDataset).where(TrainingDataset.id == dataset_id, TrainingDataset.coach_id == coach_id)
        )
        if dataset is None:
            raise NotFound("dataset not found")
        return dataset

    async def purge_conversation(self, uow: UnitOfWork, conversation_id: uuid.UUID) -> int:
        """Delete the conversation's examples (e.g. the client asked to be forgotten); returns how many."""
        session, coach_id = uow.session, uow.coach_id
        result = await session.execute(
            delete(TrainingExample).where(
                TrainingExample.coach_id == coach_id, TrainingExample.conversation_id == conversation_id
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)
