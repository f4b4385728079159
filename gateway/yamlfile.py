"""Reading YAML config files so that every mistake can be named by file, field and line.

PyYAML's C parser composes a node tree, which knows every line; the data is built from it,
and the tree is kept so that a line can be named for any path into the file.

A config file may come from someone who means harm (a tags directory is often written by
tooling), so what one file may cost is bounded: its size, how deep it nests, and how much
its aliases expand to (a "billion laughs" file is a few hundred bytes that expand to 10^9
values for whatever walks the data).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError, ConfigIssue

if TYPE_CHECKING:
    _BaseLoader = yaml.SafeLoader
else:  # libyaml's parser when PyYAML was built with it: an order of magnitude faster
    _BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

MAX_FILE_BYTES = 2 * 1024 * 1024
"""A config file's size limit. Composing YAML costs up to 300 times its size in memory
(one node and two marks per value); a realistic tags file holds ~6,000 tags in this much."""
MAX_VALUES = 500_000
"""How many values (scalars, lists, mappings) a file may hold with its aliases expanded:
what validation and line lookups walk. Well above what the size limit lets a real file
hold, far below what an alias bomb expands to."""
MAX_ISSUES = 50
"""Errors listed per file: aliases can repeat one mistake many thousand times."""

MAX_DEPTH = 100
"""How deep a file may nest, aliases included: what is walked is walked recursively."""

_BYTE_POSITIONS = _BaseLoader is not yaml.SafeLoader
"""libyaml reports a reader error's position in UTF-8 bytes, PyYAML's own reader in
characters."""
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
"""Line breaks as YAML counts them, so that lines agree with those of parse errors."""


class _Loader(_BaseLoader):
    """Remembers how each plain scalar resolved: PyYAML resolves every scalar in Python,
    against a list of regexes, and a config repeats the same few hundred values."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._plain_tags: dict[str, str] = {}

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is not yaml.ScalarNode or not implicit[0]:
            tag: str = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
            return tag
        tag_of = self._plain_tags.get(value)
        if tag_of is None:
            tag_of = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
            self._plain_tags[value] = tag_of
        return tag_of


_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"
_VALUE = "tag:yaml.org,2002:value"
_NUMBERS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})
MAX_NUMBER_LENGTH = 100
_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


class _Constructor:
    """Builds Python data from a composed node tree, refusing duplicate keys (which PyYAML
    would silently overwrite).

    Plain text, lists and mappings, nearly all of a config, are built here directly;
    PyYAML's own constructor, in Python even with libyaml, took most of a load's time.
    Every other node (numbers, booleans, null, dates, explicit tags) goes to PyYAML's safe
    constructor, so what a value means stays exactly what PyYAML says.
    """

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self._loader = loader
        self._built: dict[int, Any] = {}
        """Built lists and mappings by node id: an alias yields the same object, as in
        PyYAML, so a tree of aliases cannot blow up into exponentially many copies."""
        self.json_like = True
        """False once anything was built that JSON cannot say (a date, a set, a number as
        a key): only then is the data walked to name where (see `_non_json`)."""

    def build(self, node: yaml.Node, depth: int = 1) -> Any:
        """The data of `node`, at nesting `depth`. With aliases, `measure` first: it finds
        cycles and bounds the expansion, which this does not check again."""
        tag = node.tag
        if isinstance(node, yaml.ScalarNode):
            if tag == _STR:
                return node.value
            if tag in _NUMBERS and len(node.value) > MAX_NUMBER_LENGTH:
                # PyYAML reads base-60 numbers (1:2:3) in quadratic time, and Python refuses
                # integers of more than 4,300 digits: no config needs such a number.
                raise _limit_error(
                    f"a number of more than {MAX_NUMBER_LENGTH} characters (quote it if it "
                    "is text)",
                    node,
                )
            try:
                scalar = self._loader.construct_object(node, deep=True)
            except (ValueError, OverflowError) as exc:
                raise _limit_error(f"cannot read this value: {exc}", node) from None
            if type(scalar) not in _JSON_SCALARS:
                self.json_like = False
            return scalar
        if tag not in (_SEQ, _MAP):
            self.json_like = False
            return self._loader.construct_object(node, deep=True)
        key = id(node)
        if key in self._built:
            return self._built[key]
        if depth > MAX_DEPTH:  # before the recursion below runs out of stack
            raise _limit_error(f"nested more than {MAX_DEPTH} levels deep", node)
        value: Any
        if isinstance(node, yaml.SequenceNode):
            value = [self.build(item, depth + 1) for item in node.value]
        else:
            assert isinstance(node, yaml.MappingNode)
            value = self._mapping(node, depth + 1)
        self._built[key] = value
        return value

    def _mapping(self, node: yaml.MappingNode, depth: int) -> dict[Hashable, Any]:
        merged = False
        seen: dict[Hashable, int] = {}
        mapping: dict[Hashable, Any] = {}
        for key_node, value_node in node.value:
            tag = key_node.tag
            if tag == _MERGE:
                merged = True  # merged keys may be overridden: only explicit ones are unique
                continue
            if tag == _VALUE:
                merged, key = True, "="  # what PyYAML's flatten_mapping makes of it
            else:
                key = self.build(key_node, depth)
            if type(key) is not str:
                self.json_like = False
                if not isinstance(key, Hashable):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        "found unhashable key",
                        key_node.start_mark,
                    )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
            if not merged:
                mapping[key] = self.build(value_node, depth)
        if merged:
            self._loader.flatten_mapping(node)  # PyYAML's `<<` semantics, in place
            mapping = {}
            for key_node, value_node in node.value:
                mapping[self.build(key_node, depth)] = self.build(value_node, depth)
        return mapping


