"""A passage that runs across a page break, through the real upload, worker, retrieval and chat: the chat's
citation, the passage it opens and the dashboard's transcript name every page it spans ("pp. 42–43" by the PDF's
own page labels, "pp. 1–2" by the numbers of a PDF without labels), not its first page alone."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest
import respx

from app.container import Container
from tests.conftest import Coach, make_client, upload
from tests.hostile_files import book_pdf
from tests.integration.rag.test_document_kinds import _chunks, _ready
from tests.integration.web.test_dashboard import browser, client_chat, log_in
from tests.openai_wire import MOCK_ENDPOINT_SETTINGS, mock_chat_endpoint

__all__ = ["browser"]  # a logged-out browser tab, a fixture

MORNING = [
    "Thus ends the fourth book of the emperor's notes. In the morning when you rise unwillingly from bed,",
    "let this thought be present: I am rising to the work of a human being. Why then am I dissatisfied?",
]
"""Book five of *Meditations* opens near the foot of a page: its first sentence runs onto the next."""
LETTERS = [
    "On saving time, Seneca writes to Lucilius: hold every hour in your grasp,",
    "and you will depend less on tomorrow. Nothing is ours except time.",
]


@pytest.fixture
def citing_api() -> Iterator[respx.MockRouter]:
    """The coach's endpoint, mocked: its reply cites the prompt's first two passages (``[1]``, ``[2]``)."""
    with mock_chat_endpoint(["Rise to the work of a human being [1]", ", and hold every hour [2]."]) as router:
        yield router


async def test_a_passage_across_a_page_break_is_cited_by_both_pages(
    http: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    make_coach: Callable[..., Awaitable[Coach]],
    run_jobs: Callable[[], Awaitable[None]],
    container: Container,
    citing_api: respx.MockRouter,
) -> None:
    """The tester's question cited "Meditations, p. 42" (its page 52 in the PDF) although the answer is on p. 43:
    the passage spans both, and only its first page was cited."""
    coach = await make_coach("Page Break Coach")
    meditations = await upload(http, coach, "meditations.pdf", book_pdf(MORNING, first_label=42))
    letters = await upload(http, coach, "letters.pdf", book_pdf(LETTERS))
    await run_jobs()
    titles = {doc["id"]: (await _ready(http, coach, doc["id"]))["title"] for doc in (meditations, letters)}
    [morning] = await _chunks(container, coach, meditations["id"])
    assert (morning.page_start, morning.page_end, morning.locator) == (1, 2, "pp. 42–43")
    [saving] = await _chunks(container, coach, letters["id"])
    assert (saving.page_start, saving.page_end, saving.locator) == (1, 2, None)

    settings = MOCK_ENDPOINT_SETTINGS | {"response_cache_ttl_seconds": 0}
    assert (await http.patch("/api/v1/settings", headers=coach.headers, json=settings)).status_code == 200
    client = await make_client(http, coach, "Marcus")
    question = "What should I tell myself in the morning when I rise unwillingly from bed?"
    turn = await client_chat(http, client["widget_token"], question)
    cited = {c["document_id"]: c for c in turn["citations"]}
    auth = {"Authorization": f"Bearer {client['widget_token']}"}
    for document, locator in [(meditations, "pp. 42–43"), (letters, "pp. 1–2")]:
        citation = cited[document["id"]]
        assert (citation["page"], citation.get("locator")) == (1, locator), turn["citations"]
        passage = await http.get(f"/api/v1/widget/passages/{citation['chunk_id']}", headers=auth)
        assert passage.status_code == 200 and (passage.json()["page"], passage.json()["locator"]) == (1, locator)

    await log_in(browser, coach)
    transcript = await browser.get(f"/dashboard/conversations/{turn['conversation_id']}")
    assert transcript.status_code == 200
    assert f"{titles[meditations['id']]}, pp. 42–43" in transcript.text
    assert f"{titles[letters['id']]}, pp. 1–2" in transcript.text
