"""Every model, importable as one namespace: ``from app.db import models as m``."""

from app.accounts.models import ApiKey, Client, Coach, CoachUser
from app.chat.models import Conversation, Message, SenderType
from app.db.base import Base
from app.handoff.models import Draft, DraftStatus, Handoff, HandoffMode, HandoffReason, HandoffStatus
from app.memory.models import ChatSession, ClientProfile, Insight, InsightKind, InsightStatus, SessionStatus
from app.rag.models import EMBEDDING_DIMENSIONS, Chunk, Document, DocumentStatus

TENANT_TABLES = (
    "coach_users",
    "api_keys",
    "clients",
    "documents",
    "chunks",
    "conversations",
    "messages",
    "chat_sessions",
    "insights",
    "client_profiles",
    "handoffs",
    "drafts",
)
"""Tables keyed by ``coach_id`` under row-level security (``coaches`` is keyed by its own ``id``)."""

__all__ = [
    "EMBEDDING_DIMENSIONS",
    "TENANT_TABLES",
    "ApiKey",
    "ChatSession",
    "ClientProfile",
    "Base",
    "Chunk",
    "Client",
    "Coach",
    "CoachUser",
    "Conversation",
    "Document",
    "Draft",
    "DraftStatus",
    "Handoff",
    "HandoffMode",
    "HandoffReason",
    "HandoffStatus",
    "DocumentStatus",
    "Insight",
    "InsightKind",
    "InsightStatus",
    "Message",
    "SenderType",
    "SessionStatus",
]
