"""Settings, read from the environment (prefix-free names, documented in README.md)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.egress import OutboundAllowlist


class Settings(BaseSettings):
    """Process-wide settings.

    Every field maps to an upper-case environment variable of the same name, e.g. ``DATABASE_URL``.
    With ``DATABASE_URL`` / ``REDIS_URL`` unset the runtime starts embedded servers in ``DATA_DIR``.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path(".opencoach"), description="Embedded servers, uploads, secrets.")
    database_url: str | None = Field(
        default=None,
        description="URL the app connects with (a role that is neither superuser nor BYPASSRLS).",
    )
    migration_database_url: str | None = Field(
        default=None, description="URL of the role that owns the schema; defaults to DATABASE_URL."
    )
    redis_url: str | None = None

    secret_key: str | None = Field(
        default=None,
        description="Fernet key (urlsafe base64, 32 bytes) for provider keys at rest; "
        "generated into DATA_DIR/secret.key when unset.",
    )
    public_url: str = Field(default="http://127.0.0.1:8000", description="Base URL used in widget snippets.")

    max_upload_mb: float = Field(default=25.0, gt=0)
    extract_memory_mb: int = Field(
        default=512, ge=128, description="Address-space limit (RLIMIT_AS, MB) of the process reading one upload."
    )
    extract_cpu_seconds: int = Field(
        default=30, ge=1, description="CPU seconds (RLIMIT_CPU) for opening an upload; pages add to it."
    )
    extract_cpu_seconds_per_page: float = Field(
        default=0.5, ge=0, description="CPU seconds each PDF page adds to EXTRACT_CPU_SECONDS."
    )
    extract_timeout_seconds: float = Field(default=600.0, gt=0, description="Wall-clock deadline of one extraction.")
    extract_max_pages: int = Field(default=2000, ge=1, description="A PDF with more pages fails with the reason.")
    extract_max_characters: int = Field(
        default=5_000_000, ge=1000, description="A file with more characters of text fails with the reason."
    )
    ingest_timeout_seconds: int = Field(
        default=1800,
        ge=10,
        description="Deadline of one ingestion job (extract, embed, store); a document still processing "
        "past it (its worker was killed) is failed by the worker's sweep.",
    )
    retrieval_top_k: int = Field(default=5, ge=1, le=50)
    llm_timeout_seconds: float = Field(default=120.0, gt=0)
    llm_max_tokens: int = Field(default=256, ge=16)
    llm_context_tokens: int = Field(default=2048, ge=512, description="Context window of the local model.")
    llm_threads: int | None = Field(default=None, description="CPU threads for the local model.")

    smtp_host: str | None = Field(default=None, description="SMTP server for coach alert e-mails; unset: no e-mail.")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from: str = Field(default="OpenCoach <alerts@opencoach.local>", description="From: of alert e-mails.")
    smtp_starttls: bool = Field(default=True, description="Upgrade the SMTP connection with STARTTLS.")

    outbound_allow: str = Field(
        default="",
        description="Hosts and IP addresses/CIDR networks that coach-configured URLs (LLM base URL, alert "
        "webhook) may reach although they are not public, also over plain http (e.g. "
        "'localhost,127.0.0.1,::1' for Ollama or vLLM on this machine); comma-separated, empty by default. "
        "Cloud metadata addresses stay refused. See app/core/egress.py.",
    )

    @field_validator("outbound_allow")
    @classmethod
    def _valid_outbound_allow(cls, value: str) -> str:
        OutboundAllowlist.parse(value)  # raises ValueError naming the bad entry
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the cached process settings (call ``get_settings.cache_clear()`` after changing env)."""
    return Settings()
