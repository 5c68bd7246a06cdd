"""The response cache's key: what must change it (persona, model, version, epoch, temperature, any prompt
text) and what must not (whitespace, Unicode compatibility forms)."""

from __future__ import annotations

import uuid
from typing import Any

from app.learning.cache import ResponseCache, normalise
from app.llm.base import ChatMessage

COACH = uuid.UUID("2b1f7c9e-0a4d-4e55-8c2a-9d3e6f1a0b77")
PROMPT: list[ChatMessage] = [
    {"role": "system", "content": "You are Kim, a coach.\n\nWhat you remember: likes short answers."},
    {"role": "user", "content": "How do I start?"},
]


def key(**changes: Any) -> str:
    args: dict[str, Any] = {
        "coach_id": COACH,
        "cache_epoch": 0,
        "model": "gpt-4o-mini",
        "model_version_id": None,
        "persona": "You are Kim, a coach.",
        "temperature": 0.3,
        "messages": PROMPT,
    }
    return ResponseCache.key(**(args | changes))


def test_the_key_is_scoped_to_the_coach_and_stable() -> None:
    assert key() == key() and key().startswith(f"opencoach:response-cache:{COACH}:")
    assert key(coach_id=uuid.uuid4()) != key()


def test_whitespace_and_compatibility_forms_do_not_change_the_key() -> None:
    spaced: list[ChatMessage] = [
        {"role": "system", "content": "You are Kim,  a coach.\n\n\nWhat you remember: likes short answers. "},
        {"role": "user", "content": " How do I\tstart?"},
    ]
    assert key(messages=spaced) == key()
    assert normalise("ﬁne\u00a0day") == "fine day"


def test_persona_model_version_epoch_temperature_and_prompt_change_the_key() -> None:
    other_memory: list[ChatMessage] = [
        {"role": "system", "content": "You are Kim, a coach.\n\nWhat you remember: training for a marathon."},
        PROMPT[1],
    ]
    changed = {
        key(persona="You are Kim, a warm coach."),
        key(model="ft:gpt-4o-mini:acme::1"),
        key(model_version_id=str(uuid.uuid4())),
        key(cache_epoch=1),
        key(temperature=0.9),
        key(messages=other_memory),  # another client's memory: never the same entry
        key(messages=[PROMPT[0], {"role": "user", "content": "How do I START?"}]),
    }
    assert len(changed) == 7 and key() not in changed
