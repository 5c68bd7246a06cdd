"""Renaming a document (``PATCH /api/v1/documents/{id}``, the dashboard's Rename): the title is validated, citations
name it, its chunks' contextual headers (embedded and in the full-text vector) follow in place, and a "Process
again" keeps it over the heading title the file declares."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import httpx
import numpy as np
import pytest
import respx
from sqlalchemy import func, select, text

from app import worker
from app.container import Container
from app.db.engine import tenant_session
from app.llm.registry import ProviderRegistry
from app.rag import headers
from app.rag.chunking import chunk_header, embedding_input
from app.rag.models import Chunk
from tests.conftest import Coach, make_client, upload
from tests.integration.rag.test_document_kinds import _chunks, _long_markdown, _ready
from tests.integration.web.test_dashboard import DELTAS, browser, client_chat, csrf, llm_api, log_in
from tests.openai_wire import MOCK_ENDPOINT_SETTINGS, stream_reply

__all__ = ["browser", "llm_api"]  # a logged-out browser tab and the mocked coach endpoint, fixtures

HEADING_TITLE = "Lantern Harbour Method"
COACH_TITLE = "Quiet Orchard Playbook"


async def _rename(http: httpx.AsyncClient, coach: Coach, document_id: str, body: object) -> httpx.Response:
    return await http.patch(f"/api/v1/documents/{document_id}", headers=coach.headers, json=body)


async def _matching(container: Container, coach: Coach, document_id: str, query: str) -> int:
    """How many of the document's chunks the English full-text ``query`` matches (their ``tsv``)."""
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as session:
        return int(
            await session.scalar(
                select(func.count()).where(
                    Chunk.document_id == uuid.UUID(document_id),
                    Chunk.tsv.op("@@")(func.to_tsquery("english", query)),
                )
            )
            or 0
        )


