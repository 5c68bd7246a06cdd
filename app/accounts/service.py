"""Accounts: sign-up, credentials, clients and the coach's settings. Methods on tenant data take the
:class:`~app.accounts.unit_of_work.UnitOfWork`; sign-up and the credential look-ups run before a tenant is known."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.handoff_settings import apply_handoff_settings
from app.accounts.models import ApiKey, Client, Coach, CoachUser
from app.accounts.unit_of_work import UnitOfWork
from app.core.egress import EgressGuard, EgressRefused, UnresolvableHost
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.security import SecretBox, hash_password, new_token, token_hash, verify_password
from app.core.validation import EMAIL_RE, http_url, in_range
from app.db.engine import tenant_session

MIN_PASSWORD_LENGTH = 8
LLM_PROVIDERS = ("local", "openai")
RECENT_MESSAGES_RANGE = (0, 100)
"""Allowed ``Coach.recent_messages`` (L1: latest messages of the conversation put in the prompt)."""
SESSION_IDLE_MINUTES_RANGE = (1, 1440)
"""Allowed ``Coach.session_idle_minutes`` (L2: silence after which a chat session ends), up to a day."""


@dataclass(frozen=True)
class SignupResult:
    """A new tenant: its id, the first dashboard user, and the plaintext API key (shown once)."""

    coach_id: uuid.UUID
    user_id: uuid.UUID
    api_key: str


@dataclass(frozen=True)
class ClientIdentity:
    """Who a widget token belongs to."""

    coach_id: uuid.UUID
    client_id: uuid.UUID


class AccountService:
    """Sign-up and credential look-ups (which run before the tenant is known), clients and settings."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], secrets: SecretBox, egress: EgressGuard | None = None
    ) -> None:
        self._sessionmaker = sessionmaker
        self._secrets = secrets
        self._egress = egress or EgressGuard()

    async def check_outbound_url(self, name: str, value: str) -> str | None:
        """The coach's URL setting ``name`` as it will be stored (``None``: cleared), after the egress guard
        checked it (:meth:`app.core.egress.EgressGuard.check_url`: https only outside the operator's
        allowlist, a host that resolves only to public addresses). Raises ``InvalidInput`` naming the field
        and the reason. The same check runs again at send time: DNS can change in between."""
        url = http_url(name, value)
        if url:
            try:
                await self._egress.check_url(url, resolve_allowlisted=False)
            except (EgressRefused, UnresolvableHost) as exc:
                raise InvalidInput(f"{name}: {exc}") from exc
        return url

    async def signup(self, coach_name: str, email: str, password: str) -> SignupResult:
        """Create a coach (tenant), its first user and API key.

        Raises ``InvalidInput`` for an empty name, a malformed e-mail or a short password, and ``Conflict``
        when the e-mail is already registered.
        """
        coach_name, email = coach_name.strip(), email.strip().lower()
        if not coach_name:
            raise InvalidInput("coach_name must not be empty")
        if not EMAIL_RE.match(email):
            raise InvalidInput("email is not a valid e-mail address")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
        coach_id = uuid.uuid4()
        api_key = new_token("oc")
        user = CoachUser(coach_id=coach_id, email=email, password_hash=hash_password(password))
        try:  # the tenant does not exist yet: a transaction of its own, not a unit of work (no coach to load)
            async with tenant_session(self._sessionmaker, coach_id) as session:
                session.add(Coach(id=coach_id, name=coach_name, persona=default_persona(coach_name)))
                await session.flush()
                session.add(user)
                session.add(ApiKey(coach_id=coach_id, prefix=api_key[:10], key_hash=token_hash(api_key)))
        except IntegrityError as exc:
            raise Conflict("an account with this e-mail already exists") from exc
        return SignupResult(coach_id, user.id, api_key)

    async def login(self, email: str, password: str) -> tuple[uuid.UUID, uuid.UUID] | None:
        """Check a dashboard password; returns ``(coach_id, user_id)`` or ``None``."""
        async with self._sessionmaker() as session:
            row = (
                await session.execute(
                    text("SELECT user_id, coach_id, password_hash FROM auth_coach_user(:email)"),
                    {"email": email.strip()},
                )
            ).first()
        if row is None or not verify_password(row.password_hash, password):
            return None
        return row.coach_id, row.user_id

    async def coach_for_api_key(self, api_key: str) -> uuid.UUID | None:
        """The tenant an API key belongs to, or ``None`` (unknown or revoked)."""
        async with self._sessionmaker() as session:
            value = await session.scalar(text("SELECT auth_api_key(:h)"), {"h": token_hash(api_key)})
        return value if isinstance(value, uuid.UUID) else None

    async def client_for_widget_token(self, token: str) -> ClientIdentity | None:
        """The client (and tenant) a widget token belongs to, or ``None``."""
        async with self._sessionmaker() as session:
            row = (
                await session.execute(
                    text("SELECT coach_id, client_id FROM auth_widget_token(:h)"), {"h": token_hash(token)}
                )
            ).first()
        return ClientIdentity(row.coach_id, row.client_id) if row else None

    async def delete_coach(self, uow: UnitOfWork) -> None:
        """Delete the unit of work's coach account and, by cascade, everything it owns. Raises ``NotFound``."""
        await uow.session.delete(await uow.coach())
        await uow.session.flush()

    async def create_client(self, uow: UnitOfWork, name: str) -> tuple[Client, str]:
        """Create a client; returns it and its plaintext widget token. Raises ``InvalidInput`` on empty name."""
        name = name.strip()
        if not name:
            raise InvalidInput("name must not be empty")
        token = new_token("ocw")
        client = Client(
            coach_id=uow.coach_id,
            name=name,
            widget_token_hash=token_hash(token),
            widget_token_encrypted=self._secrets.encrypt(token),
        )
        uow.session.add(client)
        await uow.session.flush()
        return client, token

    async def list_clients(self, uow: UnitOfWork) -> list[Client]:
        """The coach's clients, newest first."""
        stmt = select(Client).where(Client.coach_id == uow.coach_id).order_by(Client.created_at.desc())
        return list((await uow.session.scalars(stmt)).all())

    async def get_client(self, uow: UnitOfWork, client_id: uuid.UUID) -> Client:
        """One client of this coach. Raises ``NotFound`` (also for another coach's client)."""
        stmt = select(Client).where(Client.id == client_id, Client.coach_id == uow.coach_id)
        client = await uow.session.scalar(stmt)
        if client is None:
            raise NotFound("client not found")
        return client

    async def delete_client(self, uow: UnitOfWork, client_id: uuid.UUID) -> None:
        """Delete a client and (by cascade) its conversations. Raises ``NotFound``."""
        await uow.session.delete(await self.get_client(uow, client_id))

    def widget_token(self, client: Client) -> str:
        """Decrypt the client's widget token for display in the coach's dashboard."""
        return self._secrets.decrypt(client.widget_token_encrypted)

    async def update_settings(
        self,
        uow: UnitOfWork,
        *,
        name: str | None = None,
        persona: str | None = None,
        llm_provider: str | None = None,
        llm_model: str | None = None,
        llm_base_url: str | None = None,
        llm_api_key: str | None = None,
        recent_messages: int | None = None,
        session_idle_minutes: int | None = None,
        **handoff: Any,
    ) -> Coach:
        """Change persona, provider, memory and escalation settings (``handoff``: the fields of
        :data:`app.accounts.handoff_settings.HANDOFF_FIELDS`); ``None`` leaves a field as is, ``""`` clears an
        optional one.

        The API key is encrypted before it is stored. Raises ``InvalidInput`` for an unknown provider, an
        ``openai`` provider without a model, a base URL or webhook URL the egress guard refuses
        (:meth:`check_outbound_url`), ``recent_messages`` outside 0–100 or ``session_idle_minutes`` outside
        1–1440 (nothing is changed then: the caller's transaction rolls back).
        """
        # the URLs first (they need DNS), before anything is changed
        if llm_base_url is not None:
            llm_base_url = await self.check_outbound_url("llm_base_url", llm_base_url) or ""
        if isinstance(handoff.get("alert_webhook_url"), str):
            handoff["alert_webhook_url"] = (
                await self.check_outbound_url("alert_webhook_url", handoff["alert_webhook_url"]) or ""
            )
        coach = await uow.coach()
        if name is not None:
            if not name.strip():
                raise InvalidInput("name must not be empty")
            coach.name = name.strip()
        if persona is not None:
            coach.persona = persona.strip()
        if llm_provider is not None:
            if llm_provider not in LLM_PROVIDERS:
                raise InvalidInput(f"llm_provider must be one of {', '.join(LLM_PROVIDERS)}")
            coach.llm_provider = llm_provider
        if llm_model is not None:
            coach.llm_model = llm_model.strip() or None
        if llm_base_url is not None:
            coach.llm_base_url = http_url("llm_base_url", llm_base_url)
        if llm_api_key is not None:
            coach.llm_api_key_encrypted = self._secrets.encrypt(llm_api_key.strip()) if llm_api_key.strip() else None
        if recent_messages is not None:
            coach.recent_messages = in_range("recent_messages", recent_messages, RECENT_MESSAGES_RANGE)
        if session_idle_minutes is not None:
            coach.session_idle_minutes = in_range(
                "session_idle_minutes", session_idle_minutes, SESSION_IDLE_MINUTES_RANGE
            )
        apply_handoff_settings(coach, self._secrets, **handoff)
        if coach.llm_provider == "openai" and not coach.llm_model:
            raise InvalidInput("llm_model is required for the openai provider")
        await uow.session.flush()
        return coach


def default_persona(coach_name: str) -> str:
    """The persona a new coach starts with (editable in settings)."""
    return (
        f"You are the AI assistant of {coach_name}, a coach. Answer warmly and concisely, in the coach's "
        "voice, using the coach's own material when it is relevant. Encourage reflection and small, "
        "concrete next steps. If you do not know, say so."
    )
