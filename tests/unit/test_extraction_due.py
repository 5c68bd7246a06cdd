"""When the turn queues L3 extraction (app.memory.insights.extraction_due): once INSIGHT_BATCH client messages
are unread (after the watermark, not forgotten), or when the messages read may not reach the watermark."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.conversations.models import Message, SenderType
from app.memory.insights import INSIGHT_BATCH, extraction_due

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _messages(*senders: str, forgotten: int | None = None) -> list[Message]:
    return [
        Message(
            sender_type=sender,
            text=f"message {i}",
            created_at=START + timedelta(minutes=i),
            forgotten_at=START if i == forgotten else None,
        )
        for i, sender in enumerate(senders)
    ]


def test_the_batch_th_unread_client_message_makes_extraction_due() -> None:
    client, ai = SenderType.CLIENT, SenderType.AI
    one_short = _messages(*[client, ai] * (INSIGHT_BATCH - 1))
    assert not extraction_due(one_short, None, reaches_watermark=True)
    assert extraction_due([*one_short, *_messages(client)], None, reaches_watermark=True)


def test_messages_before_the_watermark_and_forgotten_ones_do_not_count() -> None:
    latest = _messages(*[SenderType.CLIENT] * (INSIGHT_BATCH + 1), forgotten=INSIGHT_BATCH)
    assert extraction_due(latest, None, reaches_watermark=True)
    assert not extraction_due(latest, START, reaches_watermark=True)  # message 0 was read by the last run


def test_a_window_that_may_miss_unread_messages_leaves_the_decision_to_the_job() -> None:
    latest = _messages(SenderType.CLIENT)
    assert extraction_due(latest, None, reaches_watermark=False)
