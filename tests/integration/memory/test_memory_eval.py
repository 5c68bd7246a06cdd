"""``opencoach eval memory`` (LoCoMo evidence recall) on a tiny synthetic conversation, on the real database,
Redis and MiniLM: once with the offline SmolLM2 running the memory jobs, once with the coach's model set to
OpenAI (``--openai-model``), whose API is mocked in OpenAI's recorded wire format (:mod:`tests.openai_wire`)
so the memory jobs, the answers and the judge's verdicts are known; and the CLI on bad input.

The conversation: the client (speaker_a, Jordan) mentions a beagle called Rufus and a pottery class in
session 1 and walking Rufus in Riverside Park in session 2 (a day later); coach Sam answers. QA items of
categories 1–4 have known evidence; one is category 5 (adversarial: never scored) and one cites a session
the conversation does not have (skipped).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.accounts.models import Coach
from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.core.runtime import Services
from app.db.engine import make_engine
from app.evals.memory import JUDGE_INSTRUCTIONS, OpenAIModel, evaluate, load_locomo
from app.memory.models import Insight
from app.rag.chunking import count_tokens
from tests.integration.memory.memory_wire import client_lines, memory_job, new_client_lines
from tests.openai_wire import mock_openai, openai_completion, openai_sse, sse_response

CLIENT, COACH = "Jordan", "Sam"
SESSIONS = [
    (
        "1:56 pm on 8 May, 2023",
        [
            (CLIENT, "I adopted a beagle called Rufus last week!"),  # D1:1
            (COACH, "Congratulations! How is he settling in?"),  # D1:2
            (CLIENT, "He chews everything. I also started a pottery class on Tuesdays."),  # D1:3
            (COACH, "That sounds like a full week."),  # D1:4
        ],
    ),
    (
        "2:10 pm on 9 May, 2023",
        [
            (CLIENT, "I walk Rufus in Riverside Park every morning before work."),  # D2:1
            (COACH, "A lovely routine. How is work going?"),  # D2:2
            (CLIENT, "Busy. My manager wants me to lead the Denver project in July."),  # D2:3
            (COACH, "Well done, that is a big step."),  # D2:4
        ],
    ),
]
ALL_TURNS = [text for _, turns in SESSIONS for _, text in turns]
QUESTIONS = [  # (question, answer, evidence, category)
    ("What breed is Jordan's dog?", "A beagle", ["D1:1"], 4),
    ("What is the name of Jordan's dog and where does Jordan walk him?", "Rufus, in Riverside Park", ["D1:1; D2:1"], 1),
    ("When did Jordan adopt the dog?", "The week before 8 May 2023", ["D1:1"], 2),
    ("Would Jordan enjoy a crafts fair?", "Likely yes, Jordan takes a pottery class", ["D1:3"], 3),
]
ADVERSARIAL = "What is the name of Jordan's cat?"
BEYOND = "Which city did Jordan move to?"  # its evidence lies in a session 3 the conversation lacks
METHOD_KEYS = {
    f"{metric}@{k}" for metric in ("evidence_recall", "evidence_coverage", "context_tokens") for k in (5, 10, 20)
}
RESULT_KEYS = {
    "evidence_recall@5",
    "evidence_recall@10",
    "evidence_recall@20",
    "memory",
    "baselines",
    "questions",
    "skipped_questions",
    "conversations",
    "sessions",
    "summaries_failed",
    "insights",
    "seconds",
    "categories",
    "extract",
}


def locomo_sample(sample_id: str) -> dict[str, Any]:
    """The conversation as one LoCoMo sample (the shape of ``locomo_dev.json``)."""
    conversation: dict[str, Any] = {"speaker_a": CLIENT, "speaker_b": COACH}
    for number, (date, turns) in enumerate(SESSIONS, start=1):
        conversation[f"session_{number}_date_time"] = date
        conversation[f"session_{number}"] = [
            {"speaker": speaker, "dia_id": f"D{number}:{i}", "text": text} for i, (speaker, text) in enumerate(turns, 1)
        ]
    qa = [{"question": q, "answer": a, "evidence": e, "category": c} for q, a, e, c in QUESTIONS]
    qa.append({"question": ADVERSARIAL, "evidence": ["D1:1"], "category": 5, "adversarial_answer": "Rufus"})
    qa.append({"question": BEYOND, "answer": "Denver", "evidence": ["D3:2"], "category": 4})
    return {"sample_id": sample_id, "conversation": conversation, "qa": qa}


def write_locomo(tmp_path: Path, sample_id: str) -> Path:
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([locomo_sample(sample_id)]), encoding="utf-8")
    return path


async def coach_ids_named(services: Services, name: str) -> list[uuid.UUID]:
    """Coach ids with this name, looked up as the database owner (``coaches`` is behind row-level security)."""
    owner = make_engine(services.migration_database_url, pool_size=1)
    try:
        async with owner.connect() as conn:
            return list((await conn.scalars(select(Coach.id).where(Coach.name == name))).all())
    finally:
        await owner.dispose()


def assert_result_shape(result: dict[str, Any]) -> None:
    """The documented keys, nothing missing and nothing else (``answer_accuracy`` only with a judge)."""
    assert set(result) - {"answer_accuracy"} == RESULT_KEYS
    assert set(result["baselines"]) == {"last_n", "turn_dense", "turn_bm25"}
    for scores in [result["memory"], *result["baselines"].values()]:
        assert set(scores) == METHOD_KEYS
    for k in (5, 10, 20):
        assert result[f"evidence_recall@{k}"] == result["memory"][f"evidence_recall@{k}"]
    json.dumps(result)  # what --json prints


def assert_baseline_arithmetic(result: dict[str, Any]) -> None:
    """With 8 turns every baseline returns all of them at k ≥ 10: full recall and coverage, and the context is
    the whole conversation. At k=5 ``last_n`` has D2:4…D1:4, so only the multi-hop question's D2:1 is in it."""
    everything = float(sum(count_tokens(text) for text in ALL_TURNS))
    for name, scores in result["baselines"].items():
        for k in (10, 20):
            assert scores[f"evidence_recall@{k}"] == 1.0, (name, scores)
            assert scores[f"evidence_coverage@{k}"] == 1.0, (name, scores)
            assert scores[f"context_tokens@{k}"] == round(everything, 1), (name, scores)
    last5 = result["baselines"]["last_n"]
    assert (last5["evidence_recall@5"], last5["evidence_coverage@5"]) == (0.0, 0.125)
    assert last5["context_tokens@5"] == float(sum(count_tokens(text) for text in ALL_TURNS[-5:]))


