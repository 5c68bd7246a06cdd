"""Shared fixtures: real PostgreSQL + pgvector and Redis (embedded unless DATABASE_URL / REDIS_URL are
set), migrations applied, the real local models loaded once, the app served by uvicorn on loopback, and
an arq worker run in burst mode on demand."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from cryptography.fernet import Fernet
from redis import Redis as SyncRedis

from app.asgi import create_app
from app.chat.turn import ChatService
from app.container import Container
from app.core import egress
from app.core.config import Settings
from app.core.runtime import BACKGROUND_SHUTDOWN_LIMIT_S, Services, serve_in_background, start_services
from app.core.security import SecretBox
from app.db.engine import tenant_session
from app.db.jobs import ALERTS_QUEUE, ERASURE_QUEUE
from app.db.migrate import upgrade_head
from app.llm.registry import ProviderRegistry
from app.memory.models import Insight
from app.worker import build_workers, run_workers
from tests import network_rule
from tests.stub_dns import TEST_OUTBOUND_ALLOW, StubResolver

BOOKS = Path(os.environ.get("OPENCOACH_BOOKS", Path(__file__).resolve().parents[2] / "shared" / "data" / "books"))
MEDITATIONS = Path(__file__).resolve().parents[1] / "demo" / "meditations-marcus-aurelius.pdf"
TEST_MAX_UPLOAD_MB = 2.0
TEST_AUTH_RATE_LIMIT = "100000/minute"
"""The shared app's log-in and sign-up limit: every test signs up from 127.0.0.1 (tests of the real limits
serve an app of their own, tests/integration/web/test_auth_hardening.py)."""

NETWORK_RULE = network_rule.NetworkRule()
"""Every connection this process asks for; anything outside 127.0.0.0/8 and ::1 is refused and fails the test."""
DNS = StubResolver()
"""The egress guard's resolver for the whole run (no DNS query leaves the process)."""


def pytest_configure(config: pytest.Config) -> None:
    """Before any fixture runs: the network rule on every socket connect, and the stub resolver for the egress
    guard. uvloop would connect in C, past the rule, so it is refused here."""
    policy = type(asyncio.get_event_loop_policy())
    if not policy.__module__.startswith("asyncio"):
        raise pytest.UsageError(f"tests need the standard asyncio event loop, not {policy.__module__}")
    network_rule.install(NETWORK_RULE)
    egress.set_resolver(DNS)


