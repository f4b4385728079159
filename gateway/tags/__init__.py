"""The Tag Manager: per-org YAML tags → what a caller sees, may call, and is told."""

from .context import AppliedTag, FlowInfo, PromptSection, ResolvedContext, ToolMatch, ToolRule
from .loader import LoadedTag, OrgTags, TagLoader, TagSet
from .manager import TagManager
from .model import ArgumentConstraint, Tag, TagConfig, TagKind, TagMeta, TagPayload
from .policy import Decision, Outcome, check
from .resolve import Resolver, resolve
from .scopes import Violation
from .store import ReloadResult, TagStore

__all__ = [
    "AppliedTag",
    "ArgumentConstraint",
    "Decision",
    "FlowInfo",
    "LoadedTag",
    "OrgTags",
    "Outcome",
    "PromptSection",
    "ReloadResult",
    "ResolvedContext",
    "Resolver",
    "Tag",
    "TagConfig",
    "TagKind",
    "TagLoader",
    "TagManager",
    "TagMeta",
    "TagPayload",
    "TagSet",
    "TagStore",
    "ToolMatch",
    "ToolRule",
    "Violation",
    "check",
    "resolve",
]
