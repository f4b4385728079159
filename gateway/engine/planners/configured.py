"""The planner gateway.yaml's `engine` section asks for, built (the Anthropic SDK imported
only here, when it is the one)."""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import ConfigError, ConfigIssue
from ..settings import EngineSettings
from .base import Planner
from .scripted import ScriptedPlanner


def configured_planner(settings: EngineSettings, config_path: Path) -> Planner | None:
    """The planner, or None when there is none to use (`none`, or `auto` without an
    Anthropic key) or it is each caller's own (`sampling`: run_session builds it per call).
    ConfigError naming gateway.yaml's field when it cannot be built."""
    choice = settings.planner
    if choice == "auto":
        choice = "anthropic" if os.environ.get(settings.anthropic.api_key_env) else "none"
    if choice in ("none", "sampling"):  # sampling: built per call, on the caller's asker
        return None
    if choice == "scripted":
        if settings.script is None:
            problem = "engine.planner scripted needs engine.script: a YAML list of envelopes"
            raise ConfigError([ConfigIssue(str(config_path), problem, field="engine.script")])
        return ScriptedPlanner.from_file(config_path.parent / settings.script)
    from .anthropic import AnthropicPlanner  # some 42 MB: only when asked for

    return AnthropicPlanner(settings.anthropic, str(config_path))
