"""The client's chat widget: a full page per client, which the embeddable ``static/widget.js`` snippet opens in
an iframe. Messages travel over the ``/ws/chat`` WebSocket. ``/w/memory`` shows what the coach's assistant
remembers about the client; its delete buttons (``static/memory.js``) call the widget memory API.

The chat link carries the client's widget token (``/w/<token>`` or ``/w?token=<token>``). Opening it exchanges
the token for the widget session cookie (:func:`app.auth.widget_cookie`: HttpOnly, 12 hours from the last
page opened) and redirects to ``/w/chat``, so the token leaves the address bar and the history; the pages,
their API calls and the WebSocket then authenticate with the cookie. Rotating or revoking the token ends
every session made from it.

Both pages may be framed only by the coach's ``widget_allowed_origins`` (their own
``Content-Security-Policy``, :func:`app.core.headers.content_security_policy`); every other page of the app
refuses to be framed.

The chat page also shows whether the coach is in the conversation (an active handoff: ``claimed``) or
has been asked to join (``open``); ``static/chat.js`` keeps that up to date from the socket's live events. Outside
the coach's hours it says when they are back; the page says in how many seconds that changes, and the widget asks
``/api/v1/widget/presence`` again then (:func:`app.channels.web.chat.coach_presence`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from app.accounts.disclosure import AI_DISCLOSURE_VERSION
from app.accounts.models import Coach
from app.accounts.service import ClientIdentity
from app.accounts.tone import INTENSITY_MAX, INTENSITY_MIN, client_view
from app.accounts.unit_of_work import UnitOfWork, unit_of_work
from app.accounts.widget_settings import avatar_url, suggestions, widget_avatar
from app.auth import WIDGET_COOKIE, WIDGET_SESSION_S, widget_cookie
from app.channels.web.chat import app_language, coach_presence
from app.chat.turn.intake import MAX_MESSAGE_CHARS
from app.container import Container
from app.conversations.schemas import ShownMessage
from app.core.headers import content_security_policy
from app.core.pagination import PageRequest, page_query
from app.deps import PAGE, ContainerDep, PathId, PathStr, WantedPage
from app.handoff.catalogue import greeting, page_texts, presence_lines, say, widget_texts
from app.handoff.languages import Language, tag_language
from app.handoff.sla import told_language
from app.memory.client_view import remembered_out

AVATAR_HEADERS = {
    "Cache-Control": "public, max-age=86400",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
}
"""Headers of the coach's avatar: cacheable (its URL changes with it), and a policy that lets nothing in the
image run were it ever opened as a document (it is a PNG re-encoded on upload, served ``nosniff``)."""
CHAT_PAGE = "/w/chat"
MEMORY_PAGE = "/w/memory"
TONE_PAGE = "/w/tone"
TONE_PAGE_SHARED = {
    "heading": "tg_tone_title",
    "gentle": "tg_tone_gentle",
    "lapsed": "tg_tone_lapsed",
    "default": "tg_tone_default",
    "agree": "tg_tone_agree",
    "agree_again": "tg_tone_agree_again",
    "withdraw": "tg_tone_withdraw",
    "second": "tg_tone_second",
    "saved": "tg_tone_chosen",
    **{f"intensity_{n}": f"tone_intensity_{n}" for n in range(INTENSITY_MIN, INTENSITY_MAX + 1)},
}
"""The tone page's texts that are Telegram's ``/tone`` lines (key on the page → catalogue entry)."""


def initials(name: str) -> str:
    """Up to two initials of ``name`` for the widget's avatar ("Coach Maya" → "CM"; "" → "?")."""
    letters = [word[0] for word in name.split() if word[:1].isalnum()]
    return "".join(letters[:2]).upper() or "?"


def page_language(request: Request[Any, Any, Any]) -> Language:
    """The language of the widget's own texts before the conversation says one: :func:`app_language` (the embedding
    page's, else the browser's), else English."""
    return app_language(request) or "en"


async def client_language(
    request: Request[Any, Any, Any], uow: UnitOfWork, conversation_id: uuid.UUID | None, handoff_id: uuid.UUID | None
) -> str:
    """The language of a widget page's own texts: the one the client's conversation tells (``conversation_id``, the
    client's latest, and its handoff's ``handoff_id``: :func:`app.handoff.sla.told_language`, its handoff notice's,
    else the client's last messages'), English too (a client writing English in a French browser reads English);
    else the page's (:func:`page_language`): before the first message, or when it is too short to tell ("hola")."""
    told = await told_language(uow.session, conversation_id, handoff_id) if conversation_id is not None else None
    return told or page_language(request)


async def _latest_language(
    request: Request[Any, Any, Any], container: Container, uow: UnitOfWork, client_id: uuid.UUID
) -> str:
    """:func:`client_language` of the client's latest conversation (the tone and memory pages: as the chat page)."""
    conversation_id = await container.conversations.latest_conversation(uow, client_id)
    handoff = None
    if conversation_id is not None:
        handoff, _drafts = await container.handoff_queue.conversation_state(uow, conversation_id)
    return await client_language(request, uow, conversation_id, handoff.id if handoff is not None else None)


