"""Settings from the environment, named like Pennsieve's reference processor."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigurationError
from .planner import DEFAULT_CHUNK_SIZE_MB, DEFAULT_MAX_ITEM_MB

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_flag(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    raw = (env if env is not None else os.environ).get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean (use true or false)")


def env_number(name: str, default: float, env: Mapping[str, str] | None = None) -> float:
    raw = (env if env is not None else os.environ).get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None
    if not value > 0:
        raise ConfigurationError(f"{name}={raw!r} must be greater than 0")
    return value


@dataclass(frozen=True)
class Settings:
    """The local runner's settings (``make run``)."""

    environment: str
    input_dir: Path
    output_dir: Path
    chunk_size_mb: float
    max_item_mb: float
    workers: int | None
    skip_invalid_series: bool
    importer_enabled: bool

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = env if env is not None else dict(os.environ)
        environment = e.get("ENVIRONMENT", "local").strip() or "local"
        workers = e.get("WORKERS", "").strip()
        return cls(
            environment=environment,
            input_dir=Path(e.get("INPUT_DIR", "data/input")),
            output_dir=Path(e.get("OUTPUT_DIR", "data/output")),
            chunk_size_mb=env_number("CHUNK_SIZE_MB", DEFAULT_CHUNK_SIZE_MB, e),
            max_item_mb=env_number("MAX_ITEM_MB", DEFAULT_MAX_ITEM_MB, e),
            workers=int(env_number("WORKERS", 1, e)) if workers else None,
            skip_invalid_series=env_flag("SKIP_INVALID_SERIES", False, e),
            # Like the reference: the importer runs by default everywhere but local.
            importer_enabled=env_flag("IMPORTER_ENABLED", environment != "local", e),
        )
