"""Fine-tunes, model versions, the promotion gate and rollback through the real app, PostgreSQL, the arq worker
and the local MiniLM embedder. The coach's OpenAI endpoint is mocked with respx in the recorded wire format of
the files (``POST /v1/files``), fine-tuning (``POST /v1/fine_tuning/jobs``, ``GET /v1/fine_tuning/jobs/{id}``)
and chat completions endpoints; chat replies depend on the ``model`` in the request body."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from arq.constants import default_queue_name, job_key_prefix
from arq.worker import Retry
from sqlalchemy import select

from app import worker
from app.accounts.unit_of_work import unit_of_work
from app.container import Container
from app.db import jobs
from app.db.engine import tenant_session
from app.learning.models import FineTuneJob, FineTuneStatus, ModelVersion, TrainingDataset, TrainingExample
from app.learning.versions import UNDECIDED
from tests.conftest import make_client
from tests.integration.handoff.test_handoff_flow import Setup, new_setup
from tests.integration.learning.test_training_data import refresh, seed_conversation
from tests.openai_wire import (
    MOCK_BASE_URL,
    MOCK_ENDPOINT_SETTINGS,
    mock_openai,
    openai_completion,
    openai_error,
    openai_sse,
    sse_response,
)

__all__ = ["new_setup"]  # fixture used by name below

BASE = "gpt-4o-mini"
"""The coach's chat model (``MOCK_ENDPOINT_SETTINGS``): the current model until a version is promoted."""
FT_BASE = "gpt-4o-mini-2024-07-18"
COACH_REPLY = "Notice the feeling without judging it, then name one small step you can take today."
CLOSE_REPLY = "Notice the feeling without judging it, and choose one small step for today."
GONE = "ft:gpt-4o-mini-2024-07-18:opencoach::deleted"
FAR_REPLY = "The Eiffel Tower is 330 metres tall and was finished in 1889 in Paris."


def file_object(file_id: str, filename: str, size: int) -> dict[str, Any]:
    """``POST /v1/files`` response (OpenAI API reference, "The file object")."""
    return {
        "object": "file",
        "id": file_id,
        "purpose": "fine-tune",
        "filename": filename,
        "bytes": size,
        "created_at": 1741802000,
        "expires_at": None,
        "status": "processed",
        "status_details": None,
    }


def job_object(job_id: str, status: str, **fields: Any) -> dict[str, Any]:
    """A fine-tuning job (OpenAI API reference, "The fine-tuning job object")."""
    body: dict[str, Any] = {
        "object": "fine_tuning.job",
        "id": job_id,
        "model": FT_BASE,
        "created_at": 1741802100,
        "finished_at": None,
        "fine_tuned_model": None,
        "organization_id": "org-3Jx5Kq8b2Tn0vWc1",
        "result_files": [],
        "status": status,
        "validation_file": "file-val789",
        "training_file": "file-train123",
        "hyperparameters": {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"},
        "trained_tokens": None,
        "error": None,
        "seed": 1837592044,
        "estimated_finish": None,
        "integrations": [],
        "metadata": None,
        "user_provided_suffix": "opencoach",
        "method": {
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
            },
        },
    }
    return body | fields


def words(text: str) -> set[str]:
    return set(text.lower().replace(",", " ").replace(".", " ").split())


def judge(user: str) -> str:
    """The mocked judge's verdict: the reply sharing more words with the coach's reply, or a tie."""
    reference = user.split("The coach's reply:\n", 1)[1].split("\n\nReply A:\n", 1)[0]
    a, b = user.split("Reply A:\n", 1)[1].split("\n\nReply B:\n", 1)
    overlap_a, overlap_b = len(words(a) & words(reference)), len(words(b) & words(reference))
    return "tie" if overlap_a == overlap_b else "A" if overlap_a > overlap_b else "B"


def jsonl_in(multipart: bytes) -> list[dict[str, Any]]:
    """The JSON lines of an uploaded file inside a multipart/form-data body."""
    return [json.loads(line) for line in multipart.decode().splitlines() if line.startswith("{")]


