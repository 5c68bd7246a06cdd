"""Embeddings per coach: a coach switches from the offline all-MiniLM-L6-v2 to an OpenAI-compatible embedding
model with their own key; a job re-embeds their documents and memory and then switches, queries keep the old
model until then, a provider error keeps it for good, and another coach is untouched.

The app and the worker run for real; only the coach's endpoint ``https://llm.example.test/v1`` is mocked with
respx (the stub resolver answers a public address for it), answering ``POST /v1/embeddings`` and streamed chat
completions in the OpenAI API's wire format.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import numpy as np
import pytest
import respx
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from app import worker
from app.accounts.models import Coach as CoachRow
from app.accounts.unit_of_work import unit_of_work
from app.chat import embeddings
from app.container import Container
from app.conversations.models import Message
from app.db.engine import tenant_session
from app.learning.models import Intervention
from app.llm.registry import SWITCH_RETRIES, EmbedderSwitched, lock_embedding_model
from app.memory import insights
from app.memory.models import ChatSession, Episode, Insight, SessionStatus
from app.memory.schemas import ExtractedInsight, InsightExtraction, SessionSummaryOutput
from app.memory.summaries import summary_vector_text
from app.rag import pipeline
from app.rag.chunking import embedding_input
from app.rag.headers import reheader_document
from app.rag.models import Chunk, Document
from tests.cited import assert_cites_only_what_it_draws_on
from tests.conftest import Coach, make_client, upload
from tests.openai_wire import MOCK_BASE_URL, mock_openai, openai_error, openai_sse, sse_response

MODEL = "text-embedding-3-small"
LOCAL = "all-MiniLM-L6-v2"
KEY = f"sk-test-{secrets.token_hex(20)}"
EMBEDDINGS_URL = f"{MOCK_BASE_URL}/embeddings"
NOTE = (
    b"# The Two-Minute Reset\n\nWhen the morning goes badly, stop for two minutes. Breathe out slowly, name one "
    b"thing you can control, and take the smallest next step toward it.\n"
)
OTHER_NOTE = b"# Evening Review\n\nBefore sleep, write down three things that went well today and why.\n"
LONG_NOTE = "\n\n".join(
    f"## Part {part}\n\n"
    + " ".join(f"Step {part}.{n}: breathe out slowly, name one thing you control, then take it." for n in range(24))
    for part in range(8)
).encode()
QUESTION = "How do I reset when the morning goes badly?"
CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')


def fake_vector(text: str) -> list[float]:
    """A deterministic unit vector of 384 floats: the text's words hashed into buckets (texts that share words
    are near), so retrieval with the fake model still finds the right chunk."""
    vector = np.zeros(384)
    for word in re.findall(r"[a-z]+", text.lower()):
        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % 384] += 1.0
    norm = np.linalg.norm(vector)
    return list(vector / norm) if norm else [1.0] + [0.0] * 383


def embeddings_response(request: httpx.Request) -> httpx.Response:
    """``POST /v1/embeddings`` as OpenAI answers it: ``data[].embedding`` in input order, ``usage``."""
    body = json.loads(request.content)
    assert body["model"] == MODEL and body["dimensions"] == 384, body
    assert request.headers["authorization"] == f"Bearer {KEY}"
    data = [{"object": "embedding", "index": i, "embedding": fake_vector(t)} for i, t in enumerate(body["input"])]
    tokens = sum(len(t.split()) for t in body["input"])
    return httpx.Response(
        200,
        json={
            "object": "list",
            "data": data,
            "model": MODEL,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
    )


def inputs(route: respx.Route) -> list[list[str]]:
    """The ``input`` of every request the route answered, in order."""
    return [json.loads(call.request.content)["input"] for call in route.calls]


async def new_coach(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], name: str, *notes: bytes
) -> Coach:
    """A coach whose chat model is the mocked endpoint, with ``notes`` uploaded (not yet ingested)."""
    coach = await make_coach(name)
    response = await http.patch(
        "/api/v1/settings",
        headers=coach.headers,
        json={
            "llm_provider": "openai",
            "llm_model": "gpt-4o-mini",
            "llm_base_url": MOCK_BASE_URL,
            "llm_api_key": KEY,
            "response_cache_ttl_seconds": 0,
        },
    )
    assert response.status_code == 200, response.text
    for i, note in enumerate(notes):
        await upload(http, coach, f"note-{i}.md", note)
    return coach


async def request_switch(http: httpx.AsyncClient, coach: Coach) -> httpx.Response:
    return await http.put(
        "/api/v1/settings/embedding",
        headers=coach.headers,
        json={"provider": "openai", "model": MODEL, "base_url": MOCK_BASE_URL, "api_key": KEY},
    )


async def embedding_status(http: httpx.AsyncClient, coach: Coach) -> dict[str, Any]:
    response = await http.get("/api/v1/settings/embedding", headers=coach.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def stored_chunks(container: Container, coach: Coach) -> dict[uuid.UUID, tuple[str, str, list[float]]]:
    """``{chunk id: (document's model, embedded text, vector)}`` of the coach."""
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as session:
        rows = await session.execute(
            select(Chunk.id, Document.embedding_model, Chunk.header, Chunk.text, Chunk.embedding).join(
                Document, Document.id == Chunk.document_id
            )
        )
        return {r[0]: (r[1], embedding_input(r[2], r[3]), list(r[4])) for r in rows}


@pytest.fixture
def endpoint() -> Any:
    """The coach's endpoint: streamed chat completions and ``/embeddings`` (route ``"embeddings"``)."""
    with mock_openai() as router:
        router.route(host="127.0.0.1").pass_through()
        router.post(f"{MOCK_BASE_URL}/chat/completions").mock(
            # a reply drawing on NOTE (four content words of it): it cites NOTE's passage when retrieval finds it
            side_effect=lambda request: sse_response(
                openai_sse(["Breathe", " out slowly", " for two minutes."], (80, 3))
            )
        )
        router.post(EMBEDDINGS_URL, name="embeddings").mock(side_effect=embeddings_response)
        yield router


async def chat(http: httpx.AsyncClient, token: str) -> dict[str, Any]:
    response = await http.post("/api/v1/chat", headers={"Authorization": f"Bearer {token}"}, json={"text": QUESTION})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_switching_to_an_openai_model_reembeds_everything_then_switches(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    endpoint: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embeddings, "REEMBED_BATCH", 2)
    coach = await new_coach(http, make_coach, "Switching Coach", NOTE, OTHER_NOTE)
    other = await new_coach(http, make_coach, "Bystander Coach", NOTE)
    await run_jobs()
    client = await make_client(http, coach)
    first = await chat(http, client["widget_token"])
    assert first["citations"]
    await assert_cites_only_what_it_draws_on(http, client["widget_token"], first["reply"], first["citations"])
    await run_jobs()  # the AI message's episode
    other_before = await stored_chunks(container, other)
    route = endpoint.routes["embeddings"]
    assert not route.called, "MiniLM is the default: nothing is sent for embeddings"

    accepted = await request_switch(http, coach)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() | {"total": 0} == {
        "in_use": LOCAL,
        "in_use_provider": "local",
        "requested": MODEL,
        "status": "queued",
        "done": 0,
        "total": 0,
        "error": None,
    }
    assert KEY not in accepted.text

    # until the job has switched, queries keep the old model and its vectors
    assert (await chat(http, client["widget_token"]))["citations"]
    assert not route.called
    await run_jobs()

    status = await embedding_status(http, coach)
    sent = inputs(route)
    assert status == {
        "in_use": MODEL,
        "in_use_provider": "openai",
        "requested": None,
        "status": "done",
        "done": status["total"],
        "total": status["total"],
        "error": None,
    }
    # 2 chunks + 4 episodes (two turns of client and AI messages), each embedded once with the new model, two
    # texts per request; the second AI message is embedded by its own job, which may run before the
    # re-embedding collects its texts, during it (then the catch-up after the switch takes it) or after it
    assert status["total"] in (5, 6) and all(len(batch) <= 2 for batch in sent)
    assert sum(len(batch) for batch in sent) == 6
    chunks = await stored_chunks(container, coach)
    assert len(chunks) == 2
    for model, embedded, vector in chunks.values():
        assert model == MODEL
        assert np.allclose(vector, fake_vector(embedded), atol=1e-6)
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as session:
        episodes = (await session.execute(select(Episode.embedding_model))).scalars().all()
    assert len(episodes) == 4 and set(episodes) == {MODEL}
    assert await stored_chunks(container, other) == other_before, "another coach's vectors are untouched"
    assert (await embedding_status(http, other))["in_use"] == LOCAL

    # after the switch the query is embedded by the new model and finds the material by its vectors
    route.calls.reset()
    assert (await chat(http, client["widget_token"]))["citations"]
    assert [QUESTION] in inputs(route)
    await run_jobs()


async def test_a_provider_error_midway_keeps_the_old_model_in_use(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    endpoint: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embeddings, "REEMBED_BATCH", 1)
    coach = await new_coach(http, make_coach, "Revoked Key Coach", NOTE, OTHER_NOTE)
    await run_jobs()
    before = await stored_chunks(container, coach)
    answers = iter([None, openai_error(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")])

    def first_then_refused(request: httpx.Request) -> httpx.Response:
        return next(answers) or embeddings_response(request)

    endpoint.routes["embeddings"].mock(side_effect=first_then_refused)
    assert (await request_switch(http, coach)).status_code == 202
    await run_jobs()

    status = await embedding_status(http, coach)
    assert status["status"] == "failed" and status["in_use"] == LOCAL and status["requested"] == MODEL
    assert status["done"] == 1 and status["total"] == 2, "progress stops where the provider refused"
    assert "401" in status["error"] and "Incorrect API key" not in json.dumps(status), status
    assert await stored_chunks(container, coach) == before, "no vector changes"


async def test_a_reembedding_ended_by_anything_but_a_provider_error_fails_instead_of_running_for_good(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    endpoint: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug, the job's deadline (ahead of arq's timeout, which cancels it unrecorded) or every try ended by a
    stopped worker left the request ``running`` for good (the settings page showed it running): it ends
    ``failed`` with the reason, the old model stays in use, and a new request switches."""
    coach = await new_coach(http, make_coach, "Stuck Coach", NOTE)
    await run_jobs()

    async def requested(job_try: int = 1) -> tuple[dict[str, Any], str, str]:
        assert (await request_switch(http, coach)).status_code == 202
        async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as session:
            row = await session.get(CoachRow, uuid.UUID(coach.coach_id))
            assert row is not None
            return {"container": container, "job_try": job_try}, coach.coach_id, str(row.embedding_request_id)

    async def failed_with() -> str:
        status = await embedding_status(http, coach)
        assert (status["status"], status["in_use"], status["requested"]) == ("failed", LOCAL, MODEL), status
        return str(status["error"])

    async def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    async def hanging(*args: Any) -> None:
        await asyncio.sleep(60)

    with monkeypatch.context() as patched:
        patched.setattr(embeddings.EmbeddingService, "_embed", broken)
        with pytest.raises(RuntimeError):
            await worker.reembed_coach(*await requested())
    assert await failed_with() == "RuntimeError: a bug"
    with monkeypatch.context() as patched:
        patched.setattr(embeddings.EmbeddingService, "_embed", hanging)
        patched.setattr(worker, "REEMBED_DEADLINE_S", 0.5)
        with pytest.raises(TimeoutError):
            await worker.reembed_coach(*await requested())
    assert (await failed_with()).startswith("not finished within")
    spare_try = await requested(job_try=worker.REEMBED_TRIES + 1)
    assert await worker.reembed_coach(*spare_try) == "failed: its tries were used up"
    assert await failed_with() == f"stopped {worker.REEMBED_TRIES} times before it finished"

    assert (await request_switch(http, coach)).status_code == 202
    await run_jobs()
    status = await embedding_status(http, coach)
    assert (status["status"], status["in_use"], status["error"]) == ("done", MODEL, None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"provider": "word2vec"}, "provider must be one of local, openai"),
        ({"provider": "openai"}, "model is required for the openai provider"),
        ({"provider": "openai", "model": MODEL, "base_url": "ftp://llm.example.test/v1"}, "base_url must start"),
        (
            {"provider": "openai", "model": MODEL, "api_key": "sk-\u00e9t\u00e9"},
            "api_key must be 1 to 1024 visible ASCII",
        ),
        ({"provider": "openai", "model": MODEL, "api_key": "sk-two words"}, "api_key must be 1 to 1024 visible ASCII"),
    ],
)
async def test_a_bad_request_is_a_400_and_changes_nothing(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], body: dict[str, str], message: str
) -> None:
    coach = await make_coach("Careful Coach")
    response = await http.put("/api/v1/settings/embedding", headers=coach.headers, json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]
    assert await embedding_status(http, coach) == {
        "in_use": LOCAL,
        "in_use_provider": "local",
        "requested": None,
        "status": None,
        "done": 0,
        "total": 0,
        "error": None,
    }


async def test_the_settings_page_switches_and_shows_the_progress(
    base_url: str, run_jobs: Callable[[], Awaitable[None]], endpoint: respx.MockRouter
) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as browser:
        page = await browser.get("/signup")
        token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
        email = f"{uuid.uuid4().hex[:10]}@example.com"
        signed_up = await browser.post(
            "/signup",
            data={
                "coach_name": "Page Coach",
                "email": email,
                "password": "correct horse battery",
                "_csrf_token": token,
            },
        )
        assert signed_up.status_code in (302, 303)
        form = {"embedding_provider": "openai", "embedding_base_url": MOCK_BASE_URL, "embedding_api_key": KEY}
        page = await browser.get("/dashboard/settings")
        assert f"In use: <strong>{LOCAL}</strong>" in page.text
        token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]

        refused = await browser.post("/dashboard/settings/embedding", data=form | {"_csrf_token": token})
        assert refused.status_code == 400 and "model is required for the openai provider" in refused.text
        too_long = await browser.post(
            "/dashboard/settings/embedding", data=form | {"embedding_model": "m" * 201, "_csrf_token": token}
        )
        assert too_long.status_code == 400 and "model must be at most 200 characters" in too_long.text
        assert f"In use: <strong>{LOCAL}</strong>" in too_long.text and "Re-embedding with" not in too_long.text
        queued = await browser.post(
            "/dashboard/settings/embedding", data=form | {"embedding_model": MODEL, "_csrf_token": token}
        )
        assert queued.status_code == 200, queued.text
        assert f"Re-embedding with <strong>{MODEL}</strong>: queued" in queued.text
        assert f"In use: <strong>{LOCAL}</strong>" in queued.text
        await run_jobs()
        assert f"In use: <strong>{MODEL}</strong>" in (await browser.get("/dashboard/settings")).text


async def test_a_newer_request_supersedes_a_queued_one(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    endpoint: respx.MockRouter,
) -> None:
    coach = await new_coach(http, make_coach, "Undecided Coach", NOTE)
    await run_jobs()
    before = await stored_chunks(container, coach)
    assert (await request_switch(http, coach)).status_code == 202
    back = await http.put("/api/v1/settings/embedding", headers=coach.headers, json={"provider": "local"})
    assert back.status_code == 202 and back.json()["requested"] == LOCAL
    await run_jobs()

    status = await embedding_status(http, coach)
    assert status["in_use"] == LOCAL and status["status"] == "done" and status["total"] == 0
    assert not endpoint.routes["embeddings"].called, "the superseded request embedded nothing"
    assert await stored_chunks(container, coach) == before


async def switch_midway(container: Container, coach: Coach, monkeypatch: pytest.MonkeyPatch, nth: int) -> list[str]:
    """From now on, the coach's MiniLM embedder runs the coach's requested switch whole (re-embedding, switch,
    catch-up) inside its ``nth`` ``embed`` call, as a concurrent worker could, then returns MiniLM's vectors.
    Returns the list that receives the switch job's result."""
    coach_id = uuid.UUID(coach.coach_id)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        request_id = (await session.execute(select(CoachRow.embedding_request_id))).scalar_one()
    lookup, calls, switched = container.registry.embedder_for, [0], []

    class SwitchingMidway:
        def __init__(self, inner: Any) -> None:
            self.inner, self.model, self.dimensions = inner, inner.model, inner.dimensions
            self.max_input_tokens = inner.max_input_tokens

        async def embed(self, texts: list[str]) -> list[list[float]]:
            calls[0] += 1
            if calls[0] == nth:
                switched.append(await container.embeddings.run(coach_id, request_id))
            return list(await self.inner.embed(texts))

    async def embedder_for(row: CoachRow) -> Any:
        embedder = await lookup(row)
        return SwitchingMidway(embedder) if embedder.model == LOCAL else embedder

    monkeypatch.setattr(container.registry, "embedder_for", embedder_for)
    return switched


async def test_an_episode_embedded_while_the_coach_switches_models_is_stored_with_the_new_model(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    endpoint: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ``embed_messages`` job picks the model in use, then embeds outside any transaction; the switch
    completes during that call. The episode must end with the new model: before, the job stored its MiniLM
    vector after the catch-up, and the message was never recalled again (recall reads only episodes of the
    model in use)."""
    coach = await new_coach(http, make_coach, "Racing Coach", NOTE)
    coach_id = uuid.UUID(coach.coach_id)
    await run_jobs()
    client = await make_client(http, coach)
    await chat(http, client["widget_token"])
    await run_jobs()
    async with tenant_session(container.sessionmaker, coach_id) as session:
        episode = (await session.execute(select(Episode).order_by(Episode.at.desc()).limit(1))).scalar_one()
        message_id = episode.message_id
        conversation_id = await session.scalar(select(Message.conversation_id).where(Message.id == message_id))
        await session.delete(episode)  # the AI message's episode, to be stored again by the job
        await session.commit()
    assert (await request_switch(http, coach)).status_code == 202
    switched = await switch_midway(container, coach, monkeypatch, nth=1)
    await container.episodes.embed_messages(coach_id, conversation_id)
    assert switched and switched[0].startswith("2 vectors re-embedded"), switched
    async with tenant_session(container.sessionmaker, coach_id) as session:
        models = (await session.execute(select(Episode.message_id, Episode.embedding_model))).all()
    assert len(models) == 2 and {model for _, model in models} == {MODEL}, models
    assert message_id in {mid for mid, _ in models}


async def test_a_document_ingested_while_the_coach_switches_models_ends_with_the_new_models_vectors(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    endpoint: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ingestion embeds and commits a batch at a time; the switch completes during the second batch's
    embedding. Every chunk must end with the new model's vector and the document ``ready``: before, the run
    went on committing MiniLM vectors under a document the switch had marked as the new model's, so queries
    compared vectors of two models."""
    monkeypatch.setattr(pipeline, "COMMIT_CHUNKS", 2)
    coach = await new_coach(http, make_coach, "Ingesting Coach")
    document_id = uuid.UUID((await upload(http, coach, "long.md", LONG_NOTE))["id"])
    assert (await request_switch(http, coach)).status_code == 202
    switched = await switch_midway(container, coach, monkeypatch, nth=2)
    await container.documents.ingest(uuid.UUID(coach.coach_id), document_id)
    assert switched and switched[0].startswith("2 vectors re-embedded"), switched
    chunks = await stored_chunks(container, coach)
    assert len(chunks) >= 6
    for model, embedded, vector in chunks.values():
        assert model == MODEL
        assert np.allclose(vector, fake_vector(embedded), atol=1e-6), embedded[:60]
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as session:
        document = await session.get_one(Document, document_id)
    assert (document.status, document.chunks) == ("ready", len(chunks))


async def test_a_document_with_chunks_the_reembedding_did_not_read_keeps_its_old_model(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The model is recorded per document. When the re-embedding read a document's chunks and the document
    has more by the time it writes (an ingestion committed a batch meanwhile), writing must not mark the
    document as the new model's: its other chunks still hold the old model's vectors. Left on the old model,
    the catch-up after the switch re-embeds it whole."""
    monkeypatch.setattr(pipeline, "COMMIT_CHUNKS", 2)
    coach = await new_coach(http, make_coach, "Partial Coach", LONG_NOTE)
    coach_id = uuid.UUID(coach.coach_id)
    await run_jobs()
    async with tenant_session(container.sessionmaker, coach_id) as session:
        [chunks, *_] = await embeddings.pending_vectors(session, coach_id, MODEL)
        assert len(chunks.ids) >= 6 and len(chunks.documents) == 1
        # the last one "committed afterwards"
        chunks.ids, chunks.texts, chunks.headers = chunks.ids[:-1], chunks.texts[:-1], chunks.headers[:-1]
        vectors = np.asarray([fake_vector(text) for text in chunks.texts], dtype=np.float32)
        await embeddings.write_vectors(session, [chunks], [vectors], MODEL, switching=True)
        await session.commit()
    assert {model for model, _, _ in (await stored_chunks(container, coach)).values()} == {LOCAL}
    async with tenant_session(container.sessionmaker, coach_id) as session:
        [again, *_] = await embeddings.pending_vectors(session, coach_id, MODEL)
    assert len(again.ids) == len(chunks.ids) + 1, "the catch-up re-embeds the whole document"


async def test_a_document_renamed_while_the_coach_switches_models_ends_with_its_new_headers_new_vectors(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    endpoint: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The re-embedding reads every chunk's header, then embeds with the new model; meanwhile the coach renames
    a document and its ``reheader_document`` job commits the new headers with MiniLM's vectors (the model still
    in use). Every chunk must end with the new title's header and the new model's vector of that header: before,
    the switch wrote the vectors of the old headers over the re-header's, and the catch-up, which looks only at
    documents of the old model, never saw them (until the next rename or "Process again")."""
    coach = await new_coach(http, make_coach, "Renaming Switcher")
    coach_id = uuid.UUID(coach.coach_id)
    renamed_id = uuid.UUID((await upload(http, coach, "reset.md", NOTE))["id"])
    await upload(http, coach, "review.md", OTHER_NOTE)
    await run_jobs()
    assert (await request_switch(http, coach)).status_code == 202
    async with tenant_session(container.sessionmaker, coach_id) as session:
        request_id = (await session.execute(select(CoachRow.embedding_request_id))).scalar_one()
    lookup, reheaded = container.registry.requested_embedder, []

    class RenamedMidway:
        def __init__(self, inner: Any) -> None:
            self.inner, self.model, self.dimensions = inner, inner.model, inner.dimensions
            self.max_input_tokens = inner.max_input_tokens

        async def embed(self, texts: list[str]) -> list[list[float]]:
            if not reheaded:  # the rename and its job, between the re-embedding's read and its switch
                body = {"title": "Morning Rescue Plan"}
                response = await http.patch(f"/api/v1/documents/{renamed_id}", headers=coach.headers, json=body)
                assert response.status_code == 200, response.text
                registry = container.registry
                reheaded.append(await reheader_document(container.sessionmaker, registry, coach_id, renamed_id))
            return list(await self.inner.embed(texts))

    async def requested_embedder(row: CoachRow) -> Any:
        return RenamedMidway(await lookup(row))

    monkeypatch.setattr(container.registry, "requested_embedder", requested_embedder)
    result = await container.embeddings.run(coach_id, request_id)
    assert reheaded and reheaded[0] > 0 and "re-embedded" in result, (reheaded, result)
    await run_jobs()  # the rename's own job and the request's: nothing left to do

    chunks = await stored_chunks(container, coach)
    assert len(chunks) >= 2
    async with tenant_session(container.sessionmaker, coach_id) as session:
        headers = (await session.scalars(select(Chunk.header).where(Chunk.document_id == renamed_id))).all()
    assert headers and all(header.startswith("Morning Rescue Plan") for header in headers), headers
    for model, embedded, vector in chunks.values():
        assert model == MODEL, embedded[:60]
        assert np.allclose(vector, fake_vector(embedded), atol=1e-6), embedded[:60]


async def test_an_embedder_that_never_matches_the_model_in_use_fails_the_document_instead_of_looping(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ingestion starts again when the coach's model changed under it, a bounded number of times: an embedder
    reporting another model than the coach's settings name (a bug) ends ``failed`` with the reason."""
    coach = await new_coach(http, make_coach, "Mismatched Coach")
    document_id = uuid.UUID((await upload(http, coach, "note.md", NOTE))["id"])
    lookups = []

    class Renamed:
        model, dimensions, max_input_tokens = "renamed", 384, 256

    async def embedder_for(row: CoachRow) -> Any:
        lookups.append(row.id)
        return Renamed()

    monkeypatch.setattr(container.registry, "embedder_for", embedder_for)
    assert await container.documents.ingest(uuid.UUID(coach.coach_id), document_id) is None
    assert len(lookups) == 3
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as session:
        document = await session.get_one(Document, document_id)
    assert document.status == "failed"
    assert document.error == f"the embedding model in use is now {LOCAL}, not renamed"


async def chatted(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], run_jobs: Callable[[], Awaitable[None]]
) -> tuple[Coach, uuid.UUID]:
    """A coach (on MiniLM, its switch to the mocked model requested, not yet run) whose client asked
    ``QUESTION`` once; returns it and the conversation's id."""
    coach = await new_coach(http, make_coach, "Racing Coach", NOTE)
    await run_jobs()
    client = await make_client(http, coach)
    conversation_id = uuid.UUID((await chat(http, client["widget_token"]))["conversation_id"])
    await run_jobs()
    assert (await request_switch(http, coach)).status_code == 202
    return coach, conversation_id


async def test_store_embedded_embeds_again_with_the_new_model_after_a_switch(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    endpoint: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``ProviderRegistry.store_embedded``, which the writers of single vectors (summaries, insights,
    interventions) store through: the switch completes while it embeds with MiniLM, so ``store`` must get the
    new model's vectors and name."""
    coach, _ = await chatted(http, make_coach, run_jobs)
    coach_id = uuid.UUID(coach.coach_id)
    switched = await switch_midway(container, coach, monkeypatch, nth=1)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        embedder = await container.registry.embedder_for(await session.get_one(CoachRow, coach_id))
    stored: list[tuple[list[list[float]], str]] = []

    async def store(uow: Any, vectors: list[list[float]], model: str) -> str:
        stored.append((vectors, model))
        return "stored"

    text = "Name one thing you can control"
    assert await container.registry.store_embedded(container.sessionmaker, coach_id, embedder, [text], store) == (
        "stored"
    )
    assert switched and "re-embedded" in switched[0], switched
    [(vectors, model)] = stored
    assert model == MODEL
    assert np.allclose(vectors, [fake_vector(text)]), "embedded again by the new model"
    assert [text] in inputs(endpoint.routes["embeddings"])


async def test_store_embedded_gives_up_on_an_embedder_that_never_matches_the_model_in_use(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An embedder whose model is never the coach's model in use (a bug) is tried ``1 + SWITCH_RETRIES`` times,
    then ``EmbedderSwitched`` names both models; nothing is stored."""
    coach = await new_coach(http, make_coach, "Mismatched Coach")
    embedded: list[list[str]] = []

    class Renamed:
        model, dimensions, max_input_tokens = "renamed", 384, 256

        async def embed(self, texts: list[str]) -> list[list[float]]:
            embedded.append(list(texts))
            return [fake_vector(t) for t in texts]

    async def embedder_for(row: CoachRow) -> Any:
        return Renamed()

    async def store(uow: Any, vectors: list[list[float]], model: str) -> None:
        raise AssertionError("stored a vector of a model not in use")

    monkeypatch.setattr(container.registry, "embedder_for", embedder_for)
    with pytest.raises(EmbedderSwitched, match=f"the embedding model in use is now {LOCAL}, not renamed"):
        await container.registry.store_embedded(
            container.sessionmaker, uuid.UUID(coach.coach_id), Renamed(), ["a text"], store
        )
    assert embedded == [["a text"]] * (1 + SWITCH_RETRIES)


async def test_an_intervention_analysed_while_the_coach_switches_models_is_stored_with_the_new_model(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    endpoint: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The coach takes over; the ``analyse`` job embeds the client's situation with MiniLM while the switch
    completes. The situation's vector must end with the new model (before: stored as MiniLM after the
    catch-up, so :meth:`InterventionService.similar` never found it again)."""
    coach, conversation_id = await chatted(http, make_coach, run_jobs)
    coach_id = uuid.UUID(coach.coach_id)
    sent = await http.post(
        f"/api/v1/conversations/{conversation_id}/messages", headers=coach.headers, json={"text": "Let's talk."}
    )
    assert sent.status_code == 201, sent.text
    async with tenant_session(container.sessionmaker, coach_id) as session:
        [intervention] = (await session.scalars(select(Intervention))).all()
    assert intervention.client_text == QUESTION
    switched = await switch_midway(container, coach, monkeypatch, nth=1)
    assert (await container.interventions.analyse(coach_id, intervention.id)).startswith("analysed")
    assert switched, "the switch ran during the job"
    async with tenant_session(container.sessionmaker, coach_id) as session:
        analysed = await session.get_one(Intervention, intervention.id)
    assert analysed.embedding_model == MODEL
    assert np.allclose(list(analysed.embedding), fake_vector(QUESTION), atol=1e-6)


async def test_a_session_summarised_while_the_coach_switches_models_is_stored_with_the_new_model(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    endpoint: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The summary job grounds the summary (first MiniLM call), then embeds it (second); the switch completes
    during the second. The summary's vector must end with the new model: before, it stayed MiniLM after the
    catch-up and the session was never recalled again. The model's summary is a stand-in (this test is about
    the vector)."""
    coach, conversation_id = await chatted(http, make_coach, run_jobs)
    coach_id = uuid.UUID(coach.coach_id)
    output = SessionSummaryOutput(
        summary="The client asked how to reset when the morning goes badly.",
        topics=["morning reset"],
        insights=[],
        action_items=[],
        emotional_state="frustrated",
    )

    async def summarize(*args: Any) -> SessionSummaryOutput:
        return output

    monkeypatch.setattr(container.summaries, "_summarize", summarize)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        chat_session = (
            await session.scalars(select(ChatSession).where(ChatSession.conversation_id == conversation_id))
        ).one()
        chat_session.status = SessionStatus.ENDED
        session_id = chat_session.id
        await session.commit()
    switched = await switch_midway(container, coach, monkeypatch, nth=2)
    assert await container.summaries.summarize_session(coach_id, session_id, queue_profile=False) == "summarized"
    assert switched, "the switch ran during the job"
    async with tenant_session(container.sessionmaker, coach_id) as session:
        summarised = await session.get_one(ChatSession, session_id)
    assert summarised.embedding_model == MODEL
    text = summary_vector_text(output.summary, output.topics)
    assert np.allclose(list(summarised.embedding), fake_vector(text), atol=1e-6)


async def test_an_insight_extracted_while_the_coach_switches_models_is_stored_with_the_new_model(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    endpoint: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The extraction job grounds the insight with MiniLM while the switch completes; the insight must be
    stored with the new model's vector. The model's extraction is a stand-in (this test is about the
    vector)."""
    coach, conversation_id = await chatted(http, make_coach, run_jobs)
    coach_id = uuid.UUID(coach.coach_id)
    found = ExtractedInsight(kind="goal", text=QUESTION, importance=6, status="active", evidence=[1])

    async def extraction(*args: Any, **kwargs: Any) -> InsightExtraction:
        return InsightExtraction(insights=[found])

    monkeypatch.setattr(insights, "generate_structured", extraction)
    switched = await switch_midway(container, coach, monkeypatch, nth=1)
    assert await container.insights.extract_insights(coach_id, conversation_id, force=True) == (
        "1 insights stored or updated"
    )
    assert switched, "the switch ran during the job"
    async with tenant_session(container.sessionmaker, coach_id) as session:
        [insight] = (await session.scalars(select(Insight))).all()
    assert insight.embedding_model == MODEL
    assert np.allclose(list(insight.embedding), fake_vector(QUESTION), atol=1e-6)


async def test_a_forgotten_insight_is_not_learnt_again_after_the_coach_switches_embedders(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    endpoint: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client forgets an insight learnt under MiniLM; the coach then switches to the OpenAI-compatible model
    (every vector made again from its text, but a tombstone has none) and the client says the same again: the
    extraction does not learn it again. Before, the tombstone was compared only with insights of its own model."""
    coach = await new_coach(http, make_coach, "Forgetful Coach", NOTE)
    await run_jobs()
    client = await make_client(http, coach)
    coach_id, client_id = uuid.UUID(coach.coach_id), uuid.UUID(client["id"])
    conversation_id = uuid.UUID((await chat(http, client["widget_token"]))["conversation_id"])
    await run_jobs()
    found = ExtractedInsight(kind="goal", text=QUESTION, importance=6, status="active", evidence=[1])

    async def extraction(*args: Any, **kwargs: Any) -> InsightExtraction:
        return InsightExtraction(insights=[found])

    monkeypatch.setattr(insights, "generate_structured", extraction)
    learnt = await container.insights.extract_insights(coach_id, conversation_id, force=True)
    assert learnt == "1 insights stored or updated"
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        [insight] = (await uow.session.scalars(select(Insight))).all()
        assert insight.embedding_model == LOCAL
        await container.memory.delete_insight(uow, client_id, insight.id)
    await run_jobs()
    assert (await request_switch(http, coach)).status_code == 202
    await run_jobs()
    assert (await embedding_status(http, coach))["in_use"] == MODEL

    said_again = uuid.UUID((await chat(http, client["widget_token"]))["conversation_id"])  # the same words
    await run_jobs()
    again = await container.insights.extract_insights(coach_id, said_again, force=True)
    assert again == "0 insights stored or updated"
    async with tenant_session(container.sessionmaker, coach_id) as session:
        rows = (await session.execute(select(Insight.status, Insight.text, Insight.embedding_model))).all()
    assert [tuple(row) for row in rows] == [("deleted", "", LOCAL)], "only the tombstone, still MiniLM's"


async def test_writers_of_one_coach_share_the_model_lock_and_the_switch_waits_for_them(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], container: Container
) -> None:
    """``lock_embedding_model`` is ``FOR KEY SHARE``: two transactions storing vectors for one coach (two
    clients' turns, a job) hold it together, a change of the coach's settings does not wait for them, and only
    the switch's ``FOR UPDATE`` does. (It was ``FOR NO KEY UPDATE`` before: every vector writer of a coach
    waited for the one before it to commit.)"""
    coach = await new_coach(http, make_coach, "Shared Lock Coach")
    coach_id = uuid.UUID(coach.coach_id)
    async with (
        tenant_session(container.sessionmaker, coach_id) as first,
        tenant_session(container.sessionmaker, coach_id) as second,
        tenant_session(container.sessionmaker, coach_id) as third,
    ):
        assert await lock_embedding_model(first, coach_id) == LOCAL
        await second.execute(text("SET LOCAL lock_timeout = '2s'"))
        assert await lock_embedding_model(second, coach_id) == LOCAL, "a second writer does not wait"
        await third.execute(text("SET LOCAL lock_timeout = '2s'"))
        await third.execute(update(CoachRow).where(CoachRow.id == coach_id).values(name="Renamed Coach"))
        with pytest.raises(DBAPIError, match="lock_not_available|could not obtain lock"):
            await third.execute(select(CoachRow.id).where(CoachRow.id == coach_id).with_for_update(nowait=True))
