"""Request bodies: every route takes at most ``BODY_MAX_BYTES`` (the long-text routes ``TEXT_BODY_MAX_BYTES``, the
document uploads twice ``MAX_UPLOAD_MB``), and a caller without credentials is answered before its body is read.
Before, the whole app took ~51 MB bodies: a JSON body was read and decoded before its API key was checked, and a
dashboard form was read whole by the CSRF check, so anybody could make a process hold 50 MB a request.

The raw requests announce a large body and send a little of it: the answer must come without the rest (the
server waited for it before, and the test then fails on :data:`ANSWER_WAIT_S`)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import h11
import httpx

from app.accounts.handoff_settings import (
    CRISIS_LANGUAGES,
    MAX_RESOURCE_CHARS,
    MAX_RESOURCES,
    MAX_TOPIC_CHARS,
    MAX_TOPICS,
)
from app.accounts.widget_settings import GREETING_MAX_CHARS, MAX_SUGGESTIONS, SUGGESTION_MAX_CHARS
from app.auth import BODY_MAX_BYTES
from app.core.validation import MAX_ALLOWED_ORIGINS, MAX_NAME_CHARS, MAX_PERSONA_CHARS
from tests.conftest import TEST_MAX_UPLOAD_MB, Coach
from tests.integration.web.test_dashboard import browser, csrf, sign_up

__all__ = ["browser"]  # a fixture, used by name below

MakeCoach = Callable[..., Awaitable[Coach]]
ANSWER_WAIT_S = 30
"""How long a raw request waits for the answer: a server that reads the announced body first never answers."""
ANNOUNCED = int(TEST_MAX_UPLOAD_MB * 2 * 1024 * 1024)
"""The body a raw request announces (``Content-Length``) and never sends, but its start: over every route's
limit but the uploads' (twice ``MAX_UPLOAD_MB`` and a MiB), which the whole app had."""
HAN = "漢"
"""A character of a non-Latin script: 6 bytes as a JSON ``\\uXXXX`` escape, 9 percent-encoded in a form."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def raw_request(base_url: str, method: str, path: str, headers: dict[str, str], sent: bytes) -> Answer:
    """Send a request whose head (``headers``: ``Content-Length`` announces the body, or none: chunked) comes
    with only ``sent`` of its body; the answer, read as soon as it comes."""
    url = httpx.URL(base_url)
    conn = h11.Connection(our_role=h11.CLIENT)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    head = [("Host", f"{url.host}:{url.port}"), *headers.items()]
    if "Content-Length" not in headers:
        head.append(("Transfer-Encoding", "chunked"))
    writer.write(conn.send(h11.Request(method=method, target=path, headers=head)) or b"")
    writer.write(conn.send(h11.Data(data=sent)) or b"")
    await writer.drain()

    async def answer() -> Answer:
        status, answer_headers, body = 0, {}, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                answer_headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return Answer(status, answer_headers, body)

    try:
        return await asyncio.wait_for(answer(), ANSWER_WAIT_S)
    finally:
        writer.close()


def announced_json(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Content-Length": str(ANNOUNCED)}


async def test_a_body_without_valid_credentials_is_refused_before_it_is_read(base_url: str) -> None:
    """The review's requests: a large JSON body with a wrong token to each route it named is a 401 at once (the
    body was read whole first)."""
    routes = [
        ("POST", "/api/v1/chat"),
        ("POST", "/api/v1/clients"),
        ("POST", "/api/v1/api-keys"),
        ("POST", "/api/v1/learning/experiments"),
        ("PATCH", "/api/v1/settings"),
        ("POST", "/api/v1/widget/tone/consent"),
        ("POST", "/api/v1/widget/disclosure"),
        ("POST", f"/api/v1/messages/{uuid.uuid4()}/feedback"),
    ]
    for method, path in routes:
        answer = await raw_request(base_url, method, path, announced_json("nope"), b'{"text": "' + b"x" * 1024)
        assert answer.status == 401, (path, answer)
        assert json.loads(answer.body)["detail"].startswith(("invalid", "missing")), path


async def test_an_oversized_body_is_a_413_naming_the_limit_before_it_is_read(
    base_url: str, http: httpx.AsyncClient, make_coach: MakeCoach
) -> None:
    coach = await make_coach("Coach Big Body")
    announced = await raw_request(base_url, "POST", "/api/v1/clients", announced_json(coach.api_key), b"{")
    assert announced.status == 413
    assert json.loads(announced.body)["detail"] == "request body too large: this endpoint takes at most 64 KiB"
    # no Content-Length: the body is refused once over the limit, the rest never read
    chunked = {"Authorization": f"Bearer {coach.api_key}", "Content-Type": "application/json"}
    streamed = await raw_request(base_url, "POST", "/api/v1/clients", chunked, b"[" * (BODY_MAX_BYTES + 1))
    assert streamed.status == 413
    settings = await raw_request(base_url, "PATCH", "/api/v1/settings", announced_json(coach.api_key), b"{")
    assert settings.status == 413 and b"at most 512 KiB" in settings.body
    too_long = await http.post("/api/v1/clients", headers=coach.headers, json={"name": "x" * BODY_MAX_BYTES})
    assert too_long.status_code == 413
    assert (await http.get("/api/v1/clients", headers=coach.headers)).json() == [], "nothing stored"


async def test_a_dashboard_form_is_answered_before_it_is_read(base_url: str, browser: httpx.AsyncClient) -> None:
    """Without a session a form to a page behind log-in is sent to log in, its body unread (the CSRF check read
    it whole first, then answered 403); with one, a form over the limit is a page saying so."""
    form = {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(ANNOUNCED)}
    for path in ("/dashboard/documents", "/dashboard/clients", "/dashboard/settings"):
        answer = await raw_request(base_url, "POST", path, form, b"name=" + b"x" * 1024)
        assert answer.status in (302, 303) and answer.headers["location"] == "/login", path
    logout = await raw_request(base_url, "POST", "/logout", form, b"x" * 1024)
    assert logout.status == 413
    await sign_up(browser, "Coach Big Form")
    token = await csrf(browser, "/dashboard/clients")
    cookies = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
    page = await raw_request(
        base_url, "POST", "/dashboard/clients", form | {"Cookie": cookies, "Accept": "text/html"}, b"name=x"
    )
    assert page.status == 413
    assert b"The form is too large" in page.body and b"64 KiB at most" in page.body
    name = await browser.post("/dashboard/clients", data={"_csrf_token": token, "name": "x" * BODY_MAX_BYTES})
    assert name.status_code == 413
    assert "x" * 100 not in (await browser.get("/dashboard/clients")).text, "nothing stored"


def distinct(count: int, chars: int) -> list[str]:
    """``count`` different texts of ``chars`` characters, in a non-Latin script."""
    return [f"{i:03}" + HAN * (chars - 3) for i in range(count)]


def longest_settings() -> dict[str, Any]:
    """Every free-text setting at its longest in a non-Latin script, and the longest origins list."""
    host = ".".join(["a" * 60] * 4)
    return {
        "name": HAN * MAX_NAME_CHARS,
        "persona": HAN * MAX_PERSONA_CHARS,
        "high_stakes_topics": distinct(MAX_TOPICS, MAX_TOPIC_CHARS),
        "always_escalate_topics": distinct(MAX_TOPICS, MAX_TOPIC_CHARS),
        "crisis_resources": distinct(MAX_RESOURCES, MAX_RESOURCE_CHARS),
        "crisis_resources_by_language": dict.fromkeys(CRISIS_LANGUAGES, distinct(MAX_RESOURCES, MAX_RESOURCE_CHARS)),
        "widget_allowed_origins": [f"https://site{i}.{host}:{8000 + i}" for i in range(MAX_ALLOWED_ORIGINS)],
        "widget_greeting": HAN * GREETING_MAX_CHARS,
        "widget_suggestions": distinct(MAX_SUGGESTIONS, SUGGESTION_MAX_CHARS),
    }


async def test_the_longest_settings_are_taken_as_json_and_as_the_form(
    http: httpx.AsyncClient, browser: httpx.AsyncClient, make_coach: MakeCoach
) -> None:
    """Over the default limit, within the long-text routes' one: as JSON with every character escaped (Python's
    ``json.dumps``) and as the dashboard's form, percent-encoded."""
    coach, longest = await make_coach("Coach Long Texts"), longest_settings()
    body = json.dumps(longest).encode()
    assert len(body) > BODY_MAX_BYTES
    headers = coach.headers | {"Content-Type": "application/json"}
    response = await http.patch("/api/v1/settings", headers=headers, content=body)
    assert response.status_code == 200, response.text
    assert response.json()["persona"] == longest["persona"]
    assert response.json()["crisis_resources_by_language"]["pt"] == longest["crisis_resources"]
    await sign_up(browser, "Coach Long Form")
    form = {k: "\r\n".join(v) if isinstance(v, list) else v for k, v in longest.items() if isinstance(v, str | list)}
    form |= {f"crisis_resources_{lang}": form["crisis_resources"] for lang in CRISIS_LANGUAGES}
    form |= {"_csrf_token": await csrf(browser, "/dashboard/settings"), "section": "profile"}
    assert len(urlencode(form)) > 4 * BODY_MAX_BYTES
    saved = await browser.post("/dashboard/settings", data=form)
    assert saved.status_code == 200 and "Saved." in saved.text


