"""Configuration: environment variables (``SURGE_*``, ``DATABASE_URL``) overridden by command-line flags,
validated once at start-up with messages that name the setting."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: Path(platformdirs.user_data_dir("surge")))
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    pool_size_max: int = 20
    batch_size_max: int = 1000
    batch_delay_ms: float = 0.0
    queue_size_max: int = 20_000
    committers: int = 2
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.port < 65536:
            problems.append(f"SURGE_PORT must be 1-65535, got {self.port}")
        if not 1 <= self.workers <= 64:
            problems.append(f"SURGE_WORKERS must be 1-64, got {self.workers}")
        if not 2 <= self.pool_size_max <= 500:
            problems.append(f"SURGE_POOL_SIZE_MAX must be 2-500, got {self.pool_size_max}")
        if not 1 <= self.batch_size_max <= 100_000:
            problems.append(f"SURGE_BATCH_SIZE_MAX must be 1-100000, got {self.batch_size_max}")
        if not 0 <= self.batch_delay_ms <= 1000:
            problems.append(f"SURGE_BATCH_DELAY_MS must be 0-1000, got {self.batch_delay_ms}")
        if not 1 <= self.queue_size_max <= 10_000_000:
            problems.append(f"SURGE_QUEUE_SIZE_MAX must be 1-10000000, got {self.queue_size_max}")
        if not 1 <= self.committers <= 16:
            problems.append(f"SURGE_COMMITTERS must be 1-16, got {self.committers}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append(f"SURGE_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")
        if self.database_url is not None and not self.database_url.startswith(("postgres://", "postgresql://")):
            problems.append("DATABASE_URL must start with postgresql:// or postgres://")
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))

    @property
    def postgres_folder(self) -> Path:
        return self.home / "postgres"

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


_ENVIRONMENT_NAMES = {f.name: f"SURGE_{f.name.upper()}" for f in fields(Settings)} | {"database_url": "DATABASE_URL"}


def load_settings(environment: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, then ``overrides`` (flags); raises ConfigError with every problem found."""
    environment = os.environ if environment is None else environment
    values: dict[str, Any] = {}
    for item in fields(Settings):
        raw = environment.get(_ENVIRONMENT_NAMES[item.name])
        if raw is None or raw == "":
            continue
        values[item.name] = _convert(item.name, item.type, raw)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)


def _convert(name: str, type_name: Any, raw: str) -> Any:
    type_text = str(type_name)
    try:
        if type_text == "int":
            return int(raw)
        if type_text == "float":
            return float(raw)
        if type_text == "Path":
            return Path(raw).expanduser()
    except ValueError:
        raise ConfigError(f"{_ENVIRONMENT_NAMES[name]} must be a number, got {raw!r}") from None
    return raw
