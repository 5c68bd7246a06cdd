"""Tenancy: coach B can neither see nor touch coach A's data, through the API or in the database."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import httpx
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError

from app.accounts.models import Client
from app.accounts.models import Coach as CoachRow
from app.container import Container
from app.core.runtime import Services
from app.db.base import TENANT_TABLES, Base
from app.db.engine import assert_unprivileged, make_engine, tenant_session
from app.db.outbox import OutboxJob
from app.rag.models import Chunk, Document
from app.rag.retrieval import retrieve
from tests.conftest import Coach, make_client, upload
from tests.openai_wire import MOCK_ENDPOINT_SETTINGS, mock_chat_endpoint

NOTES = b"""# Anger at work

When a colleague annoys you, pause and breathe before you answer. Ask what they need.
Write down the trigger and your reaction in the evening journal.
"""


@pytest.fixture(scope="module")
async def two_coaches(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], run_jobs: Callable[[], Awaitable[None]]
) -> dict:
    """Coach A with a ready document, a client and a conversation; coach B with a client of its own."""
    a, b = await make_coach("Coach A"), await make_coach("Coach B")
    doc = await upload(http, a, "anger-notes.md", NOTES)
    await run_jobs()
    client_a = await make_client(http, a, "Client of A")
    assert (await http.patch("/api/v1/settings", headers=a.headers, json=MOCK_ENDPOINT_SETTINGS)).status_code == 200
    with mock_chat_endpoint(["Pause and breathe before you answer", " [1]."]):  # A's model cites A's passage
        turn = await http.post(
            "/api/v1/chat",
            headers={"Authorization": f"Bearer {client_a['widget_token']}"},
            json={"text": "A colleague annoys me, what should I do?"},
        )
    assert turn.status_code == 200
    cited = {c["document_id"] for c in turn.json()["citations"]}
    assert cited == {doc["id"]}, "A's client is answered from A's notes"
    client_b = await make_client(http, b, "Client of B")
    return {
        "a": a,
        "b": b,
        "doc": doc["id"],
        "client_a": client_a,
        "client_b": client_b,
        "conversation": turn.json()["conversation_id"],
    }


async def test_b_cannot_list_or_read_a_documents(http: httpx.AsyncClient, two_coaches: dict) -> None:
    b = two_coaches["b"]
    listed = await http.get("/api/v1/documents", headers=b.headers)
    assert listed.status_code == 200 and listed.json() == []
    read = await http.get(f"/api/v1/documents/{two_coaches['doc']}", headers=b.headers)
    assert read.status_code == 404


async def test_b_cannot_delete_a_document(http: httpx.AsyncClient, two_coaches: dict) -> None:
    response = await http.delete(f"/api/v1/documents/{two_coaches['doc']}", headers=two_coaches["b"].headers)
    assert response.status_code == 404
    still = await http.get(f"/api/v1/documents/{two_coaches['doc']}", headers=two_coaches["a"].headers)
    assert still.status_code == 200 and still.json()["status"] == "ready" and still.json()["chunks"] > 0


async def test_b_cannot_list_a_clients_or_conversations(http: httpx.AsyncClient, two_coaches: dict) -> None:
    b = two_coaches["b"]
    clients = (await http.get("/api/v1/clients", headers=b.headers)).json()
    assert [c["id"] for c in clients] == [two_coaches["client_b"]["id"]]
    assert (await http.get("/api/v1/conversations", headers=b.headers)).json() == []
    read = await http.get(f"/api/v1/conversations/{two_coaches['conversation']}", headers=b.headers)
    assert read.status_code == 404


async def test_b_client_cannot_write_into_a_conversation(http: httpx.AsyncClient, two_coaches: dict) -> None:
    response = await http.post(
        "/api/v1/chat",
        headers={"Authorization": f"Bearer {two_coaches['client_b']['widget_token']}"},
        json={"text": "hello", "conversation_id": two_coaches["conversation"]},
    )
    assert response.status_code == 404
    transcript = await http.get(
        f"/api/v1/conversations/{two_coaches['conversation']}", headers=two_coaches["a"].headers
    )
    assert all(msg["text"] != "hello" for msg in transcript.json()["messages"])


async def test_b_vector_search_never_returns_a_chunks(
    http: httpx.AsyncClient, two_coaches: dict, container: Container
) -> None:
    """B has no documents: B's client gets no citations, and even a query that forgets the tenant
    filter (asking for A's coach_id inside B's transaction) finds nothing, because RLS hides the rows."""
    response = await http.post(
        "/api/v1/chat",
        headers={"Authorization": f"Bearer {two_coaches['client_b']['widget_token']}"},
        json={"text": "A colleague annoys me, what should I do?"},
    )
    assert response.status_code == 200 and response.json()["citations"] == []

    a_id, b_id = uuid.UUID(two_coaches["a"].coach_id), uuid.UUID(two_coaches["b"].coach_id)
    [vector] = await container.registry.local_embedder().embed(["colleague annoys me"])
    async with tenant_session(container.sessionmaker, a_id) as session:
        own = await retrieve(
            session, a_id, query="colleague annoys", query_embedding=vector, embedding_model="all-MiniLM-L6-v2", k=3
        )
    assert own, "A's own search finds A's chunks"
    async with tenant_session(container.sessionmaker, b_id) as session:
        leaked = await retrieve(
            session, a_id, query="colleague annoys", query_embedding=vector, embedding_model="all-MiniLM-L6-v2", k=3
        )
    assert leaked == []


async def test_row_level_security_in_the_database(two_coaches: dict, container: Container) -> None:
    a_id, b_id = uuid.UUID(two_coaches["a"].coach_id), uuid.UUID(two_coaches["b"].coach_id)
    async with container.sessionmaker() as session:  # no tenant set: nothing visible
        assert await session.scalar(select(func.count()).select_from(Chunk)) == 0
        assert await session.scalar(select(func.count()).select_from(CoachRow)) == 0
    async with tenant_session(container.sessionmaker, b_id) as session:
        assert await session.scalar(select(func.count()).where(Chunk.coach_id == a_id)) == 0
        changed = await session.execute(
            update(Document).where(Document.id == uuid.UUID(two_coaches["doc"])).values(title="hijacked")
        )
        assert changed.rowcount == 0
    with pytest.raises(DBAPIError, match="row-level security"):
        async with tenant_session(container.sessionmaker, b_id) as session:
            session.add(Client(coach_id=a_id, name="planted", widget_token_hash="x" * 64, widget_token_encrypted=b"x"))
    async with tenant_session(container.sessionmaker, a_id) as session:
        assert await session.scalar(select(func.count()).where(Chunk.coach_id == a_id)) > 0


async def test_app_role_cannot_bypass_rls(services: Services, container: Container) -> None:
    async with container.engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"))
        ).one()
    assert (row.rolsuper, row.rolbypassrls) == (False, False)
    # the outbox holds job names and ids only, and its relay reads across tenants (see app.db.outbox)
    tenant_owned = {t.name for t in Base.metadata.tables.values() if "coach_id" in t.c} - {OutboxJob.__tablename__}
    assert tenant_owned == set(TENANT_TABLES), "every table with coach_id must be under RLS"
    owner = make_engine(services.migration_database_url, pool_size=1)
    try:
        with pytest.raises(RuntimeError, match="bypasses row-level security"):
            await assert_unprivileged(owner)
        async with owner.connect() as conn:
            forced = (
                await conn.execute(
                    text(
                        "SELECT relname FROM pg_class WHERE relname = ANY(:tables) "
                        "AND relrowsecurity AND relforcerowsecurity"
                    ),
                    {"tables": [*TENANT_TABLES, "coaches"]},
                )
            ).scalars()
            assert sorted(forced) == sorted([*TENANT_TABLES, "coaches"])
    finally:
        await owner.dispose()