def _invalid(request: Request[Any, Any, Any], status_code: int) -> Template:
    """The "chat link not valid" page (``status_code``), in :func:`page_language`: without a valid token or session,
    the client and their conversation are unknown."""
    language = page_language(request)
    texts = page_texts("invalid_page_", language)
    return Template("widget/invalid.html", status_code=status_code, context={"language": language, "texts": texts})


async def _exchange(
    request: Request[Any, Any, Any], container: Container, token: str | None, to: str
) -> Redirect | Template:
    """Trade a widget token for the session cookie and redirect to ``to`` (no token in the URL), with the request's
    ``?lang=`` (:func:`page_language`) when it names one of ``en es fr de pt``; 404 page for an unknown or revoked
    token."""
    session = await container.accounts.widget_session(token) if token else None
    if session is None:
        return _invalid(request, 404)
    language = tag_language(request.query_params.get("lang"))
    redirect = Redirect(f"{to}?lang={language}" if language else to, status_code=303)
    redirect.set_cookie(widget_cookie(session[1], container.settings.public_url))
    redirect.headers["Cache-Control"] = "no-store"  # (/w?token=… too, outside app.core.headers.NO_STORE_PREFIXES)
    return redirect


async def _session(request: Request[Any, Any, Any], container: Container) -> tuple[ClientIdentity, str] | None:
    """The client of the request's widget session cookie and the cookie's renewed value (sliding expiry)."""
    value = request.cookies.get(WIDGET_COOKIE)
    found = await container.accounts.client_for_widget_session(value, WIDGET_SESSION_S) if value else None
    if found is None:
        return None
    return found[0], container.accounts.renew_widget_session(found[1])


def _frame_policy(coach: Coach) -> dict[str, str]:
    """The widget page's CSP: the app's policy with the coach's origins as ``frame-ancestors``."""
    return {"Content-Security-Policy": content_security_policy(coach.widget_allowed_origins)}


