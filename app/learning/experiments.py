"""A/B experiments on the coach's AI replies: persona / prompt, model, temperature or tone intensity variants
(``intensity`` 1–6, :mod:`app.accounts.tone`: it replaces the coach's default intensity for the arm's clients who
chose none themselves, clamped to the coach's allowed range; :mod:`app.chat.tone`).

- **Assignment** is per client and deterministic: the variant is ``sha256("<experiment id>:<client id>")``
  modulo the number of variants, so a client keeps one variant for the whole experiment, across requests,
  processes and restarts, with no stored assignment (hash-based randomisation with the user as the
  randomisation unit: Kohavi, Tang & Xu, *Trustworthy Online Controlled Experiments*, 2020, ch. 4 and 14).
- **Metrics**: ``thumbs_up_rate`` — thumbs-up / rated AI replies sent under the experiment (the reply's
  ``metadata.experiment``); higher is better. ``handoff_rate`` — client messages that opened a handoff
  (``handoffs.trigger_message_id``) / client messages, of the variant's clients since the experiment
  started; lower is better. The coach's own preview chat counts for no arm
  (:func:`~app.conversations.models.outside_preview`).
- **Statistics**: per variant a Wilson score interval (95 %) of the rate (Wilson 1927, via
  ``scipy.stats.binomtest(...).proportion_ci(method="wilson")``); between variants Fisher's exact test on
  the 2×2 table for two variants, a chi-square test of independence on the k×2 table for more
  (``scipy.stats``). A **winner** is declared — and the experiment ``concluded`` — once every variant has at
  least ``min_samples`` trials and p < ``alpha``: the variant with the best rate in the metric's direction.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scipy.stats import binomtest, chi2_contingency, fisher_exact
from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from app.accounts.service import AccountService
from app.accounts.tone import INTENSITY_MAX, INTENSITY_MIN
from app.accounts.unit_of_work import UnitOfWork
from app.conversations import metadata_sql as meta_sql
from app.conversations.handoffs import Handoff
from app.conversations.models import Conversation, Message, SenderType, outside_preview
from app.core.errors import Conflict, InvalidInput, NotFound
from app.learning.models import Experiment, ExperimentStatus

THUMBS_UP_RATE = "thumbs_up_rate"
HANDOFF_RATE = "handoff_rate"
HIGHER_IS_BETTER = {THUMBS_UP_RATE: True, HANDOFF_RATE: False}
"""The metrics and their direction."""
MIN_VARIANTS, MAX_VARIANTS = 2, 4
MAX_VARIANT_NAME_CHARS = 100
MAX_VARIANT_PERSONA_CHARS = 4000
VARIANT_FIELDS = frozenset({"name", "persona", "model", "temperature", "intensity"})


def assign_variant(experiment_id: uuid.UUID, client_id: uuid.UUID, n_variants: int) -> int:
    """The index (0 … ``n_variants`` − 1) of the variant a client gets: the first 8 bytes of
    ``sha256("<experiment id>:<client id>")`` as an unsigned integer, modulo ``n_variants``."""
    digest = hashlib.sha256(f"{experiment_id}:{client_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n_variants


@dataclass(frozen=True)
class Assignment:
    """A client's variant of the running experiment; ``None`` overrides keep the coach's own setting."""

    experiment_id: uuid.UUID
    variant: str
    persona: str | None
    model: str | None
    temperature: float | None
    intensity: int | None = None

    def as_meta(self) -> dict[str, str]:
        """What the AI reply's ``metadata.experiment`` records: ``{"id", "variant"}``."""
        return {"id": str(self.experiment_id), "variant": self.variant}


@dataclass(frozen=True)
class VariantResult:
    """One arm: ``trials`` (rated replies or client messages), ``successes`` (thumbs-up or handoffs), the
    rate and its 95 % Wilson interval (``None`` without trials)."""

    name: str
    trials: int
    successes: int

    @property
    def rate(self) -> float | None:
        """successes / trials."""
        return self.successes / self.trials if self.trials else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95 % Wilson score interval of the rate."""
        return wilson_interval(self.successes, self.trials)

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        interval = self.interval
        return {
            "name": self.name,
            "trials": self.trials,
            "successes": self.successes,
            "rate": self.rate,
            "ci_low": interval[0] if interval else None,
            "ci_high": interval[1] if interval else None,
        }


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval of a binomial proportion (Wilson 1927); ``None`` when ``trials`` is 0."""
    if trials == 0:
        return None
    ci = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def significance(arms: Sequence[VariantResult]) -> tuple[str, float | None]:
    """``(test name, p-value)`` for a difference in rate between the arms: Fisher's exact test (two-sided)
    for two arms, the chi-square test of independence for more. ``None`` when it is undefined (an arm
    without trials, or every trial with the same outcome)."""
    test = "fisher_exact" if len(arms) == 2 else "chi_square"
    table = [[arm.successes, arm.trials - arm.successes] for arm in arms]
    if any(arm.trials == 0 for arm in arms):
        return test, None
    if len(arms) == 2:
        return test, float(fisher_exact(table).pvalue)
    if any(sum(column) == 0 for column in zip(*table, strict=True)):
        return test, None
    return test, float(chi2_contingency(table).pvalue)


