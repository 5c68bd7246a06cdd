"""Accounts: sign-up, credentials, clients and the coach's settings. Methods on tenant data take the
:class:`~app.accounts.unit_of_work.UnitOfWork`; sign-up and the credential look-ups run before a tenant is known."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Select, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.alert_email import INVALID_LINK, read_confirmation_token
from app.accounts.api_keys import issue_api_key
from app.accounts.handoff_settings import apply_handoff_settings, replace_webhook_secret
from app.accounts.learning_settings import MAX_MODEL_NAME_CHARS
from app.accounts.models import Client, Coach, CoachUser
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.core.egress import EgressGuard, EgressRefused, UnresolvableHost
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.pagination import Keyset, Page, PageRequest
from app.core.ratelimit import ConfirmationThrottle
from app.core.security import SecretBox, hash_password_async, new_token, token_hash, verify_password_async
from app.core.validation import (
    EMAIL_RE,
    MAX_EMAIL_CHARS,
    MAX_NAME_CHARS,
    MAX_PERSONA_CHARS,
    bounded_text,
    http_url,
    in_range,
    provider_api_key,
    web_origins,
)
from app.db import jobs
from app.db.autocommit import autocommit_session
from app.db.engine import tenant_session
from app.db.search import contains_pattern

MIN_PASSWORD_LENGTH = 8
LLM_PROVIDERS = ("local", "openai")
OPENAI_API_HOST = "api.openai.com"
"""Where the openai SDK sends a coach's calls when ``llm_base_url`` is empty."""
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
    """Who a widget token belongs to, and the SHA-256 hash of the token (or of the widget session's token) they
    were identified by: :meth:`AccountService.still_valid` checks it again."""

    coach_id: uuid.UUID
    client_id: uuid.UUID
    token_hash: str


WidgetAccessEnded = Callable[[uuid.UUID], Awaitable[None]]
"""Told a client's id after the commit that ended their widget access (:attr:`AccountService.widget_access_ended`)."""