async def test_uploads_keep_their_large_limit(
    http: httpx.AsyncClient, browser: httpx.AsyncClient, make_coach: MakeCoach
) -> None:
    """A file far over the default limit uploads through the API and the dashboard; over twice
    ``MAX_UPLOAD_MB`` it is a 413 (on the dashboard a page saying the file is too large)."""
    coach = await make_coach("Coach Big File")
    big = b"A long page of notes on patience.\n" * int(TEST_MAX_UPLOAD_MB * 1024 * 1024 * 0.75 / 34)
    assert len(big) > 16 * BODY_MAX_BYTES
    response = await http.post("/api/v1/documents", headers=coach.headers, files={"file": ("notes.txt", big)})
    assert response.status_code == 202, response.text
    await sign_up(browser, "Coach Big Page")
    token = await csrf(browser, "/dashboard/documents")
    files = {"file": ("notes.txt", big)}
    uploaded = await browser.post("/dashboard/documents", data={"_csrf_token": token}, files=files)
    assert uploaded.status_code in (302, 303) and uploaded.headers["location"] == "/dashboard/documents"
    assert "notes.txt" in (await browser.get("/dashboard/documents")).text
    huge = {"file": ("huge.txt", b"x" * int((TEST_MAX_UPLOAD_MB * 2 + 1.5) * 1024 * 1024))}
    refused = await browser.post(
        "/dashboard/documents", data={"_csrf_token": token}, files=huge, headers={"Accept": "text/html"}
    )
    assert refused.status_code == 413 and "The file is too large" in refused.text and "5 MiB at most" in refused.text