def pick_winner(arms: Sequence[VariantResult], *, metric: str, alpha: float, min_samples: int) -> str | None:
    """The winning arm's name, or ``None`` until every arm has ``min_samples`` trials and the arms differ
    (:func:`significance`, p < ``alpha``). With more than two arms, the omnibus test only says that some arm
    differs: the best arm must also beat each other arm, in two-sided Fisher tests Holm-corrected over those
    comparisons (:func:`holm_rejects_all`), so a best arm no better than the runner-up wins nothing."""
    if any(arm.trials < min_samples for arm in arms):
        return None
    _, p_value = significance(arms)
    if p_value is None or p_value >= alpha:
        return None
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    best = max(arms, key=lambda arm: sign * (arm.rate or 0.0))
    if len(arms) > 2:
        pairwise = [significance([best, arm])[1] for arm in arms if arm is not best]
        if not holm_rejects_all([1.0 if p is None else p for p in pairwise], alpha):
            return None
    return best.name


def holm_rejects_all(p_values: Sequence[float], alpha: float) -> bool:
    """Whether Holm's step-down procedure rejects every hypothesis at family-wise error rate ``alpha``: the
    i-th smallest of the m p-values (i from 0) is below ``alpha / (m - i)`` (Holm 1979, "A simple sequentially
    rejective multiple test procedure")."""
    m = len(p_values)
    return all(p < alpha / (m - i) for i, p in enumerate(sorted(p_values)))


