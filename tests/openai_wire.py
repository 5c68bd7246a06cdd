"""The OpenAI API's wire format, for tests of OpenAI-compatible providers (respx mocks; no network).

Chat Completions stream as server-sent events (a role chunk, content chunks, a ``finish_reason`` chunk, the
``include_usage`` chunk with ``choices: []``, then ``data: [DONE]``); non-streamed ones (Structured Outputs)
are one ``chat.completion`` JSON object; errors are ``{"error": {...}}`` JSON.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
from collections.abc import Iterator, Sequence
from typing import Any

import httpcore
import httpx
import respx
from respx.mocks import HTTPCoreMocker

# The app hands the openai SDK an httpx.AsyncClient on the egress guard's transport (app/core/egress.py), so
# its requests go through httpx/httpcore, which respx patches, and reach respx only after the guard checked
# them. SDK_HTTPCORE is where the SDK's real transport errors come from. An SDK client built without that
# client would use httpx2/httpcore2 (openai>=3): respx is told about httpcore2's pool too.
_HAS_HTTPCORE2 = importlib.util.find_spec("httpcore2") is not None
_HTTPCORE2_POOLS = ("httpcore2._async.connection_pool.AsyncConnectionPool",) if _HAS_HTTPCORE2 else ()
SDK_HTTPCORE: Any = httpcore


@contextlib.contextmanager
def mock_openai() -> Iterator[respx.MockRouter]:
    """A respx router that also intercepts the openai SDK's own HTTP stack (httpx2/httpcore2 in openai>=3).

    Unmatched routes are not an error (``assert_all_called=False``); unmocked hosts are."""
    HTTPCoreMocker.add_targets(*_HTTPCORE2_POOLS)
    try:
        with respx.mock(assert_all_called=False) as router:
            yield router
    finally:
        HTTPCoreMocker.remove_targets(*_HTTPCORE2_POOLS)


MOCK_BASE_URL = "https://llm.example.test/v1"
"""The base URL of the mocked coach endpoint. The tests' stub resolver answers a public address for its host,
so the egress guard lets it through; a request that got past respx would break the network rule."""


@contextlib.contextmanager
def mock_chat_endpoint(deltas: Sequence[str], usage: tuple[int, int] = (80, 5)) -> Iterator[respx.MockRouter]:
    """The coach's OpenAI-compatible endpoint at :data:`MOCK_BASE_URL`, streaming ``deltas`` for every chat
    completion (route name ``"completions"``, for call counts and re-mocking); requests to the served app
    on 127.0.0.1 pass through."""
    with mock_openai() as router:
        router.route(host="127.0.0.1").pass_through()
        router.post(f"{MOCK_BASE_URL}/chat/completions", name="completions").mock(
            side_effect=lambda request: sse_response(openai_sse(deltas, usage))
        )
        yield router


def stream_reply(router: respx.MockRouter, deltas: Sequence[str], usage: tuple[int, int] = (80, 5)) -> None:
    """From now on, the endpoint of :func:`mock_chat_endpoint` (``router``) streams ``deltas`` for every chat
    completion, e.g. a reply citing the prompt's first passage by its number (``" [1]"``), as the prompt asks."""
    router.routes["completions"].mock(side_effect=lambda request: sse_response(openai_sse(deltas, usage)))


MOCK_ENDPOINT_SETTINGS = {
    "llm_provider": "openai",
    "llm_model": "gpt-4o-mini",
    "llm_base_url": MOCK_BASE_URL,
    "llm_api_key": "sk-test",
}
"""``PATCH /api/v1/settings`` body pointing a coach at :func:`mock_chat_endpoint`."""


def _chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
    payload = {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306",
        "choices": choices,
        "usage": usage,
    }
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    """The ``usage`` object of a completion (streamed in the ``include_usage`` chunk, or whole)."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _choice(
    delta: dict[str, Any], finish_reason: str | None = None, logprobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}


def _token_logprobs(tokens: Sequence[tuple[str, float]]) -> dict[str, Any]:
    """A chunk's ``choices[0].logprobs`` when the request had ``logprobs: true`` (``top_logprobs`` unset)."""
    content = [
        {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": []}
        for token, logprob in tokens
    ]
    return {"content": content, "refusal": None}


def openai_sse(
    deltas: Sequence[str],
    usage: tuple[int, int] | None = None,
    *,
    complete: bool = True,
    logprobs: Sequence[float] | None = None,
    finish_reason: str = "stop",
) -> bytes:
    """A streamed chat completion as OpenAI sends it. ``usage=(prompt, completion)`` adds the final
    ``stream_options.include_usage`` chunk (``choices: []``); ``None`` leaves it out, as some servers do.
    ``complete=False`` stops after the content chunks (no finish chunk, no usage, no ``[DONE]``); ``finish_reason``
    is the finish chunk's (``length``: cut at ``max_tokens``; ``content_filter``: stopped by the provider's filter).
    ``logprobs``: one natural-log probability per delta (each delta one token), sent as with ``logprobs: true``
    — the role chunk carries ``{"content": [], "refusal": null}``, each content chunk its token's
    ``{"token", "logprob", "bytes", "top_logprobs": []}``, the finish chunk ``null``; ``None`` sends
    ``"logprobs": null`` everywhere (servers that ignore the parameter)."""
    if logprobs is not None and len(logprobs) != len(deltas):
        raise ValueError("one logprob per delta")
    role = {"role": "assistant", "content": "", "refusal": None}
    body = _chunk([_choice(role, logprobs=None if logprobs is None else _token_logprobs([]))])
    body += b"".join(
        _chunk([_choice({"content": d}, logprobs=None if logprobs is None else _token_logprobs([(d, logprobs[i])]))])
        for i, d in enumerate(deltas)
    )
    if not complete:
        return body
    body += _chunk([_choice({}, finish_reason)])
    if usage is not None:
        body += _chunk([], _usage(*usage))
    return body + b"data: [DONE]\n\n"


def sse_response(body: bytes) -> httpx.Response:
    """A 200 ``text/event-stream`` response carrying ``body``."""
    return httpx.Response(200, headers={"content-type": "text/event-stream; charset=utf-8"}, content=body)


def openai_error(status: int, message: str, type_: str, code: str | None) -> httpx.Response:
    """An error response in OpenAI's JSON format."""
    error = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return httpx.Response(status, json=error, headers={"x-request-id": "req_7f3c2a"})


def openai_completion(
    content: str | None,
    usage: tuple[int, int] = (212, 48),
    *,
    finish_reason: str = "stop",
    refusal: str | None = None,
) -> httpx.Response:
    """A non-streamed chat completion (``object: "chat.completion"``) as OpenAI sends it, e.g. for Structured
    Outputs (``response_format: {"type": "json_schema", ...}``): ``content`` is the JSON text the model wrote
    (``None`` with ``refusal`` set when the model refuses); ``finish_reason="length"`` marks an answer cut off
    by ``max_tokens``; ``usage=(prompt, completion)``."""
    body = {
        "id": "chatcmpl-BA4cVbJ9pZ0Rl2y7QmgKHnN3xTsWd",
        "object": "chat.completion",
        "created": 1741801987,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": _usage(*usage),
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306",
    }
    return httpx.Response(
        200,
        headers={"content-type": "application/json", "x-request-id": "req_5b1d0e", "openai-processing-ms": "612"},
        content=json.dumps(body, separators=(",", ":")).encode(),
    )
