"""Long lists read a page at a time: the cost of a page against the cost of the whole list, on a tenant with many
clients and a client with a long conversation.

One coach gets ``--clients`` clients (default 100,000) and one conversation of ``--messages`` messages (default
20,000: a client writing ten messages a day for five years and more), bulk-inserted. Each row is timed ``--runs``
times (each in a unit of work of its own, the list's rows loaded as the app loads them: ORM objects), p50/p95:

- the coach's clients: all of them in one list (what ``GET /api/v1/clients`` and the Clients page read before
  keyset pagination), the first page of 50, a page halfway down (a cursor at the 50,000th client: as fast as the
  first), and the first page of two name searches: a rare name (the trigram index finds it) and a fragment of
  every name (read newest first until the page is full);
- the conversation's messages: the whole transcript (what the widget's chat page and the coach's transcript
  and ``GET /api/v1/conversations/{id}`` loaded before), the last page (what the widget and the dashboard load
  now), a page halfway back;
- the long talker's memory (``--sessions`` summarised sessions, ``--insights`` insights): all of it (what the
  handoff brief, an intervention's context and the memory views read before), every insight with the newest
  page of sessions (the memory views now) and the digest the brief and interventions read now
  (:meth:`app.memory.controls.MemoryControls.digest`);
- over HTTP on loopback, as a client meets it: the widget's chat page (``/w/chat``) and one "Earlier messages"
  page, and the API's transcript (its first page of messages).

Run from the project root (about two minutes on two cores)::

    .venv/bin/python bench/pages.py
    .venv/bin/python bench/pages.py --clients 20000 --messages 5000 --runs 10
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from harness import analysed, bench_app, console, print_table, timed
from rich.table import Table
from sqlalchemy import select, text

from app.accounts.api_keys import issue_api_key
from app.accounts.models import Client
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.asgi import create_app
from app.container import Container
from app.conversations.models import Message
from app.core.pagination import EVERY_ROW, Keyset, PageRequest
from app.core.runtime import serve_in_background
from app.handoff.brief import BRIEF_INSIGHTS
from app.llm.base import EMBEDDING_DIMENSIONS

T0 = datetime(2021, 1, 1, tzinfo=UTC)
SAME_VECTOR = "CAST(array_fill(CAST(0.05 AS real), ARRAY[CAST(:dims AS int)]) AS vector)"
"""One 384-d vector for every seeded row (``:dims``): reading a vector costs the same whatever its values."""
MINUTE = timedelta(minutes=1)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100_000, help="clients of the coach (default 100,000)")
    parser.add_argument("--messages", type=int, default=20_000, help="messages of the long conversation")
    parser.add_argument("--sessions", type=int, default=2_000, help="summarised sessions of the long talker")
    parser.add_argument("--insights", type=int, default=1_000, help="insights about the long talker")
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each row (default 20)")
    return parser.parse_args()


async def populate(
    container: Container, coach_id: uuid.UUID, clients: int, messages: int, sessions: int, insights: int
) -> tuple[uuid.UUID, uuid.UUID, str]:
    """``clients`` clients a minute apart and, for the newest one (with a widget token), one conversation of
    ``messages`` messages a minute apart, client and AI in turn, ``sessions`` summarised sessions of it a day
    apart and ``insights`` active insights (each with a 384-d vector, as the jobs store them), then waits for
    autovacuum to analyse them (:func:`analysed`); returns the client's and the conversation's ids and the token."""
    since = datetime.now(UTC)
    async with unit_of_work(container.sessionmaker, coach_id) as uow:
        await uow.session.execute(
            text(
                "INSERT INTO clients (id, coach_id, name, created_at) SELECT gen_random_uuid(), :coach, "
                "'client ' || g, CAST(:t0 AS timestamptz) + g * interval '1 minute' FROM generate_series(1, :n) AS g"
            ),
            {"coach": coach_id, "t0": T0, "n": clients},
        )
        client, token = await container.accounts.create_client(uow, "Long talker")
        conversation_id = uuid.uuid4()
        await uow.session.execute(
            text(
                "INSERT INTO conversations (id, coach_id, client_id, channel) VALUES (:id, :coach, :client, 'widget')"
            ),
            {"id": conversation_id, "coach": coach_id, "client": client.id},
        )
        await uow.session.execute(
            text(
                "INSERT INTO messages (id, coach_id, conversation_id, sender_type, text, citations, metadata, "
                "created_at) SELECT gen_random_uuid(), :coach, :conversation, "
                "CASE WHEN g % 2 = 0 THEN 'client' ELSE 'ai' END, 'message ' || g, '[]', '{}', "
                "CAST(:t0 AS timestamptz) + g * interval '1 minute' FROM generate_series(1, :n) AS g"
            ),
            {"coach": coach_id, "conversation": conversation_id, "t0": T0, "n": messages},
        )
        vector = {"dims": EMBEDDING_DIMENSIONS}
        await uow.session.execute(
            text(
                "INSERT INTO chat_sessions (id, coach_id, client_id, conversation_id, status, started_at, "
                "last_message_at, ended_at, message_count, summary, summary_attempts, source_message_ids, embedding, "
                "embedding_model) SELECT gen_random_uuid(), :coach, :client, :conversation, 'summarized', "
                "CAST(:t0 AS timestamptz) + g * interval '1 day', CAST(:t0 AS timestamptz) + g * interval '1 day', "
                "CAST(:t0 AS timestamptz) + g * interval '1 day', 10, jsonb_build_object('summary', repeat("
                "'They talked about sleep and work. ', 20), 'topics', jsonb_build_array('sleep', 'work')), 1, "
                "'{}', " + SAME_VECTOR + ", 'bench' FROM generate_series(1, :n) AS g"
            ),
            {"coach": coach_id, "client": client.id, "conversation": conversation_id, "t0": T0, "n": sessions} | vector,
        )
        await uow.session.execute(
            text(
                "INSERT INTO insights (id, coach_id, client_id, kind, text, importance, status, mentions, "
                "source_message_ids, first_seen_at, last_seen_at, edited_by_coach, embedding, embedding_model) "
                "SELECT gen_random_uuid(), :coach, :client, 'goal', 'wants to sleep before midnight ' || g, g % 11, "
                "'active', 1, '{}', CAST(:t0 AS timestamptz) + g * interval '1 hour', "
                "CAST(:t0 AS timestamptz) + g * interval '1 hour', false, " + SAME_VECTOR + ", 'bench' "
                "FROM generate_series(1, :n) AS g"
            ),
            {"coach": coach_id, "client": client.id, "t0": T0, "n": insights} | vector,
        )
    await analysed(container, coach_id, ("clients", "messages", "chat_sessions", "insights"), since)
    return client.id, conversation_id, token


async def measure(args: argparse.Namespace) -> list[tuple[str, dict[str, float]]]:
    """Every row of the table, in order."""
    results: list[tuple[str, dict[str, float]]] = []
    async with bench_app() as (container, coach_id):
        clients, messages, runs = args.clients, args.messages, args.runs
        with console.status(f"Storing {clients:,} clients and {messages:,} messages, waiting for autovacuum…"):
            client_id, conversation_id, token = await populate(
                container, coach_id, clients, messages, args.sessions, args.insights
            )

        def in_unit(read: Callable[[UnitOfWork], Awaitable[int]]) -> Callable[[], Awaitable[int]]:
            async def call() -> int:
                async with unit_of_work(container.sessionmaker, coach_id) as uow:
                    return await read(uow)

            return call

        async def every_client(uow: UnitOfWork) -> int:  # the list as it was read before pagination
            stmt = select(Client).where(Client.coach_id == coach_id).order_by(Client.created_at.desc())
            return len((await uow.session.scalars(stmt)).all())

        async def client_page(uow: UnitOfWork, page: PageRequest, name: str = "") -> int:
            return len((await container.accounts.list_clients(uow, page, name_contains=name)).items)

        async def whole_transcript(uow: UnitOfWork) -> int:  # the transcript as it was read before pagination
            stmt = select(Message).where(Message.conversation_id == conversation_id).order_by(Message.created_at)
            return len((await uow.session.scalars(stmt)).all())

        async def memory(uow: UnitOfWork, sessions: PageRequest) -> int:
            found = await container.memory.client_memory(uow.session, coach_id, client_id, sessions)
            return len(found.insights) + len(found.summaries)

        async def digest(uow: UnitOfWork) -> int:
            found = await container.memory.digest(uow.session, coach_id, client_id, insights=BRIEF_INSIGHTS)
            return len(found.insights) + (found.last_summary is not None)

        async def transcript_page(uow: UnitOfWork, page: PageRequest) -> int:
            return len((await container.conversations.history(uow, conversation_id, page))[1].items)

        halfway_client = Keyset(T0 + (clients // 2) * MINUTE, uuid.UUID(int=0))  # the rows older than the middle one
        halfway_message = Keyset(T0 + (messages // 2) * MINUTE, uuid.UUID(int=0))
        rows: list[tuple[str, Callable[[], Awaitable[int]], int]] = [
            ("clients: every one (the list before)", in_unit(every_client), max(3, runs // 4)),
            ("clients: first page", in_unit(lambda uow: client_page(uow, PageRequest())), runs),
            ("clients: page halfway down", in_unit(lambda uow: client_page(uow, PageRequest(halfway_client))), runs),
            (
                "clients: name search, first page",
                in_unit(lambda uow: client_page(uow, PageRequest(), "client 4242")),
                runs,
            ),
            (
                "clients: search matching every name, first page",
                in_unit(lambda uow: client_page(uow, PageRequest(), "lient")),
                runs,
            ),
            ("transcript: whole (the chat pages before)", in_unit(whole_transcript), max(3, runs // 4)),
            ("transcript: last page (now)", in_unit(lambda uow: transcript_page(uow, PageRequest())), runs),
            (
                "transcript: page halfway back",
                in_unit(lambda uow: transcript_page(uow, PageRequest(halfway_message))),
                runs,
            ),
            (
                "memory: every insight and session (the brief and the memory views before)",
                in_unit(lambda uow: memory(uow, EVERY_ROW)),
                max(3, runs // 4),
            ),
            (
                "memory: every insight, a page of sessions (the memory views now)",
                in_unit(lambda uow: memory(uow, PageRequest())),
                runs,
            ),
            ("memory: the digest (handoff brief, intervention)", in_unit(digest), runs),
        ]
        for label, call, n in rows:
            with console.status(f"Timing {label}…"):
                results.append((label, await timed(n, call)))
        async with unit_of_work(container.sessionmaker, coach_id) as uow:
            _, api_key = await issue_api_key(uow.session, coach_id, "bench")
        results += await measure_http(container, conversation_id, token, api_key, runs)
    return results


async def measure_http(
    container: Container, conversation_id: uuid.UUID, token: str, api_key: str, runs: int
) -> list[tuple[str, dict[str, float]]]:
    """The widget's chat page and one earlier page (the widget session of ``token``), and the API's transcript,
    its first page (``api_key``), over HTTP on loopback."""
    app = create_app(container.settings, container.database_url, container.redis_url, registry=container.registry)
    async with serve_in_background(app) as url, httpx.AsyncClient(base_url=url, timeout=120) as http:
        (await http.get(f"/w/{token}", follow_redirects=True)).raise_for_status()  # the widget session's cookie

        async def chat_page() -> int:
            response = await http.get("/w/chat")
            response.raise_for_status()
            return response.text.count('<div class="msg ')

        async def earlier_page() -> int:
            response = await http.get(f"/api/v1/widget/conversations/{conversation_id}/history")
            response.raise_for_status()
            return len(response.json())

        async def api_transcript() -> int:
            auth = {"Authorization": f"Bearer {api_key}"}
            response = await http.get(f"/api/v1/conversations/{conversation_id}", headers=auth)
            response.raise_for_status()
            return len(response.json()["messages"])

        calls = (
            ("HTTP: the API's transcript (GET /api/v1/conversations/{id})", api_transcript, runs),
            ("HTTP: widget chat page (/w/chat)", chat_page, runs),
            ("HTTP: an 'Earlier messages' page", earlier_page, runs),
        )
        results = []
        for label, call, n in calls:
            with console.status(f"Timing {label}…"):
                results.append((label, await timed(n, call)))
    return results


def render(results: list[tuple[str, dict[str, Any]]], args: argparse.Namespace) -> Table:
    table = Table(
        title=f"Lists a page at a time: {args.clients:,} clients, a conversation of {args.messages:,} messages, "
        f"{args.sessions:,} sessions and {args.insights:,} insights"
    )
    for column in ("list", "rows", "p50 ms", "p95 ms"):
        table.add_column(column, justify="left" if column == "list" else "right")
    for label, row in results:
        table.add_row(label, f"{row['rows']:,}", f"{row['p50']:.1f}", f"{row['p95']:.1f}")
    return table


async def main() -> None:
    args = parse_args()
    results = await measure(args)
    print_table(render(results, args))


if __name__ == "__main__":
    asyncio.run(main())
