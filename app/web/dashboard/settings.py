"""The settings page: sections (profile, the widget's welcome, handoff, memory, learning, and the developer options
under "Advanced": model and key, response cache, embed origins, webhook), each a form with its own save that
sends only its fields (what a form does not send is left as is); the widget's avatar; the tone clients may
choose (its own form); the account's API keys
(create, revoke) and the password."""

from __future__ import annotations

import functools
import zoneinfo
from typing import Any

from litestar import Request, get, post
from litestar.di import Provide
from litestar.response import Redirect, Template

from app.accounts.api_keys import issue_api_key, list_api_keys, revoke_api_key
from app.accounts.availability import DAY_NAMES
from app.accounts.handoff_settings import CRISIS_LANGUAGE_NAMES
from app.accounts.learning_settings import FINE_TUNES_TURNED_OFF, apply_learning_settings
from app.accounts.models import Coach, HandoffMode
from app.accounts.service import RECENT_MESSAGES_RANGE, SESSION_IDLE_MINUTES_RANGE
from app.accounts.tone import INTENSITY_NAMES, MAX_MODES, coach_tone
from app.accounts.unit_of_work import UnitOfWork
from app.accounts.widget_settings import (
    AVATAR_MAX_BYTES,
    GREETING_MAX_CHARS,
    MAX_SUGGESTIONS,
    apply_widget_settings,
    avatar_url,
    clear_widget_avatar,
    set_widget_avatar,
    suggestions,
)
from app.auth import AUTH_BODY_MAX_BYTES, TEXT_BODY_MAX_BYTES, account_delete_key, throttle_auth_attempt
from app.channels.telegram.api import TelegramDep, provide_telegram
from app.channels.web.widget import initials
from app.core.errors import DomainError, Forbidden, InvalidInput, TooManyAttempts
from app.deps import ContainerDep, PathId, Uow
from app.handoff.catalogue import greeting
from app.web.api.accounts import made_webhook_secret, secret_hint
from app.web.api.documents import read_upload
from app.web.dashboard.auth import CoachPage, session_user_id
from app.web.dashboard.forms import (
    form_int,
    form_opt_lines,
    form_opt_str,
    form_str,
    handoff_form_settings,
    learning_form_settings,
    tone_form_settings,
    widget_form_settings,
)
from app.web.sessions import DashboardSessionsDep, start_session

HANDOFF_MODES = (
    (HandoffMode.AUTO, "Auto — the AI answers unless it is unsure (below the threshold)"),
    (HandoffMode.DRAFT, "Draft — the AI drafts every reply, you approve or edit it"),
    (HandoffMode.HUMAN_ONLY, "Human only — every message comes to you"),
)
"""The handoff modes and how the settings page words them."""
SECTIONS = ("profile", "widget", "handoff", "memory", "learning", "advanced")
"""The settings page's sections that save on their own (a form's ``section`` field; the notice shows there)."""
TIMEZONES = sorted(zoneinfo.available_timezones())
"""The IANA time zones of the availability picker (this system's tz database)."""


