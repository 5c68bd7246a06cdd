"""An optional cross-encoder reranker behind a ``/rerank`` endpoint (operator settings ``RERANK_BASE_URL``,
``RERANK_MODEL``, ``RERANK_API_KEY``; off when the URL is empty).

Wire format (Jina AI / Cohere v2 / vLLM ``/v1/rerank``): ``POST {base_url}/rerank`` with
``{"model", "query", "documents": [str, …], "top_n"}`` answers ``{"results": [{"index", "relevance_score"}, …]}``.
Hugging Face TEI answers its ``/rerank`` with a bare list ``[{"index", "score"}, …]``, also understood. Requests
go through the egress guard (:mod:`app.core.egress`) like the chat model's base URL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import httpx

from app.core.egress import EgressGuard, EgressRefused, http_status_text
from app.llm.base import ProviderError

RERANK_TIMEOUT_SECONDS = 10.0


def _scores(body: Any, count: int) -> list[float]:
    results = body.get("results") if isinstance(body, dict) else body
    if not isinstance(results, list):
        raise ProviderError("reranker: the response does not match the /rerank API")
    scores = [float("-inf")] * count
    for item in results:
        try:
            index = int(item["index"])
            score = float(item["relevance_score"] if "relevance_score" in item else item["score"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProviderError("reranker: the response does not match the /rerank API") from exc
        if not 0 <= index < count:
            raise ProviderError("reranker: the response names a document that was not sent")
        if not math.isfinite(score):  # JSON's NaN and Infinity, which Python's reader takes, order nothing
            raise ProviderError("reranker: a score is not a finite number")
        scores[index] = score
    return scores


class HttpReranker:
    """Scores passages against a query with the operator's reranker endpoint."""

    def __init__(self, base_url: str, model: str, api_key: str | None, egress: EgressGuard) -> None:
        self.model = model
        self._url = base_url.rstrip("/") + "/rerank"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._egress = egress

    async def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        """One relevance score per passage (higher is better; a passage the endpoint left out gets ``-inf``).
        Raises ``ProviderError`` with a short reason (HTTP status, refusal, bad response), never the body."""
        if not passages:
            return []
        payload = {"model": self.model, "query": query, "documents": list(passages), "top_n": len(passages)}
        try:
            await self._egress.check_url(self._url)
            async with self._egress.client(timeout=RERANK_TIMEOUT_SECONDS, headers=self._headers) as client:
                response = await client.post(self._url, json=payload)
        except EgressRefused as exc:
            raise ProviderError(f"reranker: EgressRefused: {exc}") from exc
        except httpx.HTTPError as exc:
            raise ProviderError(f"reranker: could not connect ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise ProviderError(f"reranker: {http_status_text(response.status_code)}")
        try:
            body = response.json()
        except ValueError as exc:
            raise ProviderError("reranker: the response is not JSON") from exc
        return _scores(body, len(passages))
