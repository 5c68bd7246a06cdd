"""The arq worker: document ingestion (and, in later issues, memory and learning jobs).

Start with ``opencoach worker``; ``opencoach serve`` runs one alongside the web app. The worker refuses to
start on a database whose schema is not at the migrations' head.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker, func

from app.config import Settings
from app.container import Container
from app.db.migrate import assert_schema_current
from app.jobs import INGEST_DOCUMENT
from app.llm.registry import ProviderRegistry

log = logging.getLogger(__name__)

JOB_TIMEOUT_S = 3600
"""A 300-page PDF takes about a minute to extract and another to embed on 2 cores; leave ample room."""


async def ingest_document(ctx: dict[str, Any], coach_id: str, document_id: str) -> str:
    """arq job: ingest one document (idempotent). Returns the final status for arq's result store."""
    container: Container = ctx["container"]
    timings = await container.documents.ingest(uuid.UUID(coach_id), uuid.UUID(document_id))
    return "skipped" if timings is None else f"{timings.chunks} chunks"


def build_worker(
    settings: Settings,
    database_url: str,
    redis_url: str,
    *,
    burst: bool = False,
    registry: ProviderRegistry | None = None,
) -> Worker:
    """An arq ``Worker`` whose start-up builds the container and checks the schema version.

    ``burst=True`` processes the queue until it is empty, then returns (tests, one-off runs).
    """

    async def startup(ctx: dict[str, Any]) -> None:
        container = await Container.create(settings, database_url, redis_url, registry=registry)
        try:
            await assert_schema_current(container.engine)
        except RuntimeError:
            await container.close()
            raise
        ctx["container"] = container

    async def shutdown(ctx: dict[str, Any]) -> None:
        container: Container | None = ctx.get("container")
        if container is not None:
            await container.close()

    return Worker(
        functions=[func(ingest_document, name=INGEST_DOCUMENT, timeout=JOB_TIMEOUT_S, max_tries=3)],
        redis_settings=RedisSettings.from_dsn(redis_url),
        on_startup=startup,
        on_shutdown=shutdown,
        burst=burst,
        max_jobs=2,
        handle_signals=not burst,
        poll_delay=0.2,
    )
