"""JSON Schemas for structured model output, from pydantic models.

Both back ends constrain decoding to a schema: llama.cpp compiles it to a GBNF grammar, OpenAI's Structured
Outputs (``strict: true``) requires every object to list all its properties as ``required`` and to set
``additionalProperties: false``. :func:`output_schema` produces that form; the caller still validates the
returned text with the same pydantic model (a cut-off or out-of-range answer must not be stored).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from app.llm.base import ChatMessage, ChatProvider

M = TypeVar("M", bound=BaseModel)

RETRY_TEMPERATURES = (0.2, 0.6, 0.9)
"""One attempt per temperature: a low one first, then more varied samples."""


DROPPED_KEYWORDS = frozenset({"title", "default", "minLength", "maxLength"})
"""Left out of the schema sent to the model: titles and defaults are noise; string lengths blow llama.cpp's
grammar up (one optional rule per character) and are not accepted by OpenAI's strict mode. Lengths are
still enforced when the answer is validated."""


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "$defs"):  # maps of names (data, never keywords) to schemas
            result[key] = {name: _strict(sub) for name, sub in value.items()}
        elif key not in DROPPED_KEYWORDS:
            result[key] = _strict(value)
    if result.get("type") == "object" and "properties" in result:
        result["required"] = list(result["properties"])
        result["additionalProperties"] = False
    return result


def output_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of ``model`` in strict form (all properties required, no extra ones), without
    :data:`DROPPED_KEYWORDS`."""
    result: dict[str, Any] = _strict(model.model_json_schema())
    return result


class InvalidModelOutput(Exception):
    """The model's answers failed validation on every attempt; the message names the schema and last error."""


async def generate_structured(
    provider: ChatProvider,
    messages: Sequence[ChatMessage],
    model: type[M],
    *,
    max_tokens: int,
    check: Callable[[M], Awaitable[str | None]] | None = None,
    temperatures: Sequence[float] = RETRY_TEMPERATURES,
) -> M:
    """Ask ``provider`` for JSON matching ``model`` and validate it; retry with the next temperature (a
    different sample) while the answer is cut off, out of range, or rejected by ``check`` (a semantic test
    returning the reason, e.g. "not grounded in the messages", or ``None`` to accept).

    Raises ``InvalidModelOutput`` after ``len(temperatures)`` invalid answers, ``ProviderError`` at once.
    """
    schema = output_schema(model)
    last_error = ""
    for temperature in temperatures:
        raw = await provider.complete_json(
            messages, schema=schema, name=model.__name__, max_tokens=max_tokens, temperature=temperature
        )
        try:
            # strict=False: llama.cpp's JSON grammar lets raw newlines into strings, which is harmless
            answer = model.model_validate(json.loads(raw, strict=False))
        except json.JSONDecodeError as exc:
            last_error = f"answer: not JSON ({exc})"
        except ValidationError as exc:
            first = exc.errors()[0]
            last_error = f"{'.'.join(str(p) for p in first['loc']) or 'answer'}: {first['msg']}"
        else:
            rejected = await check(answer) if check is not None else None
            if rejected is None:
                return answer
            last_error = rejected
    raise InvalidModelOutput(f"{model.__name__}: {len(temperatures)} answers failed validation (last: {last_error})")