# --- the offline pipeline (SmolLM2 + MiniLM) ------------------------------------------------------------


async def test_evaluate_with_the_local_model_scores_memory_and_baselines_and_deletes_the_coach(
    container: Container, services: Services, tmp_path: Path
) -> None:
    sample_id = f"local-{uuid.uuid4().hex[:8]}"
    conversations = load_locomo(write_locomo(tmp_path, sample_id))
    progress: list[str] = []

    result = await evaluate(container, conversations, progress=progress.append)

    assert_result_shape(result)
    assert "answer_accuracy" not in result, "no judge without --openai-model"
    assert (result["conversations"], result["sessions"]) == (1, 2)
    assert result["questions"] == 4, "category 5 and the question beyond the sessions are not scored"
    assert result["skipped_questions"] == 1, "category 5 is left out without being counted as skipped"
    assert_baseline_arithmetic(result)
    memory = result["memory"]
    for metric in ("evidence_recall", "evidence_coverage"):
        values = [memory[f"{metric}@{k}"] for k in (5, 10, 20)]
        assert all(0.0 <= v <= 1.0 for v in values) and values == sorted(values), memory
    assert 0 <= result["summaries_failed"] <= 2 and result["insights"] >= 0 and result["seconds"] > 0
    assert progress[0] == f"{sample_id}: session 1/2 — insights"
    assert f"{sample_id}: session 2/2 — insights" in progress and progress[-1] == f"{sample_id}: scoring"
    assert await coach_ids_named(services, f"LoCoMo {sample_id}") == [], "the evaluation coach is deleted"


