"""The process layout of ``deploy/compose.yaml``, so that the local multi-process benchmark
(``bench/load.py``) runs what the deployment runs: as many API and worker processes, with the same settings.

Variables are interpolated as ``docker compose`` does (``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}``)
from the environment, so ``API_REPLICAS=4 WORKER_REPLICAS=3`` changes both. ``tests/unit/test_deploy.py``
validates the file with the same loader.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "deploy" / "compose.yaml"
VARIABLE = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")
SITE_SPECIFIC = frozenset({"DATABASE_URL", "MIGRATION_DATABASE_URL", "REDIS_URL", "SECRET_KEY", "PUBLIC_URL"})
"""Settings that name the deployment's own servers, key and address: the benchmark supplies its own."""


def interpolate(source: str, env: Mapping[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}`` over ``env`` (an unset or empty
    variable takes the default; an unset required one raises ``KeyError`` with the file's message)."""

    def value(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg or ""

    return VARIABLE.sub(value, source)


def load_compose(env: Mapping[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The Compose file at ``path`` as a dict, after interpolation over ``env``. Raises ``KeyError`` (a required
    variable unset) or ``yaml.YAMLError``."""
    loaded: dict[str, Any] = yaml.safe_load(interpolate(path.read_text(), env))
    return loaded


@dataclass(frozen=True)
class Layout:
    """``apis`` API processes and ``workers`` worker processes, and the app settings (environment variable →
    value) they share, without the :data:`SITE_SPECIFIC` ones."""

    apis: int
    workers: int
    env: dict[str, str]


def layout(env: Mapping[str, str], path: Path = COMPOSE_FILE) -> Layout:
    """The layout of the ``api`` and ``worker`` services of the Compose file (``deploy.replicas``, default 1;
    the ``api`` service's environment, without the variables it passes on from the shell). Raises ``KeyError``
    when a service or a required variable is missing, ``ValueError`` when a replica count is not a whole
    number."""
    services = load_compose({"SECRET_KEY": "unused"} | dict(env), path)["services"]
    environment = services["api"].get("environment", {}).items()
    settings = {key: str(value) for key, value in environment if value is not None}  # None: from the shell
    return Layout(
        apis=int(services["api"].get("deploy", {}).get("replicas", 1)),
        workers=int(services["worker"].get("deploy", {}).get("replicas", 1)),
        env={key: value for key, value in settings.items() if key not in SITE_SPECIFIC},
    )