async def _settings_page(
    container: ContainerDep,
    uow: UnitOfWork,
    *,
    new_api_key: str | None = None,
    new_webhook_secret: str | None = None,
    error: DomainError | None = None,
    error_key: str = "error",
    notice: str | None = None,
    warning: str | None = None,
    section: str = "",
) -> Template:
    """The settings page (with the account's API keys); ``error`` sets the status (and ``Retry-After``) and is
    shown where the template puts ``error_key`` (``error`` in ``section``: one of :data:`SECTIONS`, ``tone`` or
    ``embedding``, or at the top; ``delete_error`` by account deletion), as are ``notice`` and ``warning`` (a saved
    change that needs the coach's attention). The alert webhook's
    signing secret shows whole only as ``new_webhook_secret``, when this request made it; masked otherwise."""
    coach = await uow.coach()
    if error is not None:
        await uow.session.refresh(coach)  # drop what a refused change left in memory
    api_keys = await list_api_keys(uow.session, uow.coach_id)
    context = {
        "coach": coach,
        "key_hint": secret_hint(container, coach.llm_api_key_encrypted),
        "webhook_secret_hint": secret_hint(container, coach.alert_webhook_secret_encrypted),
        "new_webhook_secret": new_webhook_secret,
        "handoff_modes": HANDOFF_MODES,
        "day_names": list(enumerate(DAY_NAMES)),
        "crisis_languages": list(CRISIS_LANGUAGE_NAMES.items()),
        "api_keys": api_keys,
        "embedding": container.embeddings.status(coach),
        "new_api_key": new_api_key,
        "error": None,
        error_key: error.message if error else None,
        "notice": notice,
        "warning": warning,
        "section": section,
        "nav": "settings",
        "timezones": TIMEZONES,
        "greeting_max": GREETING_MAX_CHARS,
        "max_suggestions": MAX_SUGGESTIONS,
        "default_greeting": greeting(None, coach.name),
        "suggestions": suggestions(coach),
        "avatar_url": avatar_url(coach),
        "initials": initials(coach.name),
        "tone": coach_tone(coach).as_dict(),
        "tone_rows": MAX_MODES,
        "intensity_names": INTENSITY_NAMES,
    }
    if error is None:
        return Template("dashboard/settings.html", context=context)
    return Template("dashboard/settings.html", context=context, status_code=error.status_code, headers=error.headers())


MODEL_PROBE_FAILED = (
    "Your model did not answer a test message: {failure}. Until it does, each client gets an apology and their message "
    "is saved for you. Check the model's name, base URL and key."
)
"""What the settings page says, as a warning, when the model just saved does not answer
(:meth:`~app.llm.registry.ProviderRegistry.probe_chat`)."""


def _model_settings(coach: Coach) -> tuple[object, ...]:
    """The coach's chat model settings a save may change (the key as stored: a key entered again, even the same,
    is stored anew, so it is tested again)."""
    return (coach.llm_provider, coach.llm_model, coach.llm_base_url, coach.llm_api_key_encrypted)


def confirm_notice(email: str) -> str:
    """What the settings page says once a confirmation link is on its way to ``email``."""
    return f"We e-mailed a confirmation link to {email}: alerts go there once it is opened."


