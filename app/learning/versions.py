"""Model versions (staging → production → retired), the promotion gate and rollback.

A fine-tune that succeeded becomes a ``staging`` version; :meth:`ModelVersionService.evaluate` (an arq job)
replays the coach's held-out SFT examples of the coach's own replies (takeovers and edited drafts; the ``test``
split, else ``validation``, else both) through the
candidate and through the current model (the production version, else the coach's base ``llm_model``) and
promotes the candidate only when it measurably beats the current one (:mod:`app.learning.gate`); otherwise the
version is ``rejected``. The numbers are kept in ``ModelVersion.evaluation``. At most one version per coach is
in ``production`` (partial unique index); the chat turn serves it through :meth:`ModelVersionService.production`
and falls back to the base model when it fails. :meth:`ModelVersionService.rollback` retires production and
restores the previous production version (or the base model).
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import openai
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Coach
from app.accounts.service import AccountService
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.core.config import Settings
from app.core.errors import Conflict, NotFound
from app.learning.gate import (
    EMBEDDING_MARGIN,
    JUDGE_SCHEMA,
    MAX_HELD_OUT_EXAMPLES,
    MIN_HELD_OUT_EXAMPLES,
    MIN_JUDGE_WIN_RATE,
    cosine_similarities,
    decide,
    win_rate,
)
from app.learning.models import (
    ExampleKind,
    ExampleSource,
    ModelVersion,
    ModelVersionStatus,
    Split,
    TrainingExample,
)
from app.learning.training import TrainingDataService
from app.llm.base import ChatMessage, ChatProvider, ProviderError, Usage
from app.llm.registry import ProviderRegistry

log = logging.getLogger(__name__)

METRIC = "mean_cosine_similarity_to_coach_reply"
REFUSING_ERRORS = (openai.NotFoundError, openai.BadRequestError, openai.PermissionDeniedError)
"""Provider answers that mean the candidate model cannot serve (deleted, unknown, not allowed): the gate rejects
it at once instead of retrying."""
COACH_WRITTEN = frozenset((ExampleSource.COACH_REPLY, ExampleSource.DRAFT_EDIT))
"""Sources of the SFT examples whose reply is the coach's own: the gate's references."""
GATE_ROUNDS = 3
"""Runs of the gate for one version while the current model keeps changing under it."""
UNDECIDED = "production changed while the gate ran: nothing decided, try again"
"""The gate's status line after :data:`GATE_ROUNDS` runs that each saw the current model change."""
GATE_TEMPERATURE = 0.0
"""Replies are sampled greedily for the gate, so a re-run compares the same replies."""
JUDGE_PROMPT = (
    "You compare two replies an AI coaching assistant could send, against the reply the human coach actually "
    "sent. Answer which reply (A or B) is closer to the coach's reply in content, technique and tone, or "
    "'tie'. Reply with JSON only."
)


def model_version_dict(version: ModelVersion) -> dict[str, Any]:
    """A model version as the API shows it (ids as strings, times ISO 8601)."""
    return {
        "id": str(version.id),
        "model": version.model,
        "base_model": version.base_model,
        "status": version.status,
        "fine_tune_job_id": str(version.fine_tune_job_id) if version.fine_tune_job_id else None,
        "evaluation": version.evaluation,
        "created_at": version.created_at.isoformat() if version.created_at else None,
        "promoted_at": version.promoted_at.isoformat() if version.promoted_at else None,
        "retired_at": version.retired_at.isoformat() if version.retired_at else None,
    }


async def _generate(provider: ChatProvider, prompt: list[ChatMessage], max_tokens: int) -> str:
    parts: list[str] = []
    async for chunk in provider.stream(prompt, max_tokens=max_tokens, temperature=GATE_TEMPERATURE):
        if not isinstance(chunk, Usage):
            parts.append(chunk)
    return "".join(parts).strip()


_PRODUCTION = select(ModelVersion).where(
    ModelVersion.coach_id == bindparam("coach_id"), ModelVersion.status == ModelVersionStatus.PRODUCTION
)
"""Read on every chat turn: built once, run with a bound parameter (SQLAlchemy reuses its cache key)."""


async def _preferred(judge: ChatProvider, context: str, a: str, b: str) -> str:
    """The judge's pick between reply ``a`` and reply ``b`` after ``context``: ``"A"``, ``"B"`` or ``"tie"`` (also
    for an unreadable answer)."""
    raw = await judge.complete_json(
        [
            ChatMessage(role="system", content=JUDGE_PROMPT),
            ChatMessage(role="user", content=f"{context}\n\nReply A:\n{a}\n\nReply B:\n{b}"),
        ],
        schema=JUDGE_SCHEMA,
        name="verdict",
        max_tokens=20,
        temperature=0.0,
    )
    try:
        winner = json.loads(raw).get("winner")
    except (ValueError, AttributeError):
        return "tie"
    return winner if winner in ("A", "B") else "tie"


