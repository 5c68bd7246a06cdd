"""Any OpenAI-compatible endpoint through the official ``openai`` SDK: OpenAI with the coach's own key
(BYOK), or vLLM / Ollama / llama.cpp server via ``base_url``.

The SDK sends through an ``httpx.AsyncClient`` on the egress guard's transport (:mod:`app.core.egress`): the
coach chooses the URL, so every request is checked and connects only to the checked address; failures are
described by :func:`describe_error` (status code and a short reason, never the response body).

Every call has an overall deadline (``LLM_DEADLINE_SECONDS``) besides the SDK's ``timeout``, which bounds each
connect and each read, not the whole answer: an endpoint that drip-feeds a byte every few seconds would
otherwise hold a chat turn or a worker slot for ever.

The SDK does not validate what an endpoint answers: it builds its response objects from the JSON without
checking them, and hands back the body as text when it is not JSON (``openai._response``; its
``_strict_response_validation`` would also refuse the fields compatible servers leave out or name otherwise).
A wrong base URL answering 200 with a web page, a proxy's login page or an event stream of other JSON would
then fail deep in our code with an ``AttributeError``. Each call reads what it needs from the answer inside
:func:`reading_response`, so an answer of another shape ends in ``ProviderError`` like any other failed call.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import openai
from openai.types.chat import ChatCompletionChunk

from app.core.egress import EgressGuard, EgressRefused, http_status_text
from app.llm.base import ChatMessage, ProviderError, Usage, plain_text_messages

KNOWN_ERROR_CODES = {
    "invalid_api_key": "the endpoint refused the API key",
    "insufficient_quota": "the account at the provider has no credit or quota left",
    "model_not_found": "the model does not exist there, or this key may not use it",
    "context_length_exceeded": "the prompt is longer than the model's context window",
    "rate_limit_exceeded": "too many requests for the account's rate limit",
}
"""OpenAI's error codes (``error.code``, API reference "Error codes") a coach can act on, in words. Only these
are repeated from an answer: a fixed list, never text the endpoint chose."""


def describe_error(exc: BaseException) -> str:
    """One line saying what failed, safe to store where a coach or client can read it (``metadata.error``,
    ``fine_tune_jobs.error``, a document's error): the SDK error's class and, for an HTTP error, the status
    code with its standard phrase (``"AuthenticationError: HTTP 401 Unauthorized"``), and the error's ``code``
    when it is one of OpenAI's documented codes, in words (:data:`KNOWN_ERROR_CODES`: a quota used up and a rate
    limit are both 429s, a key the endpoint refuses and a model it lacks need different fixes); a refusal by the
    egress guard with its reason. Never the response body, the error message or the reason phrase the server sent:
    the coach chooses the endpoint, and echoing what it answered would turn a refused or failed request into
    a way to read internal services (OWASP SSRF Prevention Cheat Sheet)."""
    name = type(exc).__name__
    if isinstance(exc, EgressRefused):
        return f"EgressRefused: {exc}"
    if isinstance(exc, openai.APIStatusError):
        known = KNOWN_ERROR_CODES.get(exc.code) if isinstance(exc.code, str) else None
        return f"{name}: {http_status_text(exc.status_code)}" + (f" ({exc.code}: {known})" if known else "")
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
    if isinstance(exc, UnicodeEncodeError):  # the only header of ours with the coach's text is the key's
        return "InvalidAPIKey: the API key has characters an HTTP header cannot carry; enter it again"
    return name


_REFUSED = (
    openai.BadRequestError,
    openai.AuthenticationError,
    openai.PermissionDeniedError,
    openai.NotFoundError,
    openai.UnprocessableEntityError,
)
"""The SDK's errors of a request the endpoint refuses as such (400, 401, 403, 404, 422): no retry changes them."""