class SettingsPages(CoachPage):
    """The coach's settings."""

    @get("/settings")
    async def settings_page(self, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep) -> Template:
        new_api_key = request.session.pop("new_api_key", None)
        if new_api_key:
            request.set_session(dict(request.session))
        return await _settings_page(container, uow, new_api_key=new_api_key)

    @post("/settings", request_max_body_size=TEXT_BODY_MAX_BYTES)
    async def save_settings(self, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep) -> Template:
        """Save one section's form (``section``: where the notice or the error is shown); fields the form does
        not send are left as is. A refused change stores nothing: 400 with the reason in that section."""
        form = await request.form()
        section = form_str(form, "section") if form_str(form, "section") in SECTIONS else ""
        stored = await uow.coach()
        before, fine_tuning = stored.alert_webhook_secret_encrypted, stored.fine_tune_enabled
        pending, model_before = stored.alert_email_pending, _model_settings(stored)
        try:
            async with uow.savepoint():  # a refused change is rolled back alone; the page shows why
                recent_messages = form_int(form, "recent_messages", *RECENT_MESSAGES_RANGE)
                session_idle_minutes = form_int(form, "session_idle_minutes", *SESSION_IDLE_MINUTES_RANGE)
                handoff = handoff_form_settings(form)
                learning = learning_form_settings(form)
                widget = widget_form_settings(form)
                coach = await container.accounts.update_settings(
                    uow,
                    name=form_opt_str(form, "name"),
                    persona=form_opt_str(form, "persona"),
                    llm_provider=form_str(form, "llm_provider") or None,
                    llm_model=form_opt_str(form, "llm_model"),
                    llm_base_url=form_opt_str(form, "llm_base_url"),
                    # an empty key field keeps the stored key; "clear" removes it
                    llm_api_key=("" if form.get("clear_key") else (form_str(form, "llm_api_key") or None)),
                    recent_messages=recent_messages,
                    session_idle_minutes=session_idle_minutes,
                    widget_allowed_origins=form_opt_lines(form, "widget_allowed_origins"),
                    **handoff,
                )
                apply_learning_settings(coach, **learning)
                apply_widget_settings(coach, **widget)
        except DomainError as exc:
            return await _settings_page(container, uow, error=exc, section=section)
        secret = made_webhook_secret(container, before, coach)
        notice = "Saved."
        if fine_tuning and not coach.fine_tune_enabled and learning["fine_tune_enabled"] is None:
            notice = f"Saved. {FINE_TUNES_TURNED_OFF}"  # the switch to the local model turned it off
        if coach.alert_email_pending is not None and coach.alert_email_pending != pending:
            notice = f"{notice} {confirm_notice(coach.alert_email_pending)}"
        warning = None
        if _model_settings(coach) != model_before and coach.llm_provider == "openai":
            failure = await container.registry.probe_chat(coach)
            if failure is None:
                notice = f"{notice} Your model answered a test message."
            else:
                warning = MODEL_PROBE_FAILED.format(failure=failure)
        return await _settings_page(
            container, uow, new_webhook_secret=secret, notice=notice, warning=warning, section=section
        )

    @post("/settings/webhook-secret")
    async def rotate_webhook_secret(self, uow: Uow, container: ContainerDep) -> Template:
        """Give the alert webhook a new signing secret, shown this once (the old one stops signing at once); 400
        with the reason in the advanced section when no webhook URL is set."""
        try:
            async with uow.savepoint():
                secret = await container.accounts.rotate_webhook_secret(uow)
        except DomainError as exc:
            return await _settings_page(container, uow, error=exc, section="advanced")
        notice = "New signing secret made: the old one no longer signs."
        return await _settings_page(container, uow, new_webhook_secret=secret, notice=notice, section="advanced")

    @post("/settings/alert-email/resend")
    async def resend_alert_email(self, uow: Uow, container: ContainerDep) -> Template:
        """E-mail the alert address waiting for confirmation a new link; 409 with why in the handoff section when
        none waits."""
        try:
            async with uow.savepoint():
                email = await container.accounts.resend_alert_email_confirmation(uow)
        except DomainError as exc:
            return await _settings_page(container, uow, error=exc, section="handoff")
        return await _settings_page(container, uow, notice=confirm_notice(email), section="handoff")

    @post("/settings/widget-avatar", request_max_body_size=AVATAR_MAX_BYTES + 64 * 1024)
    async def upload_avatar(self, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep) -> Template:
        """Set the widget's avatar from the form's image (checks: :func:`app.accounts.widget_settings.avatar_png`);
        a refused image stores nothing: 400 with the reason in the welcome section."""
        try:
            async with uow.savepoint():
                _, _, data = await read_upload(request)
                await set_widget_avatar(uow, data)
        except DomainError as exc:
            return await _settings_page(container, uow, error=exc, section="widget")
        return await _settings_page(container, uow, notice="Avatar saved.", section="widget")

    @post("/settings/widget-avatar/delete")
    async def delete_avatar(self, uow: Uow, container: ContainerDep) -> Template:
        """Remove the widget's avatar (the widget shows your initials)."""
        await clear_widget_avatar(uow)
        return await _settings_page(container, uow, notice="Avatar removed.", section="widget")

    @post("/settings/tone", request_max_body_size=TEXT_BODY_MAX_BYTES)
    async def save_tone(self, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep) -> Template:
        """Save the tone section (allowed intensities, default, modes); a refused change shows why, with a 400,
        and changes nothing."""
        form = await request.form()
        try:
            async with uow.savepoint():
                await container.tone.update_settings(uow, tone_form_settings(form))
        except DomainError as exc:
            return await _settings_page(container, uow, error=exc, section="tone")
        return await _settings_page(container, uow, notice="Tone saved.", section="tone")

    @post("/settings/embedding")
    async def request_embedding(self, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep) -> Template:
        """Switch the embedding model: queues the re-embedding job (the page shows its progress)."""
        form = await request.form()
        try:
            async with uow.savepoint():
                await container.embeddings.request(
                    uow,
                    provider=form_str(form, "embedding_provider") or "local",
                    model=form_str(form, "embedding_model"),
                    base_url=form_str(form, "embedding_base_url"),
                    api_key=form_str(form, "embedding_api_key"),
                )
        except DomainError as exc:
            return await _settings_page(container, uow, error=exc, section="embedding")
        return await _settings_page(
            container,
            uow,
            notice="Re-embedding queued; the current model stays in use until it ends.",
            section="embedding",
        )

    @post("/settings/api-keys")
    async def create_api_key(self, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep) -> Template:
        """Create a named API key and show it (once: it is not stored)."""
        form = await request.form()
        try:
            async with uow.savepoint():
                _, secret = await issue_api_key(uow.session, uow.coach_id, form_str(form, "name"))
        except DomainError as exc:
            return await _settings_page(container, uow, error=exc)
        return await _settings_page(container, uow, new_api_key=secret)

    @post("/settings/api-keys/{key_id:str}/revoke")
    async def revoke_api_key(self, key_id: PathId, uow: Uow, container: ContainerDep) -> Template:
        """Revoke an API key (its next request gets 401)."""
        try:
            async with uow.savepoint():
                key = await revoke_api_key(uow.session, uow.coach_id, key_id)
        except DomainError as exc:
            return await _settings_page(container, uow, error=exc)
        return await _settings_page(container, uow, notice=f"API key {key.name} ({key.prefix}…) revoked.")

    @post("/settings/password", request_max_body_size=AUTH_BODY_MAX_BYTES)
    async def change_password(
        self,
        request: Request[Any, Any, Any],
        uow: Uow,
        container: ContainerDep,
        dashboard_sessions: DashboardSessionsDep,
    ) -> Template:
        """Change the logged-in user's password (the current one required, the new one twice); every other
        session of the account ends and this one continues under a new id. Rate-limited like log-in, on the
        user's e-mail: log-ins and these guesses share one count."""
        user_id, coach_id = session_user_id(request), uow.coach_id
        form = await request.form()
        try:
            email = await container.accounts.email_of(coach_id, user_id)
            await throttle_auth_attempt(request, container, email)
            if form_str(form, "new_password") != form_str(form, "new_password_confirm"):
                raise InvalidInput("the new password and its confirmation differ")
            await container.accounts.change_password(
                coach_id, user_id, form_str(form, "current_password"), form_str(form, "new_password")
            )
        except DomainError as exc:
            return await _settings_page(container, uow, error=exc)
        ended = await dashboard_sessions.end_others(coach_id, keep=request.get_session_id())
        start_session(request, {"coach_id": str(coach_id), "user_id": str(user_id)})
        return await _settings_page(container, uow, notice=f"Password changed; {ended} other session(s) logged out.")

    @post(
        "/account/delete",
        request_max_body_size=AUTH_BODY_MAX_BYTES,
        dependencies={"telegram": Provide(provide_telegram, sync_to_thread=False)},
    )
    async def delete_account(
        self,
        request: Request[Any, Any, Any],
        uow: Uow,
        container: ContainerDep,
        dashboard_sessions: DashboardSessionsDep,
        telegram: TelegramDep,
    ) -> Template | Redirect:
        """Delete the whole account after the password check (wrong: the settings page, 403, nothing deleted;
        rate-limited like log-in: 429); then end every session of the account and go to the sign-up page."""
        form = await request.form()
        try:
            await throttle_auth_attempt(request, container, account_delete_key(uow.coach_id))
            disconnect = functools.partial(telegram.service.disconnect_any, uow.coach_id)
            await container.rights.delete_account(uow.coach_id, form_str(form, "password"), disconnect=disconnect)
        except (Forbidden, TooManyAttempts) as exc:
            return await _settings_page(container, uow, error=exc, error_key="delete_error")
        await dashboard_sessions.end_others(uow.coach_id)
        request.clear_session()
        return Redirect("/signup")
