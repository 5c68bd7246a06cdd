"""Hand-back answers the client (issue 11): a message the client wrote while the coach had the conversation,
and that the coach left unanswered, gets the AI's answer after the handback (an outbox job run by the real
worker), delivered live to the widget; "hand back without a reply" leaves it alone.

Only the coach's OpenAI-compatible endpoint is mocked (OpenAI wire format).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import respx

from tests.integration.handoff.test_handoff_flow import (
    REPLY,
    Setup,
    chat,
    llm_api,
    new_setup,
    next_event,
    transcript,
    widget_socket,
)
from tests.integration.web.test_dashboard import CSRF, log_in

__all__ = ["llm_api", "new_setup"]  # fixtures used by name below

WAITING = "Mostly my sleep, honestly."


def answers_to_waiting(router: respx.MockRouter) -> int:
    """Chat turns (streamed completions; the worker's memory jobs of other tests call the same mocked route)
    whose prompt ends with the client's waiting message."""
    bodies = [json.loads(call.request.content) for call in router.routes["completions"].calls]
    return sum(1 for b in bodies if b.get("stream") and b["messages"][-1]["content"] == WAITING)


@pytest.fixture
async def browser(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A cookie-keeping client for the coach's dashboard."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        yield client


async def taken_over_with_a_waiting_message(http: httpx.AsyncClient, setup: Setup) -> str:
    """A conversation the coach took over, wrote in, and where the client then wrote once more (the AI is
    paused, so nobody answered it). Returns its id."""
    first = await chat(http, setup, "How can I plan my week better?")
    conversation_id: str = first["conversation_id"]
    h = setup.coach.headers
    assert (await http.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=h)).status_code == 200
    sent = await http.post(
        f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": "What's weighing on you?"}
    )
    assert sent.status_code == 201, sent.text
    paused = await chat(http, setup, WAITING, conversation_id)
    assert paused["reply"] == "" and paused["handoff"]["status"] == "claimed"
    return conversation_id


async def test_handback_answers_the_message_the_coach_left_unanswered(
    http: httpx.AsyncClient,
    base_url: str,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    setup = await new_setup()
    conversation_id = await taken_over_with_a_waiting_message(http, setup)
    completions = llm_api["completions"]

    async with widget_socket(base_url, setup) as ws:
        back = await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=setup.coach.headers)
        assert back.status_code == 200, back.text
        await run_jobs()
        live = await next_event(ws, "message")
    assert live["message"]["sender_type"] == "ai" and live["message"]["text"] == REPLY

    messages = await transcript(http, setup, conversation_id)
    assert [m["sender_type"] for m in messages] == ["client", "ai", "human_coach", "client", "ai"]
    assert messages[-1]["id"] == live["message"]["id"]
    assert messages[-1]["metadata"]["is_handback"] is True
    assert answers_to_waiting(llm_api) == 1
    [prompt] = [
        body["messages"]
        for body in (json.loads(call.request.content) for call in completions.calls)
        if body.get("stream") and body["messages"][-1]["content"] == WAITING
    ]
    assert any(m["role"] == "assistant" and m["content"] == "What's weighing on you?" for m in prompt)

    await run_jobs()  # the job is idempotent, and the answered message is not answered again
    assert len(await transcript(http, setup, conversation_id)) == 5 and answers_to_waiting(llm_api) == 1


async def test_a_second_handback_within_the_hour_still_answers_the_waiting_message(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """The coach hands back, takes over again before the worker ran the answer (it then finds the AI paused and
    answers nothing), and hands back again: the AI answers the waiting message. The second handback queued
    nothing before (arq refused the job id it still held the first job's result of)."""
    setup = await new_setup()
    conversation_id = await taken_over_with_a_waiting_message(http, setup)
    h = setup.coach.headers
    assert (await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=h)).status_code == 200
    assert (await http.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=h)).status_code == 200
    await run_jobs()  # the first handback's job: paused again, nothing to answer
    assert answers_to_waiting(llm_api) == 0
    assert (await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=h)).status_code == 200
    await run_jobs()
    messages = await transcript(http, setup, conversation_id)
    assert [m["sender_type"] for m in messages] == ["client", "ai", "human_coach", "client", "ai"]
    assert answers_to_waiting(llm_api) == 1