def measure(root: yaml.Node) -> None:
    """Refuse a node graph whose aliases expand it beyond MAX_VALUES or MAX_DEPTH, or
    that contains itself, naming the innermost list or mapping that goes too far.

    Iterative and memoized by node, so it costs one visit per node as written, however
    far the aliases expand. Merge keys (`<<`) count as their aliased mappings do, and
    PyYAML's merging (`flatten_mapping`) copies each merging mapping's values once more,
    nested merges again at every level: those copies together are bounded by MAX_VALUES
    too (a small file of nested merges took a minute of CPU).
    """
    merge_work = 0
    sizes: dict[int, tuple[int, int]] = {}
    """(values, height) of every node measured, by id."""
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if isinstance(node, yaml.ScalarNode) or (not done and key in sizes):
            continue
        children: list[yaml.Node] = (
            [part for pair in node.value for part in pair]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
        )
        if not done:
            if key in open_:
                raise yaml.constructor.ConstructorError(
                    None, None, "an alias refers to a node that contains it", node.start_mark
                )
            open_.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in children)
            continue
        open_.discard(key)
        values, height = 1, 0
        for child in children:
            child_values, child_height = sizes.get(id(child), (1, 0))
            values += child_values
            height = max(height, child_height)
        height += 1
        kind = "mapping" if isinstance(node, yaml.MappingNode) else "list"
        if values > MAX_VALUES:
            raise _limit_error(
                f"aliases expand this {kind} to more than {MAX_VALUES:,} values "
                "(the limit keeps alias bombs out)",
                node,
            )
        if height > MAX_DEPTH:
            raise _limit_error(f"aliases nest this {kind} more than {MAX_DEPTH} levels deep", node)
        if isinstance(node, yaml.MappingNode) and any(k.tag == _MERGE for k, _ in node.value):
            merge_work += values
            if merge_work > MAX_VALUES:
                raise _limit_error(
                    f"merge keys (<<) make PyYAML copy more than {MAX_VALUES:,} values "
                    "to build this mapping",
                    node,
                )
        sizes[key] = (values, height)


def _limit_error(problem: str, node: yaml.Node) -> yaml.MarkedYAMLError:
    return yaml.constructor.ConstructorError(None, None, problem, node.start_mark)


def line_at(text: str, index: int) -> int:
    """The line (1-based) of character `index` in `text`."""
    return len(_BREAK.findall(text, 0, index)) + 1


