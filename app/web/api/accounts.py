"""REST API: sign-up, clients, settings."""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.di import Provide
from litestar.params import JSONBody

from app.accounts.api_keys import API_KEY_NAME_MAX, issue_api_key, list_api_keys, revoke_api_key
from app.accounts.learning_settings import LEARNING_FIELDS, apply_learning_settings
from app.accounts.models import ApiKey, Coach
from app.accounts.widget_settings import (
    AVATAR_MAX_BYTES,
    WIDGET_FIELDS,
    apply_widget_settings,
    avatar_url,
    clear_widget_avatar,
    set_widget_avatar,
    suggestions,
)
from app.auth import (
    AUTH_BODY_MAX_BYTES,
    COACH_DEPENDENCIES,
    TEXT_BODY_MAX_BYTES,
    account_delete_key,
    provide_coach_id,
    throttle_auth_attempt,
)
from app.channels.telegram.api import TelegramDep, provide_telegram
from app.core.security import mask_secret
from app.core.validation import MAX_EMAIL_CHARS, MAX_NAME_CHARS, MAX_PERSONA_CHARS
from app.deps import PAGE, CoachId, ContainerDep, PathId, Uow, WantedPage, page_response
from app.handoff.catalogue import greeting
from app.web.api.documents import read_upload
from app.web.sessions import DashboardSessionsDep

EXPORT_HEADERS = {"Content-Disposition": 'attachment; filename="opencoach-data.json"'}
"""Headers of a data export: a JSON file to save (never cached: :data:`app.core.headers.NO_STORE_PREFIXES`)."""


class SignupRequest(msgspec.Struct):
    coach_name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS)]
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=MAX_EMAIL_CHARS)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class SignupResponse(msgspec.Struct):
    coach_id: uuid.UUID
    api_key: str


class PasswordChange(msgspec.Struct):
    """``email``: the dashboard user (of the API key's account) whose password changes."""

    email: Annotated[str, msgspec.Meta(min_length=3, max_length=MAX_EMAIL_CHARS)]
    current_password: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    new_password: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class PasswordChanged(msgspec.Struct):
    """``sessions_ended``: how many dashboard sessions of the account were logged out."""

    sessions_ended: int


class ApiKeyCreate(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=API_KEY_NAME_MAX)]


class ApiKeyOut(msgspec.Struct):
    """An API key as lists show it: ``prefix`` is its first 10 characters (the key itself is never shown
    again after creation); ``last_used_at`` is stamped at most once a minute; ``revoked_at`` once revoked."""

    id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    """A new API key with ``key``, the secret itself: shown only in this response."""

    key: str


def api_key_out(key: ApiKey) -> ApiKeyOut:
    """The listing form of an API key row (no secret: only its hash is stored)."""
    return ApiKeyOut(key.id, key.name, key.prefix, key.created_at, key.last_used_at, key.revoked_at)


class ClientCreate(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_CHARS)]


class ClientCreated(msgspec.Struct):
    id: uuid.UUID
    widget_token: str


class WidgetTokenOut(msgspec.Struct):
    """A client's new widget token and the chat link that carries it (``PUBLIC_URL/w/<token>``)."""

    widget_token: str
    link: str


class AccountDelete(msgspec.Struct):
    """The password of one of the coach's dashboard users, confirming the account's deletion."""

    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class AccountDeleted(msgspec.Struct):
    """The account is gone; ``files_deleted`` / ``files_failed``: the fine-tune training files at the provider,
    ``jobs_cancelled`` / ``jobs_failed``: the fine-tunes that were still training there (``ftjob-…``; a failure is
    ``"<id>: <status and reason>"``: cancel or delete it in the provider's dashboard; the account is deleted either
    way)."""

    deleted: bool
    files_deleted: list[str]
    files_failed: list[str]
    jobs_cancelled: list[str]
    jobs_failed: list[str]


class ClientOut(msgspec.Struct):
    id: uuid.UUID
    name: str
    created_at: datetime


