"""Issue 17: the "Get started" checklist ticks each step from what is stored (a document, a message in the
preview chat, a client other than the preview one; Telegram: tests/integration/telegram), and the clients
page is a searchable table with last seen, status and copy buttons."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import respx

from tests.conftest import Coach, make_client, upload
from tests.integration.web.test_dashboard import browser, csrf, llm_api, log_in
from tests.openai_wire import MOCK_ENDPOINT_SETTINGS

__all__ = ["browser", "llm_api"]  # fixtures used by name below
STEP = re.compile(r'id="step-(\w+)" data-done="(yes|no)"')


def row(page: str, name: str) -> str:
    """The clients table's row of the client called ``name``."""
    for match in re.finditer(r'<tr data-status="[^"]+">.*?</tr>', page, re.S):
        if f">{name}</a>" in match.group(0):
            return match.group(0)
    raise AssertionError(f"no row for {name}")


def steps(page: str) -> dict[str, bool]:
    return {key: done == "yes" for key, done in STEP.findall(page)}


@pytest.fixture
async def coach_tab(
    base_url: str, http: httpx.AsyncClient, make_coach: Callable[..., Awaitable[Coach]]
) -> AsyncIterator[tuple[Coach, httpx.AsyncClient]]:
    """A new coach on the mocked model endpoint, logged in to the dashboard in a cookie-keeping client."""
    coach = await make_coach("Coach Start")
    response = await http.patch(
        "/api/v1/settings", headers=coach.headers, json=MOCK_ENDPOINT_SETTINGS | {"response_cache_ttl_seconds": 0}
    )
    assert response.status_code == 200, response.text
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as tab:
        await log_in(tab, coach)
        yield coach, tab


async def test_the_checklist_ticks_each_step_from_the_stored_state(
    http: httpx.AsyncClient, coach_tab: tuple[Coach, httpx.AsyncClient], llm_api: respx.MockRouter
) -> None:
    coach, tab = coach_tab
    page = (await tab.get("/dashboard/start")).text
    assert steps(page) == {"document": False, "preview": False, "client": False, "telegram": False}
    assert "0 of 4 done" in page

    await upload(http, coach, "notes.md", b"# Mornings\n\nStart the day with two minutes of quiet.")
    page = (await tab.get("/dashboard/start")).text
    assert steps(page)["document"] and "1 uploaded" in page

    # the preview chat: the coach's own client, opened through its chat link; writing in it ticks the step
    token = await csrf(tab, "/dashboard/start")
    opened = await tab.post("/dashboard/start/preview", data={"_csrf_token": token})
    assert opened.status_code == 303 and opened.headers["location"].startswith("/w/ocw_")
    again = await tab.post("/dashboard/start/preview", data={"_csrf_token": token})
    assert again.headers["location"] == opened.headers["location"], "one preview client, reused"
    assert not steps((await tab.get("/dashboard/start")).text)["preview"], "opened is not tried"
    preview_token = opened.headers["location"].removeprefix("/w/")
    reply = await http.post(
        "/api/v1/chat", headers={"Authorization": f"Bearer {preview_token}"}, json={"text": "How do I start?"}
    )
    assert reply.status_code == 200, reply.text
    page = (await tab.get("/dashboard/start")).text
    assert steps(page)["preview"] and not steps(page)["client"], "the preview client is not an invited client"

    await make_client(http, coach, "Ari")
    page = (await tab.get("/dashboard/start")).text
    assert steps(page) == {"document": True, "preview": True, "client": True, "telegram": False}
    assert "3 of 4 done" in page and 'href="/dashboard/settings/telegram"' in page


async def test_sign_up_lands_on_the_checklist_with_the_api_key_once(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as tab:
        token = await csrf(tab, "/signup")
        form = {"coach_name": "New Coach", "email": "new-start@example.com", "password": "correct horse battery"}
        signed = await tab.post("/signup", data=form | {"_csrf_token": token})
        assert signed.status_code in (302, 303) and signed.headers["location"] == "/dashboard/start"
        first = (await tab.get("/dashboard/start")).text
        key = re.search(r'id="new-api-key">(oc_[^<]+)<', first)
        assert key and f'data-copy="{key.group(1)}"' in first
        assert key.group(1) not in (await tab.get("/dashboard/start")).text, "shown once"


async def test_clients_table_searches_and_shows_last_seen_status_and_copy_buttons(
    http: httpx.AsyncClient, coach_tab: tuple[Coach, httpx.AsyncClient], llm_api: respx.MockRouter
) -> None:
    coach, tab = coach_tab
    empty = (await tab.get("/dashboard/clients")).text
    assert "No clients yet. Add one above" in empty
    ari = await make_client(http, coach, "Ari Quiet")
    bo = await make_client(http, coach, "Bo Talker")
    cy = await make_client(http, coach, "Cy Revoked")
    chat = await http.post(
        "/api/v1/chat", headers={"Authorization": f"Bearer {bo['widget_token']}"}, json={"text": "Hi there"}
    )
    assert chat.status_code == 200, chat.text
    assert (await http.delete(f"/api/v1/clients/{cy['id']}/widget-token", headers=coach.headers)).status_code == 204
    page = (await tab.get("/dashboard/clients")).text
    rows = {name: row(page, name) for name in ("Ari Quiet", "Bo Talker", "Cy Revoked")}
    assert 'data-status="new"' in rows["Ari Quiet"] and "never" in rows["Ari Quiet"]
    assert 'data-status="active"' in rows["Bo Talker"] and "<time datetime=" in rows["Bo Talker"]
    assert 'data-status="revoked"' in rows["Cy Revoked"] and "Make a new link" in rows["Cy Revoked"]
    assert re.search(rf'class="copy" data-copy="https?://[^"]+/w/{ari["widget_token"]}"', page), "the link to copy"
    assert f'data-token="{bo["widget_token"]}" async&gt;&lt;/script&gt;' in page, "the embed snippet to copy"
    found = (await tab.get("/dashboard/clients", params={"q": "talk"})).text
    assert "Bo Talker" in found and "Ari Quiet" not in found and "Cy Revoked" not in found
    none = (await tab.get("/dashboard/clients", params={"q": "<zed>"})).text
    assert "No client's name contains “&lt;zed&gt;”" in none and "<zed>" not in none


async def test_a_coach_with_a_preview_client_deletes_the_client_and_the_account(
    http: httpx.AsyncClient, coach_tab: tuple[Coach, httpx.AsyncClient]
) -> None:
    """The coach's row points at the preview client (``ON DELETE SET NULL``): erasing that client and deleting the
    whole account (which cascades to the clients) both work."""
    coach, tab = coach_tab
    token = await csrf(tab, "/dashboard/start")
    await tab.post("/dashboard/start/preview", data={"_csrf_token": token})
    [preview] = (await http.get("/api/v1/clients", headers=coach.headers)).json()
    assert (await http.delete(f"/api/v1/clients/{preview['id']}", headers=coach.headers)).status_code == 204
    again = await tab.post("/dashboard/start/preview", data={"_csrf_token": token})
    assert again.status_code == 303, "a new preview client replaces the erased one"
    assert len((await http.get("/api/v1/clients", headers=coach.headers)).json()) == 1
    deleted = await http.post(
        "/api/v1/account/delete", headers=coach.headers, json={"password": "correct horse battery"}
    )
    assert deleted.status_code == 200, deleted.text
