"""Picks each coach's chat model and embedder; local models are loaded once per process and shared."""

from __future__ import annotations

import threading

from app.accounts.security import SecretBox
from app.config import Settings
from app.db import models as m
from app.llm.base import ChatProvider, Embedder
from app.llm.local import LlamaCppChatProvider, SentenceTransformerEmbedder
from app.llm.openai_compat import OpenAIChatProvider, OpenAIEmbedder


class ProviderRegistry:
    """``chat_for(coach)`` / ``embedder_for(coach)``: the coach's OpenAI-compatible endpoint when configured
    (key decrypted only here), else the offline defaults."""

    def __init__(self, settings: Settings, secrets: SecretBox) -> None:
        self._settings = settings
        self._secrets = secrets
        self._lock = threading.Lock()
        self._local_chat: LlamaCppChatProvider | None = None
        self._local_embedder: SentenceTransformerEmbedder | None = None

    def local_chat(self) -> LlamaCppChatProvider:
        """The process-wide SmolLM2 instance (loaded on first use)."""
        with self._lock:
            if self._local_chat is None:
                self._local_chat = LlamaCppChatProvider(
                    n_ctx=self._settings.llm_context_tokens, n_threads=self._settings.llm_threads
                )
            return self._local_chat

    def local_embedder(self) -> SentenceTransformerEmbedder:
        """The process-wide all-MiniLM-L6-v2 instance (loaded on first use)."""
        with self._lock:
            if self._local_embedder is None:
                self._local_embedder = SentenceTransformerEmbedder()
            return self._local_embedder

    def decrypt_key(self, encrypted: bytes | None) -> str | None:
        """Decrypt a stored provider key (``None`` when none is set)."""
        return self._secrets.decrypt(encrypted) if encrypted else None

    def chat_for(self, coach: m.Coach) -> ChatProvider:
        """The coach's chat provider."""
        if coach.llm_provider == "openai" and coach.llm_model:
            return OpenAIChatProvider(
                model=coach.llm_model,
                api_key=self.decrypt_key(coach.llm_api_key_encrypted),
                base_url=coach.llm_base_url,
                timeout=self._settings.llm_timeout_seconds,
            )
        return self.local_chat()

    def embedder_for(self, coach: m.Coach) -> Embedder:
        """The coach's embedder; vectors always have ``m.EMBEDDING_DIMENSIONS`` floats."""
        if coach.embedding_provider == "openai" and coach.embedding_model:
            return OpenAIEmbedder(
                model=coach.embedding_model,
                api_key=self.decrypt_key(coach.embedding_api_key_encrypted),
                base_url=coach.embedding_base_url,
                dimensions=m.EMBEDDING_DIMENSIONS,
                timeout=self._settings.llm_timeout_seconds,
            )
        return self.local_embedder()
