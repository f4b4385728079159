"""Loading a tags directory (`orgs/<org>.yaml`, shared `_*.yaml`) into one immutable TagSet.

Loading is all or nothing: every file is parsed and validated, every cross-file rule is
checked, and only then is a TagSet built. Every issue found is reported together, so an
admin fixes a broken config in one pass.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ..errors import ConfigError, ConfigIssue
from ..yamlfile import YamlDocument, decode, dotted, parse_yaml, read_bytes, validate
from .flows import CompiledFlow, FlowFormatError, compile_flow, public_flow_tool
from .model import NAME_PATTERN, ORG_WIDE, FlowDefinition, OrgFile, OrgUser, Tag, ToolScope
from .patterns import ToolGlob

SUFFIXES = (".yaml", ".yml")
SHARED_PREFIX = "_"


@dataclass(frozen=True, slots=True)
class LoadedTag:
    """A validated tag with what resolution needs precompiled."""

    tag: Tag
    source: str
    line: int | None
    shared: bool
    allowed: tuple[ToolGlob, ...]
    denied: tuple[ToolGlob, ...]
    scopes: tuple[tuple[ToolGlob, ToolScope], ...]
    resources: tuple[ToolGlob, ...] = ()
    prompts: tuple[ToolGlob, ...] = ()
    trusted: tuple[ToolGlob, ...] = ()
    approvals: tuple[ToolGlob, ...] = ()
    flow: CompiledFlow | None = None
    """A flow tag's content, compiled (flows.py)."""

    @property
    def name(self) -> str:
        return self.tag.tag

    @property
    def where(self) -> str:
        return self.source if self.line is None else f"{self.source}:{self.line}"

    @classmethod
    def build(
        cls,
        tag: Tag,
        source: str,
        line: int | None,
        shared: bool,
        flow: CompiledFlow | None = None,
    ) -> LoadedTag:
        config = tag.payload.config
        return cls(
            tag=tag,
            source=source,
            line=line,
            shared=shared,
            # A flow tag grants its own tool (flows/tools.py) to the users it applies to.
            allowed=tuple(ToolGlob.compile(p) for p in config.allowed_tools)
            + ((ToolGlob.compile(public_flow_tool(tag.tag)),) if flow is not None else ()),
            denied=tuple(ToolGlob.compile(p) for p in config.denied_tools),
            scopes=tuple((ToolGlob.compile(k), v) for k, v in config.scopes.items()),
            resources=tuple(ToolGlob.compile(p) for p in config.allowed_resources),
            prompts=tuple(ToolGlob.compile(p) for p in config.allowed_prompts),
            trusted=tuple(ToolGlob.compile(p) for p in config.trusted_output),
            approvals=tuple(ToolGlob.compile(p) for p in config.needs_approval),
            flow=flow,
        )


@dataclass(frozen=True, slots=True)
class OrgTags:
    """One org's view: its users and every tag that may apply in it (own and shared)."""

    org: str
    source: str
    users: Mapping[str, OrgUser]
    tags: Mapping[str, LoadedTag]
    """By name, in name order: resolution walks them in this order, which makes it stable."""


@dataclass(frozen=True, slots=True)
class TagSet:
    """One consistent version of the whole tag configuration."""

    orgs: Mapping[str, OrgTags]
    digest: str
    """sha256 over every file's name and bytes: equal digests mean equal configs."""
    files: tuple[str, ...]
    tag_count: int
    version: int = 0
    """Set by the store: increases by one with every change that is swapped in."""


@dataclass(slots=True)
class _ParsedFile:
    display: str
    digest: bytes
    shared: bool
    org: str | None
    content: OrgFile
    tags: tuple[LoadedTag, ...]


