"""A reply queues L3 extraction only once INSIGHT_BATCH client messages are unread: before that the job would
only answer "waiting" (app.memory.insights.extraction_due), so the turn spares the worker the job."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import respx
from arq.constants import default_queue_name

from app.container import Container
from app.db.jobs import EXTRACT_INSIGHTS
from app.memory.insights import INSIGHT_BATCH
from tests.integration.chat.test_turn_stages import model
from tests.integration.handoff.test_handoff_flow import Setup, chat, new_setup

__all__ = ["model", "new_setup"]

MESSAGES = (
    "I want to sleep better before my exams.",
    "My manager keeps moving my deadlines.",
    "I started running twice a week, it helps.",
    "My sister visits next month and I am nervous about it.",
    "Cooking at home saves me money.",
)


async def test_extraction_is_queued_from_the_batch_th_unread_client_message_on(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    model: respx.MockRouter,
    container: Container,
) -> None:
    setup = await new_setup("Batch Coach")
    conversation_id, queued = None, []
    for text in MESSAGES[: INSIGHT_BATCH + 1]:
        body = await chat(http, setup, text, conversation_id)
        assert body["reply"] == "Start with one task.", body
        conversation_id = body["conversation_id"]
        job_id = f"{EXTRACT_INSIGHTS}:{body['message_id']}:False"
        queued.append(await container.redis.zscore(default_queue_name, job_id) is not None)

    assert queued == [False] * (INSIGHT_BATCH - 1) + [True, True]  # no run has moved the watermark yet
