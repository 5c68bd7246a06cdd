"""Document ingestion: bad files fail clearly without harming anything; good files become chunks."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pypdf
import pytest
from sqlalchemy import func, select

from app.container import Container
from app.db.engine import tenant_session
from app.rag.extract import ExtractionError
from app.rag.models import Chunk, Document
from app.rag.pipeline import IngestRun
from app.rag.retrieval import rank
from tests.conftest import BOOKS, MEDITATIONS, TEST_MAX_UPLOAD_MB, Coach, upload


def _encrypted_pdf() -> bytes:
    reader = pypdf.PdfReader(MEDITATIONS)
    writer = pypdf.PdfWriter()
    for page in reader.pages[20:22]:
        writer.add_page(page)
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _scanned_pdf() -> bytes:
    """Pages with no text layer, as a scanner without OCR produces."""
    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=595, height=842)
    writer.add_blank_page(width=595, height=842)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


BAD_FILES = [
    ("not-really.pdf", b"Dear diary, this is plain text with a .pdf name.\n" * 20, "not a PDF"),
    ("locked.pdf", _encrypted_pdf(), "password-protected"),
    ("empty.pdf", b"", "empty"),
    ("empty.txt", b"   \n", "empty"),
    ("scan.pdf", _scanned_pdf(), "no text layer"),
    ("truncated.pdf", MEDITATIONS.read_bytes()[:50_000], "damaged"),
    ("garbage.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 40, "damaged"),
    ("latin1.txt", "Caf\u00e9 cr\u00e8me".encode("latin-1"), "not UTF-8"),
    ("huge.txt", b"a" * int((TEST_MAX_UPLOAD_MB + 0.5) * 1024 * 1024), "upload limit"),
]


async def test_bad_files_fail_clearly_and_nothing_else_is_affected(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], run_jobs: Callable[[], Awaitable[None]]
) -> None:
    coach = await make_coach("Careful Coach")
    good_before = await upload(http, coach, "values.md", b"# Values\n\nHonesty first. Then courage.\n")
    await run_jobs()
    before = (await http.get(f"/api/v1/documents/{good_before['id']}", headers=coach.headers)).json()
    assert before["status"] == "ready" and before["chunks"] == 1

    bad_ids = {name: (await upload(http, coach, name, data))["id"] for name, data, _ in BAD_FILES}
    good_after = await upload(http, coach, "habits.txt", b"Small habits, repeated daily, compound.\n" * 30)
    await run_jobs()  # one burst: the worker must get through every bad file and still do the good one

    for name, _, reason in BAD_FILES:
        doc = (await http.get(f"/api/v1/documents/{bad_ids[name]}", headers=coach.headers)).json()
        assert doc["status"] == "failed", (name, doc)
        assert reason in doc["error"], (name, doc["error"])
        assert doc["chunks"] == 0
    after = (await http.get(f"/api/v1/documents/{good_after['id']}", headers=coach.headers)).json()
    assert after["status"] == "ready" and after["chunks"] >= 1
    unchanged = (await http.get(f"/api/v1/documents/{good_before['id']}", headers=coach.headers)).json()
    assert unchanged == before


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"file": ("notes.xlsx", b"PK\x03\x04")}, "unsupported file type"),
        ({"other": ("notes.txt", b"hello")}, "no file field named 'file'"),
        ({"file": ("n" * 297 + ".txt", b"hello")}, "file name must be at most 300 characters"),
    ],
    ids=["unsupported-type", "no-file-field", "name-too-long"],
)
async def test_upload_rejects_unusable_requests(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], files: dict, message: str
) -> None:
    coach = await make_coach()
    response = await http.post("/api/v1/documents", headers=coach.headers, files=files)
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert (await http.get("/api/v1/documents", headers=coach.headers)).json() == []


async def test_an_uploads_file_name_is_its_base_name_on_either_separator_and_keeps_a_tagged_names_text(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """A hand-made upload named ``<b>My notes</b> 🎉.txt`` was stored as ``b> 🎉.txt`` and titled "B> 🎉" (cut at the
    "/" of its end tag), and a Windows path ``..\\..\\win Path.txt`` kept its backslashes in its name and title."""
    coach = await make_coach("Names Coach")
    names = {
        "<b>My notes</b> 🎉.txt": ("My notes 🎉.txt", "My Notes 🎉"),
        "..\\..\\win Path.txt": ("win Path.txt", "Win Path"),
        "C:\\Users\\me\\Desktop\\morning_routine.md": ("morning_routine.md", "Morning Routine"),
        "../../etc/evening-plan.txt": ("evening-plan.txt", "Evening Plan"),
        "Session <Anna>.txt": ("Session <Anna>.txt", "Session <Anna>"),
    }
    for n, (sent, (filename, title)) in enumerate(names.items()):
        body = f"Note {n}: keep the habit small on hard days.".encode()
        response = await http.post("/api/v1/documents", headers=coach.headers, files={"file": (sent, body)})
        assert response.status_code == 202, (sent, response.text)
        stored = (await http.get(f"/api/v1/documents/{response.json()['id']}", headers=coach.headers)).json()
        assert (stored["filename"], stored["title"]) == (filename, title), (sent, stored)
    for directory in ("notes/", "..\\"):
        response = await http.post("/api/v1/documents", headers=coach.headers, files={"file": (directory, b"x")})
        assert response.status_code == 400 and "no file name" in response.json()["detail"]


async def test_upload_needs_multipart_and_a_key(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach()
    not_multipart = await http.post("/api/v1/documents", headers=coach.headers, json={"file": "x"})
    assert not_multipart.status_code == 400 and "multipart/form-data" in not_multipart.json()["detail"]
    assert (await http.post("/api/v1/documents", files={"file": ("a.txt", b"x")})).status_code == 401
    bad_key = await http.post(
        "/api/v1/documents", headers={"Authorization": "Bearer oc_wrong"}, files={"file": ("a.txt", b"x")}
    )
    assert bad_key.status_code == 401


async def test_status_moves_from_queued_to_ready_with_progress(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], run_jobs: Callable[[], Awaitable[None]]
) -> None:
    coach = await make_coach()
    doc = await upload(http, coach, BOOKS / "how-to-live-on-24-hours-a-day-arnold-bennett.pdf")
    assert doc["status"] == "queued"
    queued = (await http.get(f"/api/v1/documents/{doc['id']}", headers=coach.headers)).json()
    assert (queued["status"], queued["pages_done"], queued["chunks"]) == ("queued", 0, 0)
    await run_jobs()
    ready = (await http.get(f"/api/v1/documents/{doc['id']}", headers=coach.headers)).json()
    assert ready["status"] == "ready" and ready["error"] is None
    assert ready["pages"] == ready["pages_done"] == 42
    assert ready["chunks"] > 50


async def test_a_request_far_over_the_limit_is_refused_with_413(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach()
    body = b"x" * int((TEST_MAX_UPLOAD_MB * 2 + 1.5) * 1024 * 1024)
    response = await http.post("/api/v1/documents", headers=coach.headers, files={"file": ("big.txt", body)})
    assert response.status_code == 413
    assert response.json()["detail"]
    assert (await http.get("/api/v1/documents", headers=coach.headers)).json() == []


async def test_a_file_already_in_the_library_is_refused_naming_its_document(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], run_jobs: Callable[[], Awaitable[None]]
) -> None:
    """The same bytes twice would have every passage retrieved and cited twice: the second upload is a 409
    naming the document, and the library keeps one. Another coach's library, a failed document, a deleted one,
    and two uploads of one file at once (one of them refused) each behave as a coach would expect."""
    coach, other = await make_coach("Twice Coach"), await make_coach("Other Coach")
    notes = b"Notes on patience, kept for a slow week.\n" * 10
    first = await upload(http, coach, "patience-notes.txt", notes)
    again = await http.post("/api/v1/documents", headers=coach.headers, files={"file": ("copy.txt", notes)})
    assert again.status_code == 409
    assert "already in your library as “Patience Notes”" in again.json()["detail"]
    assert again.headers["location"] == f"/api/v1/documents/{first['id']}"
    assert [doc["id"] for doc in (await http.get("/api/v1/documents", headers=coach.headers)).json()] == [first["id"]]
    await upload(http, other, "patience-notes.txt", notes)  # each coach's library is their own

    broken = "Caf\u00e9 cr\u00e8me".encode("latin-1")
    failed = await upload(http, coach, "latin1.txt", broken)
    await run_jobs()
    assert (await http.get(f"/api/v1/documents/{failed['id']}", headers=coach.headers)).json()["status"] == "failed"
    await upload(http, coach, "latin1.txt", broken)  # a failed document does not hold its file back

    assert (await http.delete(f"/api/v1/documents/{first['id']}", headers=coach.headers)).status_code == 204
    await upload(http, coach, "patience-notes.txt", notes)

    plan = b"A plan for the week: one walk a day.\n" * 10
    both = await asyncio.gather(
        *(http.post("/api/v1/documents", headers=coach.headers, files={"file": ("plan.txt", plan)}) for _ in "ab")
    )
    assert sorted(response.status_code for response in both) == [202, 409]


async def test_a_document_processed_again_replaces_itself_once_ready_and_answers_meanwhile(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
    container: Container,
) -> None:
    """A document ingested before an extraction fix kept what the old extraction made of it. Processed again,
    its file becomes a new document that replaces it once ready; the original stays (and answers) until then,
    and stays for good when the new processing fails. While either is being processed, processing it again is a
    409; a file not kept (over the upload limit), or empty, is a 409 with the reason; another coach's is a 404. A
    failed original is processed again itself."""
    coach, other = await make_coach("Again Coach"), await make_coach("Other Again")
    h = coach.headers

    async def doc(document_id: str) -> httpx.Response:
        return await http.get(f"/api/v1/documents/{document_id}", headers=h)

    async def again(document_id: str, headers: dict[str, str] = h) -> httpx.Response:
        return await http.post(f"/api/v1/documents/{document_id}/reprocess", headers=headers)

    first = await upload(http, coach, "habits.txt", b"Small habits, repeated daily, compound.\n" * 30)
    assert (await again(first["id"])).status_code == 409  # still queued
    await run_jobs()
    before = (await doc(first["id"])).json()
    assert before["status"] == "ready" and before["chunks"] >= 1

    accepted = await again(first["id"])
    assert accepted.status_code == 202, accepted.text
    new_id = accepted.json()["id"]
    twice = await again(first["id"])
    assert twice.status_code == 409 and twice.headers["location"] == f"/api/v1/documents/{new_id}"
    assert "being processed again already" in twice.json()["detail"]
    assert (await again(new_id)).status_code == 409
    assert (await doc(new_id)).json()["replaces_id"] == first["id"]
    assert (await doc(first["id"])).json() == before, "the original answers until the new copy is ready"
    assert (await again(first["id"], other.headers)).status_code == 404

    await run_jobs()
    assert (await doc(first["id"])).status_code == 404
    replaced = (await doc(new_id)).json()
    assert (replaced["status"], replaced["chunks"], replaced["replaces_id"]) == ("ready", before["chunks"], first["id"])

    async def broken(self: IngestRun, *args: Any, **kwargs: Any) -> None:
        raise ExtractionError("the reader broke")

    with monkeypatch.context() as patched:
        patched.setattr(IngestRun, "run", broken)
        failed_id = (await again(new_id)).json()["id"]
        await run_jobs()
    assert (await doc(failed_id)).json()["status"] == "failed"
    assert (await doc(new_id)).json()["status"] == "ready", "a failure leaves the original as it was"
    # the failed copy processed again: once ready, every other copy of the file goes (one stays, not two)
    last_id = (await again(failed_id)).json()["id"]
    await run_jobs()
    listed = (await http.get("/api/v1/documents", headers=h)).json()
    assert [(d["id"], d["status"]) for d in listed] == [(last_id, "ready")]

    # the original deleted while its copy is processed: the copy goes too (it would bring the text back)
    copy_id = (await again(last_id)).json()["id"]
    assert (await http.delete(f"/api/v1/documents/{last_id}", headers=h)).status_code == 204
    assert (await doc(copy_id)).status_code == 404
    await run_jobs()
    assert (await http.get("/api/v1/documents", headers=h)).json() == []

    # a file uploaded again after its document failed: processing the failed one again would make two copies
    plan = b"A plan for the week: one walk a day.\n" * 10
    with monkeypatch.context() as patched:
        patched.setattr(IngestRun, "run", broken)
        gone = await upload(http, coach, "plan.txt", plan)
        await run_jobs()
    await upload(http, coach, "plan.txt", plan)
    await run_jobs()
    refused = await again(gone["id"])
    assert refused.status_code == 409 and "holds this file already" in refused.json()["detail"]

    # a failed original (nothing answers from it) is processed again itself: retries do not pile up failed rows
    notes = b"Notes on rest: sleep before midnight.\n" * 10
    with monkeypatch.context() as patched:
        patched.setattr(IngestRun, "run", broken)
        retried = await upload(http, coach, "rest.txt", notes)
        await run_jobs()
        for _ in range(2):
            accepted = await again(retried["id"])
            assert accepted.status_code == 202 and accepted.json()["id"] == retried["id"], accepted.text
            assert accepted.json()["status"] == "queued" and accepted.json().get("error") is None
            async with tenant_session(container.sessionmaker, uuid.UUID(coach.coach_id)) as session:
                row = await session.get(Document, uuid.UUID(retried["id"]))
                assert row is not None and row.started_at is None, "not started: a lost job is queued again"
            await run_jobs()
    assert (await again(retried["id"])).json()["id"] == retried["id"]
    await run_jobs()
    title = (await doc(retried["id"])).json()["title"]
    listed = (await http.get("/api/v1/documents", headers=h)).json()
    assert [(d["id"], d["status"]) for d in listed if d["title"] == title] == [(retried["id"], "ready")]

    huge = await upload(http, coach, "huge.txt", b"a" * int((TEST_MAX_UPLOAD_MB + 0.5) * 1024 * 1024))
    not_kept = await again(huge["id"])
    assert not_kept.status_code == 409 and "was not kept" in not_kept.json()["detail"]
    empty = await upload(http, coach, "empty.txt", b"")
    await run_jobs()
    nothing = await again(empty["id"])
    assert nothing.status_code == 409 and "is empty: there is nothing to read" in nothing.json()["detail"]


async def test_deleting_a_failed_copy_leaves_the_copy_processed_again_after_it(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ "Process again" on a ready document fails (copy C1), then is asked again (copy C2, queued): deleting C1
    deletes C1 alone (it deleted every copy of the file being processed, C2 too); C2 then replaces the original."""
    coach = await make_coach("Copies Coach")
    h = coach.headers
    original = await upload(http, coach, "focus.txt", b"Focus on one thing at a time.\n" * 30)
    await run_jobs()

    async def broken(self: IngestRun, *args: Any, **kwargs: Any) -> None:
        raise ExtractionError("the reader broke")

    with monkeypatch.context() as patched:
        patched.setattr(IngestRun, "run", broken)
        failed = (await http.post(f"/api/v1/documents/{original['id']}/reprocess", headers=h)).json()
        await run_jobs()
    second = (await http.post(f"/api/v1/documents/{original['id']}/reprocess", headers=h)).json()
    assert (await http.delete(f"/api/v1/documents/{failed['id']}", headers=h)).status_code == 204

    assert (await http.get(f"/api/v1/documents/{second['id']}", headers=h)).json()["status"] == "queued"
    await run_jobs()
    listed = (await http.get("/api/v1/documents", headers=h)).json()
    assert [(d["id"], d["status"]) for d in listed] == [(second["id"], "ready")]