@dataclass
class TagLoader:
    """Loads a tags directory. Keeps parsed files by content hash, so a reload re-parses
    only the files that changed."""

    directory: Path
    display_root: Path | None = None
    _parsed: dict[Path, _ParsedFile] = field(default_factory=dict)
    _last: TagSet | None = None

    def load(self) -> TagSet:
        if not self.directory.is_dir():
            raise ConfigError([ConfigIssue(str(self.directory), "tags directory does not exist")])
        issues: list[ConfigIssue] = []
        sources: list[tuple[Path, str, bytes]] = []
        for path in sorted(self.directory.iterdir()):
            if path.suffix not in SUFFIXES or not path.is_file():
                continue
            display = self._display(path)
            try:
                sources.append((path, display, read_bytes(path, display)))
            except ConfigError as exc:
                issues.extend(exc.issues)
        if issues:
            raise ConfigError(issues)
        with _gc_paused():
            tagset, self._parsed = _build(sources, self._parsed, self._last)
        self._last = tagset
        return tagset

    def _display(self, path: Path) -> str:
        root = self.display_root
        if root is not None:
            try:
                return str(path.relative_to(root))
            except ValueError:
                pass
        return str(path)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a load builds its objects.

    A load allocates millions of objects and creates no garbage cycles; left on, the
    collector walks the growing heap (and the previous version's) again and again, which
    took a third of a large load. Reference counting keeps freeing memory meanwhile.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def tagset_from_texts(texts: Mapping[str, str]) -> TagSet:
    """Build a TagSet from file names and YAML texts, exactly as from a directory."""
    sources = [(Path(name), name, text.encode()) for name, text in sorted(texts.items())]
    return _build(sources, {})[0]


def _build(
    sources: list[tuple[Path, str, bytes]],
    previous: Mapping[Path, _ParsedFile],
    last: TagSet | None = None,
) -> tuple[TagSet, dict[Path, _ParsedFile]]:
    """Parse what changed since `previous` and assemble; `last` is returned as it is when
    no file changed (a touch, an editor's save without an edit)."""
    hasher = hashlib.sha256()
    for path, _, raw in sources:
        hasher.update(path.name.encode() + b"\0" + raw + b"\0")
    if last is not None and last.digest == hasher.hexdigest():
        return last, dict(previous)
    issues: list[ConfigIssue] = []
    parsed: dict[Path, _ParsedFile] = {}
    for path, display, raw in sources:
        digest = hashlib.sha256(raw).digest()
        cached = previous.get(path)
        if cached is not None and cached.digest == digest:
            parsed[path] = cached
            continue
        result = _parse_file(path, display, raw, digest, issues)
        if result is not None:
            parsed[path] = result
    if issues:
        raise ConfigError(issues)
    tagset = _assemble(list(parsed.values()), hasher.hexdigest(), issues)
    if issues or tagset is None:
        raise ConfigError(issues)
    return tagset, parsed


def _parse_file(
    path: Path, display: str, raw: bytes, digest: bytes, issues: list[ConfigIssue]
) -> _ParsedFile | None:
    try:
        doc = parse_yaml(decode(raw, display), path, display)
    except ConfigError as exc:
        issues.extend(exc.issues)
        return None
    if doc.data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        issues.append(ConfigIssue(display, "expected a mapping with 'tags' (and 'users')", 1))
        return None
    content, found = validate(doc, OrgFile, display)
    issues.extend(found)
    if content is None:
        return None
    shared = path.stem.startswith(SHARED_PREFIX)
    before = len(issues)
    org = _file_org(path, doc, content, shared, display, issues)
    lines = doc.item_lines(("tags",))
    _check_tags(doc, content, lines, org, shared, display, issues)
    flows = _compile_flows(doc, content, display, issues)
    if len(issues) > before:
        return None
    tags = tuple(
        LoadedTag.build(tag, display, line, shared, flows.get(index))
        for index, (tag, line) in enumerate(zip(content.tags, lines, strict=True))
    )
    return _ParsedFile(display, digest, shared, org, content, tags)


def _file_org(
    path: Path,
    doc: YamlDocument,
    content: OrgFile,
    shared: bool,
    display: str,
    issues: list[ConfigIssue],
) -> str | None:
    if shared:
        for key in ("org", "users"):
            if key in doc.data:
                issues.append(
                    ConfigIssue(
                        display,
                        f"a shared tags file (name starting with '_') has no {key!r}; "
                        "its tags name their orgs in org_scope",
                        doc.line_of((key,)),
                        field=key,
                    )
                )
        return None
    if not re.match(NAME_PATTERN, path.stem):
        issues.append(ConfigIssue(display, f"file name {path.stem!r} is not a valid org id"))
        return None
    if content.org is not None and content.org != path.stem:
        issues.append(
            ConfigIssue(
                display,
                f"org {content.org!r} does not match the file name; "
                f"an org's tags live in {path.stem!r}'s file only if it is org {path.stem!r}",
                doc.line_of(("org",)),
                field="org",
            )
        )
    return path.stem


def _check_tags(
    doc: YamlDocument,
    content: OrgFile,
    lines: list[int],
    org: str | None,
    shared: bool,
    display: str,
    issues: list[ConfigIssue],
) -> None:
    """Rules that concern one tag or one file."""
    first_line: dict[str, int] = {}
    for index, (tag, line) in enumerate(zip(content.tags, lines, strict=True)):

        def issue(message: str, *loc: str | int, _i: int = index, _t: Tag = tag) -> None:
            field_loc = ("payload", "config", *loc) if loc else ()
            issues.append(
                ConfigIssue(
                    display,
                    message,
                    doc.line_of(("tags", _i, *field_loc)),
                    tag=_t.tag,
                    field=".".join(str(p) for p in field_loc) or None,
                )
            )

        if tag.tag in first_line:
            issue(f"tag name is used twice in this file (first at line {first_line[tag.tag]})")
        first_line.setdefault(tag.tag, line)
        config = tag.payload.config
        if shared and not config.org_scope:
            issue("a shared tag must name its orgs in org_scope (or '*' for every org)")
        if not shared and config.org_scope and tuple(config.org_scope) != (org,):
            others = ", ".join(o for o in config.org_scope if o != org)
            issue(
                f"a tag in org {org!r}'s file applies to that org only, but org_scope names "
                f"{others}; put tags for several orgs in a shared file (_shared.yaml)",
                "org_scope",
            )
        allowed = [ToolGlob.compile(p) for p in config.allowed_tools]
        for key in config.scopes:
            glob = ToolGlob.compile(key)
            if not any(glob.overlaps(grant) for grant in allowed):
                issue(
                    f"scope for {key!r} has no effect: this tag's allowed_tools do not grant "
                    "it, and a scope only limits its own tag's grants",
                    "scopes",
                    key,
                )


def _compile_flows(
    doc: YamlDocument, content: OrgFile, display: str, issues: list[ConfigIssue]
) -> dict[int, CompiledFlow]:
    """Every flow tag of the file compiled, by its index; what does not compile is an
    issue naming the tag, the step and the line."""
    compiled: dict[int, CompiledFlow] = {}
    for index, tag in enumerate(content.tags):
        definition = tag.payload.content
        if not isinstance(definition, FlowDefinition):
            continue
        try:
            compiled[index] = compile_flow(tag.tag, definition)
        except FlowFormatError as exc:
            for problem in exc.problems:
                loc = ("tags", index, "payload", "content", *problem.loc)
                where = f"step {problem.step!r}: " if problem.step is not None else ""
                issues.append(
                    ConfigIssue(
                        display,
                        f"{where}{problem.message}",
                        doc.line_of(loc),
                        tag=tag.tag,
                        field=dotted(loc[2:6]),
                    )
                )
    return compiled


def _assemble(files: list[_ParsedFile], digest: str, issues: list[ConfigIssue]) -> TagSet | None:
    """Cross-file rules: shared scopes, name clashes, includes, cycles. Builds the TagSet."""
    org_files = {f.org: f for f in files if f.org is not None}
    shared: dict[str, LoadedTag] = {}
    for parsed in (f for f in files if f.shared):
        for loaded in parsed.tags:
            tag, line = loaded.tag, loaded.line
            if tag.tag in shared:
                issues.append(
                    ConfigIssue(
                        parsed.display,
                        f"shared tag name is also used at {shared[tag.tag].where}",
                        line,
                        tag=tag.tag,
                    )
                )
                continue
            shared[tag.tag] = loaded
            for scoped in tag.payload.config.org_scope:
                if scoped != ORG_WIDE and scoped not in org_files:
                    issues.append(
                        ConfigIssue(
                            parsed.display,
                            f"org_scope names org {scoped!r}, which has no file "
                            f"({scoped}.yaml) in the tags directory",
                            line,
                            tag=tag.tag,
                            field="payload.config.org_scope",
                        )
                    )
    orgs: dict[str, OrgTags] = {}
    for org, parsed in sorted(org_files.items()):
        tags = {loaded.name: loaded for loaded in parsed.tags}
        for name, loaded in shared.items():
            scope = loaded.tag.payload.config.org_scope
            if ORG_WIDE not in scope and org not in scope:
                continue
            if name in tags:
                issues.append(
                    ConfigIssue(
                        parsed.display,
                        f"tag name clashes with the shared tag at {loaded.where}",
                        tags[name].line,
                        tag=name,
                    )
                )
                continue
            tags[name] = loaded
        _check_includes(org, tags, issues)
        _check_flow_tools(tags, issues)
        orgs[org] = OrgTags(
            org=org,
            source=parsed.display,
            users=MappingProxyType(dict(parsed.content.users)),
            tags=MappingProxyType(dict(sorted(tags.items()))),
        )
    if issues:
        return None
    return TagSet(
        orgs=MappingProxyType(orgs),
        digest=digest,
        files=tuple(f.display for f in files),
        tag_count=sum(len(f.content.tags) for f in files),
    )


def _check_flow_tools(tags: Mapping[str, LoadedTag], issues: list[ConfigIssue]) -> None:
    """Two flows of one org must not be one tool (flow_x and x are both flow__x)."""
    first: dict[str, LoadedTag] = {}
    for name, loaded in sorted(tags.items()):
        if loaded.flow is None:
            continue
        tool = public_flow_tool(name)
        if tool in first:
            issues.append(
                ConfigIssue(
                    loaded.source,
                    f"flow tags {first[tool].name!r} ({first[tool].where}) and {name!r} would "
                    f"both be the tool {tool}: rename one",
                    loaded.line,
                    tag=name,
                )
            )
        first.setdefault(tool, loaded)


def _check_includes(org: str, tags: Mapping[str, LoadedTag], issues: list[ConfigIssue]) -> None:
    reported: set[tuple[str, ...]] = set()
    for loaded in tags.values():
        for index, name in enumerate(loaded.tag.payload.meta.includes):
            if name not in tags:
                where = "" if not loaded.shared else f" (in org {org})"
                issues.append(
                    ConfigIssue(
                        loaded.source,
                        f"includes unknown tag {name!r}{where}",
                        loaded.line,
                        tag=loaded.name,
                        field=f"payload.meta.includes[{index}]",
                    )
                )
    for cycle in _cycles(tags):
        key = tuple(sorted(cycle[:-1]))
        if key in reported:
            continue
        reported.add(key)
        first = tags[cycle[0]]
        issues.append(
            ConfigIssue(
                first.source,
                "includes form a cycle: " + " -> ".join(cycle),
                first.line,
                tag=first.name,
                field="payload.meta.includes",
            )
        )


def _cycles(tags: Mapping[str, LoadedTag]) -> Iterable[list[str]]:
    """Each include cycle once, as a path that returns to its start (iterative DFS)."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(tags, white)
    for root in tags:
        if color[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        color[root] = grey
        while stack:
            name, next_index = stack[-1]
            includes = [i for i in tags[name].tag.payload.meta.includes if i in tags]
            if next_index < len(includes):
                stack[-1] = (name, next_index + 1)
                child = includes[next_index]
                if color[child] == grey:
                    yield [*path[path.index(child) :], child]
                elif color[child] == white:
                    color[child] = grey
                    stack.append((child, 0))
                    path.append(child)
            else:
                color[name] = black
                stack.pop()
                path.pop()
