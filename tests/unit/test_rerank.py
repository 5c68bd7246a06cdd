"""The optional reranker against the ``/rerank`` wire format (Jina AI / Cohere v2 / vLLM, and TEI's bare list),
mocked with respx on loopback behind the egress guard; retrieval keeps the fused order when it fails."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
import respx

from app.core.egress import EgressGuard, OutboundAllowlist
from app.llm.base import ProviderError
from app.llm.rerank import HttpReranker
from app.rag.retrieval import RetrievedChunk, rerank

BASE_URL = "http://127.0.0.1:7997/v1"
PASSAGES = ["Tomatoes need full sun.", "Deep sleep consolidates memory.", "Budgets track expenses."]
JINA_RESPONSE = {  # as api.jina.ai/v1/rerank answers (top_n = all, return_documents false)
    "model": "jina-reranker-v2-base-multilingual",
    "usage": {"total_tokens": 38},
    "results": [
        {"index": 1, "relevance_score": 0.9412},
        {"index": 0, "relevance_score": 0.0731},
        {"index": 2, "relevance_score": 0.0102},
    ],
}
TEI_RESPONSE = [{"index": 2, "score": 0.8}, {"index": 0, "score": 0.5}, {"index": 1, "score": 0.1}]


def reranker(allow: str = "127.0.0.1", base_url: str = BASE_URL) -> HttpReranker:
    return HttpReranker(
        base_url, "jina-reranker-v2-base-multilingual", "rk-test", EgressGuard(OutboundAllowlist.parse(allow))
    )


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


async def test_jina_wire_format_request_and_scores(api: respx.MockRouter) -> None:
    route = api.post(f"{BASE_URL}/rerank").mock(return_value=httpx.Response(200, json=JINA_RESPONSE))
    scores = await reranker().scores("does sleep help memory?", PASSAGES)
    assert scores == [0.0731, 0.9412, 0.0102]
    sent = route.calls.last.request
    assert json.loads(sent.content) == {
        "model": "jina-reranker-v2-base-multilingual",
        "query": "does sleep help memory?",
        "documents": PASSAGES,
        "top_n": 3,
    }
    assert sent.headers["Authorization"] == "Bearer rk-test"


async def test_tei_list_response_is_understood(api: respx.MockRouter) -> None:
    api.post(f"{BASE_URL}/rerank").mock(return_value=httpx.Response(200, json=TEI_RESPONSE))
    assert await reranker().scores("money", PASSAGES) == [0.5, 0.1, 0.8]


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(500, text="secret internal detail"), "HTTP 500 Internal Server Error"),
        (httpx.Response(200, json={"results": [{"index": 7, "relevance_score": 1}]}), "was not sent"),
        (httpx.Response(200, json={"oops": 1}), "does not match"),
        (httpx.Response(200, content=b'{"results": [{"index": 0, "relevance_score": NaN}]}'), "not a finite number"),
    ],
)
async def test_failures_are_short_provider_errors(
    api: respx.MockRouter, response: httpx.Response, message: str
) -> None:
    api.post(f"{BASE_URL}/rerank").mock(return_value=response)
    with pytest.raises(ProviderError, match=message) as caught:
        await reranker().scores("q", PASSAGES)
    assert "secret" not in str(caught.value)


async def test_egress_guard_refuses_an_address_not_allowed_before_sending(api: respx.MockRouter) -> None:
    route = api.post("http://127.0.0.1:9/rerank").mock(return_value=httpx.Response(200, json=JINA_RESPONSE))
    with pytest.raises(ProviderError, match="EgressRefused"):
        await reranker(allow="", base_url="http://127.0.0.1:9").scores("q", PASSAGES)
    assert not route.called


def _chunks() -> list[RetrievedChunk]:
    return [RetrievedChunk(uuid.uuid4(), uuid.uuid4(), "T", None, text, 0.5, 0.01) for text in PASSAGES]


async def test_retrieval_reorders_by_the_reranker_and_keeps_the_fused_order_when_it_fails(
    api: respx.MockRouter,
) -> None:
    route = api.post(f"{BASE_URL}/rerank").mock(return_value=httpx.Response(200, json=JINA_RESPONSE))
    chunks = _chunks()
    assert [c.text for c in await rerank(reranker(), "sleep", chunks, 3)] == [PASSAGES[1], PASSAGES[0], PASSAGES[2]]
    assert [c.text for c in await rerank(reranker(), "sleep", chunks, 2)] == [PASSAGES[1], PASSAGES[0]]
    route.mock(return_value=httpx.Response(503))
    assert await rerank(reranker(), "sleep", chunks, 2) == chunks[:2]