class WidgetController(Controller):
    path = "/w"
    include_in_schema = False

    @get("/")
    async def open_link(
        self, request: Request[Any, Any, Any], container: ContainerDep, token: FromQuery[str | None] = None
    ) -> Redirect | Template:
        """``/w?token=<widget token>``: set the widget session cookie, then 303 to the chat page, ``?lang=`` kept
        (404 page for an unknown or revoked token)."""
        return await _exchange(request, container, token, CHAT_PAGE)

    @get("/{token:str}")
    async def open_token_link(
        self, request: Request[Any, Any, Any], token: PathStr, container: ContainerDep
    ) -> Redirect | Template:
        """``/w/<widget token>`` (the dashboard's chat links, the embed snippet's iframe: ``?lang=`` the embedding
        page's language): as :meth:`open_link`."""
        return await _exchange(request, container, token, CHAT_PAGE)

    @get("/{token:str}/memory")
    async def open_memory_link(
        self, request: Request[Any, Any, Any], token: PathStr, container: ContainerDep
    ) -> Redirect | Template:
        """``/w/<widget token>/memory``: set the widget session cookie, then 303 to the memory page, ``?lang=``
        kept."""
        return await _exchange(request, container, token, MEMORY_PAGE)

    @get("/avatar/{coach_id:str}")
    async def avatar(self, coach_id: PathId, container: ContainerDep) -> Response[bytes]:
        """The coach's widget avatar as ``image/png`` (public: it is shown to anyone the coach gave a chat
        link); 404 JSON for a coach without one or an unknown coach."""
        async with unit_of_work(container.sessionmaker, coach_id) as uow:
            png = await widget_avatar(uow)
        return Response(png, media_type="image/png", headers=AVATAR_HEADERS)

    @get("/chat")
    async def widget_page(self, request: Request[Any, Any, Any], container: ContainerDep) -> Template:
        """The chat page of the session's client: its latest conversation, the last
        :data:`~app.core.pagination.DEFAULT_PAGE_SIZE` messages (an "Earlier messages" button loads the ones before,
        a page at a time, ``static/chat.js``); renews the session cookie. Without a valid session: the "link not
        valid" page, 401.

        The page's own texts (:func:`app.handoff.catalogue.widget_texts`, the presence line, the AI disclosure, the
        default greeting) speak :func:`client_language`; its links to the tone and memory pages pass it on
        (``?lang=``)."""
        found = await _session(request, container)
        if found is None:
            return _invalid(request, 401)
        identity, renewed = found
        # the client is known from the cookie (no ``uow`` dependency here): one unit of work for the page's reads
        async with unit_of_work(container.sessionmaker, identity.coach_id) as uow:
            coach = await uow.coach()
            conversation_id = await container.conversations.latest_conversation(uow, identity.client_id)
            messages: list[ShownMessage] = []
            earlier = None  # the query of the "Earlier messages" button's page: the messages before those shown
            handoff_status = handoff_id = None
            if conversation_id is not None:
                last = PageRequest()
                _, stored = await container.conversations.history(
                    uow, conversation_id, last, client_id=identity.client_id
                )
                # oldest first on the page; the client sees client_view metadata only
                messages = [ShownMessage.for_client(listed) for listed in reversed(stored.items)]
                earlier = page_query(last, stored.next)
                handoff, drafts = await container.handoff_queue.conversation_state(uow, conversation_id)
                # (a drafted reply the coach has yet to review: "reviewing", as the turn and a reconnect say it)
                handoff_status = handoff.status if handoff is not None else "draft_pending" if drafts else None
                handoff_id = handoff.id if handoff is not None else None
            language = await client_language(request, uow, conversation_id, handoff_id)
        texts = widget_texts(language)
        page = Template(
            "widget/chat.html",
            context={
                "coach": coach,
                "conversation_id": conversation_id,
                "messages": messages,
                "earlier": earlier,
                "texts": texts,
                "labels": {"client": texts["you"], "ai": texts["ai"], "human_coach": texts["coach"]},
                "handoff_status": handoff_status,
                # outside the coach's hours the presence line says when they are back instead of the reply time;
                # static/chat.js asks /api/v1/widget/presence again when that changes
                "presence": coach_presence(coach.availability, datetime.now(UTC), language),
                "language": language,
                "presence_lines": presence_lines(language, coach.handoff_sla_minutes),
                "max_chars": MAX_MESSAGE_CHARS,
                "disclosure": say("widget_disclosure", language, coach=coach.name),
                "disclosure_version": AI_DISCLOSURE_VERSION,
                "greeting": greeting(coach.widget_greeting, coach.name, language),
                "suggestions": suggestions(coach),
                "initials": initials(coach.name),
                "avatar_url": avatar_url(coach),
            },
            headers=_frame_policy(coach),
        )
        page.set_cookie(widget_cookie(renewed, container.settings.public_url))
        return page

    @get("/session", status_code=204)
    async def renew_session(self, request: Request[Any, Any, Any], container: ContainerDep) -> Response[None]:
        """Renew the session cookie while a widget page stays open (``static/chat.js`` asks every hour, and when
        its socket cannot connect): 204 with the renewed cookie; 401 when the session has expired or the link
        was revoked (the page then tells the client to open their coach's link again)."""
        found = await _session(request, container)
        if found is None:
            return Response(None, status_code=401)  # (not stored by any cache: app.core.headers.NO_STORE_PREFIXES)
        renewed = Response(None, status_code=204)
        renewed.set_cookie(widget_cookie(found[1], container.settings.public_url))
        return renewed

    @get("/tone")
    async def tone_page(self, request: Request[Any, Any, Any], container: ContainerDep) -> Template:
        """How the assistant talks to me: the intensity (within the coach's range) and the coach's styles, each
        with its consent text (``static/tone.js`` saves through ``/api/v1/widget/tone``); renews the session
        cookie. Without a valid session: 401 page. Its own texts (``tone_page_*``, the ``/tone`` lines it shares
        with Telegram, the intensity names, the refusals: :func:`app.handoff.catalogue.page_texts`, also given to
        ``static/tone.js``) speak :func:`client_language`, as the chat page."""
        found = await _session(request, container)
        if found is None:
            return _invalid(request, 401)
        identity, renewed = found
        async with unit_of_work(container.sessionmaker, identity.coach_id) as uow:
            coach = await uow.coach()
            tone = client_view(await container.tone.client_state(uow, identity.client_id, datetime.now(UTC)))
            language = await _latest_language(request, container, uow, identity.client_id)
        texts = page_texts("tone_page_", language, ai="widget_ai", **TONE_PAGE_SHARED)
        page = Template(
            "widget/tone.html",
            context={"coach": coach, "tone": tone, "texts": texts, "language": language},
            headers=_frame_policy(coach),
        )
        page.set_cookie(widget_cookie(renewed, container.settings.public_url))
        return page

    @get("/memory", dependencies=PAGE)
    async def memory_page(self, request: Request[Any, Any, Any], container: ContainerDep, page: WantedPage) -> Template:
        """What my coach's assistant remembers: the client's insights (each deletable) and session summaries (a
        page of them, newest first, an "Earlier sessions" link to the next), and the "Download my data" link;
        renews the session cookie. Without a valid session: 401 page. Its own texts (``memory_page_*``, the
        refusals: :func:`app.handoff.catalogue.page_texts`, also given to ``static/memory.js``) speak
        :func:`client_language`, as the chat page."""
        found = await _session(request, container)
        if found is None:
            return _invalid(request, 401)
        identity, renewed = found
        async with unit_of_work(container.sessionmaker, identity.coach_id) as uow:
            coach = await uow.coach()
            memory = await container.memory.client_memory(uow.session, uow.coach_id, identity.client_id, page)
            language = await _latest_language(request, container, uow, identity.client_id)
        shown = Template(
            "widget/memory.html",
            context={
                "coach": coach,
                "texts": page_texts("memory_page_", language, ai="widget_ai", back="tone_page_back"),
                "language": language,
                "memory": remembered_out(memory),
                "earlier": page_query(page, memory.more_summaries),
                "older_page": page.after is not None,
            },
            headers=_frame_policy(coach),
        )
        shown.set_cookie(widget_cookie(renewed, container.settings.public_url))
        return shown