class SettingsOut(msgspec.Struct):
    """Coach settings as the API shows them: the provider key only as ``llm_api_key_hint`` (masked). Memory:
    ``recent_messages`` (L1, 0–100 latest messages in the prompt), ``session_idle_minutes`` (L2, 1–1440 minutes of
    silence that end a chat session). Escalation: ``handoff_mode`` (auto, draft, human_only), ``confidence_threshold``
    (0–1), topics, ``handoff_sla_minutes``, ``availability`` hours, ``crisis_resources`` (empty: the defaults) and
    ``crisis_resources_by_language`` (``{"es": [lines]}``: the lines for a client who wrote in that language), alert
    webhook and e-mail. The webhook's signing secret is made when the URL is set and shown whole once, as
    ``alert_webhook_secret`` in the answer of the change that made it (a new URL, or ``POST
    /api/v1/settings/alert-webhook-secret``); otherwise ``None``, and ``alert_webhook_secret_hint`` (its last four
    characters) says which one is in use. ``alert_email`` is the confirmed address alerts are e-mailed to; a new one set
    through ``PATCH`` waits in ``alert_email_pending`` until its owner opens the confirmation link e-mailed to it
    (``POST /api/v1/settings/alert-email/resend`` sends another). ``widget_allowed_origins``: the origins
    (``scheme://host[:port]``) whose pages may frame the client widget and call its API from the browser (CORS); empty:
    none but this server. The widget's welcome (also the Telegram bot's ``/start``): ``widget_greeting`` (the text in
    use, the default when the coach set none; at most 500 characters, ``""`` restores the default),
    ``widget_suggestions`` (at most 5 suggested first questions, 1–120 characters each; ``[]``: none) and
    ``widget_avatar_url`` (``None``: the coach's initials; set with ``PUT /api/v1/settings/widget-avatar``)."""

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
    alert_webhook_secret_hint: str | None
    alert_email: str | None
    alert_email_pending: str | None
    fine_tune_enabled: bool
    fine_tune_min_examples: int
    fine_tune_min_days: int
    fine_tune_base_model: str
    judge_model: str | None
    response_cache_ttl_seconds: int
    widget_allowed_origins: list[str]
    widget_greeting: str
    widget_suggestions: list[str]
    widget_avatar_url: str | None


class SettingsPatch(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """``PATCH /api/v1/settings``: the fields sent change, the others stay. ``null`` is refused (400 naming the
    field): an empty string clears a text setting (``alert_webhook_url``, ``llm_api_key``…); ``null`` read as "not
    sent" before, so a client clearing a setting with it was told it succeeded while nothing changed."""

    name: Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS)] | msgspec.UnsetType = msgspec.UNSET
    persona: Annotated[str, msgspec.Meta(max_length=MAX_PERSONA_CHARS)] | msgspec.UnsetType = msgspec.UNSET
    llm_provider: str | msgspec.UnsetType = msgspec.UNSET
    llm_model: str | msgspec.UnsetType = msgspec.UNSET
    llm_base_url: str | msgspec.UnsetType = msgspec.UNSET
    llm_api_key: str | msgspec.UnsetType = msgspec.UNSET
    recent_messages: int | msgspec.UnsetType = msgspec.UNSET
    session_idle_minutes: int | msgspec.UnsetType = msgspec.UNSET
    handoff_mode: str | msgspec.UnsetType = msgspec.UNSET
    confidence_threshold: float | msgspec.UnsetType = msgspec.UNSET
    high_stakes_topics: list[str] | msgspec.UnsetType = msgspec.UNSET
    always_escalate_topics: list[str] | msgspec.UnsetType = msgspec.UNSET
    handoff_sla_minutes: int | msgspec.UnsetType = msgspec.UNSET
    availability: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    crisis_resources: list[str] | msgspec.UnsetType = msgspec.UNSET
    crisis_resources_by_language: dict[str, list[str]] | msgspec.UnsetType = msgspec.UNSET
    alert_webhook_url: str | msgspec.UnsetType = msgspec.UNSET
    alert_email: str | msgspec.UnsetType = msgspec.UNSET
    fine_tune_enabled: bool | msgspec.UnsetType = msgspec.UNSET
    fine_tune_min_examples: int | msgspec.UnsetType = msgspec.UNSET
    fine_tune_min_days: int | msgspec.UnsetType = msgspec.UNSET
    fine_tune_base_model: str | msgspec.UnsetType = msgspec.UNSET
    judge_model: str | msgspec.UnsetType = msgspec.UNSET
    response_cache_ttl_seconds: int | msgspec.UnsetType = msgspec.UNSET
    widget_allowed_origins: list[str] | msgspec.UnsetType = msgspec.UNSET
    widget_greeting: str | msgspec.UnsetType = msgspec.UNSET
    widget_suggestions: list[str] | msgspec.UnsetType = msgspec.UNSET


class EmbeddingRequest(msgspec.Struct):
    """A change of embedding model: ``provider`` ``local`` (all-MiniLM-L6-v2) or ``openai`` (an
    OpenAI-compatible ``/v1/embeddings``: ``model``, e.g. ``text-embedding-3-small``, asked for 384
    dimensions; ``base_url`` default OpenAI's; ``api_key`` the coach's own, stored encrypted)."""

    provider: str
    model: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    base_url: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    api_key: Annotated[str, msgspec.Meta(max_length=500)] | None = None