@pytest.fixture(autouse=True)
def _network_rule() -> Iterator[network_rule.NetworkRule]:
    """Fail the test that asked for a connection outside loopback (even if the code swallowed the error);
    ``attempts`` start empty for each test; forget the stub resolver's per-test answers."""
    seen = len(NETWORK_RULE.violations)
    NETWORK_RULE.attempts.clear()
    yield NETWORK_RULE
    DNS.reset()
    broken = NETWORK_RULE.violations[seen:]
    if broken:
        pytest.fail("; ".join(broken), pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A connection outside loopback asked for outside any test (a session fixture) fails the run too."""
    if NETWORK_RULE.violations:
        print("\n".join(["", "network rule broken:", *NETWORK_RULE.violations]))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _no_jobs_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test runs the jobs it queued (``run_jobs``); what it left in the shared arq queue is dropped at its
    end, so a later test's worker never runs it (outside the earlier test's mocked model endpoint)."""
    yield
    if "services" not in request.fixturenames:
        return
    client = SyncRedis.from_url(request.getfixturevalue("services").redis_url)
    try:
        client.delete("arq:queue", ALERTS_QUEUE, ERASURE_QUEUE, *client.scan_iter("arq:job:*"))
    finally:
        client.close()


@pytest.fixture
def network() -> network_rule.NetworkRule:
    """The network rule's record of connection attempts (``attempts``, ``non_loopback_attempts()``)."""
    return NETWORK_RULE


@pytest.fixture
def dns() -> StubResolver:
    """The stub resolver: ``dns.answer(host, [addresses], …)`` for this test."""
    return DNS


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Test settings: a fresh data dir, a small upload limit, short replies from the local model."""
    return Settings(
        data_dir=tmp_path_factory.mktemp("opencoach"),
        database_url=os.environ.get("DATABASE_URL"),
        migration_database_url=os.environ.get("MIGRATION_DATABASE_URL"),
        redis_url=os.environ.get("REDIS_URL"),
        secret_key=Fernet.generate_key().decode(),
        max_upload_mb=TEST_MAX_UPLOAD_MB,
        llm_max_tokens=40,
        llm_timeout_seconds=60,
        outbound_allow=TEST_OUTBOUND_ALLOW,
        auth_rate_limit_ip=TEST_AUTH_RATE_LIMIT,
        auth_rate_limit_account=TEST_AUTH_RATE_LIMIT,
        # a job per message at once: burst workers (``run_jobs``) would otherwise wait out every window
        episode_embed_window_seconds=0,
    )


@pytest.fixture(scope="session")
def services(settings: Settings) -> Iterator[Services]:
    """Embedded (or configured) PostgreSQL and Redis with the schema at head."""
    started = start_services(settings)
    try:
        upgrade_head(started.migration_database_url)
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def registry(settings: Settings) -> ProviderRegistry:
    """One provider registry for the whole run, so SmolLM2 and MiniLM load once."""
    return ProviderRegistry(settings, SecretBox.from_settings(settings))


@pytest.fixture(scope="session")
async def base_url(settings: Settings, services: Services, registry: ProviderRegistry) -> AsyncIterator[str]:
    """The real app served by uvicorn on a loopback port, for HTTP and WebSocket tests."""
    async with serve_in_background(
        create_app(settings, services.database_url, services.redis_url, registry=registry)
    ) as url:
        yield url


@pytest.fixture(scope="session")
async def http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the served app, for API calls (dashboard tests open their own, for cookies)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="session")
def run_jobs(settings: Settings, services: Services, registry: ProviderRegistry) -> Callable[[], Awaitable[None]]:
    """Run the real arq workers (main, then alerts) in burst mode until their queues are empty."""

    async def run() -> None:
        await run_workers(
            build_workers(settings, services.database_url, services.redis_url, burst=True, registry=registry)
        )

    return run


@dataclass
class Coach:
    """A signed-up coach as tests see it."""

    coach_id: str
    api_key: str
    email: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@pytest.fixture(scope="session")
def make_coach(http: httpx.AsyncClient) -> Callable[..., Awaitable[Coach]]:
    """Sign up a new coach through the API."""

    async def make(name: str = "Coach") -> Coach:
        email = f"{uuid.uuid4().hex[:12]}@example.com"
        response = await http.post(
            "/api/v1/auth/signup", json={"coach_name": name, "email": email, "password": "correct horse battery"}
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return Coach(body["coach_id"], body["api_key"], email)

    return make


async def upload(http: httpx.AsyncClient, coach: Coach, path: Path | str, data: bytes | None = None) -> dict:
    """Upload a file (from disk, or ``data`` under the name ``path``); returns the 202 body."""
    name = Path(path).name
    content = data if data is not None else Path(path).read_bytes()
    response = await http.post("/api/v1/documents", headers=coach.headers, files={"file": (name, content)})
    assert response.status_code == 202, response.text
    return response.json()


async def make_client(http: httpx.AsyncClient, coach: Coach, name: str = "Client") -> dict:
    """Create a client of ``coach``; returns ``{"id", "widget_token"}``."""
    response = await http.post("/api/v1/clients", headers=coach.headers, json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()


async def seed_insight(
    container: Container,
    coach_id: uuid.UUID,
    client_id: uuid.UUID,
    text: str,
    *,
    kind: str = "goal",
    importance: int = 7,
    sources: Sequence[uuid.UUID] = (),
) -> Insight:
    """Store an active insight of the client as extraction stores one (embedded with the offline model, seen
    now, citing ``sources``); returns it."""
    [vector] = await container.registry.local_embedder().embed([text])
    now = datetime.now(UTC)
    async with tenant_session(container.sessionmaker, coach_id) as session:
        insight = Insight(
            coach_id=coach_id,
            client_id=client_id,
            kind=kind,
            text=text,
            importance=importance,
            source_message_ids=list(sources),
            first_seen_at=now,
            last_seen_at=now,
            embedding=vector,
            embedding_model=container.registry.local_embedder().model,
        )
        session.add(insight)
    return insight


@dataclass
class ReadyCoach:
    """A coach whose *Meditations* is ingested, with one client."""

    coach: Coach
    document_id: str
    client_id: str
    widget_token: str


@pytest.fixture(scope="session")
async def meditations_coach(
    http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]], run_jobs: Callable[[], Awaitable[None]]
) -> ReadyCoach:
    """Sign up, upload *Meditations*, run the worker, create a client."""
    coach = await make_coach("Stoic Coach")
    doc = await upload(http, coach, MEDITATIONS)
    await run_jobs()
    status = (await http.get(f"/api/v1/documents/{doc['id']}", headers=coach.headers)).json()
    assert status["status"] == "ready", status
    # the chat tests ask the same questions again and check the model's streamed reply: no response cache
    response = await http.patch("/api/v1/settings", headers=coach.headers, json={"response_cache_ttl_seconds": 0})
    assert response.status_code == 200, response.text
    client = await make_client(http, coach)
    return ReadyCoach(coach, doc["id"], client["id"], client["widget_token"])


@pytest.fixture
def answer_fails_once(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The served app's first live answer (:meth:`ChatService.answer`) fails as under overload (a database
    pool wait timing out), after its message is stored; later ones run. Returns the calls' arguments
    (``coach_id, client_id, message_id``), one per answer asked for."""
    answer, calls = ChatService.answer, []

    def fails_once(self: ChatService, *args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            raise TimeoutError("QueuePool limit of size 10 overflow 10 reached")
        return answer(self, *args, **kwargs)

    monkeypatch.setattr(ChatService, "answer", fails_once)
    return calls


@pytest.fixture(scope="session")
async def container(settings: Settings, services: Services, registry: ProviderRegistry) -> AsyncIterator[Container]:
    """The services as the app wires them, for tests that look behind the API (connects as the app role)."""
    built = await Container.create(settings, services.database_url, services.redis_url, registry=registry)
    yield built
    try:
        async with asyncio.timeout(BACKGROUND_SHUTDOWN_LIMIT_S):
            await built.close()
    except TimeoutError:  # (a full run once sat idle for ever in a session fixture's teardown: say so, end)
        warnings.warn(
            f"the test container did not close within {BACKGROUND_SHUTDOWN_LIMIT_S} s", RuntimeWarning, stacklevel=1
        )


async def widget_page(base_url: str | httpx.URL, token: str, page: str = "") -> httpx.Response:
    """Open a client's chat link ``/w/<token>`` (``page="/memory"``: ``/w/<token>/memory``) as a new browser
    would: the token is exchanged for the widget session cookie and the redirect followed (a fresh cookie jar,
    so no other test's requests carry that cookie). Returns the final response."""
    async with httpx.AsyncClient(base_url=base_url, follow_redirects=True, timeout=60) as browser:
        return await browser.get(f"/w/{token}{page}")


async def ws_turn(base_url: str, widget_token: str, text: str) -> list[dict]:
    """Send ``text`` over the ``/ws/chat`` WebSocket; returns the events received after its ``ack``, up to and
    including the first that is not a ``token`` event (``done`` or ``error``), without the live ``message`` events
    (the message and its reply come back live too, for the client's other tabs)."""
    url = base_url.replace("http://", "ws://") + f"/ws/chat?token={widget_token}"
    events: list[dict] = []
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"text": text}))
        while not events or events[-1]["type"] == "token":
            event = json.loads(await ws.recv())
            if event["type"] not in ("ack", "message"):
                events.append(event)
    return events