class FakeOpenAI:
    """The mocked endpoint: files, fine-tuning jobs that walk through ``statuses``, and chat completions whose
    reply depends on the requested model (``replies``); a non-streamed request is the gate's judge. Its provider
    job id, ``job_id``, is its own: the sweep polls every coach's active jobs, those other tests left too, and
    such a poll must neither take this test's statuses nor be taken for this test's job (a 404, as the provider
    answers for a job of another account)."""

    def __init__(self, router: respx.MockRouter, statuses: list[dict[str, Any]]) -> None:
        self.router = router
        self.statuses = statuses
        self.job_id = f"ftjob-{uuid.uuid4().hex}"
        self.uploads: list[bytes] = []
        self.created: list[dict[str, Any]] = []
        self.replies: dict[str, str] = {}
        self.listed: list[dict[str, Any]] = []
        self.judge = judge
        router.route(host="127.0.0.1").pass_through()
        router.post(f"{MOCK_BASE_URL}/files", name="files").mock(side_effect=self._file)
        router.post(f"{MOCK_BASE_URL}/fine_tuning/jobs", name="create_job").mock(side_effect=self._create)
        router.get(url__regex=rf"{MOCK_BASE_URL}/fine_tuning/jobs/ftjob-[A-Za-z0-9]+$", name="get_job").mock(
            side_effect=self._get
        )
        router.post(f"{MOCK_BASE_URL}/chat/completions", name="completions").mock(side_effect=self._chat)
        router.get(host="llm.example.test", path="/v1/fine_tuning/jobs", name="list_jobs").mock(
            side_effect=lambda request: httpx.Response(
                200, json={"object": "list", "data": self.listed, "has_more": False}
            )
        )

    def _file(self, request: httpx.Request) -> httpx.Response:
        self.uploads.append(request.content)
        name = "train" if len(self.uploads) == 1 else "val"
        return httpx.Response(200, json=file_object(f"file-{name}{len(self.uploads)}", f"{name}.jsonl", 2048))

    def _create(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.created.append(body)
        return httpx.Response(200, json=job_object(self.job_id, "validating_files"))

    def _get(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.rsplit("/", 1)[1] != self.job_id:
            return openai_error(404, "No such fine-tuning job.", "invalid_request_error", "fine_tune_not_found")
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return httpx.Response(200, json=job_object(self.job_id, **status))

    def _chat(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if not body.get("stream"):
            return openai_completion(json.dumps({"winner": self.judge(body["messages"][-1]["content"])}))
        if body["model"] == GONE:
            message = f"The model `{GONE}` does not exist or you do not have access to it."
            return openai_error(404, message, "invalid_request_error", "model_not_found")
        return sse_response(openai_sse([self.replies.get(body["model"], FAR_REPLY)], (60, 12)))


@pytest.fixture
def fake_openai() -> Iterator[Callable[[list[dict[str, Any]]], FakeOpenAI]]:
    with mock_openai() as router:
        yield lambda statuses: FakeOpenAI(router, statuses)


async def seed(
    container: Container, setup: Setup, run_jobs: Callable[[], Awaitable[None]], counts: dict[str, int]
) -> None:
    """``counts[split]`` conversations with one coach reply each (distinct client texts), refreshed."""
    for split, count in counts.items():
        for index in range(count):
            conv = await seed_conversation(
                container,
                uuid.UUID(setup.coach.coach_id),
                uuid.UUID(setup.client_id),
                [(f"I feel overwhelmed by work, day {index} ({split}, {uuid.uuid4().hex[:6]}).", COACH_REPLY)],
                split=split,
            )
            await refresh(container, run_jobs, setup.coach.coach_id, conv)


async def add_version(container: Container, setup: Setup, model: str, status: str = "staging") -> uuid.UUID:
    coach_id = uuid.UUID(setup.coach.coach_id)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        version = ModelVersion(coach_id=coach_id, model=model, base_model=FT_BASE, status=status)
        session.add(version)
        await session.flush()
        return version.id


async def test_readiness_needs_enough_new_examples_and_enough_days(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    setup = await new_setup("Ready Coach", fine_tune_min_examples=3, fine_tune_min_days=7)
    coach_id = uuid.UUID(setup.coach.coach_id)
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        off = await container.fine_tunes.readiness(uow)
    assert not off.ready and not off.enabled and "turned off" in off.reason

    await http.patch("/api/v1/settings", headers=setup.coach.headers, json={"fine_tune_enabled": True})
    await seed(container, setup, run_jobs, {"train": 2, "test": 2})
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        few = await container.fine_tunes.readiness(uow)
    assert (few.ready, few.new_examples, few.min_examples) == (False, 2, 3) and "2 of 3" in few.reason

    await seed(container, setup, run_jobs, {"train": 1})
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        ready = await container.fine_tunes.readiness(uow)
    assert ready.ready and ready.new_examples == 3 and ready.days_since_last is None and ready.reason == ""
    assert (await http.get("/api/v1/learning/training", headers=setup.coach.headers)).json()["readiness"]["ready"]

    async with tenant_session(container.sessionmaker, coach_id) as session:
        session.add(
            FineTuneJob(
                coach_id=coach_id,
                base_model=FT_BASE,
                status=FineTuneStatus.SUCCEEDED,
                created_at=datetime.now(UTC) - timedelta(days=2),
            )
        )
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        too_recent = await container.fine_tunes.readiness(uow)
    assert not too_recent.ready and too_recent.new_examples == 3
    assert 1.9 < (too_recent.days_since_last or 0) < 2.1 and "days since the last fine-tune" in too_recent.reason

    # a job that failed or was cancelled since trained nothing: the counts still run from the one that succeeded
    async with tenant_session(container.sessionmaker, coach_id) as session:
        for status, days in ((FineTuneStatus.FAILED, 1), (FineTuneStatus.CANCELLED, 0.5)):
            at = datetime.now(UTC) - timedelta(days=days)
            session.add(FineTuneJob(coach_id=coach_id, base_model=FT_BASE, status=status, created_at=at))
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        after_failures = await container.fine_tunes.readiness(uow)
    assert after_failures.new_examples == 3 and 1.9 < (after_failures.days_since_last or 0) < 2.1

    # examples older than the last job are not new
    async with tenant_session(container.sessionmaker, coach_id) as session:
        rows = (await session.scalars(select(TrainingExample).where(TrainingExample.coach_id == coach_id))).all()
        for row in rows:
            row.created_at = datetime.now(UTC) - timedelta(days=3)
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        stale = await container.fine_tunes.readiness(uow)
    assert not stale.ready and stale.new_examples == 0 and "0 of 3" in stale.reason

    # a new persona rebuilds each example's prompt when its conversation is refreshed: still no new example
    persona = {"persona": "You are the coach's assistant. Be kind and brief."}
    assert (await http.patch("/api/v1/settings", headers=setup.coach.headers, json=persona)).status_code == 200
    for conversation in {row.conversation_id for row in rows}:
        await refresh(container, run_jobs, setup.coach.coach_id, conversation)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        rebuilt = (await session.scalars(select(TrainingExample).where(TrainingExample.coach_id == coach_id))).all()
    assert {row.id for row in rebuilt}.isdisjoint({row.id for row in rows}), "every example was built again"
    assert all(persona["persona"] in json.dumps(row.prompt) for row in rebuilt)
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        assert (await container.fine_tunes.readiness(uow)).new_examples == 0


async def test_a_fine_tune_runs_from_upload_to_a_promoted_model_version(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    """POST /fine-tunes → the worker uploads train and validation JSONL and creates the job; polls record
    running then succeeded (trained tokens, cost); the staging version passes the gate (it replies like the
    coach, the base model does not) and serves in production."""
    api = fake_openai(
        [
            {"status": "running"},
            {
                "status": "succeeded",
                "fine_tuned_model": "ft:gpt-4o-mini-2024-07-18:opencoach:opencoach:AbC123",
                "trained_tokens": 120_000,
                "finished_at": 1741805700,
            },
        ]
    )
    api.replies = {"ft:gpt-4o-mini-2024-07-18:opencoach:opencoach:AbC123": CLOSE_REPLY, BASE: FAR_REPLY}
    setup = await new_setup("Tuning Coach")
    coach_id = uuid.UUID(setup.coach.coach_id)
    none = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers)
    assert none.status_code == 409 and "train" in none.text, "no train examples yet"

    await seed(container, setup, run_jobs, {"train": 3, "validation": 1, "test": 5})
    created = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers, json={"method": "supervised"})
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] == "preparing" and job["base_model"] == FT_BASE
    again = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers)
    assert again.status_code == 409, "one job at a time"

    await run_jobs()  # start (upload, create) and the first poll
    [listed] = (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
    assert listed["status"] == "running" and listed["provider_job_id"] == api.job_id
    assert (listed["training_file_id"], listed["validation_file_id"]) == ("file-train1", "file-val2")
    train_lines = jsonl_in(api.uploads[0])
    assert len(train_lines) == 3 and all(line["messages"][-1]["content"] == COACH_REPLY for line in train_lines)
    assert len(jsonl_in(api.uploads[1])) == 1
    assert api.created == [
        {
            "model": FT_BASE,
            "training_file": "file-train1",
            "validation_file": "file-val2",
            "method": {"type": "supervised"},
            "suffix": "opencoach",
            "metadata": {"opencoach_job_id": job["id"]},
        }
    ]
    assert await container.fine_tunes.start(coach_id, uuid.UUID(job["id"])) == "already started (running)"
    assert len(api.uploads) == 2, "a retried start uploads nothing"

    assert "succeeded" in await container.fine_tunes.poll(coach_id, uuid.UUID(job["id"]))
    await run_jobs()  # the promotion gate
    [done] = (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
    assert done["status"] == "succeeded" and done["trained_tokens"] == 120_000
    assert done["cost_estimate_usd"] == pytest.approx(0.36) and done["finished_at"].startswith("2025-03-12")
    [version] = (await http.get("/api/v1/learning/models", headers=setup.coach.headers)).json()
    assert version["status"] == "production" and version["fine_tune_job_id"] == job["id"]
    evaluation = version["evaluation"]
    assert evaluation["passed"] and evaluation["split"] == "test" and evaluation["examples"] == 5
    assert evaluation["candidate"] > evaluation["current"] + evaluation["margin"]
    assert evaluation["current_model"] == BASE
    async with tenant_session(container.sessionmaker, coach_id) as session:
        production = await container.model_versions.production(session, coach_id)
    assert production is not None and production.model == "ft:gpt-4o-mini-2024-07-18:opencoach:opencoach:AbC123"
    assert "already" in await container.fine_tunes.poll(coach_id, uuid.UUID(job["id"]))


async def test_a_failed_fine_tune_records_the_providers_error(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    message = "The job failed due to an invalid training file. Expected file to have JSONL format."
    fake_openai(
        [
            {
                "status": "failed",
                "error": {"code": "invalid_training_file", "message": message, "param": "training_file"},
                "finished_at": 1741802400,
            }
        ]
    )
    setup = await new_setup("Failing Coach")
    await seed(container, setup, run_jobs, {"train": 1})
    created = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers)
    assert created.status_code == 201, created.text
    await run_jobs()
    [job] = (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
    assert job["status"] == "failed" and job["error"] == message and job["finished_at"] is not None
    assert job["validation_file_id"] is None, "no validation examples: no validation file"
    assert (await http.get("/api/v1/learning/models", headers=setup.coach.headers)).json() == []
    bad = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers, json={"method": "rlhf"})
    assert bad.status_code == 400


def web_page(request: httpx.Request) -> httpx.Response:
    """A proxy's sign-in page where the API should be (200, HTML): the openai SDK hands it back as ``str``."""
    return httpx.Response(200, text="<html><body>Sign in</body></html>", headers={"content-type": "text/html"})


@pytest.mark.parametrize(
    ("route", "answer"),
    [
        ("files", web_page),
        ("create_job", web_page),
        ("create_job", lambda request: httpx.Response(200, json=job_object("ftjob-" + "x" * 200, "queued"))),
        ("create_job", lambda request: httpx.Response(200, json=job_object("ftjob-abc123", "queued") | {"id": 7})),
    ],
    ids=["upload-answers-a-web-page", "create-answers-a-web-page", "job-id-too-long", "job-id-not-a-string"],
)
async def test_a_start_answered_in_another_shape_fails_the_job_with_the_reason(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
    route: str,
    answer: Callable[[httpx.Request], httpx.Response],
) -> None:
    """The SDK checks no answer: an endpoint that is not the fine-tuning API (a web page, an id that is no id)
    fails the job with a clear reason instead of a worker traceback (or a database error for a long id)."""
    api = fake_openai([{"status": "running"}])
    api.router.routes[route].mock(side_effect=answer)
    setup = await new_setup("Mismatch Coach")
    await seed(container, setup, run_jobs, {"train": 1})
    created = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers)
    assert created.status_code == 201, created.text
    await run_jobs()
    [job] = (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
    assert job["status"] == "failed" and job["provider_job_id"] is None
    assert job["error"] == (
        "the endpoint does not speak the fine-tuning API: APIResponseValidationError: the response does not match "
        "the API"
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"status": ["running"]},
        {"status": "running", "trained_tokens": "many"},
        {"status": "running", "trained_tokens": 2**40},
        {"status": "succeeded", "finished_at": 10**20},
        {"status": "succeeded", "fine_tuned_model": "ft:" + "m" * 300},
        {"status": "failed", "error": "the job failed"},
    ],
    ids=[
        "status-not-a-string",
        "tokens-not-a-number",
        "tokens-past-int32",
        "finished-past-year-9999",
        "model-name-too-long",
        "error-not-an-object",
    ],
)
async def test_a_poll_answered_in_another_shape_changes_nothing_and_the_next_poll_records_the_job(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
    fields: dict[str, Any],
) -> None:
    # the second answer ends the job (cancelled): a job left unfinished would be polled by a later test's sweep
    api = fake_openai([fields, {"status": "cancelled", "trained_tokens": 1_000}])
    setup = await new_setup("Odd Poll Coach")
    coach_id = uuid.UUID(setup.coach.coach_id)
    await seed(container, setup, run_jobs, {"train": 1})
    created = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers)
    assert created.status_code == 201, created.text
    await run_jobs()  # start, then the first poll: the odd answer, refused (the job fails at arq, not ours)
    [job] = (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
    assert job["status"] == "validating_files" and job["error"] is None and job["trained_tokens"] is None
    assert api.statuses == [{"status": "cancelled", "trained_tokens": 1_000}], "the odd answer was read"
    assert "cancelled" in await container.fine_tunes.poll(coach_id, uuid.UUID(job["id"]))
    [job] = (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
    assert job["status"] == "cancelled" and job["trained_tokens"] == 1_000


async def test_the_gate_refuses_a_worse_model_and_rollback_restores_the_previous_one(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    """A candidate whose replies are far from the coach's (the current model's are close) is rejected with
    its numbers; with too few held-out examples the gate refuses; a better one (also by the LLM judge) is
    promoted; rollback restores the previous production version, then the base model."""
    api = fake_openai([{"status": "running"}])
    setup = await new_setup("Gate Coach", judge_model="gpt-4o")
    coach_id = uuid.UUID(setup.coach.coach_id)
    api.replies = {BASE: CLOSE_REPLY, "ft:worse": FAR_REPLY, "ft:better": COACH_REPLY, "ft:best": COACH_REPLY}

    early = await add_version(container, setup, "ft:early")
    await container.model_versions.evaluate(coach_id, early)
    [refused] = (await http.get("/api/v1/learning/models", headers=setup.coach.headers)).json()
    assert refused["status"] == "rejected" and "held-out examples" in refused["evaluation"]["reason"]

    await seed(container, setup, run_jobs, {"test": 5})
    gone = await add_version(container, setup, GONE)
    assert "cannot be used" in await container.model_versions.evaluate(coach_id, gone)

    worse = await add_version(container, setup, "ft:worse")
    assert (await container.model_versions.evaluate(coach_id, worse)).startswith("rejected")
    promote_worse = await http.post(f"/api/v1/learning/models/{worse}/promote", headers=setup.coach.headers)
    assert promote_worse.status_code == 409 and "refused" in promote_worse.text
    versions = {v["model"]: v for v in (await http.get("/api/v1/learning/models", headers=setup.coach.headers)).json()}
    evaluation = versions["ft:worse"]["evaluation"]
    assert versions["ft:worse"]["status"] == "rejected" and evaluation["candidate"] < evaluation["current"]
    assert evaluation["judge"]["win_rate"] == 0.0 and evaluation["current_model"] == BASE

    better = await add_version(container, setup, "ft:better")
    promoted = await http.post(f"/api/v1/learning/models/{better}/promote", headers=setup.coach.headers)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["status"] == "production" and promoted.json()["evaluation"]["judge"]["win_rate"] == 1.0

    # "ft:best" replies like "ft:better": not better than production by the margin → forced by the coach
    best = await add_version(container, setup, "ft:best")
    refused_best = await http.post(f"/api/v1/learning/models/{best}/promote", headers=setup.coach.headers)
    assert refused_best.status_code == 409
    forced = await http.post(
        f"/api/v1/learning/models/{best}/promote", headers=setup.coach.headers, json={"force": True}
    )
    assert forced.status_code == 200 and forced.json()["evaluation"]["forced"] is True

    rolled = await http.post("/api/v1/learning/models/rollback", headers=setup.coach.headers)
    assert rolled.status_code == 200 and rolled.json()["production"]["model"] == "ft:better"
    to_base = await http.post("/api/v1/learning/models/rollback", headers=setup.coach.headers)
    assert to_base.status_code == 200 and to_base.json() == {"production": None}
    statuses = {
        v["model"]: v["status"] for v in (await http.get("/api/v1/learning/models", headers=setup.coach.headers)).json()
    }
    assert statuses == {
        "ft:early": "rejected",
        GONE: "rejected",
        "ft:worse": "rejected",
        "ft:better": "retired",
        "ft:best": "retired",
    }
    nothing = await http.post("/api/v1/learning/models/rollback", headers=setup.coach.headers)
    assert nothing.status_code == 409
    # a retired version whose evaluation once passed goes through the gate again, against what serves now
    again = await http.post(f"/api/v1/learning/models/{better}/promote", headers=setup.coach.headers)
    assert again.status_code == 200 and again.json()["status"] == "production"
    assert again.json()["evaluation"]["at"] != promoted.json()["evaluation"]["at"]

    # tenancy: another coach sees none of it and cannot act on it
    other = await new_setup("Other Gate Coach")
    assert (await http.get("/api/v1/learning/models", headers=other.coach.headers)).json() == []
    assert (await http.get("/api/v1/learning/fine-tunes", headers=other.coach.headers)).json() == []
    assert (
        await http.post(f"/api/v1/learning/models/{better}/promote", headers=other.coach.headers)
    ).status_code == 404
    assert (await http.post("/api/v1/learning/models/rollback", headers=other.coach.headers)).status_code == 409
    assert (
        await http.post(f"/api/v1/learning/models/{uuid.uuid4()}/promote", headers=setup.coach.headers)
    ).status_code == 404
    malformed = await http.post("/api/v1/learning/models/not-a-uuid/promote", headers=setup.coach.headers)
    assert malformed.status_code == 400 and malformed.json()["detail"] == "malformed version_id: not a UUID"
    bad_body = await http.post(
        f"/api/v1/learning/models/{better}/promote", headers=setup.coach.headers, json={"force": "yes"}
    )
    assert bad_body.status_code == 400


async def test_a_judge_that_always_picks_one_position_decides_nothing(
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    """Each pair is judged in both orders: a judge that always answers "B", over an odd number of examples, gives
    ties (win rate 0.5) and leaves the decision to the similarity. Before, the candidate sat in position A on the
    even examples only, so such a judge gave it 2 of 5 and refused a candidate closer to the coach's replies."""
    api = fake_openai([{"status": "running"}])
    setup = await new_setup("Biased Judge Coach", judge_model="gpt-4o")
    coach_id = uuid.UUID(setup.coach.coach_id)
    api.replies = {BASE: FAR_REPLY, "ft:closer": COACH_REPLY}
    api.judge = lambda user: "B"
    await seed(container, setup, run_jobs, {"test": 5})
    candidate = await add_version(container, setup, "ft:closer")
    assert (await container.model_versions.evaluate(coach_id, candidate)).startswith("production")
    async with tenant_session(container.sessionmaker, coach_id) as session:
        promoted = await session.get_one(ModelVersion, candidate)
    judged = promoted.evaluation["judge"]
    assert judged["win_rate"] == 0.5 and judged["verdicts"] == {"candidate": 0, "current": 0, "tie": 5}


async def test_the_gate_compares_with_the_model_in_production_when_it_decides(
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A version forced into production while a candidate's gate replays: the candidate beat the base model, not
    the new production version, so the gate runs again against that one and refuses (no better by the margin)
    instead of retiring a version it was never compared with. A current model that changes on every run leaves
    the candidate undecided, in staging."""
    api = fake_openai([{"status": "running"}])
    setup = await new_setup("Racing Gate Coach")
    coach_id = uuid.UUID(setup.coach.coach_id)
    api.replies = {BASE: FAR_REPLY, "ft:rival": COACH_REPLY, "ft:candidate": COACH_REPLY, "ft:late": COACH_REPLY}
    await seed(container, setup, run_jobs, {"test": 5})
    versions = container.model_versions
    replay, rivals = versions._replay, [await add_version(container, setup, "ft:rival")]

    async def replay_while_the_coach_forces_a_rival(*args: Any) -> tuple[bool, str]:
        decided = await replay(*args)
        if rivals:
            await versions.promote(coach_id, rivals.pop(), force=True)
        return decided

    monkeypatch.setattr(versions, "_replay", replay_while_the_coach_forces_a_rival)
    candidate = await add_version(container, setup, "ft:candidate")
    assert (await versions.evaluate(coach_id, candidate)).startswith("rejected")
    async with tenant_session(container.sessionmaker, coach_id) as session:
        production = await versions.production(session, coach_id)
        refused = await session.get(ModelVersion, candidate)
    assert production is not None and production.model == "ft:rival", "the rival stays in production"
    assert refused is not None and refused.evaluation["current_model"] == "ft:rival"

    late = await add_version(container, setup, "ft:late")
    rivals.extend([await add_version(container, setup, f"ft:rival{n}") for n in range(3)])
    assert await versions.evaluate(coach_id, late) == UNDECIDED
    async with tenant_session(container.sessionmaker, coach_id) as session:
        undecided = await session.get(ModelVersion, late)
    assert undecided is not None and undecided.status == "staging" and undecided.evaluation == {}


async def test_a_promotion_whose_gate_cannot_reach_the_model_changes_nothing(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    """A retired or rejected version promoted again goes through the gate; when the endpoint is down the promotion
    is a 409 and the version keeps its status, so a rollback still restores the retired one (both were left in
    staging for good)."""
    api = fake_openai([{"status": "running"}])
    setup = await new_setup("Unreachable Gate Coach")
    await seed(container, setup, run_jobs, {"test": 5})
    first, second = await add_version(container, setup, "ft:first"), await add_version(container, setup, "ft:second")
    worse = await add_version(container, setup, "ft:worse", status="rejected")
    url = "/api/v1/learning/models/{}/promote"
    for forced in (first, second):  # the first is retired by the second, once in production: rollback's choice
        response = await http.post(url.format(forced), headers=setup.coach.headers, json={"force": True})
        assert response.status_code == 200, response.text

    api.router.routes["completions"].side_effect = lambda request: openai_error(503, "down", "server_error", None)
    for version in (first, worse):
        again = await http.post(url.format(version), headers=setup.coach.headers)
        assert again.status_code == 409 and "could not run" in again.json()["detail"], again.text
    statuses = {
        v["model"]: v["status"] for v in (await http.get("/api/v1/learning/models", headers=setup.coach.headers)).json()
    }
    assert statuses == {"ft:first": "retired", "ft:second": "production", "ft:worse": "rejected"}, "nothing changed"
    rolled = await http.post("/api/v1/learning/models/rollback", headers=setup.coach.headers)
    assert rolled.status_code == 200 and rolled.json()["production"]["model"] == "ft:first"


async def test_the_sweep_starts_a_fine_tune_for_a_ready_coach_and_polls_it(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    """The cron's sweep starts a job once the readiness rule holds, then polls it instead of starting another."""
    api = fake_openai([{"status": "queued"}, {"status": "running"}])
    setup = await new_setup("Swept Coach", fine_tune_enabled=True, fine_tune_min_examples=2, fine_tune_min_days=0)
    coach_id = uuid.UUID(setup.coach.coach_id)
    await seed(container, setup, run_jobs, {"train": 1})
    await container.fine_tunes.sweep(stalled_start_s=worker.START_FINE_TUNE_BUDGET_S)
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        assert await container.fine_tunes.list_jobs(uow) == [], "one example of two: not ready"

    await seed(container, setup, run_jobs, {"train": 1})
    await container.fine_tunes.sweep(stalled_start_s=worker.START_FINE_TUNE_BUDGET_S)
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        [job] = await container.fine_tunes.list_jobs(uow)
    assert job.status == FineTuneStatus.PREPARING
    await run_jobs()
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        [job] = await container.fine_tunes.list_jobs(uow)
    assert job.status == FineTuneStatus.QUEUED and len(api.created) == 1

    await container.fine_tunes.sweep(stalled_start_s=worker.START_FINE_TUNE_BUDGET_S)
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        [job] = await container.fine_tunes.list_jobs(uow)
    assert job.status == FineTuneStatus.RUNNING and len(api.created) == 1
    readiness = (await http.get("/api/v1/learning/training", headers=setup.coach.headers)).json()["readiness"]
    assert readiness["ready"] is False and "running" in readiness["reason"]


async def test_a_start_the_provider_keeps_refusing_is_retried_then_fails_the_job_with_the_reason(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    """The provider answers the upload with a 503: the ``start_fine_tune`` job is tried again later (the job stays
    ``preparing``); at its last try the job fails with the reason, and the coach can start another. Before, the
    first 503 ended the arq job for good with the fine-tune ``preparing``, and every later start was a 409."""
    api = fake_openai([{"status": "running"}])
    api.router.routes["files"].mock(
        side_effect=lambda request: openai_error(503, "The server is overloaded.", "server_error", None)
    )
    setup = await new_setup("Unreachable Provider Coach")
    await seed(container, setup, run_jobs, {"train": 1})
    created = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    arq_id = f"{jobs.START_FINE_TUNE}:{job_id}"
    await container.redis.zrem(default_queue_name, arq_id)  # run by hand below, with the try numbers wanted
    await container.redis.delete(f"{job_key_prefix}{arq_id}")
    args = (setup.coach.coach_id, job_id)

    with pytest.raises(Retry):
        await worker.start_fine_tune({"container": container, "job_try": 1}, *args)
    [job] = (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
    assert job["status"] == "preparing"
    last = await worker.start_fine_tune({"container": container, "job_try": worker.MEMORY_JOB_TRIES}, *args)
    assert last.startswith("failed: gave up starting it: ")
    [job] = (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
    assert job["status"] == "failed" and "503" in job["error"] and job["finished_at"]
    async with unit_of_work(container.sessionmaker, uuid.UUID(setup.coach.coach_id)) as uow:
        readiness = await container.fine_tunes.readiness(uow)
    assert "still running" not in readiness.reason, "the failed job no longer blocks the next one"


async def test_two_fine_tune_requests_at_once_start_one_job(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    """A double submit: two ``POST /fine-tunes`` at once make one job (one provider job, one bill); the other is a
    409. Before, both saw no active job and both were created and started."""
    api = fake_openai([{"status": "running"}])
    setup = await new_setup("Double Submit Coach")
    await seed(container, setup, run_jobs, {"train": 1})
    answers = await asyncio.gather(
        *(http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers) for _ in range(2))
    )
    assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
    await run_jobs()
    assert len((await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()) == 1
    assert len(api.created) == 1


async def test_a_retried_start_reuses_the_provider_job_of_the_interrupted_try(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    """A try that uploaded the training file and created the provider job, then died before storing the job
    id: the retry finds the job by its metadata and neither uploads the training file nor creates a job."""
    api = fake_openai([{"status": "running"}])
    setup = await new_setup("Retried Coach")
    await seed(container, setup, run_jobs, {"train": 1})
    created = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers)
    job_id = uuid.UUID(created.json()["id"])
    async with tenant_session(container.sessionmaker, uuid.UUID(setup.coach.coach_id)) as session:
        job = await session.get(FineTuneJob, job_id)
        assert job is not None
        job.training_file_id = "file-uploaded-before"
    api.listed = [job_object(api.job_id, "queued", metadata={"opencoach_job_id": str(job_id)})]
    await run_jobs()
    [listed] = (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
    assert listed["provider_job_id"] == api.job_id and listed["training_file_id"] == "file-uploaded-before"
    assert api.uploads == [] and api.created == []
    query = api.router.routes["list_jobs"].calls[0].request.url.params
    assert query["metadata[opencoach_job_id]"] == str(job_id)


async def test_a_fine_tune_whose_start_no_longer_runs_is_adopted_or_failed_by_the_sweep(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    """A ``start_fine_tune`` killed by its timeout, or whose tries ran out with its worker killed, ends without
    changing the job: it stayed ``preparing`` for good and the coach could start no other fine-tune. Once every
    try could have ended, the sweep fails it with the reason; a job the provider had created by then is adopted."""
    api = fake_openai([{"status": "running"}])
    setup = await new_setup("Stalled Start Coach")
    coach_id = uuid.UUID(setup.coach.coach_id)
    await seed(container, setup, run_jobs, {"train": 1})

    async def stalled_job() -> str:
        """A new fine-tune whose start job is gone (as after the kill), created the start's budget ago."""
        created = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        await container.redis.zrem(default_queue_name, f"{jobs.START_FINE_TUNE}:{job_id}")
        async with tenant_session(container.sessionmaker, coach_id) as session:
            job = await session.get_one(FineTuneJob, uuid.UUID(job_id))
            job.created_at = datetime.now(UTC) - timedelta(seconds=worker.START_FINE_TUNE_BUDGET_S - 60)
        await container.fine_tunes.sweep(stalled_start_s=worker.START_FINE_TUNE_BUDGET_S)
        [job] = [j for j in (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
                 if j["id"] == job_id]  # fmt: skip
        assert job["status"] == "preparing", "within the budget its start may still be running"
        async with tenant_session(container.sessionmaker, coach_id) as session:
            (await session.get_one(FineTuneJob, uuid.UUID(job_id))).created_at -= timedelta(seconds=120)
        return job_id

    first = await stalled_job()
    await container.fine_tunes.sweep(stalled_start_s=worker.START_FINE_TUNE_BUDGET_S)
    [failed] = (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
    assert failed["id"] == first and failed["status"] == "failed" and failed["finished_at"]
    assert "its start did not finish" in failed["error"]

    second = await stalled_job()  # the failed job no longer blocks a new one
    api.listed = [job_object(api.job_id, "queued", metadata={"opencoach_job_id": second})]
    await container.fine_tunes.sweep(stalled_start_s=worker.START_FINE_TUNE_BUDGET_S)
    [adopted] = [j for j in (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
                 if j["id"] == second]  # fmt: skip
    assert adopted["status"] == "queued" and adopted["provider_job_id"] == api.job_id
    assert api.created == [] and api.uploads == []
    await run_jobs()  # its first poll
    [polled] = [j for j in (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
                if j["id"] == second]  # fmt: skip
    assert polled["status"] == "running"


async def test_a_start_that_finishes_after_the_sweep_failed_its_job_cancels_the_provider_job(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    """A start slow enough that the sweep took it for stalled and failed the job finishes afterwards: the failed
    job stays failed (the coach may have started another since) instead of being overwritten with the provider
    job, and that provider job is cancelled, so it does not train and bill for a job nothing polls."""
    api = fake_openai([{"status": "running"}])
    setup = await new_setup("Late Start Coach")
    coach_id = uuid.UUID(setup.coach.coach_id)
    await seed(container, setup, run_jobs, {"train": 1})
    created = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers)
    assert created.status_code == 201, created.text
    job_id = uuid.UUID(created.json()["id"])

    class FailedMeanwhile(httpx.AsyncByteStream):
        """The provider's answer to the create, arriving after the sweep failed the job."""

        async def __aiter__(self) -> AsyncIterator[bytes]:
            await container.fine_tunes.give_up(coach_id, job_id, "the start seemed stalled")
            yield json.dumps(job_object(api.job_id, "validating_files")).encode()

    api.router.routes["create_job"].mock(
        side_effect=lambda request: httpx.Response(
            200, headers={"content-type": "application/json"}, stream=FailedMeanwhile()
        )
    )
    cancel = api.router.post(f"{MOCK_BASE_URL}/fine_tuning/jobs/{api.job_id}/cancel").mock(
        return_value=httpx.Response(200, json=job_object(api.job_id, "cancelled"))
    )
    await run_jobs()

    [job] = (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
    assert job["status"] == "failed" and job["provider_job_id"] is None
    assert "the start seemed stalled" in job["error"]
    assert cancel.call_count == 1


async def test_the_sweep_leaves_a_job_whose_start_stored_its_provider_job_while_the_sweep_looked(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    """The sweep takes a job for stalled and asks the provider for a job the start created; the start, alive
    after all, stores its provider job meanwhile. The sweep, finding none at the provider, used to fail the job
    over it (its provider job then trained unpolled); it now leaves the started job alone."""
    api = fake_openai([{"status": "running"}])
    setup = await new_setup("Looked Meanwhile Coach")
    coach_id = uuid.UUID(setup.coach.coach_id)
    await seed(container, setup, run_jobs, {"train": 1})
    created = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers)
    assert created.status_code == 201, created.text
    job_id = uuid.UUID(created.json()["id"])
    await container.redis.zrem(default_queue_name, f"{jobs.START_FINE_TUNE}:{job_id}")

    class StartedMeanwhile(httpx.AsyncByteStream):
        """The provider's (empty) list of the job's runs, arriving after the start stored its provider job."""

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async with tenant_session(container.sessionmaker, coach_id) as session:
                job = await session.get_one(FineTuneJob, job_id)
                job.provider_job_id, job.status = api.job_id, FineTuneStatus.VALIDATING_FILES
            yield json.dumps({"object": "list", "data": [], "has_more": False}).encode()

    api.router.routes["list_jobs"].mock(
        side_effect=lambda request: httpx.Response(
            200, headers={"content-type": "application/json"}, stream=StartedMeanwhile()
        )
    )
    assert (await container.fine_tunes.recover_stalled(coach_id, job_id)).startswith("already started")
    [job] = (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
    assert (job["status"], job["provider_job_id"], job["error"]) == ("validating_files", api.job_id, None)
    async with tenant_session(container.sessionmaker, coach_id) as session:  # (no later sweep polls it)
        (await session.get_one(FineTuneJob, job_id)).status = FineTuneStatus.CANCELLED


async def test_a_client_erased_while_the_training_file_uploads_leaves_no_file_of_theirs_at_the_provider(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    """The coach erases a client while the fine-tune's training file, which holds that client's words, uploads:
    the erasure found no file id on the job yet, and the id stored after it was never deleted. Now that file is
    deleted at the provider and the job trains on a file uploaded again without the client."""
    api = fake_openai([{"status": "running"}])
    setup = await new_setup("Erased Mid-Upload Coach")
    coach_id = uuid.UUID(setup.coach.coach_id)
    erased = await make_client(http, setup.coach, "Erased Mid-Upload")
    erased_words = f"My sister Philippa never calls me back ({uuid.uuid4().hex[:6]})."
    conversation = await seed_conversation(
        container, coach_id, uuid.UUID(erased["id"]), [(erased_words, COACH_REPLY)], split="train"
    )
    await refresh(container, run_jobs, setup.coach.coach_id, conversation)
    await seed(container, setup, run_jobs, {"train": 1})  # another client's example stays
    deleted: list[str] = []
    api.router.delete(url__regex=rf"{MOCK_BASE_URL}/files/file-[A-Za-z0-9-]+$").mock(
        side_effect=lambda request: (
            deleted.append(request.url.path.rsplit("/", 1)[1])
            or httpx.Response(200, json={"id": deleted[-1], "object": "file", "deleted": True})
        )
    )

    async def upload(request: httpx.Request) -> httpx.Response:
        if not api.uploads:  # the erasure commits while the first upload is under way
            gone = await http.delete(f"/api/v1/clients/{erased['id']}", headers=setup.coach.headers)
            assert gone.status_code == 204, gone.text
        return api._file(request)

    api.router.routes["files"].mock(side_effect=upload)
    created = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers)
    assert created.status_code == 201, created.text
    await run_jobs()  # the start, the purge, the first poll

    first, second = api.uploads
    assert "Philippa" in first.decode() and "Philippa" not in second.decode()
    [job] = (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
    assert job["training_file_id"] == "file-val2" and job["provider_job_id"] == api.job_id, job
    assert deleted == ["file-train1"], "the file uploaded with the erased client's words"
    assert api.created[0]["training_file"] == "file-val2"
    async with tenant_session(container.sessionmaker, coach_id) as session:
        left = (await session.scalars(select(TrainingExample.prompt))).all()
    assert not any("Philippa" in json.dumps(prompt) for prompt in left)


async def test_the_gate_measures_candidates_against_the_coachs_own_replies_only(
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    """Held-out examples whose reply is the AI's own (a client's thumbs up) are no reference for the gate: the
    current model wrote them, so closeness to them favoured it. They made up the numbers before; with only four
    of the coach's replies held out, the gate now refuses for want of them."""
    fake_openai([{"status": "running"}])
    setup = await new_setup("Own Replies Gate Coach")
    coach_id = uuid.UUID(setup.coach.coach_id)
    await seed(container, setup, run_jobs, {"test": 4})
    async with tenant_session(container.sessionmaker, coach_id) as session:
        [coach_written, *_] = (
            await session.scalars(select(TrainingExample).where(TrainingExample.split == "test"))
        ).all()
        for n in range(3):  # AI replies clients liked, held out too
            session.add(TrainingExample(
                coach_id=coach_id, conversation_id=coach_written.conversation_id, kind="sft", source="thumbs_up",
                message_id=coach_written.message_id, prompt=coach_written.prompt, chosen=f"{CLOSE_REPLY} ({n})",
                quality=1.0, split="test", content_hash=f"{n}" * 64,
            ))  # fmt: skip
    candidate = await add_version(container, setup, "ft:candidate")
    assert (await container.model_versions.evaluate(coach_id, candidate)).startswith("rejected")
    async with tenant_session(container.sessionmaker, coach_id) as session:
        evaluation = (await session.get_one(ModelVersion, candidate)).evaluation
    assert evaluation["examples"] == 4 and evaluation["candidate"] is None
    assert evaluation["reason"] == "only 4 held-out examples of the coach's own replies (at least 5)"


async def test_a_snapshot_erasures_keep_changing_during_the_upload_is_tried_again_later(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    """Every upload meets an erasure that takes an uploaded example out of the snapshot: after its tries the
    start is retried later and the job stays ``preparing`` (it was failed as "the endpoint does not speak the
    fine-tuning API")."""
    api = fake_openai([{"status": "running"}])
    setup = await new_setup("Busy Erasures Coach")
    coach_id = uuid.UUID(setup.coach.coach_id)
    await seed(container, setup, run_jobs, {"train": 4})
    created = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers)
    job_id = created.json()["id"]
    arq_id = f"{jobs.START_FINE_TUNE}:{job_id}"
    await container.redis.zrem(default_queue_name, arq_id)  # run by hand below
    await container.redis.delete(f"{job_key_prefix}{arq_id}")

    async def erased_meanwhile(request: httpx.Request) -> httpx.Response:
        async with tenant_session(container.sessionmaker, coach_id) as session:
            job = await session.get_one(FineTuneJob, uuid.UUID(job_id))
            dataset = await session.get_one(TrainingDataset, job.dataset_id)
            dataset.example_ids = dataset.example_ids[1:]
        return api._file(request)

    api.router.routes["files"].mock(side_effect=erased_meanwhile)
    with pytest.raises(Retry):
        await worker.start_fine_tune({"container": container, "job_try": 1}, setup.coach.coach_id, job_id)
    [job] = (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
    assert job["status"] == "preparing" and job["training_file_id"] is None


async def test_switching_to_the_local_model_cancels_the_running_fine_tune_with_the_reason(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    """A coach who switches to the local offline model while a fine-tune runs (which turns fine-tunes off) has the
    job cancelled at the provider with the key still stored, instead of polled on: the job reads ``cancelled``
    with the reason on the dashboard, is polled no more and no longer blocks anything. A cancel the provider
    refuses still ends the job, and the reason says to cancel it in the provider's dashboard."""
    api = fake_openai([{"status": "running"}])
    cancel = api.router.post(f"{MOCK_BASE_URL}/fine_tuning/jobs/{api.job_id}/cancel").mock(
        return_value=httpx.Response(200, json=job_object(api.job_id, "cancelled"))
    )
    setup = await new_setup("Switching Coach", fine_tune_enabled=True, fine_tune_min_days=0)
    await seed(container, setup, run_jobs, {"train": 1})
    created = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers)
    assert created.status_code == 201, created.text
    await run_jobs()  # start and first poll
    [job] = (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
    assert job["status"] == "running"
    polls = api.router.routes["get_job"].call_count

    local = await http.patch("/api/v1/settings", headers=setup.coach.headers, json={"llm_provider": "local"})
    assert local.status_code == 200 and local.json()["fine_tune_enabled"] is False
    await run_jobs()  # the switch's stop_fine_tunes job: no wait for the sweep
    assert cancel.call_count == 1 and api.router.routes["get_job"].call_count == polls, "cancelled, not polled"
    job_id = uuid.UUID(created.json()["id"])
    assert await container.fine_tunes.poll(uuid.UUID(setup.coach.coach_id), job_id) == "already cancelled"
    assert cancel.call_count == 1 and api.router.routes["get_job"].call_count == polls, "a final job rests"
    [job] = (await http.get("/api/v1/learning/dashboard", headers=setup.coach.headers)).json()["fine_tunes"]
    assert job["status"] == "cancelled" and job["finished_at"] is not None
    assert "switched to the local offline model" in job["error"] and "provider job was cancelled" in job["error"]
    assert (
        "still running"
        not in (await http.get("/api/v1/learning/training", headers=setup.coach.headers)).json()["readiness"]["reason"]
    )

    # a cancel the provider refuses (the job finished meanwhile) still ends the job, and the reason says so
    await http.patch("/api/v1/settings", headers=setup.coach.headers, json=MOCK_ENDPOINT_SETTINGS)
    refused = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers)
    assert refused.status_code == 201, refused.text
    await run_jobs()
    cancel.mock(return_value=openai_error(400, "Job has already completed.", "invalid_request_error", None))
    await http.patch("/api/v1/settings", headers=setup.coach.headers, json={"llm_provider": "local"})
    await run_jobs()
    latest = (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()[0]
    assert latest["id"] == refused.json()["id"] and latest["status"] == "cancelled"
    assert "could not be cancelled" in latest["error"] and "provider's dashboard" in latest["error"]


async def test_switching_to_the_local_model_cancels_a_fine_tune_still_preparing_with_the_reason(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    """A fine-tune not yet at the provider when the coach switches to the local model ends ``cancelled`` with the
    reason, as a running one does, whichever comes first: its start (which finds no endpoint) or the switch's
    ``stop_fine_tunes`` job. Before, the start failed it ("fine-tunes need an OpenAI endpoint"), and
    ``stop_fine_tunes`` left it ``preparing`` ("not started yet")."""
    api = fake_openai([{"status": "running"}])
    setup = await new_setup("Preparing Switch Coach", fine_tune_enabled=True, fine_tune_min_days=0)
    coach_id = uuid.UUID(setup.coach.coach_id)
    await seed(container, setup, run_jobs, {"train": 1})

    async def switched_while_preparing(*, start_first: bool) -> dict[str, Any]:
        settings = await http.patch("/api/v1/settings", headers=setup.coach.headers, json=MOCK_ENDPOINT_SETTINGS)
        assert settings.status_code == 200, settings.text
        created = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        if not start_first:  # the start waits (a retry's delay) while stop_fine_tunes runs
            await container.redis.zrem(default_queue_name, f"{jobs.START_FINE_TUNE}:{job_id}")
        local = await http.patch("/api/v1/settings", headers=setup.coach.headers, json={"llm_provider": "local"})
        assert local.status_code == 200, local.text
        await run_jobs()
        if not start_first:
            assert (await container.fine_tunes.start(coach_id, uuid.UUID(job_id))) == "already started (cancelled)"
        [job] = [j for j in (await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)).json()
                 if j["id"] == job_id]  # fmt: skip
        return job

    for start_first in (True, False):
        job = await switched_while_preparing(start_first=start_first)
        assert job["status"] == "cancelled" and job["finished_at"] and job["provider_job_id"] is None, job
        assert "switched to the local offline model" in job["error"] and "no provider job" in job["error"], job
    assert api.uploads == [] and api.created == []
    readiness = (await http.get("/api/v1/learning/training", headers=setup.coach.headers)).json()["readiness"]
    assert "still running" not in readiness["reason"]
