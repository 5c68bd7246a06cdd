"""The chat turn over REST and WebSocket, with the real local LLM and embedder."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from app.conversations.metadata import client_citations
from app.core.runtime import WS_MAX_MESSAGE_BYTES
from tests.cited import assert_cites_only_what_it_draws_on
from tests.conftest import ReadyCoach, ws_turn

QUESTION = "How should I deal with people who annoy me?"


async def test_rest_turn_cites_meditations_and_persists_both_messages(
    http: httpx.AsyncClient, meditations_coach: ReadyCoach
) -> None:
    auth = {"Authorization": f"Bearer {meditations_coach.widget_token}"}
    response = await http.post("/api/v1/chat", headers=auth, json={"text": QUESTION})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reply"].strip()
    # whether the model's reply draws on a passage is the model's: what it cites, it draws on (the positive case,
    # a reply citing the material, is the stub-model tests')
    await assert_cites_only_what_it_draws_on(http, meditations_coach.widget_token, body["reply"], body["citations"])
    for citation in body["citations"]:
        assert citation["document_id"] == meditations_coach.document_id
        assert 1 <= citation["page"] <= 162
        # the retrieval score stays the coach's (it feeds the confidence the client must not probe); the book
        # labels its pages (front matter in roman numerals, then 1 from its 11th page): the label is cited
        assert set(citation) == {"document_id", "title", "page", "chunk_id", "locator", "markers", "chunk_ids"}
    assert "provider" not in body["metadata"] and "model" not in body["metadata"], "attribution is the coach's"

    conversation = await http.get(
        f"/api/v1/conversations/{body['conversation_id']}", headers=meditations_coach.coach.headers
    )
    assert conversation.status_code == 200
    messages = conversation.json()["messages"]
    assert [m["sender_type"] for m in messages] == ["client", "ai"]
    assert messages[0]["text"] == QUESTION
    assert messages[1]["id"] == body["message_id"]
    assert client_citations(messages[1]["citations"]) == body["citations"]  # the client's view: one per page
    assert all(0 < c["score"] <= 1 for c in messages[1]["citations"])
    meta = messages[1]["metadata"]
    assert meta["provider"] == "local" and "SmolLM2" in meta["model"]
    assert meta["completion_tokens"] > 0 and meta["prompt_tokens"] > 0
    assert meta["generation_ms"] > 0


async def test_follow_up_turn_uses_history(http: httpx.AsyncClient, meditations_coach: ReadyCoach) -> None:
    auth = {"Authorization": f"Bearer {meditations_coach.widget_token}"}
    first = (await http.post("/api/v1/chat", headers=auth, json={"text": "I keep getting angry at work."})).json()
    second = await http.post(
        "/api/v1/chat",
        headers=auth,
        json={"text": "What can I do about it?", "conversation_id": first["conversation_id"]},
    )
    assert second.status_code == 200
    assert second.json()["conversation_id"] == first["conversation_id"]
    conversation = await http.get(
        f"/api/v1/conversations/{first['conversation_id']}", headers=meditations_coach.coach.headers
    )
    assert conversation.json()["messages"][-1]["metadata"]["history_messages"] == 2


async def test_websocket_streams_tokens_then_done(
    base_url: str, http: httpx.AsyncClient, meditations_coach: ReadyCoach
) -> None:
    *token_events, event = await ws_turn(base_url, meditations_coach.widget_token, QUESTION)
    assert event["type"] == "done", event
    tokens = [e["text"] for e in token_events]
    assert len(tokens) > 1, "the reply must arrive streamed, in several pieces"
    streamed = "".join(tokens).strip()
    # a reply cut by the token limit is stored up to its last full sentence
    assert streamed == event["reply"] or (event["metadata"].get("truncated") and streamed.startswith(event["reply"]))
    assert all(c["page"] for c in event["citations"])
    await assert_cites_only_what_it_draws_on(http, meditations_coach.widget_token, event["reply"], event["citations"])
    transcript = (
        await http.get(f"/api/v1/conversations/{event['conversation_id']}", headers=meditations_coach.coach.headers)
    ).json()
    assert [m["sender_type"] for m in transcript["messages"]] == ["client", "ai"]
    assert transcript["messages"][0]["text"] == QUESTION


async def test_websocket_rejects_bad_token_and_bad_messages(base_url: str, meditations_coach: ReadyCoach) -> None:
    ws_base = base_url.replace("http://", "ws://") + "/ws/chat"
    with pytest.raises(websockets.exceptions.WebSocketException):
        async with websockets.connect(f"{ws_base}?token=nope") as ws:
            await ws.recv()
    async with websockets.connect(f"{ws_base}?token={meditations_coach.widget_token}") as ws:
        await ws.send("not json")
        assert json.loads(await ws.recv())["type"] == "error"
        for blank in ("", "   "):  # worded as the REST turn words it, not as the JSON decoder does
            await ws.send(json.dumps({"text": blank}))
            event = json.loads(await ws.recv())
            assert event == {"type": "error", "message": "text must not be empty", "code": "empty", "fields": {}}, event


async def test_a_websocket_message_over_the_limit_closes_the_socket(
    base_url: str, meditations_coach: ReadyCoach
) -> None:
    """uvicorn took WebSocket messages of up to 16 MiB from any token holder; past ``WS_MAX_MESSAGE_BYTES`` (a chat
    message is at most 48 KB as JSON) the socket is closed as "message too big" (1009)."""
    url = base_url.replace("http://", "ws://") + f"/ws/chat?token={meditations_coach.widget_token}"

    async def until_closed(ws: websockets.ClientConnection) -> None:
        while True:
            await ws.recv()

    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"text": "x" * (WS_MAX_MESSAGE_BYTES + 1)}))
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await asyncio.wait_for(until_closed(ws), 30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({}, "text"),
        ({"text": ""}, "text must not be empty"),
        ({"text": "   "}, "text must not be empty"),
        ({"text": "x" * 4001}, "text is longer than 4000 characters"),
        ({"text": "hi", "client_message_id": ""}, "client_message_id must be 1 to 64 characters"),
        ({"text": "hi", "conversation_id": "nope"}, "conversation_id"),
    ],
)
async def test_rest_turn_rejects_bad_bodies(
    http: httpx.AsyncClient, meditations_coach: ReadyCoach, body: dict, detail: str
) -> None:
    auth = {"Authorization": f"Bearer {meditations_coach.widget_token}"}
    response = await http.post("/api/v1/chat", headers=auth, json=body)
    assert response.status_code == 400
    assert detail in response.text, response.text


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b'{"text": ', "request body is not valid JSON: Input data was truncated"),
        (b'{"text": hi}', "request body is not valid JSON: JSON is malformed: invalid character (byte 9)"),
        # a lone surrogate escape: msgspec's own words ("truncated") alone did not say the body was the problem
        (b'{"text": "ab\\ud800cd"}', "request body is not valid JSON: Input data was truncated"),
    ],
)
async def test_rest_turn_refuses_a_body_that_is_not_json_and_stores_nothing(
    http: httpx.AsyncClient, meditations_coach: ReadyCoach, content: bytes, detail: str
) -> None:
    auth = {"Authorization": f"Bearer {meditations_coach.widget_token}", "Content-Type": "application/json"}
    before = await http.get("/api/v1/conversations", headers=meditations_coach.coach.headers)
    response = await http.post("/api/v1/chat", headers=auth, content=content)
    assert response.status_code == 400 and response.json()["detail"] == detail, response.text
    after = await http.get("/api/v1/conversations", headers=meditations_coach.coach.headers)
    assert after.json() == before.json()


async def test_rest_turn_needs_a_widget_token(http: httpx.AsyncClient, meditations_coach: ReadyCoach) -> None:
    assert (await http.post("/api/v1/chat", json={"text": "hi"})).status_code == 401
    bad = await http.post("/api/v1/chat", headers={"Authorization": "Bearer nope"}, json={"text": "hi"})
    assert bad.status_code == 401
    # a coach's API key is not a widget token
    coach_key = await http.post("/api/v1/chat", headers=meditations_coach.coach.headers, json={"text": "hi"})
    assert coach_key.status_code == 401
