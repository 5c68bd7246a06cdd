"""The two small protocols every model provider implements, and their value types."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict

EMBEDDING_DIMENSIONS = 384
"""Width of ``chunks.embedding``: all-MiniLM-L6-v2's output; OpenAI embeddings are requested at this size."""


class ChatMessage(TypedDict):
    """One message of an OpenAI-style chat prompt."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Usage:
    """Token counts of one completion, as the provider reports (or, locally, counts) them.

    ``token_logprobs``: natural-log probabilities of the generated tokens, in order, when the provider returned
    them (OpenAI-compatible servers asked for ``logprobs=true``: ``choices[].logprobs.content[].logprob``);
    ``None`` when it did not — servers that ignore the parameter, and the local llama.cpp provider, which
    would need ``logits_all=True`` (logits for every prompt token) to compute them. A tuple, so the value
    stays immutable and hashable; feed it to :func:`app.handoff.signals.token_confidence`.

    ``finish_reason``: why the model stopped, in OpenAI's terms (``choices[].finish_reason``): ``stop`` (its own
    end, and what the local provider reports; other servers have their own words for it, e.g. ``eos_token``) or
    ``length`` (``max_tokens``: the reply is cut). A stream that ends
    with no finish reason, or one the provider's ``content_filter`` stopped, is a :class:`ProviderError` instead:
    its text is not a whole reply."""

    prompt_tokens: int
    completion_tokens: int
    token_logprobs: tuple[float, ...] | None = None
    finish_reason: str = "stop"


CONTROL_TOKEN = re.compile(
    r"<[|\uff5c][^<>|\uff5c\s]{1,64}[|\uff5c]>"  # ChatML, Llama 3, Phi, Qwen; DeepSeek's fullwidth bars
    r"|\[/?(?:INST|SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS)\]|<</?SYS>>"  # Llama 2, Mistral
    r"|</?s>"  # SentencePiece's BOS and EOS written out
    r"|<(?:start|end)_of_turn>",  # Gemma
    re.IGNORECASE,
)
"""Text shaped like a chat template's control token (``<|im_start|>``, ``<|eot_id|>``, ``[INST]``…)."""


def plain_text_messages(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """``messages`` with every string shaped like a chat template's control token (:data:`CONTROL_TOKEN`)
    replaced by a space. A chat template renders the prompt as text, and llama.cpp (as Hugging Face tokenizers
    in vLLM or TGI) then reads special-token text as the control token itself: ``<|im_end|><|im_start|>system``
    written in a client's message or a coach's document ended its turn and opened a system turn of its own, the
    strongest prompt injection there is (OWASP LLM01). Every provider sends its messages through this."""
    return [ChatMessage(role=m["role"], content=CONTROL_TOKEN.sub(" ", m["content"])) for m in messages]


class ProviderError(Exception):
    """The model provider failed (network, auth, bad response, timeout). The message is safe to log. ``lasting``: the
    provider refused the request itself (a key refused, a model missing, a request it cannot take, a quota used up),
    so asking again gets the same answer until someone changes a setting: jobs do not retry it. ``retry_after``:
    seconds the provider asked its clients to wait before the next request (a 429's or 503's ``Retry-After``),
    ``None`` when it did not say; jobs wait at least that long before their next try."""

    def __init__(self, message: str, *, lasting: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.lasting = lasting
        self.retry_after = retry_after


class ChatProvider(Protocol):
    """Streams a chat completion. ``provider`` names the backend (``local``/``openai``), ``model`` the model."""

    provider: str
    model: str

    def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[str | Usage]:
        """Yield text deltas in order, then exactly one ``Usage``. Raises ``ProviderError``."""
        ...

    async def complete_json(
        self, messages: Sequence[ChatMessage], *, schema: dict[str, Any], name: str, max_tokens: int, temperature: float
    ) -> str:
        """One non-streamed completion constrained to JSON Schema ``schema`` (``name`` labels it for the API);
        returns the raw JSON text, which the caller still validates. Raises ``ProviderError``."""
        ...


class Embedder(Protocol):
    """Maps texts to unit-norm vectors of ``dimensions`` floats; inputs longer than ``max_input_tokens``
    (the model's own tokenizer) are truncated by the model, so chunkers must stay below it."""

    model: str
    dimensions: int
    max_input_tokens: int

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed a batch: ``len(texts)`` vectors of ``dimensions`` floats. Raises ``ProviderError``."""
        ...