@dataclass
class YamlDocument:
    """A parsed YAML file, with line numbers for any path into it on demand."""

    path: Path
    data: Any
    node: yaml.Node | None = field(default=None, repr=False)
    json_like: bool = True
    """Whether the data holds only what JSON can say (text keys, JSON scalars)."""
    _lines: dict[Loc, int] | None = field(default=None, repr=False)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """Line (1-based) of the deepest node along `loc` that exists in the file."""
        if self._lines is None:
            self._lines = {}
            if self.node is not None:
                _index_lines(self.node, (), self._lines, set())
        for end in range(len(loc), -1, -1):
            line = self._lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def item_lines(self, loc: Sequence[str]) -> list[int]:
        """Lines of the items of the list at mapping path `loc`, without indexing the whole
        file (which `line_of` does, and which costs more than the items need)."""
        node = self.node
        for part in loc:
            if not isinstance(node, yaml.MappingNode):
                return []
            node = next((v for k, v in node.value if k.value == part), None)
        if not isinstance(node, yaml.SequenceNode):
            return []
        return [item.start_mark.line + 1 for item in node.value]

    def value_at(self, loc: Sequence[str | int]) -> Any:
        """The value at `loc`, or None where the path leaves the data."""
        value = self.data
        for part in loc:
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                return None
        return value


def _index_lines(node: yaml.Node, loc: Loc, out: dict[Loc, int], seen: set[int]) -> None:
    """Lines of every path into the file as written: an aliased node is indexed where its
    anchor is, and a path through an alias ends at the alias's key, so the index grows with
    the file and not with what its aliases expand to."""
    out.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.ScalarNode) or id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                out.setdefault((*loc, key_node.value), key_node.start_mark.line + 1)
                _index_lines(value_node, (*loc, key_node.value), out, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*loc, index), out, seen)


def read_yaml(path: Path, display: str | None = None) -> YamlDocument:
    """Read and parse `path`. Raises ConfigError naming the file and line on any failure."""
    name = display or str(path)
    return parse_yaml(decode(read_bytes(path, name), name), path, name)


def read_bytes(path: Path, display: str) -> bytes:
    """The bytes of `path`, read no further than one byte past MAX_FILE_BYTES."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError([ConfigIssue(display, f"cannot read file: {exc}")]) from exc
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError([_too_large(display)])
    return raw


def decode(raw: bytes, display: str) -> str:
    """`raw` as UTF-8 text, or a ConfigError naming the line of the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8")
        line = line_at(before, len(before))
        issue = ConfigIssue(
            display,
            f"file is not UTF-8 text: {exc.reason} (byte {exc.object[exc.start]:#04x})",
            line=line,
        )
        raise ConfigError([issue]) from exc


def _too_large(display: str) -> ConfigIssue:
    return ConfigIssue(
        display,
        f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB, the limit for a config file",
    )


def parse_yaml(text: str, path: Path, display: str) -> YamlDocument:
    if len(text) > MAX_FILE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise ConfigError([_too_large(display)])
    loader = _Loader(text)
    try:
        # One parse gives both the data and the node tree that knows the lines.
        node = loader.get_single_node()
        constructor = _Constructor(loader)
        if node is not None and ("&" in text or "<<" in text):  # no alias, no merge: no cost
            measure(node)
        data = constructor.build(node) if node is not None else None
    except RecursionError as exc:  # PyYAML's own parser, where libyaml is missing
        raise ConfigError([ConfigIssue(display, "invalid YAML: nested too deeply")]) from exc
    except yaml.reader.ReaderError as exc:
        raise ConfigError([_reader_issue(text, display, exc)]) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = " ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError([ConfigIssue(display, f"invalid YAML: {message}", line=line)]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(display, f"invalid YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    return YamlDocument(path=path, data=data, node=node, json_like=constructor.json_like)


