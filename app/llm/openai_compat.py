"""Any OpenAI-compatible endpoint through the official ``openai`` SDK: OpenAI with the coach's own key
(BYOK), or vLLM / Ollama / llama.cpp server via ``base_url``.

The SDK sends through an ``httpx.AsyncClient`` on the egress guard's transport (:mod:`app.core.egress`): the
coach chooses the URL, so every request is checked and connects only to the checked address; failures are
described by :func:`describe_error` (status code and a short reason, never the response body).

Every call has an overall deadline (``LLM_DEADLINE_SECONDS``) besides the SDK's ``timeout``, which bounds each
connect and each read, not the whole answer: an endpoint that drip-feeds a byte every few seconds would
otherwise hold a chat turn or a worker slot for ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import openai
from openai.types.chat import ChatCompletionChunk

from app.core.egress import EgressGuard, EgressRefused, http_status_text
from app.llm.base import ChatMessage, ProviderError, Usage


def describe_error(exc: BaseException) -> str:
    """One line saying what failed, safe to store where a coach or client can read it (``metadata.error``,
    ``fine_tune_jobs.error``, a document's error): the SDK error's class and, for an HTTP error, the status
    code with its standard phrase (``"AuthenticationError: HTTP 401 Unauthorized"``); a refusal by the egress
    guard with its reason. Never the response body, the error message or the reason phrase the server sent:
    the coach chooses the endpoint, and echoing what it answered would turn a refused or failed request into
    a way to read internal services (OWASP SSRF Prevention Cheat Sheet)."""
    name = type(exc).__name__
    if isinstance(exc, EgressRefused):
        return f"EgressRefused: {exc}"
    if isinstance(exc, openai.APIStatusError):
        return f"{name}: {http_status_text(exc.status_code)}"
    if isinstance(exc, openai.APITimeoutError):
        return f"{name}: the endpoint did not answer in time"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        if isinstance(cause, EgressRefused):
            return f"EgressRefused: {cause}"
        return f"{name}: could not connect" + (f" ({type(cause).__name__})" if cause is not None else "")
    if isinstance(exc, openai.APIResponseValidationError):
        return f"{name}: the response does not match the API"
    if isinstance(exc, openai.APIError):
        return f"{name}: the endpoint reported an error"
    return name


def _sdk_client(
    egress: EgressGuard | None, *, api_key: str | None, base_url: str | None, timeout: float, max_retries: int
) -> openai.AsyncOpenAI:
    """An SDK client whose HTTP goes through ``egress`` (``None``: a guard with an empty allowlist)."""
    guard = egress or EgressGuard()
    return openai.AsyncOpenAI(
        api_key=api_key or "not-needed",
        base_url=base_url,
        timeout=timeout,
        max_retries=max_retries,
        # the SDK accepts an httpx.AsyncClient as well as an httpx2 one (openai._httpx2.is_legacy_httpx_async_client)
        http_client=guard.client(timeout=timeout),  # type: ignore[arg-type]
    )


def _too_late(deadline_s: float) -> ProviderError:
    """The error of a call that ran past its overall deadline."""
    return ProviderError(f"TimeoutError: the endpoint did not finish within {deadline_s:g} s")


def _names_logprobs(exc: openai.BadRequestError) -> bool:
    """Whether a 400 is about the ``logprobs`` parameter (``param`` or message names it)."""
    return exc.param == "logprobs" or "logprobs" in str(exc.message).lower()


class OpenAIChatProvider:
    """Chat Completions with ``stream=True``, ``stream_options.include_usage`` (the final chunk carries
    ``usage``; servers that omit it get ``Usage(0, n_deltas)``) and ``logprobs=true`` (each chunk's
    ``choices[0].logprobs.content[].logprob``, collected into ``Usage.token_logprobs``; servers that send
    ``"logprobs": null`` give ``None``). A server that rejects the ``logprobs`` parameter with a 400 naming it
    (OpenAI's reasoning models: "Unsupported parameter: 'logprobs' …") is asked again without it, once, and
    this provider stops asking."""

    provider = "openai"

    def __init__(
        self,
        *,
        model: str,
        api_key: str | None,
        base_url: str | None,
        timeout: float,
        deadline: float,
        egress: EgressGuard | None = None,
    ) -> None:
        self.model = model
        self._client = _sdk_client(egress, api_key=api_key, base_url=base_url, timeout=timeout, max_retries=1)
        self._deadline = deadline
        self._logprobs = True

    async def _open_stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float
    ) -> openai.AsyncStream[ChatCompletionChunk]:
        """Start the streamed completion, dropping ``logprobs`` if the server refuses it (see the class)."""
        extra: dict[str, Any] = {"logprobs": True} if self._logprobs else {}
        try:
            return await self._client.chat.completions.create(  # type: ignore[no-any-return,call-overload]
                model=self.model,
                messages=list(messages),
                max_tokens=max_tokens,
                temperature=temperature,
                stream=True,
                stream_options={"include_usage": True},
                **extra,
            )
        except openai.BadRequestError as exc:
            if not extra or not _names_logprobs(exc):
                raise
            self._logprobs = False
            return await self._open_stream(messages, max_tokens=max_tokens, temperature=temperature)

    async def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[str | Usage]:
        """Yield deltas then ``Usage`` (with ``token_logprobs`` when the server sent any). Raises
        ``ProviderError`` (message: :func:`describe_error`) on any API or transport error, when the egress
        guard refuses the endpoint, and when the whole answer takes over ``deadline`` seconds (the time the
        caller spends between deltas counts too)."""
        usage: Usage | None = None
        deltas = 0
        logprobs: list[float] = []
        deadline = asyncio.get_running_loop().time() + self._deadline
        try:
            async with asyncio.timeout_at(deadline):
                stream = await self._open_stream(messages, max_tokens=max_tokens, temperature=temperature)
            chunks = aiter(stream)
            while True:
                try:
                    async with asyncio.timeout_at(deadline):  # around the read only, never around a yield
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    await stream.close()
                    raise _too_late(self._deadline) from None
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    if choice.logprobs is not None and choice.logprobs.content:
                        logprobs.extend(token.logprob for token in choice.logprobs.content)
                    if choice.delta.content:
                        deltas += 1
                        yield choice.delta.content
        except TimeoutError:
            raise _too_late(self._deadline) from None
        except (openai.OpenAIError, EgressRefused) as exc:
            raise ProviderError(describe_error(exc)) from exc
        usage = usage or Usage(0, deltas)
        yield Usage(usage.prompt_tokens, usage.completion_tokens, tuple(logprobs) if logprobs else None)

    async def complete_json(
        self, messages: Sequence[ChatMessage], *, schema: dict[str, Any], name: str, max_tokens: int, temperature: float
    ) -> str:
        """Structured Outputs: ``response_format`` ``{"type": "json_schema", "json_schema": {"name", "schema",
        "strict": true}}`` (OpenAI API reference, Chat Completions). Raises ``ProviderError`` on API errors, on
        a refusal or an empty message, and when the answer takes over ``deadline`` seconds."""
        try:
            async with asyncio.timeout(self._deadline):
                response = await self._client.chat.completions.create(  # type: ignore[call-overload]
                    model=self.model,
                    messages=list(messages),
                    max_tokens=max_tokens,
                    temperature=temperature,
                    response_format={
                        "type": "json_schema",
                        "json_schema": {"name": name, "schema": schema, "strict": True},
                    },
                )
        except TimeoutError:
            raise _too_late(self._deadline) from None
        except (openai.OpenAIError, EgressRefused) as exc:
            raise ProviderError(describe_error(exc)) from exc
        message = response.choices[0].message if response.choices else None
        if message is None or message.refusal or not message.content:
            raise ProviderError(f"the model returned no JSON ({message.refusal if message else 'no choices'})")
        return str(message.content)


class OpenAIEmbedder:
    """``/v1/embeddings`` with ``dimensions`` (text-embedding-3-* shorten to it; vectors are unit-norm)."""

    max_input_tokens = 8191

    def __init__(
        self,
        *,
        model: str,
        api_key: str | None,
        base_url: str | None,
        dimensions: int,
        timeout: float,
        deadline: float,
        egress: EgressGuard | None = None,
    ) -> None:
        self.model = model
        self.dimensions = dimensions
        self._client = _sdk_client(egress, api_key=api_key, base_url=base_url, timeout=timeout, max_retries=2)
        self._deadline = deadline

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed a batch. Raises ``ProviderError`` on API errors, a wrong vector width, or an answer that takes
        over ``deadline`` seconds."""
        if not texts:
            return []
        try:
            async with asyncio.timeout(self._deadline):
                response = await self._client.embeddings.create(
                    model=self.model, input=list(texts), dimensions=self.dimensions
                )
        except TimeoutError:
            raise _too_late(self._deadline) from None
        except (openai.OpenAIError, EgressRefused) as exc:
            raise ProviderError(describe_error(exc)) from exc
        vectors = [d.embedding for d in sorted(response.data, key=lambda d: d.index)]
        if any(len(v) != self.dimensions for v in vectors):
            raise ProviderError(f"embedding endpoint returned vectors not of width {self.dimensions}")
        return vectors
