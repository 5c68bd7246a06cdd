"""Each route's request body limit (``app.auth.BODY_MAX_BYTES`` unless it sets its own) takes the largest body a
coach or client may legitimately send it: every field at its longest, in the costliest encoding a client may use
(JSON escapes of Python's ``json.dumps``: 12 bytes an emoji; a browser form: 9 bytes a CJK character, 12 an
emoji). A new field or a longer maximum that outgrows a limit fails here."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from litestar import Litestar

from app.accounts.tone import MAX_DESCRIPTION_CHARS, MAX_INSTRUCTION_CHARS, MAX_LABEL_CHARS, MAX_MODES
from app.asgi import create_app
from app.auth import BODY_MAX_BYTES
from app.chat.turn.intake import MAX_MESSAGE_CHARS
from app.conversations.service import MAX_FEEDBACK_CHARS
from app.core.config import Settings
from app.handoff.actions import MAX_COACH_MESSAGE_CHARS
from app.learning.experiments import MAX_VARIANT_NAME_CHARS, MAX_VARIANT_PERSONA_CHARS, MAX_VARIANTS
from app.memory.profile import PROFILE_LIST_MAX, PROFILE_LISTS

EMOJI, HAN = "😀", "漢"
"""12 bytes as a JSON escape or percent-encoded / 6 as a JSON escape, 9 percent-encoded."""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Litestar:
    """The app as served (nothing connects until it starts)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("limits"))
    return create_app(settings, "postgresql+asyncpg://opencoach@127.0.0.1/none", "redis://127.0.0.1:1/0")


def limit(app: Litestar, method: str, path: str) -> int:
    """The body limit of the route that answers ``method path``."""
    [handler] = [
        h for route in app.routes if route.path == path for h in getattr(route, "route_handlers", [])
        if method in h.http_methods
    ]  # fmt: skip
    value = handler.resolve_request_max_body_size()
    assert value is not None
    return value


def modes(text: str) -> list[dict[str, Any]]:
    return [
        {"key": f"mode-{n}", "label": text * MAX_LABEL_CHARS, "description": text * MAX_DESCRIPTION_CHARS,
         "instruction": text * MAX_INSTRUCTION_CHARS, "most_intense": n == 0}
        for n in range(MAX_MODES)
    ]  # fmt: skip


LONGEST: list[tuple[str, str, bytes]] = [
    ("POST", "/api/v1/chat", json.dumps({"text": EMOJI * MAX_MESSAGE_CHARS, "client_message_id": "x" * 100}).encode()),
    ("POST", "/api/v1/conversations/{conversation_id:str}/messages", json.dumps({"text": EMOJI * 4000}).encode()),
    ("POST", "/dashboard/conversations/{conversation_id:str}/messages",
     urlencode({"text": EMOJI * MAX_COACH_MESSAGE_CHARS, "_csrf_token": "x" * 100}).encode()),
    ("POST", "/api/v1/messages/{message_id:str}/feedback",
     json.dumps({"rating": "down", "text": EMOJI * MAX_FEEDBACK_CHARS}).encode()),
    ("PUT", "/api/v1/tone", json.dumps({"min": 1, "max": 6, "default": 3, "modes": modes(EMOJI)}).encode()),
    ("POST", "/dashboard/settings/tone", urlencode(
        {f"mode_{field}_{n}": str(mode[field]) for n, mode in enumerate(modes(EMOJI)) for field in mode}
    ).encode()),
    ("POST", "/api/v1/learning/experiments", json.dumps({
        "name": HAN * 200, "metric": "thumbs_up_rate",
        "variants": [{"name": EMOJI * MAX_VARIANT_NAME_CHARS, "persona": EMOJI * MAX_VARIANT_PERSONA_CHARS,
                      "model": "m" * 200, "temperature": 0.7}] * MAX_VARIANTS,
    }).encode()),
    ("PATCH", "/api/v1/clients/{client_id:str}/memory/profile",
     json.dumps(dict.fromkeys(PROFILE_LISTS, [EMOJI * 300] * PROFILE_LIST_MAX) | {"tone": EMOJI * 200}).encode()),
    ("POST", "/dashboard/clients/{client_id:str}/profile", urlencode(
        dict.fromkeys(PROFILE_LISTS, "\r\n".join([EMOJI * 300] * PROFILE_LIST_MAX)) | {"tone": EMOJI * 200}
    ).encode()),
]  # fmt: skip
"""``(method, route, body)``: the largest legitimate body of each route that takes free text."""


@pytest.mark.parametrize(("method", "path", "body"), LONGEST, ids=[f"{m} {p}" for m, p, _ in LONGEST])
def test_the_largest_legitimate_body_fits_the_routes_limit(app: Litestar, method: str, path: str, body: bytes) -> None:
    assert len(body) <= limit(app, method, path)


def test_only_the_routes_that_need_more_take_more_than_the_default(app: Litestar, tmp_path: Path) -> None:
    larger = {
        (method, route.path)
        for route in app.routes
        for handler in getattr(route, "route_handlers", [])
        for method in handler.http_methods
        if (handler.resolve_request_max_body_size() or math.inf) > BODY_MAX_BYTES
    }
    assert larger == {
        ("PATCH", "/api/v1/settings"),
        ("POST", "/dashboard/settings"),
        ("PUT", "/api/v1/tone"),
        ("POST", "/dashboard/settings/tone"),
        ("POST", "/api/v1/learning/experiments"),
        ("PATCH", "/api/v1/clients/{client_id:str}/memory/profile"),
        ("POST", "/dashboard/clients/{client_id:str}/profile"),
        ("PUT", "/api/v1/settings/widget-avatar"),
        ("POST", "/dashboard/settings/widget-avatar"),
        ("POST", "/api/v1/telegram/webhook/{coach_id:str}"),
        ("POST", "/api/v1/documents"),
        ("POST", "/dashboard/documents"),
    }
    upload_mb = Settings(data_dir=tmp_path).max_upload_mb
    assert limit(app, "POST", "/api/v1/documents") == limit(app, "POST", "/dashboard/documents")
    assert limit(app, "POST", "/api/v1/documents") == int((upload_mb * 2 + 1) * 1024 * 1024)