UNREADABLE_SECRET = "unreadable: the server's SECRET_KEY changed since it was stored; enter or make it again"
"""The hint of a stored secret the server's keys cannot decrypt (``SECRET_KEY`` replaced without the old one in
``SECRET_KEY_OLD``): the settings still show, so the coach can replace it."""


def secret_hint(container: ContainerDep, encrypted: bytes | None) -> str | None:
    """A stored secret as settings show it: masked (:func:`~app.core.security.mask_secret`), ``None`` when none is
    stored, :data:`UNREADABLE_SECRET` when it cannot be decrypted (never an error: the page that replaces it must
    open)."""
    try:
        secret = container.registry.decrypt_key(encrypted)
    except ValueError:
        return UNREADABLE_SECRET
    return mask_secret(secret) if secret else None


def settings_out(container: ContainerDep, coach: Coach, *, new_webhook_secret: str | None = None) -> SettingsOut:
    """Serialise a coach's settings without ever exposing the key, nor the webhook's signing secret but the
    ``new_webhook_secret`` this request made (:func:`made_webhook_secret`); secrets as :func:`secret_hint` shows
    them."""
    return SettingsOut(
        name=coach.name,
        persona=coach.persona,
        llm_provider=coach.llm_provider,
        llm_model=coach.llm_model,
        llm_base_url=coach.llm_base_url,
        llm_api_key_set=coach.llm_api_key_encrypted is not None,
        llm_api_key_hint=secret_hint(container, coach.llm_api_key_encrypted),
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
        alert_webhook_secret=new_webhook_secret,
        alert_webhook_secret_hint=secret_hint(container, coach.alert_webhook_secret_encrypted),
        alert_email=coach.alert_email,
        alert_email_pending=coach.alert_email_pending,
        fine_tune_enabled=coach.fine_tune_enabled,
        fine_tune_min_examples=coach.fine_tune_min_examples,
        fine_tune_min_days=coach.fine_tune_min_days,
        fine_tune_base_model=coach.fine_tune_base_model,
        judge_model=coach.judge_model,
        response_cache_ttl_seconds=coach.response_cache_ttl_seconds,
        widget_allowed_origins=coach.widget_allowed_origins,
        widget_greeting=greeting(coach.widget_greeting, coach.name),
        widget_suggestions=suggestions(coach),
        widget_avatar_url=avatar_url(coach),
    )


def made_webhook_secret(container: ContainerDep, before: bytes | None, coach: Coach) -> str | None:
    """The alert webhook signing secret a change of ``coach``'s settings made (a new ``alert_webhook_url``), to
    show once: ``None`` when the stored one (``before``: its ciphertext before the change) is kept or cleared."""
    after = coach.alert_webhook_secret_encrypted
    return container.registry.decrypt_key(after) if after is not None and after != before else None


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]

    @post("/signup", status_code=201, request_max_body_size=AUTH_BODY_MAX_BYTES)
    async def signup(
        self, request: Request[Any, Any, Any], data: JSONBody[SignupRequest], container: ContainerDep
    ) -> SignupResponse:
        """Create a coach account; returns the tenant id and its first API key (shown only once). Rate-limited
        per IP and per e-mail (429 with ``Retry-After``); a body over 4 KiB gets 413."""
        await throttle_auth_attempt(request, container, data.email)
        result = await container.accounts.signup(data.coach_name, data.email, data.password)
        return SignupResponse(coach_id=result.coach_id, api_key=result.api_key)

    @post(
        "/password",
        status_code=200,
        request_max_body_size=AUTH_BODY_MAX_BYTES,
        dependencies={"coach_id": Provide(provide_coach_id)},
    )
    async def change_password(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[PasswordChange],
        coach_id: CoachId,
        container: ContainerDep,
        dashboard_sessions: DashboardSessionsDep,
    ) -> PasswordChanged:
        """Change a dashboard user's password (the current one is required: 400 when wrong, 404 for an e-mail
        that is not a user of this account) and log out every dashboard session of the account. Rate-limited
        like log-in (429)."""
        await throttle_auth_attempt(request, container, data.email)
        user_id = await container.accounts.user_for_email(coach_id, data.email)
        await container.accounts.change_password(coach_id, user_id, data.current_password, data.new_password)
        return PasswordChanged(await dashboard_sessions.end_others(coach_id))