class AccountService:
    """Sign-up and credential look-ups (which run before the tenant is known), clients and settings."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        secrets: SecretBox,
        egress: EgressGuard | None = None,
        confirmations: ConfirmationThrottle | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._secrets = secrets
        self._egress = egress or EgressGuard()
        self._confirmations = confirmations
        """Counts the alert e-mail confirmations of each coach and to each address (``ALERT_EMAIL_CONFIRM_LIMIT``,
        ``ALERT_EMAIL_ADDRESS_LIMIT``); ``None``: unlimited."""
        self.widget_access_ended: list[WidgetAccessEnded] = []
        """Called after the commit that rotated or revoked a client's widget token or deleted the client (the
        container registers the live channel's :meth:`~app.handoff.live.LiveEvents.end_widget_sockets`: the
        client's open widget sockets close)."""

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

        Raises ``InvalidInput`` for an empty name or one over :data:`~app.core.validation.MAX_NAME_CHARS`
        characters, a malformed e-mail (or one over 320 characters) or a password :func:`check_new_password`
        refuses, and ``Conflict`` when the e-mail is already registered.
        """
        coach_name = bounded_text("coach_name", coach_name, MAX_NAME_CHARS, required=True)
        email = email.strip().lower()
        if len(email) > MAX_EMAIL_CHARS or not EMAIL_RE.match(email):
            raise InvalidInput("email is not a valid e-mail address")
        check_new_password("password", password)
        coach_id = uuid.uuid4()
        user = CoachUser(coach_id=coach_id, email=email, password_hash=await hash_password_async(password))
        try:  # the tenant does not exist yet: a transaction of its own, not a unit of work (no coach to load)
            async with tenant_session(self._sessionmaker, coach_id) as session:
                session.add(Coach(id=coach_id, name=coach_name, persona=default_persona(coach_name)))
                await session.flush()
                session.add(user)
                _, api_key = await issue_api_key(session, coach_id)
        except IntegrityError as exc:
            raise Conflict("an account with this e-mail already exists") from exc
        return SignupResult(coach_id, user.id, api_key)

    async def login(self, email: str, password: str) -> tuple[uuid.UUID, uuid.UUID] | None:
        """Check a dashboard password; returns ``(coach_id, user_id)`` or ``None``. An unknown e-mail takes as
        long as a wrong password (:func:`app.core.security.verify_password_async` checks a dummy hash)."""
        async with self._sessionmaker() as session:
            row = (
                await session.execute(
                    text("SELECT user_id, coach_id, password_hash FROM auth_coach_user(:email)"),
                    {"email": email.strip()},
                )
            ).first()
        matches = await verify_password_async(row.password_hash if row else None, password)
        if row is None or not matches:
            return None
        return row.coach_id, row.user_id

    async def check_password(self, uow: UnitOfWork, password: str) -> bool:
        """Whether ``password`` is the password of one of the coach's dashboard users (argon2id check, in a
        worker thread: :func:`app.core.security.verify_password_async`)."""
        stmt = select(CoachUser.password_hash).where(CoachUser.coach_id == uow.coach_id)
        hashes = (await uow.session.scalars(stmt)).all()
        for stored in hashes:
            if await verify_password_async(stored, password):
                return True
        return False

    async def user_for_email(self, coach_id: uuid.UUID, email: str) -> uuid.UUID:
        """The id of the coach's dashboard user with this e-mail. Raises ``NotFound`` (also for another coach's)."""
        query = select(CoachUser.id).where(CoachUser.coach_id == coach_id, CoachUser.email == email.strip().lower())
        async with tenant_session(self._sessionmaker, coach_id) as session:
            user_id = await session.scalar(query)
        if user_id is None:
            raise NotFound("no user with this e-mail in this account")
        return user_id

    async def email_of(self, coach_id: uuid.UUID, user_id: uuid.UUID) -> str:
        """The e-mail of the coach's dashboard user ``user_id``: log-in's rate-limit key. Raises ``NotFound``."""
        query = select(CoachUser.email).where(CoachUser.id == user_id, CoachUser.coach_id == coach_id)
        async with tenant_session(self._sessionmaker, coach_id) as session:
            email = await session.scalar(query)
        if email is None:
            raise NotFound("user not found")
        return email

    async def change_password(
        self, coach_id: uuid.UUID, user_id: uuid.UUID, current_password: str, new_password: str
    ) -> None:
        """Replace a dashboard user's password after checking the current one (argon2id, off the event loop).

        Raises ``InvalidInput`` for a new password :func:`check_new_password` refuses or a wrong
        current password, ``NotFound`` for an unknown user, ``Conflict`` if the password changed while this
        call was hashing (nothing is changed then). Ending the user's other sessions is the caller's part."""
        check_new_password("new_password", new_password)
        async with tenant_session(self._sessionmaker, coach_id) as session:
            old_hash = await session.scalar(
                select(CoachUser.password_hash).where(CoachUser.id == user_id, CoachUser.coach_id == coach_id)
            )
        if old_hash is None:
            raise NotFound("user not found")
        if not await verify_password_async(old_hash, current_password):
            raise InvalidInput("current_password is wrong")
        new_hash = await hash_password_async(new_password)
        async with tenant_session(self._sessionmaker, coach_id) as session:
            changed = await session.execute(
                update(CoachUser)
                .where(CoachUser.id == user_id, CoachUser.password_hash == old_hash)
                .values(password_hash=new_hash)
            )
            if changed.rowcount != 1:  # type: ignore[attr-defined]
                raise Conflict("the password was changed meanwhile; try again")

    async def coach_for_api_key(self, api_key: str) -> uuid.UUID | None:
        """The tenant an API key belongs to, or ``None`` (unknown or revoked). Looked up on every request
        (a revoked key fails at once); ``auth_api_key`` also stamps the key's ``last_used_at``, at most once a
        minute: one statement, which commits on its own (autocommit)."""
        async with autocommit_session(self._sessionmaker) as session:
            value = await session.scalar(text("SELECT auth_api_key(:h)"), {"h": token_hash(api_key)})
        return value if isinstance(value, uuid.UUID) else None

    async def client_for_widget_token(self, token: str) -> ClientIdentity | None:
        """The client (and tenant) a widget token belongs to, or ``None``."""
        return await self._client_for_token_hash(token_hash(token))

    async def _client_for_token_hash(self, hashed: str) -> ClientIdentity | None:
        async with autocommit_session(self._sessionmaker) as session:  # one statement, on every widget request
            row = (
                await session.execute(text("SELECT coach_id, client_id FROM auth_widget_token(:h)"), {"h": hashed})
            ).first()
        return ClientIdentity(row.coach_id, row.client_id, hashed) if row else None

    async def still_valid(self, identity: ClientIdentity) -> bool:
        """Whether the widget token ``identity`` was identified by still opens the same client (not rotated,
        revoked or deleted since): a long-lived widget socket asks before each message it stores."""
        return await self._client_for_token_hash(identity.token_hash) == identity

    async def widget_session(self, token: str) -> tuple[ClientIdentity, str] | None:
        """Exchange a valid widget token for a widget session: returns the client and the session value (a
        Fernet token over ``{"h": sha256 of the widget token}``, for an HttpOnly cookie), or ``None`` for an
        unknown or revoked token."""
        identity = await self.client_for_widget_token(token)
        return None if identity is None else (identity, self.renew_widget_session(token_hash(token)))

    def renew_widget_session(self, hashed: str) -> str:
        """A fresh session value for the widget token whose hash is ``hashed`` (its age starts again)."""
        return self._secrets.encrypt(json.dumps({"h": hashed})).decode()

    async def client_for_widget_session(self, value: str, max_age_s: int) -> tuple[ClientIdentity, str] | None:
        """The client of a widget session value made at most ``max_age_s`` seconds ago, and its widget token's
        hash; ``None`` when it is forged, expired, or its token was rotated or revoked since."""
        try:
            hashed = json.loads(self._secrets.decrypt(value.encode(), ttl_s=max_age_s))["h"]
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(hashed, str):
            return None
        identity = await self._client_for_token_hash(hashed)
        return (identity, hashed) if identity is not None else None

    async def widget_allowed_origins(self, coach_id: uuid.UUID) -> list[str]:
        """The origins the coach lets frame the widget and call its API (``Coach.widget_allowed_origins``), read
        before the request's unit of work exists (authentication). Raises ``NotFound`` for an unknown coach."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            return list((await uow.coach()).widget_allowed_origins)

    async def widget_origin_listed(self, origin: str) -> bool:
        """Whether any coach lists ``origin`` (exactly, as :meth:`widget_allowed_origins` is compared) in its
        ``widget_allowed_origins``: what a CORS preflight, which names no coach, can be checked against. One
        statement through the ``widget_origin_listed`` SECURITY DEFINER function (migration 0056)."""
        async with autocommit_session(self._sessionmaker) as session:
            return bool(await session.scalar(text("SELECT widget_origin_listed(:o)"), {"o": origin}))

    async def delete_coach(self, uow: UnitOfWork) -> None:
        """Delete the unit of work's coach account and, by cascade, everything it owns. Raises ``NotFound``."""
        await uow.session.delete(await uow.coach())
        await uow.session.flush()

    async def create_client(self, uow: UnitOfWork, name: str) -> tuple[Client, str]:
        """Create a client; returns it and its plaintext widget token. Raises ``InvalidInput`` for an empty name or
        one over :data:`~app.core.validation.MAX_NAME_CHARS` characters."""
        client = Client(coach_id=uow.coach_id, name=bounded_text("name", name, MAX_NAME_CHARS, required=True))
        token = self._issue_widget_token(client)
        uow.session.add(client)
        await uow.session.flush()
        return client, token

    def _issue_widget_token(self, client: Client) -> str:
        """Give ``client`` a new widget token (stored hashed and encrypted); returns it in plaintext."""
        token = new_token("ocw")
        client.widget_token_hash = token_hash(token)
        client.widget_token_encrypted = self._secrets.encrypt(token)
        return token

    async def rotate_widget_token(self, uow: UnitOfWork, client_id: uuid.UUID) -> str:
        """Replace the client's widget token (also a revoked one) with a new one; returns it in plaintext. The
        old token and every widget session made from it stop working at once. Raises ``NotFound``."""
        client = await self.get_client(uow, client_id)
        token = self._issue_widget_token(client)
        await uow.session.flush()
        self._end_widget_access(uow, client_id)
        return token

    async def revoke_widget_token(self, uow: UnitOfWork, client_id: uuid.UUID) -> None:
        """Revoke the client's widget token: no token or widget session works until
        :meth:`rotate_widget_token`. Raises ``NotFound``."""
        client = await self.get_client(uow, client_id)
        client.widget_token_hash = client.widget_token_encrypted = None
        await uow.session.flush()
        self._end_widget_access(uow, client_id)

    def _end_widget_access(self, uow: UnitOfWork, client_id: uuid.UUID) -> None:
        """After ``uow`` commits, tell :attr:`widget_access_ended` the client's widget access ended."""
        for listener in self.widget_access_ended:
            uow.after_commit(functools.partial(listener, client_id))

    async def list_clients(
        self, uow: UnitOfWork, page: PageRequest, *, name_contains: str = "", oldest_first: bool = False
    ) -> Page[Client]:
        """One page of the coach's clients (:func:`clients_query`)."""
        stmt = clients_query(uow.coach_id, page, name_contains=name_contains, oldest_first=oldest_first)
        return page.page((await uow.session.scalars(stmt)).all(), lambda c: Keyset(c.created_at, c.id))

    async def count_clients(self, uow: UnitOfWork) -> int:
        """How many clients the coach has, the preview client (the coach chatting with their own clone) not
        counted."""
        coach = await uow.coach()
        stmt = select(func.count()).select_from(Client).where(Client.coach_id == coach.id)
        if coach.preview_client_id is not None:
            stmt = stmt.where(Client.id != coach.preview_client_id)
        return int(await uow.session.scalar(stmt) or 0)

    async def preview_client(self, uow: UnitOfWork) -> tuple[Client, str]:
        """The client the coach chats as to try their clone (``Coach.preview_client_id``), created on first use
        ("Preview (you)"), and its widget token (a new one when it was revoked)."""
        coach = await uow.coach()
        client = await uow.session.get(Client, coach.preview_client_id) if coach.preview_client_id else None
        if client is None:
            client, token = await self.create_client(uow, "Preview (you)")
            coach.preview_client_id = client.id
            await uow.session.flush()
            return client, token
        token = self.widget_token(client) or await self.rotate_widget_token(uow, client.id)
        return client, token

    async def get_client(self, uow: UnitOfWork, client_id: uuid.UUID) -> Client:
        """One client of this coach. Raises ``NotFound`` (also for another coach's client)."""
        stmt = select(Client).where(Client.id == client_id, Client.coach_id == uow.coach_id)
        client = await uow.session.scalar(stmt)
        if client is None:
            raise NotFound("client not found")
        return client

    async def delete_client(self, uow: UnitOfWork, client_id: uuid.UUID) -> None:
        """Delete a client and (by cascade) its conversations; their open widget sockets close after the commit.
        Raises ``NotFound``."""
        await uow.session.delete(await self.get_client(uow, client_id))
        self._end_widget_access(uow, client_id)

    def widget_token(self, client: Client) -> str | None:
        """Decrypt the client's widget token for display in the coach's dashboard (``None``: revoked)."""
        if client.widget_token_encrypted is None:
            return None
        return self._secrets.decrypt(client.widget_token_encrypted)

    async def rotate_webhook_secret(self, uow: UnitOfWork) -> str:
        """Give the coach's alert webhook a new signing secret (the old one stops signing at once) and return it,
        to show once. Raises ``InvalidInput`` when no ``alert_webhook_url`` is set. Two at once (a double click)
        each show their own; the one whose transaction commits last (its update waits for the other's row lock) is
        kept."""
        return replace_webhook_secret(await uow.coach(), self._secrets)

    async def resend_alert_email_confirmation(self, uow: UnitOfWork) -> str:
        """E-mail the pending alert address a new confirmation link (the earlier ones keep working until they
        expire) and return that address. Raises ``Conflict`` when no address waits for confirmation."""
        coach = await uow.coach()
        if coach.alert_email_pending is None:
            raise Conflict("no alert e-mail is waiting for confirmation")
        await self._send_confirmation(uow, coach.alert_email_pending)
        return coach.alert_email_pending

    async def _send_confirmation(self, uow: UnitOfWork, email: str | None, *, unless: str | None = None) -> None:
        """Queue the confirmation e-mail to ``email`` (nothing for ``None`` or ``email == unless``: no new address),
        counted against the coach's ``ALERT_EMAIL_CONFIRM_LIMIT`` and the address's ``ALERT_EMAIL_ADDRESS_LIMIT``
        (``TooManyAttempts`` over either: the caller's transaction rolls back, nothing changes)."""
        if email is None or email == unless:
            return
        if self._confirmations is not None:
            await self._confirmations.hit(uow.coach_id, email)
        jobs.confirm_alert_email(uow.session, uow.coach_id, email)

    async def confirm_alert_email(self, token: str, *, confirm: bool = True) -> str:
        """Check a confirmation link's ``token`` (:mod:`app.accounts.alert_email`) and, with ``confirm``, make its
        address the coach's alert address (alerts go there from now on); returns the address. Raises
        ``InvalidInput`` (:data:`~app.accounts.alert_email.INVALID_LINK`) for a tampered or expired token, or one
        whose address is no longer the pending one (confirmed already, or replaced since)."""
        coach_id, email = read_confirmation_token(self._secrets, token)
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            coach = await uow.session.get(Coach, coach_id, with_for_update=confirm)
            if coach is None or coach.alert_email_pending != email:
                raise InvalidInput(INVALID_LINK)
            if confirm:
                coach.alert_email, coach.alert_email_pending = email, None
        return email

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
        widget_allowed_origins: list[str] | None = None,
        **handoff: Any,
    ) -> Coach:
        """Change persona, provider, memory and escalation settings (``handoff``: the fields of
        :data:`app.accounts.handoff_settings.HANDOFF_FIELDS`); ``None`` leaves a field as is, ``""`` clears an
        optional one. A new ``alert_email`` queues its confirmation (:meth:`_send_confirmation`). ``llm_provider=
        "local"`` turns ``fine_tune_enabled`` off (the offline model cannot be fine-tuned; :func:`app.accounts.
        learning_settings.apply_learning_settings` refuses turning it on), and a switch to it queues the cancel of
        the coach's running fine-tunes (:func:`app.db.jobs.stop_fine_tunes`).

        The API key is encrypted before it is stored. Raises ``InvalidInput`` for an empty (or only blank) name or
        persona (the persona is the assistant's instructions: without it the model has none), a name or persona
        over :data:`~app.core.validation.MAX_NAME_CHARS` or :data:`~app.core.validation.MAX_PERSONA_CHARS`
        characters, an unknown provider, an ``openai`` provider without a model, a base URL or webhook URL the
        egress guard refuses (:meth:`check_outbound_url`), an API key that cannot be sent
        (:func:`app.core.validation.provider_api_key`), ``recent_messages`` outside 0–100, ``session_idle_minutes``
        outside 1–1440 or a ``widget_allowed_origins`` entry that is not an origin
        (:func:`app.core.validation.web_origins`;
        nothing is changed then: the caller's transaction rolls back).
        """
        coach = await uow.coach()
        # a changed URL is checked first (it needs DNS), before anything is changed; one sent again as stored is
        # not looked up again (each send checks it: a host that stopped resolving must not block other fields)
        if llm_base_url is not None and http_url("llm_base_url", llm_base_url) != coach.llm_base_url:
            llm_base_url = await self.check_outbound_url("llm_base_url", llm_base_url) or ""
        webhook = handoff.get("alert_webhook_url")
        if isinstance(webhook, str) and http_url("alert_webhook_url", webhook) != coach.alert_webhook_url:
            handoff["alert_webhook_url"] = await self.check_outbound_url("alert_webhook_url", webhook) or ""
        moved = llm_base_url is not None and _host(llm_base_url) != _host(coach.llm_base_url)
        if moved and llm_api_key is None and coach.llm_api_key_encrypted is not None:
            raise InvalidInput(
                "llm_api_key must be entered again when llm_base_url moves to another host: a stored key is only "
                "sent to the host it was entered for"
            )
        if name is not None:
            coach.name = bounded_text("name", name, MAX_NAME_CHARS, required=True)
        if persona is not None:
            coach.persona = bounded_text("persona", persona, MAX_PERSONA_CHARS, required=True)
        if llm_provider is not None:
            if llm_provider not in LLM_PROVIDERS:
                raise InvalidInput(f"llm_provider must be one of {', '.join(LLM_PROVIDERS)}")
            if llm_provider == "local":  # the offline model cannot be fine-tuned: the cron would never start one
                coach.fine_tune_enabled = False
                if coach.llm_provider != "local":  # and a fine-tune running at the endpoint it leaves is cancelled
                    jobs.stop_fine_tunes(uow.session, coach.id)
            coach.llm_provider = llm_provider
        if llm_model is not None:
            coach.llm_model = bounded_text("llm_model", llm_model, MAX_MODEL_NAME_CHARS) or None
        if llm_base_url is not None:
            coach.llm_base_url = http_url("llm_base_url", llm_base_url)
        if llm_api_key is not None:
            key = provider_api_key("llm_api_key", llm_api_key)
            coach.llm_api_key_encrypted = self._secrets.encrypt(key) if key else None
        if recent_messages is not None:
            coach.recent_messages = in_range("recent_messages", recent_messages, RECENT_MESSAGES_RANGE)
        if session_idle_minutes is not None:
            coach.session_idle_minutes = in_range(
                "session_idle_minutes", session_idle_minutes, SESSION_IDLE_MINUTES_RANGE
            )
        if widget_allowed_origins is not None:
            coach.widget_allowed_origins = web_origins("widget_allowed_origins", widget_allowed_origins)
        pending = coach.alert_email_pending
        apply_handoff_settings(coach, self._secrets, **handoff)
        if coach.llm_provider == "openai" and not coach.llm_model:
            raise InvalidInput("llm_model is required for the openai provider")
        await self._send_confirmation(uow, coach.alert_email_pending, unless=pending)
        await uow.session.flush()
        return coach