async def test_a_title_is_validated_and_only_the_coachs_own_document_is_renamed(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach, other = await make_coach("Renaming Coach"), await make_coach("Other Coach")
    document = await upload(http, coach, "notes.txt", b"Walk after lunch, every day.\n")
    for body, reason in [
        ({"title": "   "}, "title must not be empty"),
        ({"title": "\u202e\u200b\ufeff"}, "title must not be empty"),  # shows nothing: a bidi control, zero widths
        ({"title": "x" * 301}, "title must be at most 300 characters"),
    ]:
        response = await _rename(http, coach, document["id"], body)
        assert response.status_code == 400 and reason in response.json()["detail"], response.text
    for body in ({}, {"title": 5}, {"title": "A", "filename": "b.txt"}):
        assert (await _rename(http, coach, document["id"], body)).status_code == 400, body
    assert (await _rename(http, other, document["id"], {"title": "Mine now"})).status_code == 404
    assert (await _rename(http, coach, str(uuid.uuid4()), {"title": "Nobody's"})).status_code == 404
    response = await _rename(http, coach, document["id"], {"title": "  Daily \n walks  "})
    assert response.status_code == 200, response.text
    assert (response.json()["title"], response.json()["title_by_coach"]) == ("Daily walks", True)
    shown = (await http.get(f"/api/v1/documents/{document['id']}", headers=coach.headers)).json()
    assert (shown["title"], shown["title_by_coach"]) == ("Daily walks", True)


async def test_names_and_titles_hold_no_bidirectional_controls_nor_line_breaks(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """A right-to-left override reorders what follows it on every page that shows the text: ``ev\u202etxt.exe.md``
    showed as a document "Evexe.txt" (the "Trojan Source" spoof), and a client named with invisible characters
    alone showed blank. A file name with a line break kept it."""
    coach = await make_coach("Spoof Coach")
    for name, data, expected in (
        ("ev\u202etxt.exe.txt", b"Walk after lunch.\n", ("Evtxt.exe", "evtxt.exe.txt")),
        ("ok\r\nX: y.txt", b"Plan the week.\n", ("Ok X: Y", "ok  X: y.txt")),
    ):
        uploaded = await upload(http, coach, name, data)
        shown = (await http.get(f"/api/v1/documents/{uploaded['id']}", headers=coach.headers)).json()
        assert (shown["title"], shown["filename"]) == expected, shown
    blank = await http.post("/api/v1/clients", headers=coach.headers, json={"name": "\u202e\u200b"})
    assert blank.status_code == 400 and blank.json()["detail"] == "name must not be empty", blank.text
    for name in ("\u202eSam\u202c Lee", "\u0633\u0627\u0631\u0629\u200f"):  # (a right-to-left mark stays)
        assert (await http.post("/api/v1/clients", headers=coach.headers, json={"name": name})).status_code == 201
    listed = (await http.get("/api/v1/clients", headers=coach.headers)).json()
    names = {c["name"] for c in (listed["items"] if isinstance(listed, dict) else listed)}
    assert names == {"Sam Lee", "\u0633\u0627\u0631\u0629\u200f"}, names


async def test_a_rename_re_heads_every_chunk_in_place_and_citations_name_the_new_title(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    container: Container,
    registry: ProviderRegistry,
    llm_api: respx.MockRouter,
) -> None:
    coach = await make_coach("Citing Coach")
    document = await upload(http, coach, "zebra-quokka.md", _long_markdown())
    await run_jobs()
    assert (await _ready(http, coach, document["id"]))["title"] == HEADING_TITLE
    settings = MOCK_ENDPOINT_SETTINGS | {"response_cache_ttl_seconds": 0}
    assert (await http.patch("/api/v1/settings", headers=coach.headers, json=settings)).status_code == 200
    client = await make_client(http, coach, "Robin")
    stream_reply(llm_api, [*DELTAS, " [1]"], (50, 5))  # the reply cites the best passage
    turn = await client_chat(http, client["widget_token"], "How small can the walking habit be on hard days?")
    assert any(c["title"] == HEADING_TITLE for c in turn["citations"]), turn["citations"]
    before = await _chunks(container, coach, document["id"])

    assert (await _rename(http, coach, document["id"], {"title": COACH_TITLE})).status_code == 200
    await run_jobs()

    after = await _chunks(container, coach, document["id"])
    assert [(c.id, c.text, c.page_start) for c in after] == [(c.id, c.text, c.page_start) for c in before]
    # the section headings stay (the first section's heading is the old title: it stays as a heading)
    assert {c.header for c in after} == {f"{COACH_TITLE} — {HEADING_TITLE}", f"{COACH_TITLE} — Relapse"}
    assert await _matching(container, coach, document["id"], "quiet & orchard & playbook") == len(after)
    relapse = sum(c.header.endswith("Relapse") for c in after)
    assert 0 < relapse < len(after)
    assert await _matching(container, coach, document["id"], "lantern") == len(after) - relapse
    vectors = await registry.local_embedder().embed([embedding_input(c.header, c.text) for c in after[:3]])
    for chunk, vector in zip(after[:3], vectors, strict=True):
        assert float(np.dot(np.asarray(chunk.embedding), np.asarray(vector))) > 0.999
    conversation = await http.get(f"/api/v1/conversations/{turn['conversation_id']}", headers=coach.headers)
    cited = [c for m in conversation.json()["messages"] for c in m.get("citations") or []]
    assert cited and {c["title"] for c in cited if c["document_id"] == document["id"]} == {COACH_TITLE}
    turn = await client_chat(http, client["widget_token"], "How small can the walking habit be on hard days?")
    assert any(c["title"] == COACH_TITLE for c in turn["citations"]), turn["citations"]


async def test_the_coachs_title_wins_over_the_heading_title_of_an_ingestion_and_of_process_again(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    container: Container,
) -> None:
    coach = await make_coach("Keeping Coach")
    early = await upload(http, coach, "early.md", _long_markdown())
    assert (await _rename(http, coach, early["id"], {"title": COACH_TITLE})).status_code == 200  # still queued
    late = await upload(http, coach, "late.md", _long_markdown().replace(b"Keep the", b"Hold the"))
    await run_jobs()
    assert (await _ready(http, coach, late["id"]))["title"] == HEADING_TITLE
    assert (await _rename(http, coach, late["id"], {"title": "Hold Fast"})).status_code == 200
    await run_jobs()
    for document, title in ((early, COACH_TITLE), (late, "Hold Fast")):
        assert (await _ready(http, coach, document["id"]))["title"] == title
        copy = await http.post(f"/api/v1/documents/{document['id']}/reprocess", headers=coach.headers)
        assert copy.status_code == 202, copy.text
        await run_jobs()
        shown = await _ready(http, coach, copy.json()["id"])
        assert (shown["title"], shown["title_by_coach"]) == (title, True)
        headers = [c.header for c in await _chunks(container, coach, copy.json()["id"])]
        assert headers and all(h.startswith(f"{title} — ") for h in headers), headers


async def test_the_documents_page_renames_a_document_and_shows_a_refused_title(
    http: httpx.AsyncClient, browser: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Page Coach")
    document = await upload(http, coach, "plan.txt", b"Plan the week on Sunday evening.\n")
    await log_in(browser, coach)
    page = await browser.get("/dashboard/documents")
    assert f'action="/dashboard/documents/{document["id"]}/rename"' in page.text
    token = await csrf(browser, "/dashboard/documents")
    action = f"/dashboard/documents/{document['id']}/rename"
    refused = await browser.post(action, data={"title": " ", "_csrf_token": token})
    assert refused.status_code == 400 and "title must not be empty" in refused.text
    done = await browser.post(action, data={"title": "Sunday Planning", "_csrf_token": token})
    assert done.status_code in (302, 303), done.text
    assert "Sunday Planning" in (await browser.get("/dashboard/documents")).text
    shown = (await http.get(f"/api/v1/documents/{document['id']}", headers=coach.headers)).json()
    assert (shown["title"], shown["title_by_coach"]) == ("Sunday Planning", True)


async def _store_the_old_way(
    container: Container, registry: ProviderRegistry, coach: Coach, document_id: str, *, file_name: bool = True
) -> None:
    """Make the document's chunks as an ingestion before migration 0059 stored them: no ``heading`` and, with
    ``file_name``, headers (and vectors) made with the upload's file name, not the title the file declares."""
    async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as session:
        chunks = (await session.scalars(select(Chunk).where(Chunk.document_id == uuid.UUID(document_id)))).all()
        headers = [chunk_header("zebra-quokka.md", c.heading) if file_name else c.header for c in chunks]
        texts = [embedding_input(header, c.text) for header, c in zip(headers, chunks, strict=True)]
        vectors = await registry.local_embedder().embed(texts) if file_name else [c.embedding for c in chunks]
        for chunk, header, vector in zip(chunks, headers, vectors, strict=True):
            chunk.header, chunk.heading, chunk.embedding = header, None, vector
        await session.commit()


async def test_documents_stored_before_headings_were_recorded_are_backfilled_with_title_headers(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    container: Container,
    registry: ProviderRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Documents of two coaches stored the old way get, from the worker's ``backfill_headings`` cron (a few a run)
    and the jobs it queues, the headers of the title the file declares with their headings recorded and vectors
    made again; their chunk ids, texts and pages stay. A document whose old headers were already right only gets
    its headings recorded (no vector changes), and a run after the last finds nothing to do."""
    coaches = [await make_coach("Backfilled Coach"), await make_coach("Other Backfilled Coach")]
    old = [(coach, (await upload(http, coach, "zebra-quokka.md", _long_markdown()))["id"]) for coach in coaches]
    right = await upload(http, coaches[0], "right.md", _long_markdown().replace(b"Keep the", b"Hold the"))
    await run_jobs()
    before = {document_id: await _chunks(container, coach, document_id) for coach, document_id in old}
    for coach, document_id in old:
        assert (await _ready(http, coach, document_id))["title"] == HEADING_TITLE
        await _store_the_old_way(container, registry, coach, document_id)
    right_before = await _chunks(container, coaches[0], right["id"])
    await _store_the_old_way(container, registry, coaches[0], right["id"], file_name=False)

    async with container.sessionmaker() as session:  # the function sees every coach's: other tests must leave none
        unheaded = set((await session.scalars(text("SELECT document_id FROM unheaded_documents()"))).all())
    assert unheaded == {uuid.UUID(d) for d in (old[0][1], old[1][1], right["id"])}, unheaded

    monkeypatch.setattr(headers, "BACKFILL_PER_RUN", 2)  # a run queues a few: the rest wait for the next runs
    queued = await worker.backfill_headings({"container": container})
    assert queued.startswith("2 documents queued"), queued
    await run_jobs()
    queued = await worker.backfill_headings({"container": container})
    assert queued.startswith("1 documents queued"), queued
    await run_jobs()

    for coach, document_id in old:
        after = await _chunks(container, coach, document_id)
        assert [(c.id, c.text, c.page_start) for c in after] == [
            (c.id, c.text, c.page_start) for c in before[document_id]
        ]
        assert {c.header for c in after} == {HEADING_TITLE, f"{HEADING_TITLE} — Relapse"}
        assert [(c.header, c.heading) for c in after] == [(c.header, c.heading) for c in before[document_id]]
        assert await _matching(container, coach, document_id, "zebra") == 0
        vectors = await registry.local_embedder().embed([embedding_input(c.header, c.text) for c in after[:2]])
        for chunk, vector in zip(after[:2], vectors, strict=True):
            assert float(np.dot(np.asarray(chunk.embedding), np.asarray(vector))) > 0.999
    right_after = await _chunks(container, coaches[0], right["id"])
    assert [(c.id, c.header, list(c.embedding)) for c in right_after] == [
        (c.id, c.header, list(c.embedding)) for c in right_before
    ]
    # a heading that was the title itself is not told apart from none (app.rag.headers.heading_of)
    assert [c.heading for c in right_after] == [c.heading.replace(HEADING_TITLE, "") for c in right_before]
    assert (await worker.backfill_headings({"container": container})).startswith("0 documents queued")