async def test_evaluate_without_extraction_scores_the_episodic_layer_alone_per_category(
    container: Container, services: Services, tmp_path: Path
) -> None:
    """``--no-extract``: no memory job runs (no model call), memory is the episodes alone — every turn is
    recallable, so with 8 turns memory finds every evidence id at k = 10 — and each category is reported."""
    sample_id = f"episodic-{uuid.uuid4().hex[:8]}"
    progress: list[str] = []

    result = await evaluate(
        container, load_locomo(write_locomo(tmp_path, sample_id)), extract=False, progress=progress.append
    )

    assert_result_shape(result)
    assert result["extract"] is False
    assert progress == [f"{sample_id}: scoring"], "no insight, summary or profile step"
    assert (result["insights"], result["summaries_failed"]) == (0, 0)
    assert_baseline_arithmetic(result)
    assert result["memory"]["evidence_recall@10"] == 1.0
    assert result["memory"]["evidence_coverage@10"] == 1.0
    categories = result["categories"]
    assert set(categories) == {"multi-hop", "temporal", "open-domain", "single-hop"}
    assert all(categories[name]["questions"] == 1 for name in categories)
    assert set(categories["single-hop"]) == {"questions", "memory", "last_n", "turn_dense", "turn_bm25"}
    assert categories["single-hop"]["memory"]["evidence_recall@5"] == 1.0, "'beagle' is found by both arms"
    assert await coach_ids_named(services, f"LoCoMo {sample_id}") == []


# --- the coach's model on OpenAI (mocked), with the LLM judge -------------------------------------------

COMPLETIONS_URL = "https://api.openai.com/v1/chat/completions"
NOTES = [  # (trigger in a client line, insight the fake model notes)
    ("beagle called rufus", {"kind": "milestone", "text": "Jordan adopted a beagle called Rufus"}),
    ("pottery class", {"kind": "pattern", "text": "Jordan goes to a pottery class on Tuesdays"}),
    ("riverside park", {"kind": "pattern", "text": "Jordan walks Rufus in Riverside Park every morning"}),
]
ANSWERS = {  # what the fake model answers from the memories: two right, two not
    QUESTIONS[0][0]: "Rufus is a beagle.",
    QUESTIONS[1][0]: "Rufus; Jordan walks him in Riverside Park.",
    QUESTIONS[2][0]: "I don't know.",
    QUESTIONS[3][0]: "I don't know.",
}


@dataclass
class FakeOpenAI:
    """api.openai.com for the evaluation coach. Streamed requests are the answer step (answered from
    ``ANSWERS``); the others are Structured Outputs calls, told apart by their system prompt: the memory
    jobs (insights from ``NOTES``, summaries that restate the client's lines) and the judge, which grades
    an answer correct unless it is "I don't know"."""

    answers: list[dict[str, Any]] = field(default_factory=list)
    structured: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"summary": [], "extract": [], "decision": [], "profile": [], "judge": []}
    )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        answer: dict[str, Any]
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        if body.get("stream"):
            assert system.startswith("Answer briefly from these memories:\n"), system[:80]
            self.answers.append(body)
            return sse_response(openai_sse([ANSWERS[user]], usage=(180, 9)))
        job = "judge" if system == JUDGE_INSTRUCTIONS else memory_job(system)
        if job == "judge":
            answer = {"correct": "I don't know" not in user.split("\nCandidate: ", 1)[1]}
        elif job == "decision":
            answer = {"decision": "different"}
        elif job == "summary":
            answer = {
                "summary": " ".join(text for _, text in client_lines(user)),
                "topics": ["Jordan's beagle Rufus"],  # a word of each session: grounded
                "insights": [],
                "action_items": [],
                "emotional_state": "happy",
            }
        elif job == "extract":
            answer = {
                "insights": [
                    {**note, "importance": 6, "status": "active", "evidence": [n]}
                    for trigger, note in NOTES
                    for n, text in new_client_lines(user)
                    if trigger in text.casefold()
                ]
            }
        elif job == "profile":
            answer = {
                "communication_preferences": ["Shares news with enthusiasm"],
                "what_works": [],
                "what_doesnt_work": [],
                "tone": "warm",
                "sensitive_topics": [],
            }
        else:
            raise AssertionError(f"unexpected structured request: {system[:80]!r}")
        self.structured[job].append(body)
        return openai_completion(json.dumps(answer))


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)  # the SDK's default host is the one mocked
    fake = FakeOpenAI()
    with mock_openai() as router:
        router.post(COMPLETIONS_URL).mock(side_effect=fake)
        yield fake


