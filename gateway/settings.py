"""gateway.yaml → typed settings. Paths in the file are relative to the file's folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError, ConfigIssue
from .yamlfile import read_yaml, validate

DEFAULT_CONFIG = Path("configs/gateway.yaml")
CONFIG_ENV = "GATEWAY_CONFIG"


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080


class TagSettings(_Strict):
    dir: str = "orgs"
    """The tags directory: one `<org>.yaml` per org, shared tags in `_*.yaml`."""
    watch: bool = True
    """Reload when a file in the directory changes."""
    cache_size: Annotated[int, Field(ge=0)] = 50_000
    """Resolved contexts kept in-process (an LRU, dropped on every config change)."""


class Settings(_Strict):
    server: ServerSettings = ServerSettings()
    tags: TagSettings = TagSettings()


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Settings with the file they came from, against which relative paths resolve."""

    path: Path
    settings: Settings

    @property
    def tags_dir(self) -> Path:
        return (self.path.parent / self.settings.tags.dir).resolve()


def config_path(explicit: str | Path | None) -> Path:
    if explicit is not None:
        return Path(explicit)
    return Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG))


def load_config(path: Path) -> GatewayConfig:
    """Read gateway.yaml. Raises ConfigError naming the file, field and line."""
    doc = read_yaml(path)
    if doc.data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        raise ConfigError([ConfigIssue(str(path), "expected a mapping of settings", line=1)])
    settings, issues = validate(doc, Settings, str(path))
    if settings is None:
        raise ConfigError(issues)
    return GatewayConfig(path.resolve(), settings)