async def test_handback_without_a_reply_sends_nothing(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    setup = await new_setup()
    conversation_id = await taken_over_with_a_waiting_message(http, setup)
    back = await http.post(
        f"/api/v1/conversations/{conversation_id}/handback", params={"reply": "false"}, headers=setup.coach.headers
    )
    assert back.status_code == 200 and back.json()["status"] == "closed", back.text
    await run_jobs()
    messages = await transcript(http, setup, conversation_id)
    assert [m["sender_type"] for m in messages] == ["client", "ai", "human_coach", "client"]
    assert answers_to_waiting(llm_api) == 0

    resumed = await chat(http, setup, "Any tips for tonight?", conversation_id)  # the next message is answered
    assert resumed["reply"] == REPLY
    assert (await transcript(http, setup, conversation_id))[-1]["metadata"]["is_handback"] is True


async def test_a_coach_who_answered_leaves_nothing_for_the_ai(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    setup = await new_setup()
    conversation_id = await taken_over_with_a_waiting_message(http, setup)
    h = setup.coach.headers
    answered = await http.post(
        f"/api/v1/conversations/{conversation_id}/messages", headers=h, json={"text": "Let's work on that."}
    )
    assert answered.status_code == 201
    assert (await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=h)).status_code == 200
    await run_jobs()
    messages = await transcript(http, setup, conversation_id)
    assert [m["sender_type"] for m in messages][-2:] == ["client", "human_coach"]
    assert answers_to_waiting(llm_api) == 0


async def test_the_dashboard_offers_both_handbacks(
    http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    setup = await new_setup()
    conversation_id = await taken_over_with_a_waiting_message(http, setup)
    await log_in(browser, setup.coach)
    page = (await browser.get(f"/dashboard/conversations/{conversation_id}")).text
    assert 'id="handback"' in page and 'id="handback-silent"' in page
    assert f"/dashboard/conversations/{conversation_id}/handback?reply=false" in page
    token = CSRF.search(page).group(1)  # type: ignore[union-attr]
    back = await browser.post(
        f"/dashboard/conversations/{conversation_id}/handback?reply=false", data={"_csrf_token": token}
    )
    assert back.status_code in (302, 303), back.text
    await run_jobs()
    assert [m["sender_type"] for m in await transcript(http, setup, conversation_id)][-1] == "client"
    assert answers_to_waiting(llm_api) == 0


async def test_handing_back_a_low_confidence_handoff_answers_the_question_it_took(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """The AI was unsure and handed the question to the coach (its notice told the client); the coach hands the
    conversation back without taking over: the AI answers the question, whatever its confidence (the coach's
    decision), instead of leaving the client with the notice alone. Before, the notice counted as the answer and
    nothing came. A handoff the client asked for, answered by its notice, is not answered by the AI."""
    setup = await new_setup(high_stakes_topics=["quitting my job"], confidence_threshold=0.95)
    question = "I'm thinking about quitting my job next week"
    handed = await chat(http, setup, question)
    assert handed["handoff"]["reason"] == "low_confidence", handed
    conversation_id, h = handed["conversation_id"], setup.coach.headers
    assert (await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=h)).status_code == 200
    await run_jobs()
    messages = await transcript(http, setup, conversation_id)
    assert [m["sender_type"] for m in messages] == ["client", "ai", "ai"]
    assert messages[1]["metadata"]["notice"] == "handoff" and messages[-1]["text"] == REPLY
    bodies = [json.loads(call.request.content) for call in llm_api.routes["completions"].calls]
    assert sum(1 for b in bodies if b.get("stream") and b["messages"][-1]["content"] == question) == 1

    asked = await chat(http, setup, "Can I talk to a real person please?", conversation_id)
    assert asked["handoff"]["reason"] == "human_request"
    assert (await http.post(f"/api/v1/conversations/{conversation_id}/handback", headers=h)).status_code == 200
    await run_jobs()
    assert [m["sender_type"] for m in await transcript(http, setup, conversation_id)][-2:] == ["client", "ai"]


async def crisis_conversation(http: httpx.AsyncClient, setup: Setup) -> str:
    """A conversation whose client's crisis message opened a crisis handoff, which the coach took over, then the
    client wrote once more (nobody answered it). Returns its id."""
    crisis = await chat(http, setup, "i want to kill myself tonight")
    assert crisis["handoff"] == {"status": "open", "reason": "crisis"}, crisis
    conversation_id: str = crisis["conversation_id"]
    assert (
        await http.post(f"/api/v1/conversations/{conversation_id}/takeover", headers=setup.coach.headers)
    ).is_success
    await chat(http, setup, WAITING, conversation_id)
    return conversation_id


async def handoff_status(http: httpx.AsyncClient, setup: Setup, conversation_id: str) -> str:
    """The status of the conversation's newest handoff."""
    listed = await http.get("/api/v1/handoffs", headers=setup.coach.headers)
    assert listed.status_code == 200, listed.text
    [status, *_] = [h["status"] for h in listed.json() if h["conversation_id"] == conversation_id]
    return status  # type: ignore[no-any-return]


async def test_a_crisis_handoff_is_handed_back_without_a_reply_only_when_confirmed(
    http: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
    run_jobs: Callable[[], Awaitable[None]],
) -> None:
    """``?reply=false`` closed a crisis handoff at once, with nothing to stop a call made by accident. Now the API
    asks for ``confirm_crisis=true``: without it a 400 that names it (code ``confirm_crisis``), the handoff still
    held and the client's message still waiting; with it the handoff closes and nothing answers the message. A
    crisis handoff handed back with a reply needs no confirmation."""
    setup = await new_setup(crisis_resources=["Call Lifeline Aotearoa on 0800 543 354."])
    conversation_id = await crisis_conversation(http, setup)
    url, h = f"/api/v1/conversations/{conversation_id}/handback", setup.coach.headers

    for params in ({"reply": "false"}, {"reply": "false", "confirm_crisis": "false"}):
        refused = await http.post(url, params=params, headers=h)
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == "confirm_crisis" and "confirm_crisis=true" in refused.json()["detail"]
        assert await handoff_status(http, setup, conversation_id) == "claimed"
    paused = await chat(http, setup, "Are you there?", conversation_id)
    assert paused["reply"] == "" and paused["handoff"] == {"status": "claimed", "reason": "crisis"}, "still held"

    back = await http.post(url, params={"reply": "false", "confirm_crisis": "true"}, headers=h)
    assert back.status_code == 200 and back.json()["status"] == "closed", back.text
    await run_jobs()
    assert [m["sender_type"] for m in await transcript(http, setup, conversation_id)][-1] == "client"

    again = await crisis_conversation(http, setup)
    replied = await http.post(f"/api/v1/conversations/{again}/handback", headers=h)
    assert replied.status_code == 200 and replied.json()["status"] == "closed", replied.text


async def test_the_dashboard_asks_before_handing_a_crisis_back_without_a_reply(
    http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    new_setup: Callable[..., Awaitable[Setup]],
    llm_api: respx.MockRouter,
) -> None:
    """ "Hand back without a reply" closed a crisis handoff in one click. Its button now asks first (htmx's
    ``hx-confirm``, then ``hx-vals`` sends ``confirm_crisis``); a request without the field (JavaScript off, an old
    page) is refused with a 400 page that says why and offers the confirming button, nothing changed. Other
    handoffs' button does not ask."""
    setup = await new_setup(crisis_resources=["Call Lifeline Aotearoa on 0800 543 354."])
    await log_in(browser, setup.coach)
    calm = await taken_over_with_a_waiting_message(http, setup)
    calm_page = (await browser.get(f"/dashboard/conversations/{calm}")).text
    assert "hx-confirm" not in calm_page[calm_page.index('id="handback"') : calm_page.index('id="handback-silent"')]
    assert (await http.post(f"/api/v1/conversations/{calm}/handback", headers=setup.coach.headers)).is_success
    conversation_id = await crisis_conversation(http, setup)
    action = f"/dashboard/conversations/{conversation_id}/handback?reply=false"

    page = (await browser.get(f"/dashboard/conversations/{conversation_id}")).text
    form = page[page.index(f'action="{action}"') : page.index('id="handback-silent"')]
    assert 'hx-confirm="This is a crisis handoff.' in form and """hx-vals='{"confirm_crisis": "true"}'""" in form

    token = CSRF.search(page).group(1)  # type: ignore[union-attr]
    refused = await browser.post(action, data={"_csrf_token": token})
    assert refused.status_code == 400, refused.text
    assert "This is a crisis handoff: confirm below" in refused.text
    assert '<input type="hidden" name="confirm_crisis" value="true">' in refused.text
    assert "Confirm: hand back without a reply" in refused.text
    assert await handoff_status(http, setup, conversation_id) == "claimed"

    back = await browser.post(action, data={"_csrf_token": token, "confirm_crisis": "true"})
    assert back.status_code in (302, 303), back.text
    assert await handoff_status(http, setup, conversation_id) == "closed"
