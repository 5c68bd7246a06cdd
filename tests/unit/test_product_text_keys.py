""":data:`app.conversations.metadata.PRODUCT_TEXT_KEYS`, the keys by which episodes leave out the product's canned
messages, are the ones :attr:`ReplyMeta.not_ai_content` reads, and the migration that deleted such episodes wrote
them out alike."""

from __future__ import annotations

import pytest

from app.conversations.metadata import PRODUCT_TEXT_KEYS, ReplyMeta
from app.db.migrate import revision_module

VALUES = {"crisis": True, "notice": "handoff", "error": "timed out", "partial_reply": "Let's", "honesty": "asked",
          "injection": "leak"}  # fmt: skip


@pytest.mark.parametrize("key", PRODUCT_TEXT_KEYS)
def test_each_key_marks_a_message_that_is_not_the_models_answer(key: str) -> None:
    meta = ReplyMeta.from_json({key: VALUES[key]})
    assert meta.extra == {}, "a field ReplyMeta knows"
    assert meta.not_ai_content


def test_a_reply_of_the_model_carries_none_of_them() -> None:
    meta = ReplyMeta.from_json({"model": "gpt-4o-mini", "confidence_threshold": 0.5, "is_handback": True})
    assert not meta.not_ai_content and not set(meta.to_json()) & set(PRODUCT_TEXT_KEYS)


def test_migration_0064_deleted_the_episodes_of_the_same_keys() -> None:
    assert revision_module("0064").PRODUCT_TEXT_KEYS == PRODUCT_TEXT_KEYS
