"""Text with a NUL character (U+0000), which PostgreSQL cannot store in text or jsonb: a 400 with a JSON message
and nothing stored, on every route that writes text (found by the Schemathesis run; a 500 before)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import Coach, make_client

NUL = "a\u0000b"
SETTINGS_FIELDS: dict[str, Any] = {
    "name": NUL,
    "persona": NUL,
    "llm_model": NUL,
    "judge_model": NUL,
    "fine_tune_base_model": NUL,
    "alert_email": f"{NUL}@example.com",
    "high_stakes_topics": [NUL],
    "crisis_resources": [NUL],
}


def assert_nul_refused(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == "text must not contain the NUL character (U+0000)"


@pytest.mark.parametrize("field", sorted(SETTINGS_FIELDS))
async def test_settings_with_a_nul_character_are_refused_and_nothing_changes(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], field: str
) -> None:
    coach = await make_coach("Nul settings")
    before = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    response = await http.patch(
        "/api/v1/settings", headers=coach.headers, json={"persona": "kept?", field: SETTINGS_FIELDS[field]}
    )
    assert_nul_refused(response)
    assert (await http.get("/api/v1/settings", headers=coach.headers)).json() == before


async def test_a_client_name_with_a_nul_character_is_refused_and_no_client_is_created(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Nul client")
    assert_nul_refused(await http.post("/api/v1/clients", headers=coach.headers, json={"name": NUL}))
    assert (await http.get("/api/v1/clients", headers=coach.headers)).json() == []


async def test_signup_with_a_nul_character_is_refused_and_creates_no_account(http: httpx.AsyncClient) -> None:
    body = {"coach_name": NUL, "email": "nul-signup@example.com", "password": "correct horse battery"}
    assert_nul_refused(await http.post("/api/v1/auth/signup", json=body))
    body["coach_name"] = "Clean"
    assert (await http.post("/api/v1/auth/signup", json=body)).status_code == 201  # the e-mail was not taken


async def test_a_chat_message_with_a_nul_character_is_refused_and_not_stored(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Nul chat")
    await http.patch("/api/v1/settings", headers=coach.headers, json={"handoff_mode": "human_only"})
    client = await make_client(http, coach)
    widget = {"Authorization": f"Bearer {client['widget_token']}"}
    assert_nul_refused(await http.post("/api/v1/chat", headers=widget, json={"text": NUL}))
    assert (await http.get("/api/v1/conversations", headers=coach.headers)).json() == []


async def test_a_client_message_id_with_a_nul_character_is_refused_and_not_stored(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    coach = await make_coach("Nul message id")
    client = await make_client(http, coach)
    widget = {"Authorization": f"Bearer {client['widget_token']}"}
    response = await http.post("/api/v1/chat", headers=widget, json={"text": "hi", "client_message_id": NUL})
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == "client_message_id must not contain the NUL character (U+0000)"
    assert (await http.get("/api/v1/conversations", headers=coach.headers)).json() == []


async def test_a_socket_message_with_a_nul_character_is_refused_and_the_socket_keeps_working(
    base_url: str, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """The widget's socket has no HTTP error handler: the database's error closed it (code 4500) before the
    text was checked at intake, and the widget, reconnecting, would send the message again and again."""
    coach = await make_coach("Nul socket")
    await http.patch("/api/v1/settings", headers=coach.headers, json={"handoff_mode": "human_only"})
    client = await make_client(http, coach)
    url = base_url.replace("http://", "ws://") + f"/ws/chat?token={client['widget_token']}"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"text": NUL, "client_message_id": "m-1"}))
        assert json.loads(await ws.recv()) == {
            "type": "error",
            "message": "text must not contain the NUL character (U+0000)",
            "code": "nul",  # (the widget shows refused_nul in the page's language)
            "fields": {},
            "client_message_id": "m-1",
        }
        await ws.send(json.dumps({"text": "a clean one", "client_message_id": "m-2"}))
        ack = json.loads(await ws.recv())
    assert ack["type"] == "ack" and ack["client_message_id"] == "m-2", ack
    [conversation] = (await http.get("/api/v1/conversations", headers=coach.headers)).json()
    transcript = (await http.get(f"/api/v1/conversations/{conversation['id']}", headers=coach.headers)).json()
    assert [m["text"] for m in transcript["messages"] if m["sender_type"] == "client"] == ["a clean one"]
