"""A fake Telegram Bot API server for tests: a real HTTP server on 127.0.0.1 speaking the Bot API's wire format
(``POST /bot<token>/<method>`` with form or JSON parameters → ``{"ok": true, "result": …}`` or
``{"ok": false, "error_code", "description", "parameters"?}``), recording every call.

Methods: getMe, setWebhook, deleteWebhook, sendMessage, editMessageText, deleteMessage, sendChatAction,
answerCallbackQuery, getUpdates. A token not registered with :meth:`FakeBotApi.add_bot` gets 401 ``Unauthorized``
as from Telegram; :meth:`FakeBotApi.fail` makes the next calls of a method fail (429 with ``retry_after``, 403
blocked), :meth:`FakeBotApi.stall` answers them late (done, but answered after the client gave up). The chats keep
what the bots sent, edited and deleted (:meth:`FakeBotApi.shown`); an edit that changes nothing is refused as
Telegram refuses it (400 "message is not modified").
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from litestar import Litestar, Request, Response, post
from litestar.params import FromPath

from app.core.runtime import serve_in_background
from tests.stub_dns import LOOPBACK_HOOKS

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "telegram"


def recorded(name: str, **changes: Any) -> dict[str, Any]:
    """A recorded update payload from ``tests/fixtures/telegram/<name>.json`` with top-level ``changes``
    and ``chat_id`` / ``text`` / ``data`` / ``message_id`` overrides applied where the update has them; a new
    ``update_id`` gives a new message a new ``message_id`` too (Telegram numbers a chat's messages), and a new
    button press a new callback query ``id``."""
    update: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    sent = update.get("message") or update.get("edited_message")  # a message from the client
    message = sent or (update.get("callback_query") or {}).get("message")
    if "chat_id" in changes and message is not None:
        message["chat"]["id"] = changes.pop("chat_id")
        if sent is not None:
            message["from"]["id"] = message["chat"]["id"]
    if "update_id" in changes and "message" in update:  # a new update is a new message of its chat
        update["message"]["message_id"] = changes["update_id"] % 2**31
    if "update_id" in changes and "callback_query" in update:  # ... or a new press (Telegram ids each one)
        update["callback_query"]["id"] = f"cb{changes['update_id']}"
    if "message_id" in changes and sent is not None:
        sent["message_id"] = changes.pop("message_id")
    if "text" in changes and sent is not None:
        sent["text"] = changes.pop("text")
    if "data" in changes:
        update["callback_query"]["data"] = changes.pop("data")
    return update | changes


@dataclass
class Call:
    """One recorded call: the bot's ``token``, the ``method`` and its decoded ``params``, and when."""

    token: str
    method: str
    params: dict[str, Any]
    at: float


@dataclass
class FakeBotApi:
    """The fake server's state. ``url`` is its base URL (``TELEGRAM_API_URL``) once started."""

    url: str = ""
    bots: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    updates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failures: dict[str, list[tuple[int, dict[str, Any]] | None]] = field(default_factory=dict)
    stalls: dict[str, list[float]] = field(default_factory=dict)
    chats: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)
    _next_message_id: int = 100

    def add_bot(self, token: str, bot_id: int, username: str) -> None:
        self.bots[token] = {"id": bot_id, "is_bot": True, "first_name": username, "username": username}

    def fail(
        self,
        method: str,
        status: int,
        description: str,
        retry_after: int | None = None,
        times: int = 1,
        after: int = 0,
    ) -> None:
        """The next ``times`` calls of ``method`` fail with ``status``, after ``after`` calls that go through."""
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        self.failures.setdefault(method, []).extend([None] * after + [(status, body)] * times)

    def stall(self, method: str, seconds: float, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` are carried out, then answered ``seconds`` late (a timeout after
        a call that went through)."""
        self.stalls.setdefault(method, []).extend([seconds] * times)

    def shown(self, chat_id: int) -> list[str]:
        """The texts of the messages the bots sent to ``chat_id`` as the chat shows them now (edits applied, deleted
        ones gone), oldest first."""
        return [message["text"] for _, message in sorted(self.chats.get(chat_id, {}).items())]

    def of(self, method: str, token: str | None = None) -> list[Call]:
        """The recorded calls of ``method`` (of one bot's ``token`` if given), in order."""
        return [c for c in self.calls if c.method == method and (token is None or c.token == token)]

    def sent_to(self, chat_id: int) -> list[Call]:
        """sendMessage and editMessageText calls for ``chat_id``."""
        return [
            c
            for c in self.calls
            if c.method in ("sendMessage", "editMessageText") and int(c.params.get("chat_id", 0)) == chat_id
        ]

    def handle(self, token: str, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.calls.append(Call(token, method, params, time.monotonic()))
        if token not in self.bots:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        queued = self.failures.get(method)
        if queued and (failure := queued.pop(0)) is not None:
            return failure
        if self._unchanged(method, params):
            description = "Bad Request: message is not modified: specified new message content and reply markup are "
            description += "exactly the same as a current content and reply markup of the message"
            return 400, {"ok": False, "error_code": 400, "description": description}
        return 200, {"ok": True, "result": self._result(token, method, params)}

    def delay(self, method: str) -> float:
        """Seconds the answer to a call of ``method`` is held (:meth:`stall`)."""
        queued = self.stalls.get(method)
        return queued.pop(0) if queued else 0.0

    def _unchanged(self, method: str, params: dict[str, Any]) -> bool:
        """An edit of a message the chat shows that changes neither its text nor its keyboard."""
        if method != "editMessageText":
            return False
        shown = self.chats.get(int(params["chat_id"]), {}).get(int(params["message_id"]))
        return shown == {"text": params.get("text", ""), "reply_markup": params.get("reply_markup")}

    def _result(self, token: str, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return self.bots[token]
        if method == "deleteMessage":
            self.chats.get(int(params["chat_id"]), {}).pop(int(params["message_id"]), None)
            return True
        if method in ("sendMessage", "editMessageText"):
            self._next_message_id += 1
            message_id = int(params.get("message_id") or self._next_message_id)
            chat = self.chats.setdefault(int(params["chat_id"]), {})
            if method == "sendMessage" or message_id in chat:
                chat[message_id] = {"text": params.get("text", ""), "reply_markup": params.get("reply_markup")}
            return {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": int(params["chat_id"]), "type": "private"},
                "text": params.get("text", ""),
            }
        if method == "getUpdates":
            offset = int(params.get("offset") or 0)
            pending = [u for u in self.updates.get(token, []) if u["update_id"] >= offset]
            self.updates[token] = pending
            return pending
        return True


def _params(body: bytes, content_type: str) -> dict[str, Any]:
    if not body:
        return {}
    if content_type.startswith("application/json"):
        return dict(json.loads(body))
    params: dict[str, Any] = {}
    for key, value in parse_qsl(body.decode(), keep_blank_values=True):
        try:
            params[key] = json.loads(value) if value[:1] in "[{" else value
        except ValueError:
            params[key] = value
    return params


@asynccontextmanager
async def fake_bot_api() -> AsyncIterator[FakeBotApi]:
    """Serve a :class:`FakeBotApi` on a loopback port; its ``url`` uses the allowlisted loopback test name."""
    fake = FakeBotApi()

    @post("/{path:path}", status_code=200)
    async def endpoint(path: FromPath[str], request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        bot, _, method = path.strip("/").partition("/")
        token = bot.removeprefix("bot")
        status, body = fake.handle(
            token, method, _params(await request.body(), request.headers.get("content-type", ""))
        )
        await asyncio.sleep(fake.delay(method))
        return Response(body, status_code=status)

    async with serve_in_background(Litestar([endpoint])) as url:
        fake.url = url.replace("127.0.0.1", LOOPBACK_HOOKS)
        yield fake