class ApiKeyController(Controller):
    path = "/api/v1/api-keys"
    tags = ["api keys"]
    dependencies = COACH_DEPENDENCIES

    @post("/", status_code=201)
    async def create_api_key(self, data: JSONBody[ApiKeyCreate], uow: Uow) -> ApiKeyCreated:
        """Create a named API key; the response is the only place the key itself ever appears."""
        key, secret = await issue_api_key(uow.session, uow.coach_id, data.name)
        out = api_key_out(key)
        return ApiKeyCreated(**msgspec.structs.asdict(out), key=secret)

    @get("/")
    async def list_keys(self, uow: Uow) -> list[ApiKeyOut]:
        """The account's API keys (prefix only), revoked ones included, newest first."""
        return [api_key_out(key) for key in await list_api_keys(uow.session, uow.coach_id)]

    @delete("/{key_id:str}", status_code=204)
    async def revoke_key(self, key_id: PathId, uow: Uow) -> None:
        """Revoke a key: its next request gets 401. 404 for an unknown id or another account's key."""
        await revoke_api_key(uow.session, uow.coach_id, key_id)


class ClientController(Controller):
    path = "/api/v1/clients"
    tags = ["clients"]
    dependencies = COACH_DEPENDENCIES

    @post("/", status_code=201)
    async def create_client(self, data: JSONBody[ClientCreate], uow: Uow, container: ContainerDep) -> ClientCreated:
        """Create a client; returns its widget token (for ``Authorization: Bearer`` on chat calls)."""
        client, token = await container.accounts.create_client(uow, data.name)
        return ClientCreated(id=client.id, widget_token=token)

    @get("/", dependencies=PAGE)
    async def list_clients(
        self, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep, page: WantedPage
    ) -> Response[list[ClientOut]]:
        """The coach's clients, newest first, a page at a time (``?limit=``, the ``Link`` header's next page:
        :func:`app.deps.page_response`; 400 for a bad cursor or limit)."""
        clients = await container.accounts.list_clients(uow, page)
        return page_response(request, clients, lambda c: ClientOut(c.id, c.name, c.created_at))

    @delete("/{client_id:str}", status_code=204)
    async def delete_client(self, client_id: PathId, uow: Uow, container: ContainerDep) -> None:
        """Erase the client and everything derived from their data (messages, memory, feedback, handoffs,
        interventions, training examples; Redis caches and provider training files right after). 404 for an
        unknown or another coach's client."""
        await container.rights.erase_client(uow, client_id)

    @get("/{client_id:str}/export")
    async def export_client(self, client_id: PathId, uow: Uow, container: ContainerDep) -> Response[dict[str, Any]]:
        """Everything stored about the client as one JSON file (messages, feedback, memory: profile, insights,
        session summaries; shape: :meth:`app.learning.rights.DataRightsService.export_client`). 404 for an
        unknown or another coach's client."""
        return Response(await container.rights.export_client(uow, client_id), headers=EXPORT_HEADERS)

    @post("/{client_id:str}/widget-token", status_code=201)
    async def rotate_widget_token(self, client_id: PathId, uow: Uow, container: ContainerDep) -> WidgetTokenOut:
        """Give the client a new widget token (also after a revocation): the old token and every widget session
        made from it get 401 at once. Returns the new token and chat link."""
        token = await container.accounts.rotate_widget_token(uow, client_id)
        return WidgetTokenOut(token, f"{container.settings.public_url}/w/{token}")

    @delete("/{client_id:str}/widget-token", status_code=204)
    async def revoke_widget_token(self, client_id: PathId, uow: Uow, container: ContainerDep) -> None:
        """Revoke the client's widget token: 401 for the token and its widget sessions until it is rotated."""
        await container.accounts.revoke_widget_token(uow, client_id)


class AccountController(Controller):
    path = "/api/v1/account"
    tags = ["auth"]
    dependencies = {"coach_id": Provide(provide_coach_id), "telegram": Provide(provide_telegram, sync_to_thread=False)}

    @post("/delete", status_code=200, request_max_body_size=AUTH_BODY_MAX_BYTES)
    async def delete_account(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[AccountDelete],
        coach_id: CoachId,
        container: ContainerDep,
        dashboard_sessions: DashboardSessionsDep,
        telegram: TelegramDep,
    ) -> AccountDeleted:
        """Delete the coach's whole account and all its data (every client, document, model version, Redis
        cache, provider training file); the password of a dashboard user confirms it (403 when wrong,
        nothing deleted). Rate-limited like log-in per IP and per account (429; a stolen API key cannot guess
        passwords); every dashboard session of the account ends."""
        await throttle_auth_attempt(request, container, account_delete_key(coach_id))
        disconnect = functools.partial(telegram.service.disconnect_any, coach_id)
        files = await container.rights.delete_account(coach_id, data.password, disconnect=disconnect)
        await dashboard_sessions.end_others(coach_id)
        return AccountDeleted(True, files.files_deleted, files.files_failed, files.jobs_cancelled, files.jobs_failed)


