"""The Telegram tests' app: the real app and worker with ``TELEGRAM_API_URL`` on a fake Bot API server
(tests/telegram_fake.py); the coach's model endpoint is mocked with respx in the OpenAI wire format."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx

from app.asgi import create_app
from app.core.config import Settings
from app.core.runtime import Services, serve_in_background
from app.llm.registry import ProviderRegistry
from app.worker import build_workers, run_workers
from tests.conftest import Coach, upload
from tests.integration.handoff.test_alerts import receiver  # noqa: F401 - the alert webhook receiver fixture
from tests.openai_wire import MOCK_BASE_URL, mock_openai, openai_sse, sse_response
from tests.stub_dns import LOOPBACK_HOOKS
from tests.telegram_fake import FakeBotApi, fake_bot_api

MATERIAL = (
    b"# The Two-Minute Reset\n\n"
    b"When the morning goes badly, stop for two minutes. Breathe out slowly, name one thing you can "
    b"control, and take the smallest next step toward it. This is the two-minute reset.\n"
)
DELTAS = ["Stop", " for", " two", " minutes", " and", " breathe", " out", " slowly", " <now>", "."]
REPLY = "".join(DELTAS)
_bot_ids = itertools.count(random.randint(10**8, 9 * 10**8))


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeBotApi]:
    async with fake_bot_api() as server:
        yield server


@pytest.fixture(scope="module")
def tg_settings(settings: Settings, fake: FakeBotApi) -> Settings:
    return settings.model_copy(update={"telegram_api_url": fake.url})


@asynccontextmanager
async def served(
    settings: Settings, services: Services, registry: ProviderRegistry
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app served with ``settings`` (its ``app`` attribute is the app)."""
    app = create_app(settings, services.database_url, services.redis_url, registry=registry)
    async with serve_in_background(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client


@pytest.fixture(scope="module")
async def tg(tg_settings: Settings, services: Services, registry: ProviderRegistry) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app served with the fake Bot API."""
    async with served(tg_settings, services, registry) as client:
        yield client


@pytest.fixture(scope="module")
def tg_jobs(tg_settings: Settings, services: Services, registry: ProviderRegistry) -> Callable[[], Awaitable[None]]:
    """Run the workers (main, then alerts; with the fake Bot API) in burst mode until their queues are empty."""

    async def run() -> None:
        await run_workers(
            build_workers(tg_settings, services.database_url, services.redis_url, burst=True, registry=registry)
        )

    return run


@pytest.fixture
def llm() -> Iterator[respx.MockRouter]:
    """The coach's model endpoint streaming :data:`DELTAS`; loopback (app, fake Bot API) passes through."""
    with mock_openai() as router:
        router.route(host="127.0.0.1").pass_through()
        router.route(host=LOOPBACK_HOOKS).pass_through()
        router.post(f"{MOCK_BASE_URL}/chat/completions", name="completions").mock(
            side_effect=lambda request: sse_response(openai_sse(DELTAS, (80, 10)))
        )
        yield router


@dataclass
class Bot:
    """A coach with a connected bot: its ``token``, the webhook ``secret`` and ``coach``."""

    coach: Coach
    token: str
    username: str
    secret: str

    def hook(self) -> str:
        return f"/api/v1/telegram/webhook/{self.coach.coach_id}"

    def secret_headers(self) -> dict[str, str]:
        return {"X-Telegram-Bot-Api-Secret-Token": self.secret}


def new_token(fake: FakeBotApi, username: str = "coach_bot") -> tuple[str, int]:
    bot_id = next(_bot_ids)
    token = f"{bot_id}:AAH{uuid.uuid4().hex}"
    fake.add_bot(token, bot_id, f"{username}_{bot_id}")
    return token, bot_id


@pytest.fixture
def make_bot(tg: httpx.AsyncClient, fake: FakeBotApi) -> Callable[..., Awaitable[Bot]]:
    """Sign up a coach (on the mocked model endpoint, optionally with material), connect a new bot."""

    async def make(material: bool = False, jobs: Any = None, **settings: Any) -> Bot:
        email = f"{uuid.uuid4().hex[:12]}@example.com"
        response = await tg.post(
            "/api/v1/auth/signup",
            json={"coach_name": "Tele Coach", "email": email, "password": "correct horse battery"},
        )
        assert response.status_code == 201, response.text
        coach = Coach(response.json()["coach_id"], response.json()["api_key"], email)
        body = {
            "llm_provider": "openai",
            "llm_model": "gpt-4o-mini",
            "llm_base_url": MOCK_BASE_URL,
            "llm_api_key": "sk-test",
            "response_cache_ttl_seconds": 0,
        }
        response = await tg.patch("/api/v1/settings", headers=coach.headers, json=body | settings)
        assert response.status_code == 200, response.text
        if material:
            await upload(tg, coach, "two-minute-reset.md", MATERIAL)
            await jobs()
        token, _ = new_token(fake)
        response = await tg.put("/api/v1/channels/telegram", headers=coach.headers, json={"bot_token": token})
        assert response.status_code == 200, response.text
        secret = fake.of("setWebhook", token)[-1].params["secret_token"]
        return Bot(coach, token, response.json()["bot_username"], secret)

    return make