async def test_evaluate_with_openai_judges_answers_and_keeps_the_coach(
    container: Container, services: Services, tmp_path: Path, llm: FakeOpenAI
) -> None:
    sample_id = f"openai-{uuid.uuid4().hex[:8]}"
    conversations = load_locomo(write_locomo(tmp_path, sample_id))

    result = await evaluate(
        container, conversations, openai=OpenAIModel(model="gpt-4o-mini", api_key="sk-test"), keep=True
    )

    assert_result_shape(result)
    assert result["answer_accuracy"] == 0.5, "two of the four answers were judged correct"
    assert (result["questions"], result["skipped_questions"], result["sessions"]) == (4, 1, 2)
    assert (result["insights"], result["summaries_failed"]) == (3, 0)
    assert_baseline_arithmetic(result)
    # 3 insights + 2 summaries fit in k=5; the insights alone cite D1:1, D1:3 and D2:1.
    assert [result["memory"][f"evidence_recall@{k}"] for k in (5, 10, 20)] == [1.0, 1.0, 1.0]

    assert {job: len(bodies) for job, bodies in llm.structured.items() if job != "decision"} == {
        "summary": 2,
        "extract": 2,
        "profile": 2,
        "judge": 4,
    }
    assert [body["messages"][-1]["content"] for body in llm.answers] == [q for q, *_ in QUESTIONS]
    assert all(body["model"] == "gpt-4o-mini" for body in [*llm.answers, *llm.structured["judge"]])
    assert "Jordan adopted a beagle called Rufus" in llm.answers[0]["messages"][0]["content"]
    for body, (question, answer, *_) in zip(llm.structured["judge"], QUESTIONS, strict=True):
        fmt = body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Verdict"
        assert fmt["json_schema"]["strict"] is True and fmt["json_schema"]["schema"]["required"] == ["correct"]
        assert body["messages"][-1]["content"] == (
            f"Question: {question}\nReference: {answer}\nCandidate: {ANSWERS[question]}"
        )

    [coach_id] = await coach_ids_named(services, f"LoCoMo {sample_id}")  # keep=True
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        session = uow.session
        coach = await uow.coach()
        assert (coach.llm_provider, coach.llm_model) == ("openai", "gpt-4o-mini")
        texts = set((await session.scalars(select(Insight.text))).all())
    assert texts == {note["text"] for _, note in NOTES}
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        await container.accounts.delete_coach(uow)
    assert await coach_ids_named(services, f"LoCoMo {sample_id}") == []


# --- the CLI on bad input -------------------------------------------------------------------------------


def run_eval_cli(services: Services, tmp_path: Path, locomo: Path) -> subprocess.CompletedProcess[str]:
    """``opencoach eval memory --locomo PATH`` against the test run's PostgreSQL and Redis (no second server)."""
    env = {
        **os.environ,
        "DATABASE_URL": services.database_url,
        "MIGRATION_DATABASE_URL": services.migration_database_url,
        "REDIS_URL": services.redis_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "eval", "memory", "--locomo", str(locomo), "--data-dir", str(tmp_path / "d")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one ``error: …`` line of a failed run, after checking it failed cleanly."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_cli_on_a_missing_file_exits_2_with_a_one_line_error(services: Services, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "locomo_dev.json"
    assert error_line(run_eval_cli(services, tmp_path, missing)) == f"error: {missing}: no such file"


def test_cli_on_a_file_that_is_not_json_exits_2_with_a_one_line_error(services: Services, tmp_path: Path) -> None:
    path = tmp_path / "locomo[dev].json"  # brackets: the message is printed as text, not as console markup
    path.write_text("<html>Not Found</html>\n", encoding="utf-8")
    line = error_line(run_eval_cli(services, tmp_path, path))
    assert line.startswith(f"error: {path}: not a readable JSON file (Expecting value: line 1 column 1"), line
