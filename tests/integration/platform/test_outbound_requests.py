"""Issue 12, "Outbound requests": a coach-configured URL (LLM base URL, alert webhook) cannot reach inside.

Through the real app, worker and database: loopback, private, link-local, CGNAT, unique-local and metadata
addresses are refused with a 400 at save time (API and dashboard form, nothing stored) and again at send time
(DNS that answers public to the check and private to the request); what a failed endpoint answered never
reaches anything a coach or client can read.

Network rule: loopback appears as a literal (``http://127.0.0.1:<port>``: a refused value, and the listener
proves nothing arrived); every other address comes from the stub resolver (``dns`` fixture) for a made-up
name, and the network rule (``network`` fixture) shows no connection outside loopback was even attempted.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.accounts.models import Coach as CoachRow
from app.chat.turn.generate import APOLOGY
from app.container import Container
from app.core.config import Settings
from app.db.engine import tenant_session
from app.handoff.alerts import AlertService
from app.rag.models import Document
from tests.conftest import Coach, make_client, upload
from tests.integration.handoff.test_alerts import alerts_of, open_handoff, service
from tests.integration.handoff.test_handoff_flow import Setup, new_setup
from tests.integration.learning.test_fine_tunes import FakeOpenAI, fake_openai, seed
from tests.integration.web.test_dashboard import browser, csrf, log_in
from tests.network_rule import NetworkRule
from tests.openai_wire import MOCK_BASE_URL, MOCK_ENDPOINT_SETTINGS, mock_openai, openai_error
from tests.stub_dns import LOOPBACK_HOOKS, PUBLIC, StubResolver

__all__ = ["browser", "fake_openai", "new_setup"]  # fixtures used by name below

CANARY = "CANARY-7b1e-internal-secret"
"""What an endpoint answers in its error body: it must not reach any stored or returned text."""
REFUSED_ADDRESSES = [
    ("10.0.0.7", "private"),
    ("172.20.1.1", "private"),
    ("192.168.1.20", "private"),
    ("169.254.10.1", "link-local"),
    ("169.254.169.254", "cloud metadata"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("fd00::7", "unique-local"),
    ("fe80::1", "link-local"),
    ("::ffff:192.168.1.1", "private"),
    ("224.0.0.1", "multicast"),
]
"""Answers of the stub resolver for a made-up name, and the kind the refusal names."""


@dataclass
class Listener:
    """A loopback HTTP listener that records every request (``requests``) and answers ``status``."""

    url: str = ""
    requests: list[str] = field(default_factory=list)
    status: int = 200
    reason: str | None = None
    body: bytes = b"{}"


@pytest.fixture
def listener() -> Iterator[Listener]:
    state = Listener()

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            if length:
                self.rfile.read(length)
            state.requests.append(f"{self.command} {self.path}")
            self.send_response(state.status, state.reason)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        do_GET = do_POST = _any  # noqa: N815 (http.server naming)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


async def settings_of(http: httpx.AsyncClient, coach: Coach) -> dict[str, Any]:
    response = await http.get("/api/v1/settings", headers=coach.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_loopback_urls_are_refused_at_save_time_and_nothing_is_stored(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], listener: Listener, network: NetworkRule
) -> None:
    """The issue's reproduction: ``llm_base_url`` on a loopback listener was accepted and then called. Now
    400 naming the field and the reason, the settings are unchanged, and the listener got nothing."""
    coach = await make_coach("Probe Coach")
    before = await settings_of(http, coach)
    for changes, field_name in [
        ({"llm_provider": "openai", "llm_model": "gpt-4o-mini", "llm_base_url": f"{listener.url}/v1"}, "llm_base_url"),
        ({"alert_webhook_url": f"{listener.url}/latest/meta-data/"}, "alert_webhook_url"),
        ({"llm_base_url": "http://[::1]:11434/v1", "persona": "changed"}, "llm_base_url"),
    ]:
        response = await http.patch("/api/v1/settings", headers=coach.headers, json=changes)
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert detail.startswith(f"{field_name}: ") and "loopback address" in detail, detail
    port = await http.patch(
        "/api/v1/settings", headers=coach.headers, json={"alert_webhook_url": "http://127.0.0.1:99999/h"}
    )
    assert port.status_code == 400, port.text
    assert port.json()["detail"] == "alert_webhook_url: the URL's port must be 1 to 65535, not 99999"
    assert await settings_of(http, coach) == before

    # the allowlist is the operator's (process configuration): no setting of the coach's widens it
    widen = await http.patch("/api/v1/settings", headers=coach.headers, json={"outbound_allow": "127.0.0.0/8"})
    assert "outbound_allow" not in widen.text or widen.status_code == 400
    again = await http.patch("/api/v1/settings", headers=coach.headers, json={"llm_base_url": f"{listener.url}/v1"})
    assert again.status_code == 400 and "loopback address" in again.json()["detail"]
    assert listener.requests == []
    assert network.non_loopback_attempts() == []


async def test_a_stored_provider_key_goes_only_to_the_host_it_was_entered_for(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], network: NetworkRule
) -> None:
    """Moving ``llm_base_url`` to another host (or back to OpenAI's) needs the key entered again: else whoever
    may change settings (an API key for an automation, say) could have the coach's stored key sent to a host of
    theirs. 400, nothing changed; another path on the same host, or the key sent along, is saved."""
    coach = await make_coach("Keyed Coach")
    h = coach.headers
    assert (await http.patch("/api/v1/settings", headers=h, json=MOCK_ENDPOINT_SETTINGS)).status_code == 200
    before = await settings_of(http, coach)
    for moved in ("https://api.openai.test/v1", ""):
        response = await http.patch("/api/v1/settings", headers=h, json={"llm_base_url": moved, "persona": "x"})
        assert response.status_code == 400, response.text
        assert "llm_api_key must be entered again" in response.json()["detail"]
    assert await settings_of(http, coach) == before
    same_host = await http.patch("/api/v1/settings", headers=h, json={"llm_base_url": "https://llm.example.test/v2"})
    assert same_host.status_code == 200 and same_host.json()["llm_base_url"] == "https://llm.example.test/v2"
    with_key = {"llm_base_url": "https://api.openai.test/v1", "llm_api_key": "sk-entered-again"}
    moved_with_key = await http.patch("/api/v1/settings", headers=h, json=with_key)
    assert moved_with_key.status_code == 200, moved_with_key.text
    assert moved_with_key.json()["llm_api_key_hint"] != before["llm_api_key_hint"]
    assert network.non_loopback_attempts() == []


async def test_a_url_saved_again_unchanged_is_not_looked_up_again(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], dns: StubResolver
) -> None:
    """The endpoint's host stopped resolving: saving the settings form again (its unchanged URL with another
    field) works, as each call to the endpoint checks the host anyway; a changed URL is still checked."""
    coach = await make_coach("Steady Coach")
    host = "steady-llm.example.test"
    dns.answer(host, [PUBLIC])
    endpoint = MOCK_ENDPOINT_SETTINGS | {"llm_base_url": f"https://{host}/v1"}
    assert (await http.patch("/api/v1/settings", headers=coach.headers, json=endpoint)).status_code == 200
    dns.reset()  # the name resolves no more
    again = await http.patch(
        "/api/v1/settings", headers=coach.headers, json={"llm_base_url": f"https://{host}/v1", "persona": "Calm."}
    )
    assert again.status_code == 200 and again.json()["persona"] == "Calm.", again.text
    moved = await http.patch(
        "/api/v1/settings", headers=coach.headers, json={"llm_base_url": f"https://{host}/v2", "llm_api_key": "sk-2"}
    )
    assert moved.status_code == 400 and moved.json()["detail"].startswith("llm_base_url: "), moved.text


async def test_internal_addresses_are_refused_at_save_time(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], dns: StubResolver, network: NetworkRule
) -> None:
    """A name resolving to any non-public address (or to a public and a private one) is a 400 for both URL
    settings; nothing is stored and no connection is attempted."""
    coach = await make_coach("Probe Coach")
    before = await settings_of(http, coach)
    answers = [([address], kind) for address, kind in REFUSED_ADDRESSES] + [([PUBLIC, "10.9.8.7"], "private")]
    for index, (answer, kind) in enumerate(answers):
        host = f"internal{index}.example.test"
        dns.answer(host, answer)
        for field_name, url in [("llm_base_url", f"https://{host}/v1"), ("alert_webhook_url", f"https://{host}/h")]:
            response = await http.patch("/api/v1/settings", headers=coach.headers, json={field_name: url})
            assert response.status_code == 400, (answer, response.text)
            tail = "; only public addresses can be reached"
            if kind == "cloud metadata":
                tail = ", which can never be reached"
            assert response.json()["detail"] == f"{field_name}: {host} resolves to a {kind} address{tail}"
    assert await settings_of(http, coach) == before
    assert network.non_loopback_attempts() == []

    plain = await http.patch(
        "/api/v1/settings", headers=coach.headers, json={"alert_webhook_url": "http://hooks.example.com/h"}
    )
    assert plain.status_code == 400 and "use https://" in plain.json()["detail"]
    saved = await http.patch(
        "/api/v1/settings", headers=coach.headers, json={"alert_webhook_url": "https://hooks.example.com/h"}
    )
    assert saved.status_code == 200 and saved.json()["alert_webhook_url"] == "https://hooks.example.com/h"


async def test_the_dashboard_settings_form_refuses_them_too(
    browser: httpx.AsyncClient,
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    dns: StubResolver,
    listener: Listener,
) -> None:
    coach = await make_coach("Form Coach")
    await log_in(browser, coach)
    before = await settings_of(http, coach)
    dns.answer("metadata.example.test", ["169.254.169.254"])
    for form, message in [
        ({"alert_webhook_url": "https://metadata.example.test/latest/meta-data/"}, "cloud metadata address"),
        ({"llm_provider": "openai", "llm_model": "m", "llm_base_url": f"{listener.url}/v1"}, "loopback address"),
    ]:
        token = await csrf(browser, "/dashboard/settings")
        response = await browser.post(
            "/dashboard/settings", data={"name": "Form Coach", "persona": "p", "_csrf_token": token} | form
        )
        assert response.status_code == 400 and message in response.text, response.text[-2000:]
    assert await settings_of(http, coach) == before
    assert listener.requests == []


async def test_dns_that_turns_private_after_the_save_is_refused_when_the_model_is_called(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], dns: StubResolver, network: NetworkRule
) -> None:
    """Public to the save-time check, private to the chat turn: the turn is refused before connecting (no
    respx here: a request that got through would have broken the network rule), the client gets the
    apology, and the coach sees the reason."""
    dns.answer("rebind.example.test", [PUBLIC], ["10.0.0.7"])
    setup = await new_setup("Rebind Coach", llm_base_url="https://rebind.example.test/v1")
    assert dns.calls.count("rebind.example.test") == 1

    response = await http.post("/api/v1/chat", headers=setup.client_auth, json={"text": "How do I start?"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reply"] == APOLOGY and "error" not in body["metadata"]
    messages = (await http.get(f"/api/v1/conversations/{body['conversation_id']}", headers=setup.coach.headers)).json()
    error = messages["messages"][1]["metadata"]["error"]
    assert error == (
        "EgressRefused: rebind.example.test resolves to a private address; only public addresses can be reached"
    )
    assert dns.calls.count("rebind.example.test") >= 2
    assert network.non_loopback_attempts() == []


async def test_a_loopback_endpoint_stored_before_the_guard_is_not_called(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    listener: Listener,
) -> None:
    """A URL that got into the database unchecked (written before this release) is refused at send time."""
    coach = await make_coach("Old Coach")
    coach_id = uuid.UUID(coach.coach_id)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        row = await session.get(CoachRow, coach_id)
        assert row is not None
        row.llm_provider, row.llm_model, row.llm_base_url = "openai", "gpt-4o-mini", f"{listener.url}/v1"
    client = await make_client(http, coach)
    response = await http.post(
        "/api/v1/chat", headers={"Authorization": f"Bearer {client['widget_token']}"}, json={"text": "Hello?"}
    )
    assert response.status_code == 200 and response.json()["reply"] == APOLOGY
    assert listener.requests == []


async def test_a_webhook_whose_dns_turns_private_is_refused_at_send_time(
    container: Container, settings: Settings, dns: StubResolver, network: NetworkRule
) -> None:
    url = "https://rebind-hook.example.test/opencoach"
    dns.answer("rebind-hook.example.test", [PUBLIC], ["192.168.7.7"])
    assert await container.accounts.check_outbound_url("alert_webhook_url", url) == url
    opened = await open_handoff(container, settings, webhook_url=url)

    assert await container.alerts.deliver(opened.coach_id, opened.handoff_id) == "webhook failed"

    stored = (await alerts_of(container, opened))["webhook"]
    assert stored["status"] == "failed"
    assert stored["error"] == (
        "refused: rebind-hook.example.test resolves to a private address; only public addresses can be reached"
    )
    assert network.non_loopback_attempts() == []


async def test_a_webhook_redirect_is_not_followed(
    container: Container, settings: Settings, listener: Listener, dns: StubResolver
) -> None:
    """The receiver (allowlisted by name) answers 302 to another loopback listener: nothing follows it."""
    redirector = _Redirector(listener.url + "/stolen")
    try:
        url = f"http://{LOOPBACK_HOOKS}:{redirector.port}/hook"
        opened = await open_handoff(container, settings, webhook_url=url)
        assert await container.alerts.deliver(opened.coach_id, opened.handoff_id) == "webhook failed"
        stored = (await alerts_of(container, opened))["webhook"]
        assert stored["error"] == "HTTP 302 Found: redirects are not followed"
        assert redirector.hits == 1 and listener.requests == []
    finally:
        redirector.close()


class _Redirector:
    """A loopback listener answering every POST with ``302 Location: <location>``."""

    def __init__(self, location: str) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.hits += 1
                self.send_response(302)
                self.send_header("location", location)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- what came back is never stored ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        openai_error(400, f"Invalid request. Internal note: {CANARY}", "invalid_request_error", None),
        httpx.Response(500, content=f"<html>{CANARY} stack trace</html>".encode()),
    ],
    ids=["400-json", "500-html"],
)
async def test_a_failing_endpoints_body_never_reaches_stored_metadata_or_responses(
    http: httpx.AsyncClient, new_setup: Callable[..., Awaitable[Setup]], answer: httpx.Response
) -> None:
    setup = await new_setup("Canary Coach")
    with mock_openai() as router:
        router.route(host="127.0.0.1").pass_through()
        route = router.post(f"{MOCK_BASE_URL}/chat/completions").mock(return_value=answer)
        response = await http.post("/api/v1/chat", headers=setup.client_auth, json={"text": "What now?"})
    assert route.called and response.status_code == 200
    assert CANARY not in response.text
    conversation = await http.get(
        f"/api/v1/conversations/{response.json()['conversation_id']}", headers=setup.coach.headers
    )
    assert CANARY not in conversation.text
    error = conversation.json()["messages"][1]["metadata"]["error"]
    assert error in ("BadRequestError: HTTP 400 Bad Request", "InternalServerError: HTTP 500 Internal Server Error")


async def test_a_failed_fine_tune_start_stores_the_status_not_the_body(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
    fake_openai: Callable[[list[dict[str, Any]]], FakeOpenAI],
) -> None:
    api = fake_openai([{"status": "running"}])
    api.router.routes["create_job"].mock(
        return_value=openai_error(400, f"Training file rejected: {CANARY}", "invalid_request_error", "invalid_file")
    )
    setup = await new_setup("Canary Tuner")
    await seed(container, setup, run_jobs, {"train": 1})
    created = await http.post("/api/v1/learning/fine-tunes", headers=setup.coach.headers)
    assert created.status_code == 201, created.text
    await run_jobs()
    listed = await http.get("/api/v1/learning/fine-tunes", headers=setup.coach.headers)
    [job] = listed.json()
    assert job["status"] == "failed" and job["error"] == "BadRequestError: HTTP 400 Bad Request"
    assert CANARY not in listed.text


async def test_a_failing_webhook_receivers_reason_and_body_are_not_stored(
    container: Container, settings: Settings
) -> None:
    receiver = _Answering(500, f"Oops {CANARY}", f"{CANARY} internal details".encode())
    try:
        opened = await open_handoff(container, settings, webhook_url=f"http://{LOOPBACK_HOOKS}:{receiver.port}/h")
        alerts: AlertService = service(container, settings)
        with pytest.raises(Exception, match="Retry"):
            await alerts.deliver(opened.coach_id, opened.handoff_id)
        stored = (await alerts_of(container, opened))["webhook"]
        assert stored["error"] == "HTTP 500 Internal Server Error" and CANARY not in json.dumps(stored)
    finally:
        receiver.close()


class _Answering:
    """A loopback listener answering every POST with ``status``, a chosen reason phrase and body."""

    def __init__(self, status: int, reason: str, body: bytes) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(status, reason)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


async def test_a_failing_embedding_endpoint_leaves_no_body_in_the_documents_error(
    http: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    container: Container,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    coach = await make_coach("Canary Embedder")
    coach_id = uuid.UUID(coach.coach_id)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        row = await session.get(CoachRow, coach_id)
        assert row is not None
        row.embedding_provider, row.embedding_model = "openai", "text-embedding-3-small"
        row.embedding_base_url = MOCK_BASE_URL
    with mock_openai() as router:
        router.route(host="127.0.0.1").pass_through()
        route = router.post(f"{MOCK_BASE_URL}/embeddings").mock(
            return_value=openai_error(400, f"Bad input near {CANARY}", "invalid_request_error", None)
        )
        doc = await upload(http, coach, "note.md", b"# Note\n\nBreathe out slowly and take one small step.\n")
        await run_jobs()
    assert route.called
    status = await http.get(f"/api/v1/documents/{doc['id']}", headers=coach.headers)
    assert status.json()["status"] == "failed" and CANARY not in status.text
    async with tenant_session(container.sessionmaker, coach_id) as session:
        stored = await session.scalar(select(Document.error).where(Document.id == uuid.UUID(doc["id"])))
    assert stored is not None and CANARY not in stored and "HTTP 400 Bad Request" in stored
