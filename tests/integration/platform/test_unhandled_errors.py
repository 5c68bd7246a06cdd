"""An error no handler expects: the client gets a bare 500 (no traceback), the operator's log gets the traceback.
Litestar logs such errors only in debug mode; ``app.asgi.log_unhandled`` logs them always."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import websockets

from app.accounts.service import AccountService
from app.llm.registry import ProviderRegistry
from tests.conftest import Coach, make_client


async def test_an_unexpected_error_is_a_bare_500_and_logged_with_its_traceback(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    registry: ProviderRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    coach = await make_coach("Unlucky Coach")

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug in the secret lookup")

    # (not the chat turn: a turn that fails once its message is stored is a 503, queued for the worker)
    monkeypatch.setattr(registry, "decrypt_key", broken)
    with caplog.at_level(logging.ERROR, logger="app.asgi"):
        response = await http.get("/api/v1/settings", headers=coach.headers)

    assert response.status_code == 500
    assert response.json() == {"status_code": 500, "detail": "Internal Server Error"}
    assert "a bug in" not in response.text
    [record] = [r for r in caplog.records if r.name == "app.asgi"]
    assert record.getMessage() == "unhandled error on GET /api/v1/settings"
    assert record.exc_info is not None and str(record.exc_info[1]) == "a bug in the secret lookup"


async def test_an_unexpected_error_on_a_widget_link_does_not_log_its_token(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The widget link's path is its token (``/w/<token>``): the access log redacted it, the unhandled-error line
    did not."""

    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug in the session store")

    monkeypatch.setattr(AccountService, "widget_session", broken)
    with caplog.at_level(logging.ERROR, logger="app.asgi"):
        response = await http.get("/w/wt_secret-token-123", follow_redirects=False)

    assert response.status_code == 500
    [record] = [r for r in caplog.records if r.name == "app.asgi"]
    assert "secret-token" not in record.getMessage() and "[redacted]" in record.getMessage(), record.getMessage()


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        pytest.param("GET", "/api/v1/nowhere", None, 404, id="route-404"),
        pytest.param("GET", "/api/v1/documents/not-a-uuid", None, 400, id="malformed-id-400"),
        pytest.param("POST", "/api/v1/clients", {"name": 7}, 400, id="validation-400"),
        pytest.param("GET", "/api/v1/clients/00000000-0000-0000-0000-000000000000/memory", None, 404, id="domain-404"),
        pytest.param("DELETE", "/api/v1/settings", None, 405, id="method-405"),
    ],
)
async def test_client_errors_are_not_logged_as_unhandled(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    body: Any,
    status: int,
) -> None:
    """A 4xx is the client's mistake, answered as designed: nothing for the operator."""
    coach = await make_coach("Careful Coach")
    with caplog.at_level(logging.ERROR, logger="app.asgi"):
        response = await http.request(method, path, headers=coach.headers, json=body)

    assert response.status_code == status, response.text
    assert not [r for r in caplog.records if r.name == "app.asgi"]


DEEP = '{"text": "deep", "nested": ' + "[" * 30_000 + "]" * 30_000 + "}"
"""Valid JSON nested far past the interpreter's recursion limit (msgspec decodes it recursively), within the
routes' 64 KiB body limit (``app.auth.BODY_MAX_BYTES``) and the socket's (``WS_MAX_MESSAGE_BYTES``)."""


async def test_a_body_nested_too_deeply_is_a_400_and_changes_nothing(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], caplog: pytest.LogCaptureFixture
) -> None:
    """It was a 500 (``RecursionError`` while Litestar decoded the body) on every JSON route."""
    coach = await make_coach("Deep Coach")
    client = await make_client(http, coach)
    before = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    json_body = {"content-type": "application/json"}
    with caplog.at_level(logging.ERROR, logger="app.asgi"):
        patched = await http.patch("/api/v1/settings", headers=coach.headers | json_body, content=DEEP)
        chat = await http.post(
            "/api/v1/chat", headers={"Authorization": f"Bearer {client['widget_token']}"} | json_body, content=DEEP
        )

    for response in (patched, chat):
        assert response.status_code == 400, response.text
        assert response.json() == {"status_code": 400, "detail": "JSON is nested too deeply"}
    assert (await http.get("/api/v1/settings", headers=coach.headers)).json() == before
    assert (await http.get("/api/v1/conversations", headers=coach.headers)).json() == []
    assert not [r for r in caplog.records if r.name == "app.asgi"]


