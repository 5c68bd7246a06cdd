"""Enqueueing background jobs on arq. Jobs take ids, never ORM objects; enqueue only after commit."""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis

INGEST_DOCUMENT = "ingest_document"


class JobQueue:
    """Thin, typed front of the arq pool so services name jobs in one place."""

    def __init__(self, redis: ArqRedis) -> None:
        self.redis = redis

    async def ingest_document(self, coach_id: uuid.UUID, document_id: uuid.UUID) -> None:
        """Queue extraction → chunking → embedding → storage of one document (idempotent job)."""
        await self.redis.enqueue_job(INGEST_DOCUMENT, str(coach_id), str(document_id))
