"""Evidence recall of client memory on LoCoMo, against three baselines.

LoCoMo (Maharana et al., ACL 2024, "Evaluating Very Long-Term Conversational Memory of LLM Agents") holds
multi-session dialogues between two people, with dated sessions and QA items whose ``evidence`` lists the
dialogue ids (``D3:14``) that answer them. Each conversation becomes one client of a fresh evaluation
coach: ``speaker_a`` is the client, ``speaker_b`` writes as the human coach; every turn is stored as a
message at its session's date (turns 30 s apart), so sessions split on the idle gap exactly as live chats
do. Each turn gets its episode (:mod:`app.memory.episodes`: the embedding the live turn or the
``embed_messages`` job would store). After each session the real memory pipeline runs — the same service
methods the arq jobs call: insight extraction, the session summary, the profile update — with the coach's
configured model; with ``extract=False`` (``--no-extract``) it does not, and memory is the episodic layer
alone (no model calls).

For every QA item of categories 1–4 (5 is adversarial, unanswerable) each method retrieves ``k`` items
for the question, as of the end of the last session:

- ``memory``: :func:`app.memory.retrieval.recall` — the episodes, L2 summaries and L3 insights the prompt
  would get, ranked and de-duplicated as in the turn (hybrid dense + BM25, RRF, recency prior). An episode
  is its own message. An insight maps back to the messages the model cited (or, failing that,
  the ones its text is grounded in by embedding); a summary to the messages its sentences, topics, insights
  and action items are grounded in (:func:`app.memory.transcript.ground`, top 2 per statement, cosine
  ≥ 0.4). Message ids map to dialogue ids.
- ``last_n``: the last ``k`` turns (L1 alone).
- ``turn_dense``: the ``k`` turns nearest to the question by the same embedder (cosine).
- ``turn_bm25``: the ``k`` best turns by BM25 (Robertson & Zaragoza 2009; ``bm25s`` with English stop words).

``evidence_recall@k`` is the share of questions whose evidence ids are *all* among the dialogue ids of the
top-``k`` items; ``evidence_coverage@k`` the mean share of each question's evidence ids covered. Evidence
ids not found in the conversation (LoCoMo has a few typos) are dropped; a question left with none is
skipped. ``context_tokens@k`` is the mean cl100k size of the retrieved text — summaries are longer than
turns, so this says what each method spends for its recall. Every score is also reported per category.

Tuning and reporting: :data:`PARTS` splits the file's conversations into a ``dev`` part (the first
conversation; the fusion weights and recency share of :mod:`app.memory.retrieval` were fitted on it only)
and a ``heldout`` part (the others), so a reported figure need not come from the data it was tuned on.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
from pydantic import BaseModel
from sqlalchemy import select

from app.accounts.models import Coach
from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.conversations.models import Conversation, Message, SenderType
from app.core.errors import EvalDataError
from app.llm.base import ChatMessage
from app.llm.schema import InvalidModelOutput, generate_structured
from app.memory.episodes import store_episodes
from app.memory.models import Insight, InsightStatus
from app.memory.retrieval import MemoryItem, recall
from app.memory.sessions import track_message
from app.memory.summaries import SummaryFailed
from app.rag.chunking import count_tokens

KS = (5, 10, 20)
CATEGORIES = (1, 2, 3, 4)
TURN_SPACING = timedelta(seconds=30)
BASELINES = ("last_n", "turn_dense", "turn_bm25")
ANSWER_CONTEXT_ITEMS = 10
CATEGORY_NAMES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
PARTS = {"dev": slice(0, 1), "heldout": slice(1, None), "all": slice(None)}
"""Which conversations of a LoCoMo file each ``--part`` uses (see the module docstring)."""


@dataclass(frozen=True)
class Turn:
    """One dialogue turn: ``dia_id`` like ``D1:3``; ``at`` is the time it is stored with (UTC)."""

    dia_id: str
    speaker: str
    text: str
    at: datetime


@dataclass(frozen=True)
class QA:
    """A question with its evidence dialogue ids, category (1 multi-hop, 2 temporal, 3 open-domain,
    4 single-hop, 5 adversarial) and reference answer."""

    question: str
    answer: str
    evidence: tuple[str, ...]
    category: int


@dataclass(frozen=True)
class LocomoConversation:
    """One LoCoMo sample: its two speakers, sessions (lists of turns, in order) and QA items."""

    sample_id: str
    speaker_a: str
    speaker_b: str
    sessions: list[list[Turn]]
    qa: list[QA]


_TIME = re.compile(r"^\s*(\d{1,2}:\d{2}\s*[ap]m)\s+on\s+(\d{1,2}\s+\w+,?\s+\d{4})\s*$", re.IGNORECASE)


def parse_session_time(value: str) -> datetime:
    """``"1:56 pm on 8 May, 2023"`` → 2023-05-08 13:56 UTC. Raises ``EvalDataError``."""
    match = _TIME.match(value)
    if not match:
        raise EvalDataError(f"unrecognised session date {value!r} (expected like '1:56 pm on 8 May, 2023')")
    clock, day = match.group(1).replace(" ", "").lower(), match.group(2).replace(",", "")
    try:
        return datetime.strptime(f"{clock} {day}", "%I:%M%p %d %B %Y").replace(tzinfo=UTC)
    except ValueError as exc:
        raise EvalDataError(f"unrecognised session date {value!r}: {exc}") from exc


def _evidence(raw: Any) -> tuple[str, ...]:
    ids: list[str] = []
    for item in raw if isinstance(raw, list) else [raw]:
        ids.extend(part.strip() for part in re.split(r"[;,]", str(item)) if part.strip())
    return tuple(ids)


def load_locomo(path: Path, *, max_sessions: int | None = None) -> list[LocomoConversation]:
    """Read a LoCoMo JSON file (a list of samples with ``conversation`` and ``qa``).

    ``max_sessions`` keeps the first sessions of each conversation; every QA item is kept (scoring skips
    those with evidence beyond the kept sessions). Raises ``EvalDataError`` for a missing or malformed file.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EvalDataError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvalDataError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(data, list) or not data:
        raise EvalDataError(f"{path}: expected a non-empty JSON list of LoCoMo samples")
    conversations = []
    for n, sample in enumerate(data):
        where = f"{path}: sample {n}"
        try:
            conv = sample["conversation"]
            speaker_a, speaker_b = str(conv["speaker_a"]), str(conv["speaker_b"])
            numbers = sorted(int(key.split("_")[1]) for key in conv if re.fullmatch(r"session_\d+", key) and conv[key])
            if max_sessions is not None:
                numbers = numbers[:max_sessions]
            sessions = []
            for number in numbers:
                start = parse_session_time(str(conv[f"session_{number}_date_time"]))
                sessions.append(
                    [
                        Turn(str(t["dia_id"]).strip(), str(t["speaker"]), str(t["text"]), start + i * TURN_SPACING)
                        for i, t in enumerate(conv[f"session_{number}"])
                    ]
                )
            qa = [
                QA(str(q["question"]), str(q.get("answer", "")), _evidence(q.get("evidence", [])), int(q["category"]))
                for q in sample["qa"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, EvalDataError):
                raise EvalDataError(f"{where}: {exc}") from exc
            detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise EvalDataError(f"{where}: not in LoCoMo's format ({detail})") from exc
        if not sessions:
            raise EvalDataError(f"{where}: has no sessions")
        conversations.append(LocomoConversation(str(sample.get("sample_id", n)), speaker_a, speaker_b, sessions, qa))
    return conversations


@dataclass(frozen=True)
class OpenAIModel:
    """An OpenAI-compatible model for the pipeline and the judge (``base_url`` ``None``: api.openai.com)."""

    model: str
    api_key: str
    base_url: str | None = None


@dataclass
class Scores:
    """Per-method tallies over questions: full-recall hits, coverage sums and context tokens, per k."""

    hits: dict[int, int] = field(default_factory=lambda: dict.fromkeys(KS, 0))
    coverage: dict[int, float] = field(default_factory=lambda: dict.fromkeys(KS, 0.0))
    tokens: dict[int, int] = field(default_factory=lambda: dict.fromkeys(KS, 0))

    def add(self, evidence: set[str], ranked: Sequence[tuple[set[str], str]]) -> None:
        """Score one question; ``ranked`` holds ``(dialogue ids, text)`` per retrieved item, best first."""
        for k in KS:
            covered: set[str] = set().union(*(ids for ids, _ in ranked[:k])) if ranked else set()
            found = len(evidence & covered)
            self.hits[k] += found == len(evidence)
            self.coverage[k] += found / len(evidence)
            self.tokens[k] += sum(count_tokens(text) for _, text in ranked[:k])

    def report(self, questions: int) -> dict[str, float]:
        """``evidence_recall@k``, ``evidence_coverage@k`` and ``context_tokens@k`` as means over questions."""
        result: dict[str, float] = {}
        for k in KS:
            result[f"evidence_recall@{k}"] = round(self.hits[k] / max(questions, 1), 4)
        for k in KS:
            result[f"evidence_coverage@{k}"] = round(self.coverage[k] / max(questions, 1), 4)
        for k in KS:
            result[f"context_tokens@{k}"] = round(self.tokens[k] / max(questions, 1), 1)
        return result


@dataclass
class EvalRun:
    """Totals of one evaluation run, filled conversation by conversation."""

    memory: Scores = field(default_factory=Scores)
    baselines: dict[str, Scores] = field(default_factory=lambda: {name: Scores() for name in BASELINES})
    categories: dict[int, dict[str, Scores]] = field(
        default_factory=lambda: {c: {name: Scores() for name in ("memory", *BASELINES)} for c in CATEGORIES}
    )
    category_questions: dict[int, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    questions: int = 0
    skipped_questions: int = 0
    sessions: int = 0
    summaries_failed: int = 0
    insights: int = 0
    answers_correct: int = 0
    answers_judged: int = 0


ProgressHook = Callable[[str], None]


async def evaluate(
    container: Container,
    conversations: Sequence[LocomoConversation],
    *,
    openai: OpenAIModel | None = None,
    keep: bool = False,
    extract: bool = True,
    progress: ProgressHook | None = None,
) -> dict[str, Any]:
    """Run the pipeline over ``conversations`` and score every method (see the module docstring).

    ``extract=False`` skips the model-made layers (no insight, summary or profile jobs: no model calls).
    With ``openai`` the evaluation coach uses that model (default: the local one), and each question is also
    answered from the top memory items and judged by the same model. Evaluation coaches are deleted
    afterwards unless ``keep``. Returns the ``--json`` object.
    """
    started = time.perf_counter()
    run = EvalRun()
    for conversation in conversations:
        await _evaluate_conversation(
            container, conversation, run, openai=openai, keep=keep, extract=extract, progress=progress
        )
    result: dict[str, Any] = {
        **{k: v for k, v in run.memory.report(run.questions).items() if k.startswith("evidence_recall")},
        "baselines": {name: scores.report(run.questions) for name, scores in run.baselines.items()},
        "memory": run.memory.report(run.questions),
        "categories": {
            CATEGORY_NAMES[c]: {"questions": run.category_questions[c]}
            | {name: scores.report(run.category_questions[c]) for name, scores in methods.items()}
            for c, methods in run.categories.items()
        },
        "extract": extract,
        "questions": run.questions,
        "skipped_questions": run.skipped_questions,
        "conversations": len(conversations),
        "sessions": run.sessions,
        "summaries_failed": run.summaries_failed,
        "insights": run.insights,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if run.answers_judged:
        result["answer_accuracy"] = round(run.answers_correct / run.answers_judged, 4)
    return result


async def _evaluate_conversation(
    container: Container,
    conversation: LocomoConversation,
    run: EvalRun,
    *,
    openai: OpenAIModel | None,
    keep: bool,
    extract: bool,
    progress: ProgressHook | None,
) -> None:
    signup = await container.accounts.signup(
        f"LoCoMo {conversation.sample_id}", f"locomo-{uuid.uuid4().hex[:12]}@eval.opencoach.local", uuid.uuid4().hex
    )
    coach_id = signup.coach_id
    try:
        async with unit_of_work(container.sessionmaker, coach_id) as uow:
            session = uow.session
            if openai is not None:
                await container.accounts.update_settings(
                    uow,
                    llm_provider="openai",
                    llm_model=openai.model,
                    llm_base_url=openai.base_url or "",
                    llm_api_key=openai.api_key,
                )
            client, _ = await container.accounts.create_client(uow, conversation.speaker_a)
            conv = Conversation(coach_id=coach_id, client_id=client.id, channel="api")
            session.add(conv)
            await session.flush()
            coach = await uow.coach()
        dia_of: dict[uuid.UUID, str] = {}
        turns: list[Turn] = []
        vectors: list[list[float]] = []
        for number, turns_of_session in enumerate(conversation.sessions, start=1):
            vectors += await _store_session(container, coach, conv, conversation.speaker_a, turns_of_session, dia_of)
            turns.extend(turns_of_session)
            async with unit_of_work(container.sessionmaker, coach_id) as uow:
                session_id = await container.sessions.end_session(uow, conv.id, queue_jobs=False)
            if extract:
                where = f"{conversation.sample_id}: session {number}/{len(conversation.sessions)}"
                await _memory_jobs(container, coach_id, conv.id, session_id, run, where, progress)
            run.sessions += 1
        if progress:
            progress(f"{conversation.sample_id}: scoring")
        await _score(container, coach, client.id, conversation, turns, vectors, dia_of, run, judge=openai is not None)
    finally:
        if not keep:
            async with unit_of_work(container.sessionmaker, coach_id) as uow:
                await container.accounts.delete_coach(uow)


async def _store_session(
    container: Container,
    coach: Coach,
    conv: Conversation,
    client_speaker: str,
    turns: Sequence[Turn],
    dia_of: dict[uuid.UUID, str],
) -> list[list[float]]:
    """Store one session's turns as messages with their episodes (one batched embedding call); returns the
    turns' vectors, in order."""
    embedder = await container.registry.embedder_for(coach)
    vectors = await embedder.embed([turn.text for turn in turns])
    async with unit_of_work(container.sessionmaker, coach.id) as uow:
        session = uow.session
        messages = []
        for turn in turns:
            sender = SenderType.CLIENT if turn.speaker == client_speaker else SenderType.HUMAN_COACH
            message = Message(
                coach_id=coach.id,
                conversation_id=conv.id,
                sender_type=sender,
                text=turn.text,
                citations=[],
                meta={"locomo_dia_id": turn.dia_id},
                created_at=turn.at,
            )
            session.add(message)
            await session.flush()
            await track_message(session, coach, message, turn.at, queue_jobs=False)
            dia_of[message.id] = turn.dia_id
            messages.append(message)
        await store_episodes(session, coach.id, conv.client_id, messages, vectors, embedder.model)
    return vectors


async def _memory_jobs(
    container: Container,
    coach_id: uuid.UUID,
    conversation_id: uuid.UUID,
    session_id: uuid.UUID | None,
    run: EvalRun,
    where: str,
    progress: ProgressHook | None,
) -> None:
    """The model-made layers after a session, as the arq jobs would run them: insights, summary, profile."""
    if progress:
        progress(f"{where} — insights")
    await container.insights.extract_insights(coach_id, conversation_id, force=True)
    if session_id is None:
        return
    if progress:
        progress(f"{where} — summary")
    try:
        await container.summaries.summarize_session(coach_id, session_id, queue_profile=False)
    except SummaryFailed:  # a result to count, not a crash
        run.summaries_failed += 1
    else:
        await container.profiles.update_profile(coach_id, session_id)


async def _score(
    container: Container,
    coach: Coach,
    client_id: uuid.UUID,
    conversation: LocomoConversation,
    turns: list[Turn],
    vectors: list[list[float]],
    dia_of: dict[uuid.UUID, str],
    run: EvalRun,
    *,
    judge: bool,
) -> None:
    known = {turn.dia_id for turn in turns}
    questions = []
    for qa in conversation.qa:
        if qa.category not in CATEGORIES:
            continue
        evidence = {e for e in qa.evidence if e in known}
        if not evidence or max_session(qa.evidence) > len(conversation.sessions):
            run.skipped_questions += 1
            continue
        questions.append((qa, evidence))
    embedder = await container.registry.embedder_for(coach)
    turn_vectors = np.asarray(vectors)
    question_vectors = await embedder.embed([qa.question for qa, _ in questions])
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([t.text for t in turns], stopwords="en", show_progress=False), show_progress=False)
    now = turns[-1].at + TURN_SPACING
    as_item = [({t.dia_id}, t.text) for t in turns]
    async with unit_of_work(container.sessionmaker, coach.id) as uow:
        session = uow.session
        run.insights += len(
            (
                await session.scalars(
                    select(Insight.id).where(Insight.client_id == client_id, Insight.status != InsightStatus.DELETED)
                )
            ).all()
        )
        for (qa, evidence), vector in zip(questions, question_vectors, strict=True):
            items = await recall(
                session,
                coach.id,
                client_id,
                query=qa.question,
                query_embedding=vector,
                embedding_model=embedder.model,
                now=now,
                limit=max(KS),
            )
            dense = np.argsort(-(turn_vectors @ np.asarray(vector)))[: max(KS)]
            docs, _ = retriever.retrieve(
                bm25s.tokenize([qa.question], stopwords="en", show_progress=False),
                k=min(max(KS), len(turns)),
                show_progress=False,
            )
            ranked = {
                "memory": [(_dia_ids(item, dia_of), item.text) for item in items],
                "last_n": as_item[::-1],
                "turn_dense": [as_item[i] for i in dense],
                "turn_bm25": [as_item[int(i)] for i in docs[0]],
            }
            for name, ranking in ranked.items():
                (run.memory if name == "memory" else run.baselines[name]).add(evidence, ranking)
                run.categories[qa.category][name].add(evidence, ranking)
            run.category_questions[qa.category] += 1
            run.questions += 1
            if judge:
                run.answers_judged += 1
                run.answers_correct += await _judged_correct(container, coach, qa, items[:ANSWER_CONTEXT_ITEMS])


def max_session(evidence: Sequence[str]) -> int:
    """The highest session number among ``D<session>:<turn>`` ids (0 if none parse)."""
    numbers = [int(match.group(1)) for e in evidence if (match := re.match(r"D(\d+):", e))]
    return max(numbers, default=0)


def _dia_ids(item: MemoryItem, dia_of: dict[uuid.UUID, str]) -> set[str]:
    return {dia_of[i] for i in item.source_message_ids if i in dia_of}


class Verdict(BaseModel):
    """The judge's grade of one answer."""

    correct: bool


JUDGE_INSTRUCTIONS = (
    "You grade answers to questions about a long conversation. Given the question, the reference answer and "
    "a candidate answer, say whether the candidate is correct: it must state the same fact (dates may be "
    "phrased differently; extra detail is fine). Answer as JSON."
)


async def _judged_correct(container: Container, coach: Coach, qa: QA, items: Sequence[MemoryItem]) -> bool:
    """Answer ``qa`` from the memory items with the coach's model, then have the same model judge it
    against the reference (LLM-as-judge as in the Mem0 paper's LoCoMo evaluation, arXiv 2504.19413)."""
    provider = await container.registry.chat_for(coach)
    context = "\n".join(item.line() for item in items)
    prompt: list[ChatMessage] = [
        {"role": "system", "content": f"Answer briefly from these memories:\n{context}"},
        {"role": "user", "content": qa.question},
    ]
    answer = "".join(
        [part async for part in provider.stream(prompt, max_tokens=80, temperature=0.0) if isinstance(part, str)]
    )
    try:
        verdict = await generate_structured(
            provider,
            [
                {"role": "system", "content": JUDGE_INSTRUCTIONS},
                {
                    "role": "user",
                    "content": f"Question: {qa.question}\nReference: {qa.answer}\nCandidate: {answer}",
                },
            ],
            Verdict,
            max_tokens=20,
        )
    except InvalidModelOutput:
        return False
    return verdict.correct
