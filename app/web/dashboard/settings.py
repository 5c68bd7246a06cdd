"""The settings page: profile, model and key, memory, escalation and learning settings, in one form."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.response import Template

from app.accounts.availability import DAY_NAMES
from app.accounts.handoff_settings import CRISIS_LANGUAGE_NAMES
from app.accounts.learning_settings import apply_learning_settings
from app.accounts.models import Coach, HandoffMode
from app.accounts.service import RECENT_MESSAGES_RANGE, SESSION_IDLE_MINUTES_RANGE
from app.core.errors import DomainError
from app.core.security import mask_secret
from app.deps import CoachId, ContainerDep
from app.web.dashboard.auth import CoachPage, page_coach
from app.web.dashboard.forms import (
    form_int,
    form_str,
    handoff_form_settings,
    learning_form_settings,
)

HANDOFF_MODES = (
    (HandoffMode.AUTO, "Auto — the AI answers unless it is unsure (below the threshold)"),
    (HandoffMode.DRAFT, "Draft — the AI drafts every reply, you approve or edit it"),
    (HandoffMode.HUMAN_ONLY, "Human only — every message comes to you"),
)
"""The handoff modes and how the settings page words them."""


def _settings_context(
    container: ContainerDep, coach: Coach, new_api_key: str | None, error: str | None
) -> dict[str, Any]:
    key = container.registry.decrypt_key(coach.llm_api_key_encrypted)
    return {
        "coach": coach,
        "key_hint": mask_secret(key) if key else None,
        "webhook_secret": container.registry.decrypt_key(coach.alert_webhook_secret_encrypted),
        "handoff_modes": HANDOFF_MODES,
        "day_names": list(enumerate(DAY_NAMES)),
        "crisis_languages": list(CRISIS_LANGUAGE_NAMES.items()),
        "new_api_key": new_api_key,
        "error": error,
        "saved": False,
        "nav": "settings",
    }


class SettingsPages(CoachPage):
    """The coach's settings."""

    @get("/settings")
    async def settings_page(
        self, request: Request[Any, Any, Any], coach_id: CoachId, container: ContainerDep
    ) -> Template:
        new_api_key = request.session.pop("new_api_key", None)
        if new_api_key:
            request.set_session(dict(request.session))
        coach = await page_coach(container, coach_id)
        return Template("dashboard/settings.html", context=_settings_context(container, coach, new_api_key, None))

    @post("/settings")
    async def save_settings(
        self, request: Request[Any, Any, Any], coach_id: CoachId, container: ContainerDep
    ) -> Template:
        form = await request.form()
        error = None
        try:
            recent_messages = form_int(form, "recent_messages", *RECENT_MESSAGES_RANGE)
            session_idle_minutes = form_int(form, "session_idle_minutes", *SESSION_IDLE_MINUTES_RANGE)
            handoff = handoff_form_settings(form)
            learning = learning_form_settings(form)
            async with container.tenant(coach_id) as session:
                coach = await container.accounts.update_settings(
                    session,
                    coach_id,
                    name=form_str(form, "name"),
                    persona=form_str(form, "persona"),
                    llm_provider=form_str(form, "llm_provider") or "local",
                    llm_model=form_str(form, "llm_model"),
                    llm_base_url=form_str(form, "llm_base_url"),
                    # an empty key field keeps the stored key; "clear" removes it
                    llm_api_key=("" if form.get("clear_key") else (form_str(form, "llm_api_key") or None)),
                    recent_messages=recent_messages,
                    session_idle_minutes=session_idle_minutes,
                    **handoff,
                )
                apply_learning_settings(coach, **learning)
        except DomainError as exc:
            error = exc.message
            coach = await page_coach(container, coach_id)
        context = _settings_context(container, coach, None, error)
        context["saved"] = error is None
        return Template("dashboard/settings.html", context=context, status_code=400 if error else 200)