RETRY_AFTER_MAX_S = 3600.0
"""The longest wait an endpoint's ``Retry-After`` is followed for: a longer one (or a date far ahead) is cut to
this, so a wrong header cannot silence a coach's AI for days."""


def retry_after(exc: BaseException) -> float | None:
    """Seconds a 429 or 503 answer ``exc`` asked its client to wait (at most :data:`RETRY_AFTER_MAX_S`): OpenAI's
    ``retry-after-ms`` (milliseconds, read first, as the SDK does), else ``Retry-After`` in delta-seconds or as an
    HTTP-date (RFC 9110 §10.2.3; RFC 6585 §4 for 429). ``None`` for another error, no such header, one that is
    not a number or a date, or a wait already over."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (429, 503):
        return None
    headers = exc.response.headers
    seconds: float | None = None
    with suppress(ValueError):
        if "retry-after-ms" in headers:
            seconds = float(headers["retry-after-ms"]) / 1000
        elif "retry-after" in headers:
            value = headers["retry-after"].strip()
            if value.replace(".", "", 1).isdigit():
                seconds = float(value)
            else:
                seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        return None
    return min(seconds, RETRY_AFTER_MAX_S)


def provider_error(exc: BaseException) -> ProviderError:
    """The :class:`ProviderError` of a failed SDK call ``exc``: :func:`describe_error`'s message, ``lasting`` for
    a request the endpoint refuses as such (:data:`_REFUSED`) and for a quota used up (a 429 whose code is
    ``insufficient_quota``, unlike a rate limit's), and the wait the answer asked for (:func:`retry_after`)."""
    quota = isinstance(exc, openai.RateLimitError) and exc.code == "insufficient_quota"
    return ProviderError(describe_error(exc), lasting=quota or isinstance(exc, _REFUSED), retry_after=retry_after(exc))


class Backoff:
    """An endpoint's request to wait, kept by one SDK client of this process (a coach's chat model or embedder):
    once an answer asked for a wait (:attr:`ProviderError.retry_after`), every call until it is over fails at once
    with a :class:`ProviderError` saying so, whose ``retry_after`` is the time left, instead of asking again: each
    client message of a coach whose provider said "Retry-After: 600" made its own request (and the SDK its retry),
    which a rate limiter may count against the account. Clients get the apology at once, and jobs wait it out."""

    def __init__(self) -> None:
        self._until = 0.0

    def check(self) -> None:
        """Raise ``ProviderError`` while the wait asked for is not over."""
        left = self._until - time.monotonic()
        if left > 0:
            message = f"RateLimitError: the endpoint asked to wait; {math.ceil(left)} s left"
            raise ProviderError(message, retry_after=left)

    def noted(self, error: ProviderError) -> ProviderError:
        """``error``, its wait (if any) kept for the calls after it."""
        if error.retry_after:
            self._until = max(self._until, time.monotonic() + error.retry_after)
        return error


_FAILED_CALL = (openai.OpenAIError, EgressRefused, UnicodeEncodeError)
"""What an SDK call raises when it fails: the SDK's errors, the egress guard's refusal, and the encoding error of
a key stored before keys were checked (:func:`app.core.validation.provider_api_key`), which the SDK raises
building the request's ``Authorization`` header."""


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


MISMATCH = "APIResponseValidationError: the response does not match the API"
"""The ``ProviderError`` message of an answer of another shape (:func:`describe_error`'s wording for the SDK's
own ``APIResponseValidationError``)."""


@contextmanager
def reading_response() -> Iterator[None]:
    """Read fields of an SDK response inside this block: what reading an answer of another shape raises (a
    body the SDK returned as ``str``, a field of the wrong type or missing, an event that is not JSON) becomes
    ``ProviderError(MISMATCH)``."""
    try:
        yield
    except UnicodeEncodeError:  # not the answer: the request's key (:data:`_FAILED_CALL`)
        raise
    except (AttributeError, TypeError, IndexError, KeyError, ValueError) as exc:
        raise ProviderError(MISMATCH) from exc


STOPPED_SHORT = {
    None: "the stream ended before the model finished (no finish_reason)",
    "content_filter": "the provider's content filter stopped the reply",
}
"""The finish reasons of a streamed reply that is not a whole one, with the :class:`ProviderError` message each
raises. Any other finish is the model's own end: OpenAI's ``stop`` and ``length`` (at ``max_tokens``, which the turn
trims to its last sentence), and the words other servers use for them (TGI's ``eos_token``, ``stop_sequence``)."""


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
        self._backoff = Backoff()

    async def _open_stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float
    ) -> openai.AsyncStream[ChatCompletionChunk]:
        """Start the streamed completion, dropping ``logprobs`` if the server refuses it (see the class)."""
        extra: dict[str, Any] = {"logprobs": True} if self._logprobs else {}
        try:
            return await self._client.chat.completions.create(  # type: ignore[no-any-return,call-overload]
                model=self.model,
                messages=plain_text_messages(messages),
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
        """Yield deltas then ``Usage`` (with ``token_logprobs`` when the server sent any, and the
        ``finish_reason``). Raises ``ProviderError`` (message: :func:`describe_error`) on any API or transport
        error, when the egress guard refuses the endpoint, on an answer that is not a Chat Completions event stream
        (an event of another shape, or no event at all: a web page, a JSON body; :data:`MISMATCH`), when the
        whole answer takes over ``deadline`` seconds (the time the caller spends between deltas counts too), and
        when the stream ends without a finish reason or on ``content_filter`` (:data:`STOPPED_SHORT`: a stream
        closed early, or stopped by the provider's content filter; its deltas were yielded already), or at once
        while the endpoint's wait is not over (:class:`Backoff`)."""
        usage: Usage | None = None
        chunks_read = deltas = 0
        logprobs: list[float] = []
        finish_reason: str | None = None
        self._backoff.check()
        deadline = asyncio.get_running_loop().time() + self._deadline
        try:
            async with asyncio.timeout_at(deadline):
                stream = await self._open_stream(messages, max_tokens=max_tokens, temperature=temperature)
            chunks = aiter(stream)
            while True:
                try:
                    with reading_response():  # an event that is not JSON
                        async with asyncio.timeout_at(deadline):  # around the read only, never around a yield
                            chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    await stream.close()
                    raise _too_late(self._deadline) from None
                with reading_response():
                    chunk_usage, chunk_logprobs, contents, chunk_finish = _chunk_parts(chunk)
                chunks_read += 1
                finish_reason = chunk_finish or finish_reason
                if chunk_usage is not None:
                    usage = chunk_usage
                logprobs.extend(chunk_logprobs)
                for content in contents:
                    deltas += 1
                    yield content
        except TimeoutError:
            raise _too_late(self._deadline) from None
        except _FAILED_CALL as exc:
            raise self._backoff.noted(provider_error(exc)) from exc
        if not chunks_read:  # no event at all (a web page, a JSON body): not a Chat Completions stream
            raise ProviderError(MISMATCH)
        if finish_reason is None or finish_reason in STOPPED_SHORT:  # a part of a reply: not to store, cache, learn
            raise ProviderError(STOPPED_SHORT[finish_reason])
        usage = usage or Usage(0, deltas)
        yield Usage(usage.prompt_tokens, usage.completion_tokens, tuple(logprobs) if logprobs else None, finish_reason)

    async def complete_json(
        self, messages: Sequence[ChatMessage], *, schema: dict[str, Any], name: str, max_tokens: int, temperature: float
    ) -> str:
        """Structured Outputs: ``response_format`` ``{"type": "json_schema", "json_schema": {"name", "schema",
        "strict": true}}`` (OpenAI API reference, Chat Completions). Raises ``ProviderError`` on API errors, on
        a refusal or an empty message, on an answer that is not a chat completion (:data:`MISMATCH`), and when
        the answer takes over ``deadline`` seconds, or at once while the endpoint's wait is not over
        (:class:`Backoff`)."""
        self._backoff.check()
        try:
            async with asyncio.timeout(self._deadline):
                response = await self._client.chat.completions.create(  # type: ignore[call-overload]
                    model=self.model,
                    messages=plain_text_messages(messages),
                    max_tokens=max_tokens,
                    temperature=temperature,
                    response_format={
                        "type": "json_schema",
                        "json_schema": {"name": name, "schema": schema, "strict": True},
                    },
                )
        except TimeoutError:
            raise _too_late(self._deadline) from None
        except _FAILED_CALL as exc:
            raise self._backoff.noted(provider_error(exc)) from exc
        with reading_response():
            message = response.choices[0].message if response.choices else None
            refusal, content = (message.refusal, message.content) if message is not None else (None, None)
        if message is None or refusal or not content:
            raise ProviderError(f"the model returned no JSON ({refusal if message else 'no choices'})")
        if not isinstance(content, str):
            raise ProviderError(MISMATCH)
        return content


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
        self._backoff = Backoff()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed a batch: one vector per text, in order. Raises ``ProviderError`` on API errors, an answer that is
        not one list of numbers per text (:data:`MISMATCH`), a wrong vector width, or an answer that takes over
        ``deadline`` seconds, or at once while the endpoint's wait is not over (:class:`Backoff`)."""
        if not texts:
            return []
        self._backoff.check()
        try:
            # the SDK reads the answer's data inside create (decoding base64 vectors; ValueError when none)
            with reading_response():
                async with asyncio.timeout(self._deadline):
                    response = await self._client.embeddings.create(
                        model=self.model, input=list(texts), dimensions=self.dimensions
                    )
        except TimeoutError:
            raise _too_late(self._deadline) from None
        except _FAILED_CALL as exc:
            raise self._backoff.noted(provider_error(exc)) from exc
        with reading_response():
            vectors = [d.embedding for d in sorted(response.data, key=lambda d: d.index)]
        if len(vectors) != len(texts) or not all(_numbers(v) for v in vectors):
            raise ProviderError(MISMATCH)
        if any(len(v) != self.dimensions for v in vectors):
            raise ProviderError(f"embedding endpoint returned vectors not of width {self.dimensions}")
        return vectors


def _chunk_parts(chunk: ChatCompletionChunk) -> tuple[Usage | None, list[float], list[str], str | None]:
    """A streamed chunk's usage (``None``: not in this chunk, or token counts that are not integers: the reply
    does not need them), token log-probabilities, content deltas and finish reason (``None`` in all but the last
    choice chunk). Read inside :func:`reading_response`: raises what reading a chunk of another shape raises, or
    ``TypeError`` for content that is not text."""
    usage = None
    finish_reason: str | None = None
    if chunk.usage is not None:
        counts = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        if all(isinstance(n, int) for n in counts):
            usage = Usage(*counts)
    logprobs: list[float] = []
    contents: list[str] = []
    for choice in chunk.choices:
        if choice.logprobs is not None and choice.logprobs.content:
            logprobs.extend(float(token.logprob) for token in choice.logprobs.content)
        content = choice.delta.content
        if content:
            if not isinstance(content, str):
                raise TypeError(f"delta content is {type(content).__name__}")
            contents.append(content)
        if choice.finish_reason:
            finish_reason = str(choice.finish_reason)
    return usage, logprobs, contents, finish_reason


def _numbers(vector: object) -> bool:
    """Whether an embedding is a list of finite numbers (JSON may send an integral component as an integer; a
    ``NaN`` or ``Infinity``, which Python's JSON reader accepts, would fail the whole statement storing it)."""
    return isinstance(vector, list) and all(
        isinstance(x, float | int) and not isinstance(x, bool) and math.isfinite(x) for x in vector
    )