class ModelVersionService:
    """The coach's model versions; promotion only through the gate."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        registry: ProviderRegistry,
        accounts: AccountService,
        training: TrainingDataService,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._registry = registry
        self._accounts = accounts
        self._training = training

    async def production(self, session: AsyncSession, coach_id: uuid.UUID) -> ModelVersion | None:
        """The coach's production version in the caller's session (``None``: serve the base model)."""
        version: ModelVersion | None = await session.scalar(_PRODUCTION, {"coach_id": coach_id})
        return version

    async def list_versions(self, uow: UnitOfWork) -> list[ModelVersion]:
        """The coach's versions, newest first."""
        session, coach_id = uow.session, uow.coach_id
        return list(
            (
                await session.scalars(
                    select(ModelVersion)
                    .where(ModelVersion.coach_id == coach_id)
                    .order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
                )
            ).all()
        )

    async def _version(self, session: AsyncSession, coach_id: uuid.UUID, version_id: uuid.UUID) -> ModelVersion:
        version = await session.scalar(
            select(ModelVersion)
            .where(ModelVersion.id == version_id, ModelVersion.coach_id == coach_id)
            .with_for_update()
        )
        if version is None:
            raise NotFound("model version not found")
        return version

    async def _held_out(self, coach_id: uuid.UUID) -> tuple[str, list[TrainingExample]]:
        """The held-out SFT examples to replay: ``test`` if it has enough, else ``validation``, else both. Only
        examples whose reply the coach wrote (:data:`COACH_WRITTEN`): an AI reply a client liked was written by
        the current model, so measuring closeness to it favours that model over every candidate."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            test = await self._training.examples(uow, kind=ExampleKind.SFT, split=Split.TEST)
            validation = await self._training.examples(uow, kind=ExampleKind.SFT, split=Split.VALIDATION)
        test, validation = ([e for e in examples if e.source in COACH_WRITTEN] for examples in (test, validation))
        if len(test) >= MIN_HELD_OUT_EXAMPLES:
            return Split.TEST, test[:MAX_HELD_OUT_EXAMPLES]
        if len(validation) >= MIN_HELD_OUT_EXAMPLES:
            return Split.VALIDATION, validation[:MAX_HELD_OUT_EXAMPLES]
        return "test+validation", (test + validation)[:MAX_HELD_OUT_EXAMPLES]

    async def evaluate(
        self, coach_id: uuid.UUID, version_id: uuid.UUID, *, status: str = ModelVersionStatus.STAGING
    ) -> str:
        """arq job: the promotion gate for a version in ``status`` (``staging``; :meth:`promote` gates a retired or
        rejected one again without changing it first; versions in another status are left as they are). Replays the
        held-out examples through the candidate and the current model with
        ``registry.chat_for(coach, model=...)`` (temperature 0, ``settings.llm_max_tokens``), embeds the
        replies and the coach's actual replies with ``registry.embedder_for(coach)`` and compares the mean
        cosine similarity; with ``coach.judge_model`` set, also the judge's win rate. Promotes (retiring the
        current production version) or rejects, storing ``evaluation`` ``{"metric", "split", "examples",
        "candidate", "current", "current_model", "margin", "judge", "passed", "reason", "at"}``. Fewer than
        :data:`MIN_HELD_OUT_EXAMPLES` held-out examples, or a candidate the endpoint refuses to serve (404, 400,
        403): rejected with that reason. When the current model changed while the gate ran (another version was
        promoted or rolled back, the coach's model was changed), the result compared against a model no longer
        serving: the gate runs again against the new one, up to :data:`GATE_ROUNDS` times, then returns
        :data:`UNDECIDED` with the version unchanged. Raises ``ProviderError`` (retried by the worker) when a
        model cannot be reached."""
        for _ in range(GATE_ROUNDS):
            decided = await self._gate_round(coach_id, version_id, status)
            if decided is not None:
                return decided
        log.warning("model version %s: production kept changing while its gate ran", version_id)
        return UNDECIDED

    async def _gate_round(self, coach_id: uuid.UUID, version_id: uuid.UUID, status: str) -> str | None:
        """One run of the gate (:meth:`evaluate`): its status line, or ``None`` when the current model changed
        meanwhile and nothing was decided."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            version = await self._version(uow.session, coach_id, version_id)
            if version.status != status:
                return f"not in {status} ({version.status})"
            coach = await uow.coach()
            current_version, current_model = await self._current(uow)
            candidate_model = version.model
        split, held_out = await self._held_out(coach_id)
        evaluation: dict[str, Any] = {
            "metric": METRIC,
            "split": split,
            "examples": len(held_out),
            "min_examples": MIN_HELD_OUT_EXAMPLES,
            "margin": EMBEDDING_MARGIN,
            "candidate_model": candidate_model,
            "current_model": current_model,
            "current_version_id": str(current_version.id) if current_version is not None else None,
            "candidate": None,
            "current": None,
            "judge": None,
        }
        if len(held_out) < MIN_HELD_OUT_EXAMPLES:
            reason = f"only {len(held_out)} held-out examples of the coach's own replies"
            passed, reason = False, f"{reason} (at least {MIN_HELD_OUT_EXAMPLES})"
        else:
            passed, reason = await self._replay(coach, candidate_model, current_model, held_out, evaluation)
        evaluation |= {"passed": passed, "reason": reason, "at": datetime.now(UTC).isoformat()}
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            version = await self._version(session, coach_id, version_id)
            if version.status != status:
                return f"decided meanwhile ({version.status})"
            now_version, now_model = await self._current(uow)
            if (now_version.id if now_version is not None else None, now_model) != (
                current_version.id if current_version is not None else None,
                current_model,
            ):
                return None
            version.evaluation = evaluation
            if passed:
                await self._make_production(session, coach_id, version)
            else:
                version.status = ModelVersionStatus.REJECTED
            status = version.status
        return f"{status}: {reason}"

    async def _current(self, uow: UnitOfWork) -> tuple[ModelVersion | None, str]:
        """The model a candidate competes with, in ``uow``: the production version and its model, or ``None`` and
        the coach's own model (``""`` for the default)."""
        current = await self.production(uow.session, uow.coach_id)
        if current is not None:
            return current, current.model
        return None, (await uow.coach()).llm_model or ""

    async def _replay(
        self,
        coach: Coach,
        candidate_model: str,
        current_model: str,
        held_out: list[TrainingExample],
        evaluation: dict[str, Any],
    ) -> tuple[bool, str]:
        """Generate with both models, score, judge; fills ``evaluation`` and returns ``(passed, reason)``."""
        max_tokens = self._settings.llm_max_tokens
        candidate_chat = await self._registry.chat_for(coach, model=candidate_model)
        current_chat = await self._registry.chat_for(coach, model=current_model or None)
        prompts: list[list[ChatMessage]] = [
            [ChatMessage(role=msg["role"], content=msg["content"]) for msg in example.prompt] for example in held_out
        ]
        try:
            candidate_replies = [await _generate(candidate_chat, prompt, max_tokens) for prompt in prompts]
        except ProviderError as exc:
            if isinstance(exc.__cause__, REFUSING_ERRORS):
                return False, f"the candidate model cannot be used: {exc}"
            raise
        current_replies = [await _generate(current_chat, prompt, max_tokens) for prompt in prompts]
        references = [example.chosen for example in held_out]
        embedder = await self._registry.embedder_for(coach)
        vectors = await embedder.embed(candidate_replies + current_replies + references)
        n = len(held_out)
        candidate_sims = cosine_similarities(vectors[:n], vectors[2 * n :])
        current_sims = cosine_similarities(vectors[n : 2 * n], vectors[2 * n :])
        candidate_score = sum(candidate_sims) / n
        current_score = sum(current_sims) / n
        evaluation |= {
            "candidate": round(candidate_score, 4),
            "current": round(current_score, 4),
            "embedding_model": embedder.model,
        }
        judged: float | None = None
        if coach.judge_model:
            verdicts = await self._judge(coach, prompts, candidate_replies, current_replies, references)
            judged = win_rate(verdicts)
            evaluation["judge"] = {
                "model": coach.judge_model,
                "win_rate": None if judged is None else round(judged, 4),
                "min_win_rate": MIN_JUDGE_WIN_RATE,
                "verdicts": dict((v, verdicts.count(v)) for v in ("candidate", "current", "tie")),
            }
        decision = decide(candidate_score, current_score, judged)
        return decision.passed, decision.reason

    async def _judge(
        self,
        coach: Coach,
        prompts: list[list[ChatMessage]],
        candidate: list[str],
        current: list[str],
        references: list[str],
    ) -> list[str]:
        """Pairwise verdicts (``candidate``/``current``/``tie``), one per example. Each pair is judged twice, the
        candidate as reply A then as reply B, and wins only when both orders prefer it; orders that disagree are a
        tie: a judge's position bias cancels whatever the number of examples (the swap of Zheng et al. 2023,
        "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", §3.4). An unreadable verdict counts as a tie."""
        judge = await self._registry.chat_for(coach, model=coach.judge_model)
        verdicts: list[str] = []
        for index, prompt in enumerate(prompts):
            conversation = "\n".join(f"{msg['role']}: {msg['content']}" for msg in prompt if msg["role"] != "system")
            context = f"Conversation:\n{conversation}\n\nThe coach's reply:\n{references[index]}"
            first = await _preferred(judge, context, candidate[index], current[index])
            second = await _preferred(judge, context, current[index], candidate[index])
            orders = {
                "candidate" if first == "A" else "current" if first == "B" else "tie",
                "candidate" if second == "B" else "current" if second == "A" else "tie",
            }
            verdicts.append(orders.pop() if len(orders) == 1 else "tie")
        return verdicts

    async def _make_production(self, session: AsyncSession, coach_id: uuid.UUID, version: ModelVersion) -> None:
        """Retire the current production version (if another) and put ``version`` in production."""
        now = datetime.now(UTC)
        current = await self.production(session, coach_id)
        if current is not None and current.id != version.id:
            current.status = ModelVersionStatus.RETIRED
            current.retired_at = now
            await session.flush()
        version.status = ModelVersionStatus.PRODUCTION
        version.promoted_at = now
        version.retired_at = None
        version.evaluation = {k: v for k, v in version.evaluation.items() if k != "rolled_back_at"}
        await session.flush()

    async def promote(self, coach_id: uuid.UUID, version_id: uuid.UUID, *, force: bool = False) -> ModelVersion:
        """Put a version in production: at once when it is ``staging`` and its evaluation passed (or ``force``: the
        coach overrides the gate, recorded as ``evaluation.forced``), otherwise through the gate (:meth:`evaluate`;
        a rejected or retired version is evaluated again, against the model serving now, whatever its evaluation
        said then). Raises ``NotFound``, and ``Conflict`` when the gate refuses (the
        evaluation is kept) or cannot reach a model (nothing changes)."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            version = await self._version(session, coach_id, version_id)
            if version.status == ModelVersionStatus.PRODUCTION:
                return version
            if force or (version.status == ModelVersionStatus.STAGING and version.evaluation.get("passed")):
                if force:
                    version.evaluation = dict(version.evaluation) | {
                        "forced": True,
                        "forced_at": datetime.now(UTC).isoformat(),
                    }
                await self._make_production(session, coach_id, version)
                return version
            status = version.status
        try:
            decided = await self.evaluate(coach_id, version_id, status=status)
        except ProviderError as exc:
            raise Conflict(f"the promotion gate could not run: {exc}") from exc
        if decided == UNDECIDED:
            raise Conflict(UNDECIDED)
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            version = await self._version(session, coach_id, version_id)
        if version.status != ModelVersionStatus.PRODUCTION:
            raise Conflict(f"the promotion gate refused: {version.evaluation.get('reason', 'not better')}")
        return version

    async def rollback(self, uow: UnitOfWork) -> ModelVersion | None:
        """Retire the production version (marked ``evaluation.rolled_back_at``, so it is never restored by a
        later rollback) and restore the previous one (the most recently retired version that was once in
        production and was not rolled back); ``None`` when there is none: the coach's base model serves. Raises
        ``Conflict`` when no version is in production."""
        session, coach_id = uow.session, uow.coach_id
        current = await self.production(session, coach_id)
        if current is None:
            raise Conflict("no model version is in production")
        now = datetime.now(UTC)
        current.status = ModelVersionStatus.RETIRED
        current.retired_at = now
        current.evaluation = dict(current.evaluation) | {"rolled_back_at": now.isoformat()}
        await session.flush()
        previous = await session.scalar(
            select(ModelVersion)
            .where(
                ModelVersion.coach_id == coach_id,
                ModelVersion.status == ModelVersionStatus.RETIRED,
                ModelVersion.promoted_at.is_not(None),
                ModelVersion.id != current.id,
                ~ModelVersion.evaluation.has_key("rolled_back_at"),
            )
            .order_by(ModelVersion.retired_at.desc().nulls_last(), ModelVersion.promoted_at.desc())
            .limit(1)
        )
        if previous is not None:
            previous.status = ModelVersionStatus.PRODUCTION
            previous.promoted_at = now
            previous.retired_at = None
            await session.flush()
        return previous
