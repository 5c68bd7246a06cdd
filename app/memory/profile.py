"""The L4 profile: how to work with the client. The ``update_profile`` job merges what a summarised session
shows; :func:`profile_for_update` is the one locked get-or-create every writer of the profile goes through
(this job, the coach's edits in :mod:`app.memory.controls`, the intervention analysis of
:mod:`app.learning.interventions`), :func:`locked_profile` the same lock for a writer that only takes lines
away."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.availability import coach_zone
from app.accounts.models import Client
from app.accounts.service import AccountService
from app.accounts.unit_of_work import unit_of_work
from app.conversations.models import SenderType
from app.core.config import Settings
from app.llm.registry import ProviderRegistry
from app.llm.schema import InvalidModelOutput, generate_structured
from app.memory.models import ChatSession, ClientProfile, SessionStatus
from app.memory.prompts import (
    EXAMPLE_PROFILE,
    EXAMPLE_TRANSCRIPT,
    PROFILE_ECHOES,
    PROFILE_INSTRUCTIONS,
    echoes,
    few_shot_prompt,
    input_tokens,
)
from app.memory.retrieval import summary_text
from app.memory.schemas import ProfileOutput
from app.memory.sessions import session_messages
from app.memory.transcript import format_messages, windows

log = logging.getLogger(__name__)

PROFILE_LIST_CAP = 8
PROFILE_LIST_MAX = 20
"""Entries a profile list holds at most, the coach's and the learnt together (the coach saves up to this)."""
PROFILE_MAX_TOKENS = 300
PROFILE_LISTS = ("communication_preferences", "what_works", "what_doesnt_work", "sensitive_topics")
"""The profile's list fields (lines of short statements)."""
LEARNT_FIELDS = (*PROFILE_LISTS, "tone")
"""The fields whose learnt values record their sessions (:attr:`ClientProfile.entry_sessions`): the lists, and
``tone`` (one line)."""


def _merge_list(current: Sequence[str], new: Sequence[str], kept: frozenset[str] = frozenset()) -> list[str]:
    """``current`` plus the entries of ``new`` not already there (case-insensitive), newest last, the learnt
    ones capped at ``PROFILE_LIST_CAP`` and the whole list at :data:`PROFILE_LIST_MAX` (the oldest learnt go
    first). ``kept``: the casefolded entries the caps never take (the coach's own lines: no session gave
    them)."""
    seen = {entry.casefold() for entry in current}
    merged = list(current)
    for entry in new:
        if entry.casefold() not in seen:
            seen.add(entry.casefold())
            merged.append(entry)
    learnt = [entry.casefold() for entry in merged if entry.casefold() not in kept]
    room = max(0, min(PROFILE_LIST_CAP, PROFILE_LIST_MAX - (len(merged) - len(learnt))))
    dropped = set(learnt[: len(learnt) - room])
    return [entry for entry in merged if entry.casefold() not in dropped]


def _coachs_own(profile: ClientProfile, name: str) -> frozenset[str]:
    """The casefolded lines of list ``name`` no session gave (:attr:`ClientProfile.entry_sessions`): the
    coach's own (or, in a profile the coach edited, lines learnt before sources were recorded: migration 0063
    gave the others their client's sessions), which the update job neither caps nor attributes to a session, so
    forgetting a session never takes them."""
    sources = (profile.entry_sessions or {}).get(name, {})
    return frozenset(line.casefold() for line in getattr(profile, name) if line.casefold() not in sources)


def _learnt(profile: ClientProfile, name: str, lines: Sequence[str], session_id: uuid.UUID) -> None:
    """Record that session ``session_id`` gave the lines ``lines`` of field ``name`` (:data:`LEARNT_FIELDS`) in
    :attr:`ClientProfile.entry_sessions` (the sources of lines the list no longer holds are dropped after, by
    :func:`keep_sources_of_held_lines`)."""
    sources = dict((profile.entry_sessions or {}).get(name, {}))
    for key in {line.casefold() for line in lines}:
        sources[key] = list(dict.fromkeys([*sources.get(key, []), str(session_id)]))
    profile.entry_sessions = {**(profile.entry_sessions or {}), name: sources}


def _held(profile: ClientProfile, name: str) -> set[str]:
    """The casefolded lines field ``name`` of :data:`LEARNT_FIELDS` holds (``tone``: its one line, if any)."""
    value = getattr(profile, name)
    return {line.casefold() for line in ([value] if isinstance(value, str) else value) if line}


def keep_sources_of_held_lines(profile: ClientProfile) -> None:
    """Drop the recorded sources of lines a field no longer holds (after the coach edited the profile, or the
    profile job's merge capped a list, or gave another tone): a line the coach kept keeps its sessions, so
    forgetting them still removes it."""
    entry_sessions = profile.entry_sessions or {}
    profile.entry_sessions = {
        name: {key: ids for key, ids in entry_sessions.get(name, {}).items() if key in _held(profile, name)}
        for name in LEARNT_FIELDS
    }


