"""The coach's review of AI drafts (draft mode, or a reply the AI was unsure of): approve one as written
(an ``ai`` message) or edited (a ``human_coach`` message recorded as a ``draft_edit`` intervention), or
discard it."""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Client
from app.accounts.service import AccountService
from app.accounts.unit_of_work import UnitOfWork
from app.conversations.handoffs import Draft, DraftStatus
from app.conversations.models import Conversation, Message, SenderType
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.pagination import EVERY_ROW, Keyset, Page, PageRequest
from app.handoff.actions import coach_text
from app.handoff.queue import coach_conversation
from app.handoff.service import HandoffService
from app.learning.interventions import InterventionService
from app.learning.models import InterventionSource
from app.memory.messages import store_message
from app.rag.models import Document
from app.rag.passages import CitedSource, cited_chunk_id, cited_sources, resolved_citations


class DraftService:
    """Lists, approves and discards the coach's drafts. Every method takes the tenant (``coach_id``)
    explicitly; another coach's ids are ``NotFound``."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        accounts: AccountService,
        handoffs: HandoffService,
        interventions: InterventionService,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._accounts = accounts
        self._handoffs = handoffs
        self._interventions = interventions

    async def list_drafts(
        self, uow: UnitOfWork, status: str | None = None, page: PageRequest = EVERY_ROW
    ) -> Page[tuple[Draft, str]]:
        """The coach's drafts with their client's name, oldest first (the order to review them in), optionally of
        one status: one ``page`` of them (all by default: the dashboard's pending ones, the coach's work queue).
        Raises ``InvalidInput`` for an unknown status."""
        if status is not None and status not in DraftStatus.ALL:
            raise InvalidInput(f"status must be one of {', '.join(DraftStatus.ALL)}")
        stmt = (
            select(Draft, Client.name)
            .join(Conversation, Conversation.id == Draft.conversation_id)
            .join(Client, Client.id == Conversation.client_id)
            .where(Draft.coach_id == uow.coach_id)
        )
        if status is not None:
            stmt = stmt.where(Draft.status == status)
        stmt = page.apply(stmt, Draft.created_at, Draft.id, newest_first=False)
        rows = [(draft, name) for draft, name in (await uow.session.execute(stmt)).all()]
        return page.page(rows, lambda row: Keyset(row[0].created_at, row[0].id))

    async def count_pending(self, uow: UnitOfWork) -> int:
        """How many of the coach's drafts wait for the coach's decision."""
        stmt = select(func.count()).where(Draft.coach_id == uow.coach_id, Draft.status == DraftStatus.PENDING)
        return int(await uow.session.scalar(stmt) or 0)

    async def approve_draft(self, uow: UnitOfWork, draft_id: uuid.UUID, text: str | None = None) -> Message:
        """Send a pending draft to the client, as written (an ``ai`` message) or edited by the coach (a
        ``human_coach`` message that keeps the AI draft in ``metadata.ai_draft``, recorded as a ``draft_edit``
        intervention and analysed by an arq job after commit). Raises ``NotFound``,
        ``Conflict`` (already decided, or sent as written while passages it cites are gone since: the coach may
        have deleted their document for what it says, :func:`_gone_sources`) and ``InvalidInput`` (empty or too
        long edit)."""
        edited_text = None if text is None else coach_text(text)
        session, coach_id = uow.session, uow.coach_id
        coach = await uow.coach()
        draft = await self._pending_draft(uow, draft_id, lock_conversation=True)
        edited = edited_text is not None and edited_text != draft.text
        meta = dict(draft.meta) | {"draft_id": str(draft.id), "approved_by_coach": True}
        citations: list[dict[str, Any]] = []
        if edited:
            meta |= {"edited": True, "ai_draft": draft.text}
        else:
            gone, sources = await _gone_sources(session, coach_id, draft.citations)
            if gone:
                raise Conflict(
                    f"this draft draws on passages of {', '.join(f'“{title}”' for title in gone)} that are gone since "
                    "it was written (the document was deleted, or processed again and the passage changed): edit the "
                    "draft (its [n] markers point at those passages) or discard it"
                )
            # as written: cited where the passages are now (a document processed again since: the copy's title and
            # page, as the passages they open), so the client is shown what a transcript lists later
            [citations] = resolved_citations([draft.citations], sources)
        message, _ = await store_message(
            session,
            coach,
            draft.conversation_id,
            SenderType.HUMAN_COACH if edited else SenderType.AI,
            edited_text if edited and edited_text else draft.text,
            at=datetime.now(UTC),
            citations=citations,
            meta=meta,
        )
        draft.status = DraftStatus.APPROVED
        draft.edited = edited
        draft.decided_at = message.created_at
        draft.sent_message_id = message.id
        conversation = await coach_conversation(session, coach_id, draft.conversation_id)
        if edited:
            handoff = await self._handoffs.active_for(session, draft.conversation_id)
            await self._interventions.record(
                session,
                coach,
                message,
                source=InterventionSource.DRAFT_EDIT,
                handoff_id=handoff.id if handoff is not None else None,
                ai_draft=draft.text,
            )
        uow.after_commit(functools.partial(self._handoffs.publish_message, coach_id, conversation.client_id, message))
        return message

    async def discard_draft(self, uow: UnitOfWork, draft_id: uuid.UUID) -> Draft:
        """Drop a pending draft without sending anything (the client's message waits for the coach's own answer;
        the client's widget stops saying a reply is being reviewed). Raises ``NotFound`` and ``Conflict``."""
        session, coach_id = uow.session, uow.coach_id
        draft = await self._pending_draft(uow, draft_id)
        draft.status = DraftStatus.DISCARDED
        draft.decided_at = datetime.now(UTC)
        conversation = await coach_conversation(session, coach_id, draft.conversation_id)
        coach = await uow.coach()
        uow.after_commit(
            functools.partial(self._handoffs.publish_draft_discarded, coach, conversation.client_id, draft)
        )
        return draft

    async def conversation_of(self, uow: UnitOfWork, draft_id: uuid.UUID) -> uuid.UUID:
        """The conversation of the coach's draft ``draft_id`` (decided or not). Raises ``NotFound``."""
        conversation_id: uuid.UUID | None = await uow.session.scalar(
            select(Draft.conversation_id).where(Draft.id == draft_id, Draft.coach_id == uow.coach_id)
        )
        if conversation_id is None:
            raise NotFound("draft not found")
        return conversation_id

    async def _pending_draft(self, uow: UnitOfWork, draft_id: uuid.UUID, *, lock_conversation: bool = False) -> Draft:
        """The coach's pending draft, locked; with ``lock_conversation``, its conversation is locked first (the
        lock order of :data:`~app.handoff.queue.HANDOFF_LOCK`). Raises ``NotFound`` and ``Conflict``."""
        session, coach_id = uow.session, uow.coach_id
        if lock_conversation:
            await coach_conversation(session, coach_id, await self.conversation_of(uow, draft_id), lock=True)
        draft = await session.scalar(
            select(Draft).where(Draft.id == draft_id, Draft.coach_id == coach_id).with_for_update()
        )
        if draft is None:
            raise NotFound("draft not found")
        if draft.status != DraftStatus.PENDING:
            raise Conflict(f"the draft was already {draft.status}")
        return draft


LOCK_ROUNDS = 3
"""Times :func:`_gone_sources` reads where the cited passages are and locks their documents: a copy that replaced
a cited document while the first lock waited holds its passages now (two rounds), and it is locked in the next."""


async def _gone_sources(
    session: AsyncSession, coach_id: uuid.UUID, citations: list[dict[str, Any]]
) -> tuple[list[str], dict[uuid.UUID, CitedSource]]:
    """The titles, sorted, of the documents whose cited passages the coach's library no longer holds, and where
    the others are now (:func:`~app.rag.passages.cited_sources`, as read once their documents were locked): a
    citation's chunk is gone when neither it nor its successor (the chunk that holds its text since its document
    was processed again, however many times: :func:`app.rag.passages.store_successors`) is there. The documents
    that hold them are locked (``FOR SHARE``) until the transaction ends: a deletion waits until the reply is
    stored, or commits first and the draft is refused; a replacement that committed meanwhile is followed."""
    cited = {
        chunk_id: str(citation.get("title") or "a document")
        for citation in citations
        if (chunk_id := cited_chunk_id(citation)) is not None
    }
    if not cited:
        return [], {}
    locked: set[uuid.UUID] = set()
    sources: dict[uuid.UUID, CitedSource] = {}
    for _ in range(LOCK_ROUNDS):
        sources = await cited_sources(session, list(cited))
        wanted = {source.document_id for source in sources.values()} - locked
        if not wanted:
            break
        stmt = select(Document.id).where(Document.coach_id == coach_id, Document.id.in_(wanted))
        locked |= set(await session.scalars(stmt.with_for_update(read=True)))
    held = {chunk_id for chunk_id, source in sources.items() if source.document_id in locked}
    return sorted({title for chunk_id, title in cited.items() if chunk_id not in held}), sources