BOUNDARY = "oc-boundary"
UNREADABLE_PARTS = {
    "not-utf-8": b"Content-Type: text/plain\r\n\r\n\xff\xfe",
    "unknown-charset": b"Content-Type: text/plain; charset=bogus\r\n\r\nhello",
    "not-idna": b"Content-Type: text/plain; charset=idna\r\n\r\nxn--\xff",
}
"""A multipart text field's headers and bytes that Litestar's parser cannot decode (``UnicodeDecodeError``,
``LookupError``, ``UnicodeError``)."""


def multipart_body(name: str, part: bytes) -> bytes:
    """A ``multipart/form-data`` body (boundary :data:`BOUNDARY`) of one field ``name`` (``part``: its headers after
    ``Content-Disposition``, a blank line, its bytes)."""
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n'.encode()
        + part
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


@pytest.mark.parametrize("part", UNREADABLE_PARTS.values(), ids=UNREADABLE_PARTS.keys())
async def test_a_form_field_that_cannot_be_decoded_is_a_400_and_changes_nothing(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], caplog: pytest.LogCaptureFixture, part: bytes
) -> None:
    """It was a 500 on every dashboard form (the CSRF check reads the form first, even at /login), on uploads and on
    the widget avatar (``UnicodeDecodeError`` or ``LookupError`` in Litestar's multipart parser)."""
    coach = await make_coach("Garbled Coach")
    before = (await http.get("/api/v1/settings", headers=coach.headers)).json()
    form = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    with caplog.at_level(logging.ERROR, logger="app.asgi"):
        upload = await http.post("/api/v1/documents", headers=coach.headers | form, content=multipart_body("x", part))
        avatar = await http.put(
            "/api/v1/settings/widget-avatar", headers=coach.headers | form, content=multipart_body("x", part)
        )
        login = await http.post("/login", headers=form, content=multipart_body("email", part))
        page_headers = form | {"accept": "text/html", "referer": "http://["}  # no URL: the link goes to the dashboard
        page = await http.post("/login", headers=page_headers, content=multipart_body("email", part))

    for response in (upload, avatar, login):
        assert response.status_code == 400, response.text
        assert response.json()["detail"].startswith("invalid form data"), response.text
    assert page.status_code == 400 and "The form could not be read" in page.text, page.text
    assert 'href="/dashboard/conversations"' in page.text
    assert (await http.get("/api/v1/settings", headers=coach.headers)).json() == before
    assert (await http.get("/api/v1/documents", headers=coach.headers)).json() == []
    assert not [r for r in caplog.records if r.name == "app.asgi"]


async def test_a_socket_message_nested_too_deeply_is_refused_and_the_socket_keeps_working(
    base_url: str, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> None:
    """It closed the socket with 4500 (``RecursionError`` in the decoder, then in reading the refused message's
    ``client_message_id``)."""
    coach = await make_coach("Deep Socket Coach")
    await http.patch("/api/v1/settings", headers=coach.headers, json={"handoff_mode": "human_only"})
    client = await make_client(http, coach)
    url = base_url.replace("http://", "ws://") + f"/ws/chat?token={client['widget_token']}"
    async with websockets.connect(url, max_size=None) as ws:
        for frame in (DEEP, "[" * 30_000 + "]" * 30_000):  # (within WS_MAX_MESSAGE_BYTES)
            await ws.send(frame)
            refused = json.loads(await ws.recv())
            assert refused["type"] == "error" and refused["message"].startswith("invalid message"), refused
        await ws.send(json.dumps({"text": "still here", "client_message_id": "m-1"}))
        ack = json.loads(await ws.recv())
    assert ack["type"] == "ack" and ack["client_message_id"] == "m-1", ack