def _host(base_url: str | None) -> str | None:
    """The host a model endpoint setting sends to (empty: OpenAI's API)."""
    return urlsplit(base_url).hostname if base_url else OPENAI_API_HOST


def check_new_password(field: str, password: str) -> None:
    """The rule of every new password (sign-up, password change; API and dashboard alike). Raises ``InvalidInput``
    naming ``field`` when ``password`` is empty or only blanks (spaces, tabs, line breaks: eight spaces are no
    password) or under :data:`MIN_PASSWORD_LENGTH` characters."""
    if not password.strip():
        raise InvalidInput(f"{field} must not be empty or only spaces")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"{field} must be at least {MIN_PASSWORD_LENGTH} characters")


def default_persona(coach_name: str) -> str:
    """The persona a new coach starts with (editable in settings)."""
    return (
        f"You are the AI assistant of {coach_name}, a coach. Answer warmly and concisely, in the coach's "
        "voice, using the coach's own material when it is relevant. Encourage reflection and small, "
        "concrete next steps. If you do not know, say so."
    )


def clients_query(
    coach_id: uuid.UUID, page: PageRequest, *, name_contains: str = "", oldest_first: bool = False
) -> Select[Client]:
    """The statement of one page of ``coach_id``'s clients, newest first (``oldest_first``: the other way), only
    those whose name contains ``name_contains`` (case-insensitive, taken literally) when given: that page is
    found by the database function ``client_search(...)`` (migration 0036), whose ILIKE can read the trigram
    index on names, which the app role's own cannot under row-level security (:mod:`app.db.search`)."""
    stmt = select(Client).where(Client.coach_id == coach_id)
    if name_contains:
        after = page.after
        found = func.client_search(
            contains_pattern(name_contains),
            not oldest_first,
            None if after is None else after.at,
            None if after is None else after.id,
            page.fetch,
        ).table_valued("client_id")
        stmt = stmt.where(Client.id.in_(select(found.c.client_id)))
    return page.apply(stmt, Client.created_at, Client.id, newest_first=not oldest_first)
