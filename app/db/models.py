"""Every model, importable as one namespace: ``from app.db import models as m``."""

from app.accounts.models import ApiKey, Client, Coach, CoachUser
from app.chat.models import Conversation, Message, SenderType
from app.db.base import Base
from app.handoff.models import Draft, DraftStatus, Handoff, HandoffMode, HandoffReason, HandoffStatus
from app.learning.models import (
    ExampleKind,
    ExampleSource,
    Experiment,
    ExperimentStatus,
    FineTuneJob,
    FineTuneStatus,
    Intervention,
    InterventionPattern,
    InterventionSource,
    ModelVersion,
    ModelVersionStatus,
    Split,
    TrainingDataset,
    TrainingExample,
)
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
    "interventions",
    "training_examples",
    "training_datasets",
    "fine_tune_jobs",
    "model_versions",
    "experiments",
)
"""Tables keyed by ``coach_id`` under row-level security (``coaches`` is keyed by its own ``id``;
``intervention_patterns`` is anonymised and shared by all coaches)."""

__all__ = [
    "TrainingExample",
    "TrainingDataset",
    "Split",
    "ModelVersionStatus",
    "ModelVersion",
    "InterventionSource",
    "InterventionPattern",
    "Intervention",
    "FineTuneStatus",
    "FineTuneJob",
    "ExperimentStatus",
    "Experiment",
    "ExampleSource",
    "ExampleKind",
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