async def _lock_profile(session: AsyncSession, client_id: uuid.UUID) -> None:
    """Take the transaction-scoped advisory lock on the client's profile: its writers take turns."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"profile:{client_id}"})


async def forget_sessions(
    session: AsyncSession, coach_id: uuid.UUID, client_id: uuid.UUID, session_ids: Sequence[uuid.UUID]
) -> None:
    """The sessions ``session_ids`` no longer tell anything (their summary was forgotten, or messages in them
    were): each learnt profile line loses them as sources, and a line left with none leaves the profile (a learnt
    ``tone`` too: it is emptied). The ``update_profile`` job of a session summarised again adds back what it still
    shows. Lines with no recorded source (the coach's own: :func:`_coachs_own`) stay.
    Under the profile's lock; nothing to do without a profile."""
    forgotten = {str(session_id) for session_id in session_ids}
    if not forgotten:
        return
    await _lock_profile(session, client_id)
    profile = await session.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))
    if profile is None or not profile.entry_sessions:
        return
    entry_sessions: dict[str, dict[str, list[str]]] = {}
    for name in LEARNT_FIELDS:
        sources = {
            key: [i for i in ids if i not in forgotten] for key, ids in profile.entry_sessions.get(name, {}).items()
        }
        gone = {key for key, ids in sources.items() if not ids}
        if gone & _held(profile, name):
            value = getattr(profile, name)
            kept = "" if isinstance(value, str) else [line for line in value if line.casefold() not in gone]
            setattr(profile, name, kept)
            profile.updated_at = datetime.now(UTC)
        entry_sessions[name] = {key: ids for key, ids in sources.items() if ids}
    profile.entry_sessions = entry_sessions


async def locked_profile(session: AsyncSession, client_id: uuid.UUID) -> ClientProfile | None:
    """The client's L4 profile (``None``: there is none), under a transaction-scoped advisory lock on the client's
    profile so concurrent writers take turns: for a writer that only takes lines away."""
    await _lock_profile(session, client_id)
    return await session.scalar(select(ClientProfile).where(ClientProfile.client_id == client_id))


async def profile_for_update(session: AsyncSession, coach_id: uuid.UUID, client_id: uuid.UUID) -> ClientProfile:
    """The client's L4 profile (a new, empty one added to ``session`` when there is none), under the lock of
    :func:`locked_profile`."""
    profile = await locked_profile(session, client_id)
    if profile is None:
        profile = ClientProfile(
            coach_id=coach_id,
            client_id=client_id,
            communication_preferences=[],
            what_works=[],
            what_doesnt_work=[],
            tone="",
            sensitive_topics=[],
            entry_sessions={},
        )
        session.add(profile)
    return profile


class ProfileService:
    """Updates the L4 profile from summarised sessions (the ``update_profile`` job)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        registry: ProviderRegistry,
        accounts: AccountService,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._registry = registry
        self._accounts = accounts

    async def update_profile(self, coach_id: uuid.UUID, session_id: uuid.UUID) -> str:
        """Job: merge what a summarised session shows about working with the client into the L4 profile.
        Lists gain new entries (case-insensitive de-duplication, newest kept), each recording the session among
        its sources (:attr:`ClientProfile.entry_sessions`, for :func:`forget_sessions`); ``tone`` is set only
        while the coach has not edited the profile, recording its session the same way. Idempotent per session
        (``profile_updated`` mark in the summary)."""
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            chat_session = await session.get(ChatSession, session_id)
            if chat_session is None or chat_session.status != SessionStatus.SUMMARIZED or not chat_session.summary:
                return "not summarised"
            if chat_session.summary.get("profile_updated"):
                return "done already"
            messages = await session_messages(session, session_id)
            coach = await uow.coach()
            client = await session.get_one(Client, chat_session.client_id)
            summarised = dict(chat_session.summary)
            summary = summary_text(summarised)
        client_turns = [msg for msg in messages if msg.sender_type == SenderType.CLIENT]
        budget = input_tokens(self._settings, PROFILE_MAX_TOKENS)
        recent = windows(client_turns, budget // 2)[-1] if client_turns else []
        transcript = format_messages(recent, client.name, coach_zone(coach.availability))
        try:
            output = await generate_structured(
                await self._registry.chat_for(coach),
                few_shot_prompt(
                    PROFILE_INSTRUCTIONS.format(name=client.name),
                    EXAMPLE_TRANSCRIPT,
                    EXAMPLE_PROFILE,
                    f"Session summary: {summary}\n\n{client.name}'s messages:\n{transcript}",
                ),
                ProfileOutput,
                max_tokens=PROFILE_MAX_TOKENS,
            )
        except InvalidModelOutput as exc:
            log.warning("profile update from session %s skipped: %s", session_id, exc)
            return "invalid model output"
        async with unit_of_work(self._sessionmaker, coach_id) as uow:
            session = uow.session
            # the session row before the profile's lock, in the order a forget takes them
            chat_session = await session.get(ChatSession, session_id, with_for_update=True)
            if chat_session is None or chat_session.summary != summarised:
                # forgotten (or summarised again) while the model answered: that summary's own job runs
                return "summary changed meanwhile"
            profile = await profile_for_update(session, coach_id, client.id)
            for name in PROFILE_LISTS:
                lines = [line for line in getattr(output, name) if not echoes(line, PROFILE_ECHOES, client.name)]
                own = _coachs_own(profile, name)
                setattr(profile, name, _merge_list(getattr(profile, name), lines, own))
                _learnt(profile, name, [line for line in lines if line.casefold() not in own], session_id)
            if output.tone and not echoes(output.tone, PROFILE_ECHOES, client.name) and profile.coach_edited_at is None:
                profile.tone = output.tone
                _learnt(profile, "tone", [output.tone], session_id)
            keep_sources_of_held_lines(profile)
            profile.updated_at = datetime.now(UTC)
            chat_session.summary = {**summarised, "profile_updated": True}
        return "updated"