class SettingsController(Controller):
    path = "/api/v1/settings"
    tags = ["settings"]
    dependencies = COACH_DEPENDENCIES

    @get("/")
    async def get_settings(self, uow: Uow, container: ContainerDep) -> SettingsOut:
        """Persona and provider settings (the key masked)."""
        coach = await uow.coach()
        return settings_out(container, coach)

    @patch("/", request_max_body_size=TEXT_BODY_MAX_BYTES)
    async def update_settings(self, data: JSONBody[SettingsPatch], uow: Uow, container: ContainerDep) -> SettingsOut:
        """Change persona, provider, memory, escalation and learning settings in one transaction (a bad field
        changes nothing: 400); the key is stored encrypted and never returned. A new ``alert_webhook_url`` gets a
        new signing secret, returned this once as ``alert_webhook_secret``. The offline model cannot be fine-tuned:
        ``fine_tune_enabled: true`` with ``llm_provider`` ``local`` is a 400, and a switch to ``local`` turns
        ``fine_tune_enabled`` off (the answer shows it)."""
        sent = msgspec.structs.asdict(data)
        changes = {name: None if value is msgspec.UNSET else value for name, value in sent.items()}
        learning = {name: changes.pop(name) for name in LEARNING_FIELDS}
        widget = {name: changes.pop(name) for name in WIDGET_FIELDS}
        before = (await uow.coach()).alert_webhook_secret_encrypted
        coach = await container.accounts.update_settings(uow, **changes)
        apply_learning_settings(coach, **learning)
        apply_widget_settings(coach, **widget)
        return settings_out(container, coach, new_webhook_secret=made_webhook_secret(container, before, coach))

    @post("/alert-webhook-secret", status_code=200)
    async def rotate_alert_webhook_secret(self, uow: Uow, container: ContainerDep) -> SettingsOut:
        """Replace the alert webhook's signing secret (the old one stops signing at once) and return the settings
        with the new one as ``alert_webhook_secret``, shown this once. 400 when no ``alert_webhook_url`` is set."""
        secret = await container.accounts.rotate_webhook_secret(uow)
        return settings_out(container, await uow.coach(), new_webhook_secret=secret)

    @post("/alert-email/resend", status_code=202)
    async def resend_alert_email_confirmation(self, uow: Uow, container: ContainerDep) -> SettingsOut:
        """E-mail the pending ``alert_email_pending`` a new confirmation link (202; it is sent by the worker).
        409 when no address waits for confirmation."""
        await container.accounts.resend_alert_email_confirmation(uow)
        return settings_out(container, await uow.coach())

    @put("/widget-avatar", request_max_body_size=AVATAR_MAX_BYTES + 64 * 1024)
    async def put_widget_avatar(
        self, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep
    ) -> SettingsOut:
        """Set the widget's avatar from a PNG, JPEG, WebP or GIF image (multipart field ``file``, at most 2 MB;
        the type is read from the data, SVG is refused) stored re-encoded as a PNG of at most 256 px a side.
        400 for anything else (nothing stored); 413 for a body over the limit."""
        _, _, data = await read_upload(request)
        coach = await set_widget_avatar(uow, data)
        return settings_out(container, coach)

    @delete("/widget-avatar", status_code=200)
    async def delete_widget_avatar(self, uow: Uow, container: ContainerDep) -> SettingsOut:
        """Remove the widget's avatar (the widget shows the coach's initials)."""
        return settings_out(container, await clear_widget_avatar(uow))

    @get("/embedding")
    async def get_embedding(self, uow: Uow, container: ContainerDep) -> dict[str, Any]:
        """The embedder in use (its model made every stored vector and embeds every query), the requested one
        and the re-embedding job's progress: ``{"in_use", "in_use_provider", "requested", "status", "done",
        "total", "error"}``."""
        return container.embeddings.status(await uow.coach()).as_dict()

    @put("/embedding", status_code=202)
    async def request_embedding(
        self, data: JSONBody[EmbeddingRequest], uow: Uow, container: ContainerDep
    ) -> dict[str, Any]:
        """Switch to another embedding model: queues the job that re-embeds the coach's documents and memory
        and then switches (202; queries keep the model in use until then). 400 for an unknown provider, a
        missing model or a refused base URL (nothing changes)."""
        status = await container.embeddings.request(
            uow, provider=data.provider, model=data.model, base_url=data.base_url, api_key=data.api_key
        )
        return status.as_dict()