@dataclass(frozen=True)
class ExperimentResults:
    """An experiment with its arms, the test and p-value, and the winner (once significant)."""

    experiment: Experiment
    arms: list[VariantResult]
    test: str
    p_value: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON form (the API's experiment object)."""
        exp = self.experiment
        return {
            "id": str(exp.id),
            "name": exp.name,
            "metric": exp.metric,
            "higher_is_better": HIGHER_IS_BETTER[exp.metric],
            "status": exp.status,
            "variants": exp.variants,
            "alpha": exp.alpha,
            "min_samples": exp.min_samples,
            "results": [arm.as_dict() for arm in self.arms],
            "test": self.test,
            "p_value": self.p_value,
            "significant": self.p_value is not None and self.p_value < exp.alpha,
            "winner": exp.winner,
            "created_at": exp.created_at.isoformat() if exp.created_at else None,
            "ended_at": exp.ended_at.isoformat() if exp.ended_at else None,
        }


def _clean_variants(variants: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate the variants (names, fields, a persona that is not blank and not too long, temperature 0–2,
    intensity 1–6); raises ``InvalidInput``."""
    if not MIN_VARIANTS <= len(variants) <= MAX_VARIANTS:
        raise InvalidInput(f"an experiment needs {MIN_VARIANTS} to {MAX_VARIANTS} variants")
    cleaned: list[dict[str, Any]] = []
    for variant in variants:
        if not isinstance(variant, dict):
            raise InvalidInput("each variant must be an object")
        unknown = set(variant) - VARIANT_FIELDS
        if unknown:
            raise InvalidInput(f"unknown variant field(s): {', '.join(sorted(unknown))}")
        name = variant.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_VARIANT_NAME_CHARS:
            raise InvalidInput(f"each variant needs a name of 1 to {MAX_VARIANT_NAME_CHARS} characters")
        item: dict[str, Any] = {"name": name.strip()}
        persona = variant.get("persona")
        if persona is not None:  # a blank one would leave the variant's model with no instructions at all
            if not isinstance(persona, str) or not persona.strip() or len(persona) > MAX_VARIANT_PERSONA_CHARS:
                raise InvalidInput(f"persona must be text of 1 to {MAX_VARIANT_PERSONA_CHARS} characters")
            item["persona"] = persona
        model = variant.get("model")
        if model is not None:
            if not isinstance(model, str) or not model.strip() or len(model) > 200:
                raise InvalidInput("model must be a model name of 1 to 200 characters")
            item["model"] = model.strip()
        temperature = variant.get("temperature")
        if temperature is not None:
            valid = isinstance(temperature, int | float) and not isinstance(temperature, bool)
            if not valid or not math.isfinite(temperature) or not 0 <= temperature <= 2:
                raise InvalidInput("temperature must be a number from 0 to 2")
            item["temperature"] = float(temperature)
        intensity = variant.get("intensity")
        if intensity is not None:
            valid = isinstance(intensity, int) and not isinstance(intensity, bool)
            if not valid or not INTENSITY_MIN <= intensity <= INTENSITY_MAX:
                raise InvalidInput(f"intensity must be a whole number from {INTENSITY_MIN} to {INTENSITY_MAX}")
            item["intensity"] = intensity
        cleaned.append(item)
    names = [item["name"] for item in cleaned]
    if len(set(names)) != len(names):
        raise InvalidInput("variant names must be unique")
    return cleaned


_RUNNING = select(Experiment).where(
    Experiment.coach_id == bindparam("coach_id"), Experiment.status == ExperimentStatus.RUNNING
)
"""Read on every chat turn: built once, run with a bound parameter (SQLAlchemy reuses its cache key)."""


class ExperimentService:
    """Creates experiments, assigns clients to variants and tests the difference."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], accounts: AccountService) -> None:
        self._sessionmaker = sessionmaker
        self._accounts = accounts

    async def create(
        self,
        uow: UnitOfWork,
        *,
        name: str,
        metric: str,
        variants: Sequence[dict[str, Any]],
        alpha: float = 0.05,
        min_samples: int = 30,
    ) -> Experiment:
        """Start an experiment. Raises ``InvalidInput`` (bad name, metric, variants, a ``model`` variant on the
        local provider, ``alpha`` outside (0, 0.5], ``min_samples`` outside 1–100000) and ``Conflict`` (another
        experiment is running)."""
        name = (name or "").strip()
        if not name or len(name) > 200:
            raise InvalidInput("name must be 1 to 200 characters")
        if metric not in HIGHER_IS_BETTER:
            raise InvalidInput(f"metric must be one of {', '.join(HIGHER_IS_BETTER)}")
        if not 0 < alpha <= 0.5:
            raise InvalidInput("alpha must be in (0, 0.5]")
        if not 1 <= min_samples <= 100_000:
            raise InvalidInput("min_samples must be a whole number from 1 to 100000")
        cleaned = _clean_variants(variants)
        if any("model" in variant for variant in cleaned) and (await uow.coach()).llm_provider == "local":
            # the packaged model is the only one the local provider serves: the arm would run the base model
            raise InvalidInput("a model variant needs an OpenAI-compatible model endpoint (llm_provider 'openai')")
        try:
            session, coach_id = uow.session, uow.coach_id
            if await self._running(session, coach_id) is not None:
                raise Conflict("another experiment is running: stop it first")
            experiment = Experiment(
                coach_id=coach_id,
                name=name,
                metric=metric,
                variants=cleaned,
                status=ExperimentStatus.RUNNING,
                alpha=alpha,
                min_samples=min_samples,
                created_at=datetime.now(UTC),
            )
            session.add(experiment)
            await session.flush()  # ids are set, and a concurrent create fails here, not at the commit
        except IntegrityError as exc:  # a concurrent create won the partial unique index
            raise Conflict("another experiment is running: stop it first") from exc
        return experiment

    async def _running(self, session: AsyncSession, coach_id: uuid.UUID) -> Experiment | None:
        running: Experiment | None = await session.scalar(_RUNNING, {"coach_id": coach_id})
        return running

    async def assign(self, session: AsyncSession, coach_id: uuid.UUID, client_id: uuid.UUID) -> Assignment | None:
        """The client's variant of the coach's running experiment (``None`` when none runs), in the caller's
        tenant session. A variant's blank persona (stored before blank ones were refused) keeps the coach's own,
        as a variant without one does: the arm's model must never get no instructions at all."""
        experiment = await self._running(session, coach_id)
        if experiment is None:
            return None
        variant = experiment.variants[assign_variant(experiment.id, client_id, len(experiment.variants))]
        persona = variant.get("persona")
        return Assignment(
            experiment.id,
            variant["name"],
            persona if isinstance(persona, str) and persona.strip() else None,
            variant.get("model"),
            variant.get("temperature"),
            variant.get("intensity"),
        )

    async def results(self, uow: UnitOfWork, experiment_id: uuid.UUID) -> ExperimentResults:
        """The experiment's arms and test; concludes a running experiment once a winner is significant.
        Raises ``NotFound``."""
        session, coach_id = uow.session, uow.coach_id
        experiment = await self._get(session, coach_id, experiment_id)
        return await self._results(session, experiment)

    async def list_results(self, uow: UnitOfWork) -> list[ExperimentResults]:
        """Every experiment of the coach with its results, newest first."""
        session, coach_id = uow.session, uow.coach_id
        experiments = (
            await session.scalars(
                select(Experiment).where(Experiment.coach_id == coach_id).order_by(Experiment.created_at.desc())
            )
        ).all()
        return [await self._results(session, experiment) for experiment in experiments]

    async def stop(self, uow: UnitOfWork, experiment_id: uuid.UUID) -> Experiment:
        """Stop a running experiment (clients go back to the coach's settings). Raises ``NotFound`` and
        ``Conflict`` (not running)."""
        session, coach_id = uow.session, uow.coach_id
        experiment = await self._get(session, coach_id, experiment_id, lock=True)  # (a read concluding it waits)
        if experiment.status != ExperimentStatus.RUNNING:
            raise Conflict(f"the experiment is already {experiment.status}")
        experiment.status = ExperimentStatus.STOPPED
        experiment.ended_at = datetime.now(UTC)
        return experiment

    async def _get(
        self, session: AsyncSession, coach_id: uuid.UUID, experiment_id: uuid.UUID, *, lock: bool = False
    ) -> Experiment:
        """The coach's experiment (``lock``: under its row lock, as committed now). Raises ``NotFound``."""
        stmt = select(Experiment).where(Experiment.id == experiment_id, Experiment.coach_id == coach_id)
        experiment = await session.scalar(
            stmt.with_for_update().execution_options(populate_existing=True) if lock else stmt
        )
        if experiment is None:
            raise NotFound("experiment not found")
        return experiment

    async def _results(self, session: AsyncSession, experiment: Experiment) -> ExperimentResults:
        counts = (
            await self._thumbs(session, experiment)
            if experiment.metric == THUMBS_UP_RATE
            else await self._handoffs(session, experiment)
        )
        arms = [VariantResult(v["name"], *counts.get(v["name"], (0, 0))) for v in experiment.variants]
        test, p_value = significance(arms)
        if experiment.status == ExperimentStatus.RUNNING:
            winner = pick_winner(
                arms, metric=experiment.metric, alpha=experiment.alpha, min_samples=experiment.min_samples
            )
            if winner is not None:  # read again under its lock: the coach may have stopped it since
                await session.refresh(experiment, with_for_update=True)
            if winner is not None and experiment.status == ExperimentStatus.RUNNING:
                experiment.status = ExperimentStatus.CONCLUDED
                experiment.winner = winner
                experiment.ended_at = datetime.now(UTC)
        return ExperimentResults(experiment, arms, test, p_value)

    async def _thumbs(self, session: AsyncSession, experiment: Experiment) -> dict[str, tuple[int, int]]:
        """``{variant: (rated replies, thumbs-up)}`` of the AI replies its variant's settings served under the
        experiment (:func:`~app.conversations.metadata_sql.served_by_its_model`: a variant's model that failed
        and left the reply to the base model, or an apology, counts for no arm)."""
        variant = meta_sql.experiment_variant()
        helpful = meta_sql.approves()
        rows = await session.execute(
            select(variant, func.count(), func.count().filter(helpful.is_(True)))
            .where(
                Message.coach_id == experiment.coach_id,
                Message.sender_type == SenderType.AI,
                meta_sql.experiment_id() == str(experiment.id),
                meta_sql.rated(),
                meta_sql.served_by_its_model(),
                outside_preview(Message.conversation_id),
            )
            .group_by(variant)
        )
        return {name: (int(rated), int(up)) for name, rated, up in rows.all()}

    async def _handoffs(self, session: AsyncSession, experiment: Experiment) -> dict[str, tuple[int, int]]:
        """``{variant: (client messages, those that opened a handoff)}`` since the experiment started. A message
        written while the coach had the conversation (a handoff active) counts for no arm: the AI could not answer
        it nor hand it off, and an arm whose handoffs ran long diluted its own rate with them."""
        held = aliased(Handoff)
        while_held = (
            select(held.id)
            .where(
                held.conversation_id == Message.conversation_id,
                held.created_at < Message.created_at,
                or_(held.closed_at.is_(None), held.closed_at > Message.created_at),
            )
            .exists()
        )
        stmt = (
            select(Conversation.client_id, func.count(Message.id), func.count(Handoff.id))
            .join(Message, Message.conversation_id == Conversation.id)
            .outerjoin(Handoff, Handoff.trigger_message_id == Message.id)
            .where(
                Conversation.coach_id == experiment.coach_id,
                Message.sender_type == SenderType.CLIENT,
                Message.created_at >= experiment.created_at,
                ~while_held,
                outside_preview(Conversation.id),
            )
            .group_by(Conversation.client_id)
        )
        if experiment.ended_at is not None:
            stmt = stmt.where(Message.created_at <= experiment.ended_at)
        totals: dict[str, tuple[int, int]] = {}
        for client_id, messages, handoffs in (await session.execute(stmt)).all():
            name = experiment.variants[assign_variant(experiment.id, client_id, len(experiment.variants))]["name"]
            trials, successes = totals.get(name, (0, 0))
            totals[name] = (trials + int(messages), successes + int(handoffs))
        return totals