async def test_a_copy_being_processed_again_is_not_retrieved_until_it_is_ready(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a document's copy is processed again, the original answers alone: the copy's committed chunks took
    slots beside the original's in both arms (and BM25 counted the file twice). A first ingestion's committed
    chunks still answer while it runs."""
    coach = await make_coach("Copy Coach")
    coach_id = uuid.UUID(coach.coach_id)
    doc = await upload(http, coach, "habits.txt", b"Small habits, repeated daily, compound over a year.\n" * 30)
    await run_jobs()

    async def unfinished(self: IngestRun, total: int, extracted: Any) -> bool:
        return True  # every chunk committed, the document never marked ready: a copy still being processed

    monkeypatch.setattr(IngestRun, "_finish", unfinished)
    copy = (await http.post(f"/api/v1/documents/{doc['id']}/reprocess", headers=coach.headers)).json()
    first = await upload(http, coach, "sleep.txt", b"Small habits of sleep: the same hour every night.\n" * 30)
    await run_jobs()
    query = "small habits"
    [vector] = await container.registry.local_embedder().embed([query])
    async with tenant_session(container.sessionmaker, coach_id) as session:
        ranked = await rank(
            session, coach_id, query=query, query_embedding=vector, embedding_model="all-MiniLM-L6-v2", n=50
        )
        found = set(ranked.dense) | set(ranked.lexical)
        documents = {str(d) for d in await session.scalars(select(Chunk.document_id).where(Chunk.id.in_(found)))}
        copies = await session.scalar(
            select(func.count()).select_from(Chunk).where(Chunk.document_id == uuid.UUID(copy["id"]))
        )
    assert copies, "the copy's chunks are committed"
    assert documents == {doc["id"], first["id"]}, "the original and a first ingestion under way answer; not the copy"


async def test_a_duplicate_run_that_fails_late_leaves_a_ready_document_ready(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """arq runs a job at least once: a second run of a document's ingestion that fails, or is cancelled, after the
    other run finished the document must not mark it failed, or queued, again."""
    coach = await make_coach("Twice Coach")
    doc = await upload(http, coach, "twice.txt", b"Run twice, finish once.\n" * 30)
    await run_jobs()
    url = f"/api/v1/documents/{doc['id']}"
    ready = (await http.get(url, headers=coach.headers)).json()
    assert ready["status"] == "ready"

    async def finished_meanwhile(self: IngestRun) -> int:
        return 0  # (the other run finished the document while this one read it)

    async def broken(self: IngestRun, *args: Any, **kwargs: Any) -> None:
        raise ExtractionError("the reader broke")

    async def cancelled(self: IngestRun, *args: Any, **kwargs: Any) -> None:
        raise asyncio.CancelledError

    monkeypatch.setattr(IngestRun, "start", finished_meanwhile)
    monkeypatch.setattr(IngestRun, "run", broken)
    await container.documents.ingest(uuid.UUID(coach.coach_id), uuid.UUID(doc["id"]))
    assert (await http.get(url, headers=coach.headers)).json() == ready
    monkeypatch.setattr(IngestRun, "run", cancelled)
    with pytest.raises(asyncio.CancelledError):
        await container.documents.ingest(uuid.UUID(coach.coach_id), uuid.UUID(doc["id"]))
    assert (await http.get(url, headers=coach.headers)).json() == ready
