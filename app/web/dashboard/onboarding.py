"""Getting started: the checklist a coach sees after sign-up (upload a document → try your clone in a preview
chat → invite a client → connect Telegram), each step ticked from what is stored, never from a flag the coach
sets; and the preview chat itself (the coach talks to their clone as a client of their own, "Preview (you)")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request, get, post
from litestar.di import Provide
from litestar.response import Redirect, Template

from app.channels.telegram.api import TelegramDep, provide_telegram
from app.core.errors import NotFound
from app.deps import ContainerDep, Uow
from app.rag.models import DocumentStatus
from app.web.dashboard.auth import CoachPage


@dataclass(frozen=True)
class Step:
    """One step of the checklist: ``done`` from the stored state, ``detail`` says what is there or what to do."""

    key: str
    title: str
    done: bool
    detail: str


async def checklist(container: ContainerDep, uow: Uow, telegram: TelegramDep) -> list[Step]:
    """The four steps, in order. A document counts once uploaded (its detail says how many are ready to
    answer from); the preview once the coach has written in the preview chat; a client is any but the preview
    one; Telegram once a bot is connected."""
    coach = await uow.coach()
    statuses = await container.documents.counts(uow)
    documents, ready = sum(statuses.values()), statuses.get(DocumentStatus.READY, 0)
    preview = None
    if coach.preview_client_id is not None:
        activity = await container.conversations.client_activity(uow, [coach.preview_client_id])
        preview = activity.get(coach.preview_client_id)
    clients = await container.accounts.count_clients(uow)
    try:
        bot_name: str | None = (await telegram.service.status(uow.coach_id)).bot_username
    except NotFound:
        bot_name = None
    return [
        Step("document", "Upload a document", bool(documents),
             f"{documents} uploaded, {ready} ready to answer from" if documents
             else "Add a book, notes or a transcript your clone answers from (PDF, EPUB, Word .docx, HTML, text "
                  "or Markdown, or .vtt/.srt subtitles)."),
        Step("preview", "Try your clone", preview is not None and preview.last_seen is not None,
             "You have chatted with your clone." if preview and preview.last_seen
             else "Open a preview chat and ask what a client would ask."),
        Step("client", "Invite a client", bool(clients),
             f"{clients} client(s)" if clients else "Add a client and send them their chat link."),
        Step("telegram", "Connect Telegram", bot_name is not None,
             f"Connected as @{bot_name}" if bot_name else "Let clients reach your clone in Telegram too."),
    ]  # fmt: skip


class OnboardingPages(CoachPage):
    """The "Get started" page and its preview chat."""

    dependencies = {**CoachPage.dependencies, "telegram": Provide(provide_telegram, sync_to_thread=False)}

    @get("/start")
    async def start_page(
        self, request: Request[Any, Any, Any], uow: Uow, container: ContainerDep, telegram: TelegramDep
    ) -> Template:
        """The checklist; right after sign-up it also shows the account's first API key (once)."""
        new_api_key = request.session.pop("new_api_key", None)
        if new_api_key:
            request.set_session(dict(request.session))
        steps = await checklist(container, uow, telegram)
        context = {
            "coach": await uow.coach(),
            "steps": steps,
            "done": sum(step.done for step in steps),
            "new_api_key": new_api_key,
            "nav": "start",
        }
        return Template("dashboard/start.html", context=context)

    @post("/start/preview")
    async def open_preview(self, uow: Uow, container: ContainerDep) -> Redirect:
        """Open the preview chat: the coach's own preview client (made on first use), through its chat link."""
        _, token = await container.accounts.preview_client(uow)
        return Redirect(f"/w/{token}", status_code=303)
