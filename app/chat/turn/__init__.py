"""The chat turn as a pipeline: intake → decide (pure) → gather → decide (pure) → generate → persist →
after commit. :mod:`app.chat.turn.pipeline` reads top to bottom; each stage has its own module."""

from app.chat.turn.pipeline import ANSWER_LATER, ChatService
from app.chat.turn.state import Received, TurnResult

__all__ = ["ANSWER_LATER", "ChatService", "Received", "TurnResult"]
