"""JSON Schemas for structured model output, from pydantic models.

Both back ends constrain decoding to a schema: llama.cpp compiles it to a GBNF grammar, OpenAI's Structured
Outputs (``strict: true``) requires every object to list all its properties as ``required`` and to set
``additionalProperties: false``. :func:`output_schema` produces that form; the caller still validates the
returned text with the same pydantic model (a cut-off or out-of-range answer must not be stored).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from app.llm.base import ChatMessage, ChatProvider

M = TypeVar("M", bound=BaseModel)

RETRY_TEMPERATURES = (0.2, 0.6, 0.9)
"""One attempt per temperature: a low one first, then more varied samples."""


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items() if k not in ("title", "default")}
        if node.get("type") == "object" and "properties" in node:
            node["required"] = list(node["properties"])
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def output_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of ``model`` in strict form (all properties required, no extra ones, no titles)."""
    result: dict[str, Any] = _strict(model.model_json_schema())
    return result


def without_keywords(schema: Any, keywords: frozenset[str]) -> Any:
    """A copy of ``schema`` without ``keywords`` anywhere (for back ends that reject some of them)."""
    if isinstance(schema, dict):
        return {k: without_keywords(v, keywords) for k, v in schema.items() if k not in keywords}
    if isinstance(schema, list):
        return [without_keywords(v, keywords) for v in schema]
    return schema


class InvalidModelOutput(Exception):
    """The model's answers failed validation on every attempt; the message names the schema and last error."""


async def generate_structured(
    provider: ChatProvider,
    messages: Sequence[ChatMessage],
    model: type[M],
    *,
    max_tokens: int,
    temperatures: Sequence[float] = RETRY_TEMPERATURES,
) -> M:
    """Ask ``provider`` for JSON matching ``model`` and validate it; retry with the next temperature (a
    different sample) while the answer is cut off or out of range.

    Raises ``InvalidModelOutput`` after ``len(temperatures)`` invalid answers, ``ProviderError`` at once.
    """
    schema = output_schema(model)
    last_error = ""
    for temperature in temperatures:
        raw = await provider.complete_json(
            messages, schema=schema, name=model.__name__, max_tokens=max_tokens, temperature=temperature
        )
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            last_error = f"{'.'.join(str(p) for p in first['loc']) or 'answer'}: {first['msg']}"
    raise InvalidModelOutput(f"{model.__name__}: {len(temperatures)} answers failed validation (last: {last_error})")