def _reader_issue(text: str, display: str, exc: yaml.reader.ReaderError) -> ConfigIssue:
    """A character YAML does not allow (NUL, other control characters), by line."""
    index = exc.position
    if _BYTE_POSITIONS:
        index = len(
            text.encode("utf-8", "surrogatepass")[: exc.position].decode("utf-8", "replace")
        )
    character = exc.character if isinstance(exc.character, int) else ord(exc.character)
    return ConfigIssue(
        display,
        f"invalid YAML: character U+{character:04X} is not allowed in YAML text; "
        f"in a double-quoted string, write it as \\u{character:04X}",
        line=line_at(text, index),
    )


def _non_json(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    """Where YAML produced something JSON cannot say (dates, binary, non-text keys)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                yield (loc, f"key {key!r} must be text; quote it")
            else:
                yield from _non_json(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_json(item, (*loc, index))
    elif not isinstance(value, str | int | float | bool) and value is not None:
        kind = type(value).__name__
        yield (loc, f"YAML read this as a {kind} ({value!r}); quote it to make it text")


def validate(doc: YamlDocument, model: type[M], display: str) -> tuple[M | None, list[ConfigIssue]]:
    """Validate the document against `model`; returns the model or every issue found."""
    if not doc.json_like:
        issues = [
            ConfigIssue(display, message, line=doc.line_of(loc), field=dotted(loc))
            for loc, message in _non_json(doc.data, ())
        ]
        if issues:
            return None, issues
    try:
        return model.model_validate(doc.data), []
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        issues = [_issue(doc, display, error) for error in errors[:MAX_ISSUES]]
        if len(errors) > MAX_ISSUES:
            more = f"and {len(errors) - MAX_ISSUES:,} more errors in this file, not listed"
            issues.append(ConfigIssue(display, more))
        return None, issues


def _issue(doc: YamlDocument, display: str, error: Any) -> ConfigIssue:
    kind = error["type"]
    loc = real_loc(doc.data, error["loc"], missing=kind == "missing")
    ctx = error.get("ctx") or {}
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        # A discriminated union: the discriminating field is what is wrong or missing.
        loc = (*loc, str(ctx.get("discriminator", "")).strip("'"))
    if kind == "union_tag_invalid":
        message = f"expected one of {ctx.get('expected_tags')} (got {_short(ctx.get('tag'))})"
    elif kind == "union_tag_not_found":
        message = "required field is missing"
    elif kind == "extra_forbidden":
        message = "unknown field"
    elif kind == "missing":
        message = "required field is missing"
    elif kind in _EXPECTED:
        message = f"expected {_EXPECTED[kind]} (got {_short(error.get('input'))})"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
        if "input" in error and kind not in ("value_error", "assertion_error"):
            message += f" (got {_short(error['input'])})"
    tag = None
    if len(loc) >= 2 and loc[0] == "tags" and isinstance(loc[1], int):
        name = doc.value_at(("tags", loc[1], "tag"))
        tag = name if isinstance(name, str) else f"#{loc[1] + 1}"
        field_loc = loc[2:]
    else:
        field_loc = loc
    return ConfigIssue(
        display, message, line=doc.line_of(loc), tag=tag, field=dotted(field_loc) or None
    )


_EXPECTED = {
    "model_type": "a mapping",
    "dict_type": "a mapping",
    "model_attributes_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
    "string_type": "text",
    "int_type": "a whole number",
    "bool_type": "true or false",
    "float_type": "a number",
}


def real_loc(data: Any, loc: Sequence[str | int], missing: bool = False) -> Loc:
    """Keep the parts of a pydantic error location that are keys of the data.

    Pydantic puts union members and validator names (`int`, `function-after[...]`) into
    locations; a person wants the path they wrote. For a missing field the last part is
    kept: it names what has to be added.
    """
    out: list[str | int] = []
    value = data
    for part in loc:
        in_dict = isinstance(value, dict) and part in value
        in_list = isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        if in_dict or in_list:
            value = value[part]
            out.append(part)
    if missing and loc and (not out or out[-1] != loc[-1]):
        out.append(loc[-1])
    return tuple(out)


def dotted(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
