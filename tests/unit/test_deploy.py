"""``deploy/compose.yaml`` is a valid Compose file: validated, after variable interpolation as ``docker
compose`` does it, against the Compose specification's JSON schema (``deploy/compose-spec.schema.json``,
from the ``docker-compose`` package on PyPI), and it runs what the deployment needs with real settings."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from app.core.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
sys.path.insert(0, str(DEPLOY.parent / "bench"))  # the benchmarks' loader of the file, a top-level module
try:
    from compose_file import interpolate, layout, load_compose
finally:
    sys.path.remove(str(DEPLOY.parent / "bench"))


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    return load_compose({"SECRET_KEY": "k"} | (env or {}))


def validate(document: dict[str, Any]) -> None:
    """Validate against the vendored schema (JSON Schema draft 2019-09, as its ``$schema`` says)."""
    schema = json.loads((DEPLOY / "compose-spec.schema.json").read_text())
    assert schema["title"] == "Compose Specification"
    jsonschema.Draft201909Validator(schema).validate(document)


def test_the_compose_file_validates_against_the_compose_specification() -> None:
    validate(compose())


def test_a_broken_compose_file_is_refused_by_the_schema() -> None:
    """The validation can fail: a service with an unknown key or a replica count that is not a number."""
    broken = compose()
    broken["services"]["api"]["replicaz"] = 2
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)
    with pytest.raises(jsonschema.ValidationError):
        validate(compose({"API_REPLICAS": "many"}))


def test_the_secret_key_must_be_set() -> None:
    source = (DEPLOY / "compose.yaml").read_text()
    with pytest.raises(KeyError, match="SECRET_KEY"):
        interpolate(source, {})


def test_the_compose_file_runs_pgvector_redis_n_apis_and_m_workers_with_real_settings() -> None:
    """pgvector PostgreSQL, Redis with an append-only file, the migrations before any app process,
    ``API_REPLICAS`` API processes and ``WORKER_REPLICAS`` workers; every environment variable of the app is a
    setting of :class:`Settings` (a misspelt one would be ignored silently)."""
    services = compose({"API_REPLICAS": "3", "WORKER_REPLICAS": "4"})["services"]
    assert services["postgres"]["image"].startswith("pgvector/pgvector:")
    assert "--appendonly" in services["redis"]["command"]
    assert services["api"]["deploy"]["replicas"] == 3
    assert services["worker"]["deploy"]["replicas"] == 4
    assert services["api"]["command"][:3] == ["opencoach", "serve", "--no-worker"]
    assert services["worker"]["command"] == ["opencoach", "worker"]
    assert services["migrate"]["command"] == ["opencoach", "migrate"]
    settings = {field.upper() for field in Settings.model_fields}
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        env = services[name]["environment"]
        assert set(env) <= settings | {"FORWARDED_ALLOW_IPS"}, set(env) - settings
        assert "opencoach_web" in env["DATABASE_URL"] and "opencoach_owner" in env["MIGRATION_DATABASE_URL"]
        # every other setting, and uvicorn's trusted proxies, reach the app from the shell without an edit
        assert set(env) == (settings - {"DATA_DIR"}) | {"FORWARDED_ALLOW_IPS"}, (settings - {"DATA_DIR"}) ^ set(env)
    given = {key.lower(): value for key, value in services["api"]["environment"].items() if value is not None}
    Settings(**given | {"secret_key": None})


def test_the_load_benchmark_takes_its_process_layout_and_settings_from_the_compose_file() -> None:
    """``bench/load.py`` starts ``API_REPLICAS`` API and ``WORKER_REPLICAS`` worker processes with the
    Compose file's settings; the deployment's own URLs and key are left to the benchmark."""
    default = layout({})
    assert (default.apis, default.workers) == (2, 2)
    assert default.env["WORKER_MAX_JOBS"] == "2" and default.env["LLM_DEADLINE_SECONDS"] == "300"
    assert not {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "PUBLIC_URL"} & set(default.env)
    scaled = layout({"API_REPLICAS": "3", "WORKER_REPLICAS": "1", "WORKER_MAX_JOBS": "8"})
    assert (scaled.apis, scaled.workers, scaled.env["WORKER_MAX_JOBS"]) == (3, 1, "8")
    with pytest.raises(ValueError):
        layout({"API_REPLICAS": "many"})
