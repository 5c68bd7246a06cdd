"""Generate a turn's reply: assemble the prompt within the token budget, answer from the response cache or
stream from the serving model (falling back to the coach's base model when it fails before its first
delta), trim a reply cut at the token limit, and turn a provider failure or timeout into an apology."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from app.chat.prompt import AssembledPrompt, assemble_prompt
from app.chat.tone import TurnTone, with_tone
from app.chat.turn.decide import (
    OnError,
    cut_at_deadline,
    final_reply,
    honest_reply,
    model_order,
    on_provider_error,
    use_cache,
)
from app.chat.turn.honesty import Honesty
from app.chat.turn.injection import ReplyCheck, StreamedReply, safe_reply
from app.chat.turn.state import Gathered, Reply, Turn
from app.chat.turn.timing import Deadline, ms_since
from app.core.config import Settings
from app.handoff.catalogue import say
from app.handoff.signals import claims_human, token_confidence
from app.learning.cache import ResponseCache
from app.learning.style import style_lines
from app.llm.base import ChatProvider, ProviderError, Usage
from app.llm.registry import ProviderRegistry

log = logging.getLogger(__name__)

MAX_CHARS_PER_TOKEN = 12
"""The longest a reply may be, in characters per token of ``LLM_MAX_TOKENS``: a token is about 4 characters of
English, rarely over 10 (a long word, a URL); past it the server ignored ``max_tokens`` (a 50,000-character reply
was stored, streamed and cached whole)."""
APOLOGY = say("turn_apology", "en")
"""The apology in English; a client reads it in their language (:meth:`Generator.apology`)."""


def prompt_budget(settings: Settings, provider: str) -> int:
    """Tokens the chat prompt may take (the context window less the reply's ``LLM_MAX_TOKENS``): the local
    model's window (``LLM_CONTEXT_TOKENS``) for ``provider`` ``local``, else ``LLM_REMOTE_CONTEXT_TOKENS``. The
    local window held every provider's prompt to about 1,400 tokens, so a coach on their own model lost the
    client's memory and all but two recent turns whenever the coach's material was retrieved."""
    window = settings.llm_context_tokens if provider == "local" else settings.llm_remote_context_tokens
    return window - settings.llm_max_tokens


class Generator:
    """Produces the reply text of a turn (streamed) and its generation metadata."""

    def __init__(
        self, settings: Settings, registry: ProviderRegistry, cache: ResponseCache, *, defences: bool = True
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._cache = cache
        self._defences = defences

    async def generate(self, turn: Turn, gathered: Gathered, reply: Reply) -> AsyncIterator[str]:
        """Yield the reply's text for the client as it is generated (none while ``reply.drafting``), held back by
        the output checks (:meth:`_held_back`); the model's deltas are collected in ``reply.parts``. Records the
        prompt and model attribution, ``cache`` (``hit``/``miss`` when the cache is on), ``first_token_ms``,
        ``generation_ms``, ``model_fallback`` and the ``tone`` (its instruction joins the persona). Raises
        ``ProviderError`` (every model failed)."""
        async for text in self._held_back(reply, self._deltas(turn, gathered, reply)):
            yield text

    async def generate_within(
        self, deadline: Deadline, turn: Turn, gathered: Gathered, reply: Reply
    ) -> AsyncIterator[str]:
        """:meth:`generate` within the turn's ``deadline`` (:meth:`Deadline.stream`), then :meth:`finish`; a reply
        the model is still writing when the deadline passes keeps its complete sentences
        (:meth:`finish_at_deadline`). Raises ``ProviderError``, and ``TimeoutError`` when no sentence was complete."""
        try:
            async for delta in deadline.stream(self.generate(turn, gathered, reply)):
                yield delta
        except TimeoutError:
            if not self.finish_at_deadline(turn, reply):
                raise
        else:
            self.finish(reply)

    async def _held_back(self, reply: Reply, deltas: AsyncIterator[str]) -> AsyncIterator[str]:
        """``deltas`` as the client may see them: :data:`~app.chat.turn.injection.HELD_WORDS` words behind the
        model (:class:`~app.chat.turn.injection.StreamedReply`), and nothing more once the reply so far fails the
        injection check (with the defences on) or claims to be human. The finished reply is then replaced
        (:meth:`guard`, :meth:`honest`), so the client never reads what those checks stop."""
        streamed, sent, checked, stopped = StreamedReply(), 0, 0, False
        async for delta in deltas:
            streamed.add(delta)
            if stopped:
                continue
            check = reply.check  # made with the prompt, before the first delta
            window = streamed.text[checked:]  # what the checks of the earlier deltas have not all read
            if (check is not None and check(window) is not None) or claims_human(window):
                stopped = True
                continue
            hold = check.longest_payload if check is not None else 0
            checked = streamed.recheck_from(hold_chars=hold)
            cut = streamed.releasable(hold_chars=hold)
            if cut > sent:
                reply.streamed = True
                yield streamed.text[sent:cut]
                sent = cut
        if not stopped and len(streamed.text) > sent:
            reply.streamed = True
            yield streamed.text[sent:]

    @staticmethod
    def _check(turn: Turn, prompt: AssembledPrompt) -> ReplyCheck:
        """The output check against prompt injection for ``prompt``'s reply."""
        return ReplyCheck(
            persona=prompt.persona,
            protected=prompt.protected,
            untrusted=prompt.untrusted,
            client_text=turn.message.text,
            examples=prompt.examples,
        )

    async def _deltas(self, turn: Turn, gathered: Gathered, reply: Reply) -> AsyncIterator[str]:
        """The model's (or the cache's) deltas for :meth:`generate`."""
        coach, learned = turn.coach, gathered.learned
        t0 = time.perf_counter()
        tone = learned.tone_for(turn.risk, turn.signals)  # coach/system text, joined to the persona
        if tone is not None:
            reply.metadata["tone"] = tone.as_meta()
        with reply.stages.time("generate.prompt"):
            prompt = self._prompt(turn, gathered, tone)
        reply.check = self._check(turn, prompt) if self._defences else None
        reply.passages = prompt.passages
        reply.metadata["prompt_ms"] = ms_since(t0)
        reply.metadata["history_messages"] = prompt.history_used
        reply.metadata["memory"] = prompt.memory_used()
        reply.metadata["few_shot"] = [str(example.id) for example in prompt.examples]
        provider = await self._registry.chat_for(coach, model=learned.model)
        reply.metadata["model"] = provider.model
        if learned.version is not None and provider.model == learned.version.model:  # not a variant's, nor local
            reply.metadata["model_version_id"] = str(learned.version.id)
        with reply.stages.time("generate.cache"):
            cached = await self._cached(turn, gathered, prompt, provider, reply)
        t0 = time.perf_counter()
        if cached is not None:
            reply.parts.append(cached)
            if not reply.drafting:
                yield cached
        else:
            base = await self._registry.chat_for(coach)
            models = {provider.model: provider, base.model: base}
            order = [models[name] for name in model_order(provider.model, base.model)]
            async for delta in self._stream(order, prompt, learned.temperature, reply, t0):
                yield delta
        reply.metadata["generation_ms"] = ms_since(t0)
        reply.stages.ms["generate.model"] = reply.metadata["generation_ms"]

    def _prompt(self, turn: Turn, gathered: Gathered, tone: TurnTone | None) -> AssembledPrompt:
        """The turn's prompt within the token budget (:func:`~app.chat.prompt.assemble_prompt`), the ``tone``'s
        instruction joined to the persona."""
        coach, learned = turn.coach, gathered.learned
        return assemble_prompt(
            persona=with_tone(learned.persona, tone),
            passages=gathered.passages,
            memory=gathered.memory,
            history=turn.history,
            user_text=turn.message.text,
            budget_tokens=prompt_budget(self._settings, coach.llm_provider),
            examples=learned.examples,
            style=style_lines(coach.style_profile),
            coach_name=coach.name,
            spotlight=self._defences,
        )

    async def _cached(
        self, turn: Turn, gathered: Gathered, prompt: AssembledPrompt, provider: ChatProvider, reply: Reply
    ) -> str | None:
        """The cached reply to this exact prompt, or ``None`` (a miss, or the coach's cache is off)."""
        coach = turn.coach
        if not use_cache(coach.response_cache_ttl_seconds):
            return None
        reply.cache_key = self._cache.key(
            coach_id=coach.id,
            cache_epoch=coach.cache_epoch,
            model=provider.model,
            model_version_id=reply.metadata.get("model_version_id"),
            persona=gathered.learned.persona,
            temperature=gathered.learned.temperature,
            messages=prompt.messages,
        )
        cached = await self._cache.get(coach.id, reply.cache_key)
        reply.metadata.update(cache="miss" if cached is None else "hit", cache_key=reply.cache_key)
        return None if cached is None else cached.reply

    async def _stream(
        self, order: list[ChatProvider], prompt: AssembledPrompt, temperature: float, reply: Reply, t0: float
    ) -> AsyncIterator[str]:
        """Stream from the first model of ``order`` that does not fail before its first delta. A model that writes
        more than :data:`MAX_CHARS_PER_TOKEN` characters a token of ``LLM_MAX_TOKENS`` (a server that ignores
        ``max_tokens``) is stopped there, as at its token limit (``finish_reason`` ``length``)."""
        room = self._settings.llm_max_tokens * MAX_CHARS_PER_TOKEN
        for attempt, current in enumerate(order):
            try:
                stream = current.stream(
                    prompt.messages, max_tokens=self._settings.llm_max_tokens, temperature=temperature
                )
                async for chunk in stream:
                    if isinstance(chunk, Usage):
                        reply.usage = chunk
                        continue
                    if not reply.parts:
                        reply.metadata["first_token_ms"] = ms_since(t0)
                    chunk = chunk[:room]
                    room -= len(chunk)
                    reply.parts.append(chunk)
                    if not reply.drafting:
                        yield chunk
                    if not room:
                        await stream.aclose()  # type: ignore[attr-defined]
                        reply.usage = Usage(0, self._settings.llm_max_tokens, None, "length")
                        break
                return
            except ProviderError as exc:
                if (
                    on_provider_error(streamed=bool(reply.parts), attempt=attempt, attempts=len(order))
                    is OnError.APOLOGY
                ):
                    raise
                log.warning("model %s failed, falling back to %s: %s", current.model, order[-1].model, exc)
                reply.metadata["model_fallback"] = {"from": current.model, "error": str(exc)}
                reply.metadata["model"] = order[-1].model
                reply.metadata.pop("model_version_id", None)  # the base model answers, not the version

    def finish(self, reply: Reply) -> None:
        """Settle the generated reply: token counts and token confidence from the usage, the text trimmed to
        its last sentence at the token limit (``truncated``). Raises ``ProviderError`` for an empty reply."""
        usage = reply.usage
        if usage is not None:
            reply.metadata["prompt_tokens"] = usage.prompt_tokens
            reply.metadata["completion_tokens"] = usage.completion_tokens
            if usage.token_logprobs:
                reply.signals = replace(reply.signals, token_confidence=token_confidence(usage.token_logprobs))
        final = final_reply(
            "".join(reply.parts),
            completion_tokens=usage.completion_tokens if usage is not None else None,
            max_tokens=self._settings.llm_max_tokens,
            finish_reason=usage.finish_reason if usage is not None else "stop",
        )
        if final.truncated:
            reply.metadata["truncated"] = True
        if not final.text:
            raise ProviderError("the model returned an empty reply")
        reply.text = final.text

    def finish_at_deadline(self, turn: Turn, reply: Reply) -> bool:
        """Settle a reply the turn's deadline stopped while the model was still writing (a slow model on a busy
        machine: SmolLM2 on 2 cores writes a few tokens a second): keep what it wrote up to its last complete
        sentence (:func:`~app.chat.turn.decide.cut_at_deadline`), recording ``truncated`` and ``deadline_cut``,
        instead of discarding it for the apology. ``False`` (nothing changed) when no sentence was complete."""
        final = cut_at_deadline("".join(reply.parts))
        if final is None:
            return False
        log.warning(
            "chat turn for coach %s: cut at its %g s deadline while the model was still writing",
            turn.coach.id,
            self._settings.llm_timeout_seconds,
        )
        reply.metadata.update(truncated=True, deadline_cut=True)
        reply.text = final.text
        return True

    def guard(self, turn: Turn, reply: Reply) -> str | None:
        """The output check against prompt injection (:mod:`app.chat.turn.injection`; off with the defences):
        a finished reply that leaks the system text or a few-shot example, or carries the payload of an
        instruction planted in the passages, memory or examples, is replaced by the safe reply, recording
        ``injection`` (``leak`` | ``payload``) and the model's ``injection_model_reply``. Returns the delta to
        stream (a blank line, then the safe reply), ``None`` when the reply stands or nothing was streamed."""
        if reply.check is None:
            return None
        found = reply.check(reply.text)
        if found is None:
            return None
        log.warning("chat turn for coach %s: output check (%s); reply replaced", turn.coach.id, found)
        return self._replace(reply, safe_reply(turn.coach.name), injection=found, injection_model_reply=reply.text)

    def _replace(self, reply: Reply, text: str, **meta: str) -> str | None:
        """Replace the finished reply by the product's ``text`` (no citations), recording ``meta``; the delta
        to stream after what was streamed, after a blank line when the client saw part of the reply (``None``
        while drafting)."""
        reply.metadata.update(meta)
        reply.metadata.pop("truncated", None)
        reply.text, reply.passages = text, []
        return None if reply.drafting else ("\n\n" if reply.streamed else "") + text

    def honest(self, turn: Turn, reply: Reply) -> str | None:
        """The output check (:mod:`app.chat.turn.honesty`): a finished reply that claims to be human is
        replaced by the correction (in the client's language), recording ``honesty`` and the model's
        ``honesty_model_reply``. Returns the delta to stream after what was streamed (a blank line, then the
        correction), ``None`` when the reply stands or nothing was streamed (drafting)."""
        text = honest_reply(reply.text, coach_name=turn.coach.name, language=turn.risk.language)
        if text is None:
            return None
        log.warning("chat turn for coach %s: the model claimed to be human; reply replaced", turn.coach.id)
        return self._replace(reply, text, honesty=Honesty.REPLACED, honesty_model_reply=reply.text)

    def apology(self, turn: Turn, reply: Reply, exc: ProviderError | TimeoutError) -> str:
        """Turn a failed generation into the apology, in the client's language (``turn.risk.language``; never a
        draft: it is not the AI's content); records ``error`` and ``partial_reply``. Returns the delta to stream:
        the apology, after a blank line when part of the reply was already streamed to the client."""
        error = (
            f"timed out after {self._settings.llm_timeout_seconds:g} s" if isinstance(exc, TimeoutError) else str(exc)
        )
        log.warning("chat turn for coach %s failed: %s", turn.coach.id, error)
        reply.metadata["error"] = error
        reply.metadata["partial_reply"] = "".join(reply.parts)
        streamed = reply.streamed and not reply.drafting
        apology = say("turn_apology", turn.risk.language)
        reply.text, reply.passages, reply.drafting, reply.failed = apology, [], False, True
        return ("\n\n" if streamed else "") + apology
