"""REST API: sign-up, clients, settings."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, get, patch, post
from litestar.di import Provide
from litestar.params import JSONBody

from app.accounts.learning_settings import LEARNING_FIELDS, apply_learning_settings
from app.accounts.models import Coach
from app.auth import provide_coach_id
from app.core.security import mask_secret
from app.deps import CoachId, ContainerDep


class SignupRequest(msgspec.Struct):
    coach_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class SignupResponse(msgspec.Struct):
    coach_id: uuid.UUID
    api_key: str


class ClientCreate(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class ClientCreated(msgspec.Struct):
    id: uuid.UUID
    widget_token: str


class ClientOut(msgspec.Struct):
    id: uuid.UUID
    name: str
    created_at: datetime


class SettingsOut(msgspec.Struct):
    """Coach settings as the API shows them: the provider key only as ``llm_api_key_hint`` (masked).
    Memory: ``recent_messages`` (L1, 0–100 latest messages in the prompt), ``session_idle_minutes`` (L2,
    1–1440 minutes of silence that end a chat session). Escalation: ``handoff_mode`` (auto, draft,
    human_only), ``confidence_threshold`` (0–1), topics, ``handoff_sla_minutes``, ``availability`` hours,
    ``crisis_resources`` (empty: the defaults) and ``crisis_resources_by_language`` (``{"es": [lines]}``: the
    lines for a client who wrote in that language), alert webhook (with its signing secret, generated when the
    URL is set) and e-mail."""

    name: str
    persona: str
    llm_provider: str
    llm_model: str | None
    llm_base_url: str | None
    llm_api_key_set: bool
    llm_api_key_hint: str | None
    recent_messages: int
    session_idle_minutes: int
    handoff_mode: str
    confidence_threshold: float
    high_stakes_topics: list[str]
    always_escalate_topics: list[str]
    handoff_sla_minutes: int
    availability: dict[str, Any] | None
    crisis_resources: list[str]
    crisis_resources_by_language: dict[str, list[str]]
    alert_webhook_url: str | None
    alert_webhook_secret: str | None
    alert_email: str | None
    fine_tune_enabled: bool
    fine_tune_min_examples: int
    fine_tune_min_days: int
    fine_tune_base_model: str
    judge_model: str | None
    response_cache_ttl_seconds: int


class SettingsPatch(msgspec.Struct, omit_defaults=True):
    name: str | None = None
    persona: Annotated[str, msgspec.Meta(max_length=8000)] | None = None
    llm_provider: str | None = None
    llm_model: str | None = None
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    recent_messages: int | None = None
    session_idle_minutes: int | None = None
    handoff_mode: str | None = None
    confidence_threshold: float | None = None
    high_stakes_topics: list[str] | None = None
    always_escalate_topics: list[str] | None = None
    handoff_sla_minutes: int | None = None
    availability: dict[str, Any] | None = None
    crisis_resources: list[str] | None = None
    crisis_resources_by_language: dict[str, list[str]] | None = None
    alert_webhook_url: str | None = None
    alert_email: str | None = None
    fine_tune_enabled: bool | None = None
    fine_tune_min_examples: int | None = None
    fine_tune_min_days: int | None = None
    fine_tune_base_model: str | None = None
    judge_model: str | None = None
    response_cache_ttl_seconds: int | None = None


def settings_out(container: ContainerDep, coach: Coach) -> SettingsOut:
    """Serialise a coach's settings without ever exposing the key."""
    key = container.registry.decrypt_key(coach.llm_api_key_encrypted)
    return SettingsOut(
        name=coach.name,
        persona=coach.persona,
        llm_provider=coach.llm_provider,
        llm_model=coach.llm_model,
        llm_base_url=coach.llm_base_url,
        llm_api_key_set=key is not None,
        llm_api_key_hint=mask_secret(key) if key else None,
        recent_messages=coach.recent_messages,
        session_idle_minutes=coach.session_idle_minutes,
        handoff_mode=coach.handoff_mode,
        confidence_threshold=coach.confidence_threshold,
        high_stakes_topics=coach.high_stakes_topics,
        always_escalate_topics=coach.always_escalate_topics,
        handoff_sla_minutes=coach.handoff_sla_minutes,
        availability=coach.availability,
        crisis_resources=coach.crisis_resources,
        crisis_resources_by_language=coach.crisis_resources_by_language,
        alert_webhook_url=coach.alert_webhook_url,
        alert_webhook_secret=container.registry.decrypt_key(coach.alert_webhook_secret_encrypted),
        alert_email=coach.alert_email,
        fine_tune_enabled=coach.fine_tune_enabled,
        fine_tune_min_examples=coach.fine_tune_min_examples,
        fine_tune_min_days=coach.fine_tune_min_days,
        fine_tune_base_model=coach.fine_tune_base_model,
        judge_model=coach.judge_model,
        response_cache_ttl_seconds=coach.response_cache_ttl_seconds,
    )


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]

    @post("/signup", status_code=201)
    async def signup(self, data: JSONBody[SignupRequest], container: ContainerDep) -> SignupResponse:
        """Create a coach account; returns the tenant id and its first API key (shown only once)."""
        result = await container.accounts.signup(data.coach_name, data.email, data.password)
        return SignupResponse(coach_id=result.coach_id, api_key=result.api_key)


class ClientController(Controller):
    path = "/api/v1/clients"
    tags = ["clients"]
    dependencies = {"coach_id": Provide(provide_coach_id)}

    @post("/", status_code=201)
    async def create_client(
        self, data: JSONBody[ClientCreate], coach_id: CoachId, container: ContainerDep
    ) -> ClientCreated:
        """Create a client; returns its widget token (for ``Authorization: Bearer`` on chat calls)."""
        async with container.tenant(coach_id) as session:
            client, token = await container.accounts.create_client(session, coach_id, data.name)
        return ClientCreated(id=client.id, widget_token=token)

    @get("/")
    async def list_clients(self, coach_id: CoachId, container: ContainerDep) -> list[ClientOut]:
        """The coach's clients, newest first."""
        async with container.tenant(coach_id) as session:
            clients = await container.accounts.list_clients(session, coach_id)
        return [ClientOut(c.id, c.name, c.created_at) for c in clients]


class SettingsController(Controller):
    path = "/api/v1/settings"
    tags = ["settings"]
    dependencies = {"coach_id": Provide(provide_coach_id)}

    @get("/")
    async def get_settings(self, coach_id: CoachId, container: ContainerDep) -> SettingsOut:
        """Persona and provider settings (the key masked)."""
        async with container.tenant(coach_id) as session:
            coach = await container.accounts.get_coach(session, coach_id)
        return settings_out(container, coach)

    @patch("/")
    async def update_settings(
        self, data: JSONBody[SettingsPatch], coach_id: CoachId, container: ContainerDep
    ) -> SettingsOut:
        """Change persona, provider, memory, escalation and learning settings in one transaction (a bad field
        changes nothing: 400); the key is stored encrypted and never returned."""
        changes = msgspec.structs.asdict(data)
        learning = {name: changes.pop(name) for name in LEARNING_FIELDS}
        async with container.tenant(coach_id) as session:
            coach = await container.accounts.update_settings(session, coach_id, **changes)
            apply_learning_settings(coach, **learning)
        return settings_out(container, coach)
