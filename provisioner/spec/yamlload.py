"""YAML to plain Python data, keeping the position of every key and value.

ruamel.yaml's round-trip loader keeps positions but costs ~2 s for a 1,000-node
fleet; its composer with the C parser still builds a node graph we would throw
away. Here we drive ruamel's parser *event stream* (C extension when present)
and build dicts/lists directly, recording positions in a side table. That is
the deliberate loading path the fleet benchmark needs (see bench/validate.py).

Hardening: duplicate keys, alias expansion bombs, unknown tags, non-UTF-8
bytes, characters YAML forbids (control characters), nesting deeper than
``MAX_DEPTH`` and oversized files are reported as :class:`YamlError` with a
position.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import events as ev
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError

from .inputfile import MAX_INPUT_BYTES

try:  # the C parser is ~10x faster; fall back to the pure one
    from _ruamel_yaml import CParser as _Parser  # type: ignore[import-not-found]

    def _parser(text: str):
        return _Parser(io.StringIO(text))

except ImportError:  # pragma: no cover - depends on ruamel.yaml.clib
    from ruamel.yaml.main import YAML as _YAML

    def _parser(text: str):
        y = _YAML(typ="safe", pure=True)
        y.reader.stream = text  # type: ignore[union-attr]
        return y.parser


MAX_FILE_BYTES = MAX_INPUT_BYTES
MAX_EXPANDED_NODES = 2_000_000  # values that aliases stand for, counted once per alias use
# A rig spec nests about 7 levels (nodes[].board.slots[].shared_with_m2[]); the builder
# recurses once per level, so a bound far above that and far below Python's recursion
# limit turns "[[[[..." into a located error instead of a RecursionError.
MAX_DEPTH = 64

# What YAML 1.2 allows in a stream (spec 5.1, https://yaml.org/spec/1.2.2/#51-character-set);
# the same set ruamel's reader enforces, but it raises without a usable position.
_NOT_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class YamlError(Exception):
    """A user error in the YAML text, with a 1-based position."""

    def __init__(self, message: str, line: int = 1, column: int = 1):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


@dataclass
class Positions:
    """Where each key and value came from: id(container) -> {key: (kline, kcol, vline, vcol)}."""

    table: dict[int, dict[Any, tuple[int, int, int, int]]] = field(default_factory=dict)
    root: tuple[int, int] = (1, 1)

    def locate(self, data: Any, path: tuple, *, key: bool = False) -> tuple[int, int]:
        """Position for a path into ``data``: the deepest part that exists.

        With ``key=True`` a fully resolved path points at its key, which is
        where an editor should put the cursor for "wrong key" messages.
        """
        best, key_pos, node = self.root, None, data
        resolved = True
        for part in path:
            entry = self.table.get(id(node))
            if entry is None or part not in entry:
                resolved = False
                break
            kline, kcol, vline, vcol = entry[part]
            best, key_pos = (vline, vcol), (kline, kcol)
            node = node[part]
        if key and resolved and key_pos is not None:
            return key_pos
        return best


_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL_TRUE = {"true", "True", "TRUE"}
_BOOL_FALSE = {"false", "False", "FALSE"}
_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$")
_INT_HEX = re.compile(r"^0x[0-9a-fA-F_]+$")
_INT_OCT = re.compile(r"^0o[0-7_]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")


MAX_NUMBER_CHARS = 100


def _resolve_plain(value: str) -> Any:
    """YAML 1.2 core schema for untagged plain scalars (``yes``/``no`` stay strings)."""
    if _NULL.match(value):
        return None
    if value in _BOOL_TRUE:
        return True
    if value in _BOOL_FALSE:
        return False
    if _INT.match(value):
        return int(value.replace("_", ""))
    if _INT_HEX.match(value):
        return int(value[2:].replace("_", ""), 16)
    if _INT_OCT.match(value):
        return int(value[2:].replace("_", ""), 8)
    if _FLOAT.match(value) and any(c in value for c in ".eE"):
        return float(value.replace("_", ""))
    if _INF.match(value):
        return float("-inf") if value.startswith("-") else float("inf")
    if _NAN.match(value):
        return float("nan")
    return value


_TAGGED = {
    "tag:yaml.org,2002:str": str,
    "tag:yaml.org,2002:int": int,
    "tag:yaml.org,2002:float": float,
    "tag:yaml.org,2002:bool": lambda v: _resolve_plain(v) if v in _BOOL_TRUE | _BOOL_FALSE else v,
    "tag:yaml.org,2002:null": lambda v: None,
}


def _pos(mark) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


def decode(raw: bytes) -> str:
    """Bytes to text; a non-UTF-8 byte becomes a YamlError at its line and column."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise YamlError(
            f"file is not valid UTF-8: byte 0x{raw[exc.start]:02x} cannot be decoded; save the file as UTF-8",
            line,
            col,
        ) from None


def _line_col(text: str, idx: int) -> tuple[int, int]:
    return text.count("\n", 0, idx) + 1, idx - text.rfind("\n", 0, idx)


def check_characters(text: str) -> None:
    """Raise a located YamlError for the first character YAML does not allow."""
    bad = _NOT_PRINTABLE.search(text)
    if bad is None:
        return
    idx, ch = bad.start(), bad.group()
    line, col = _line_col(text, idx)
    if ch == "\x00":
        raise YamlError("file contains a NUL byte: is it a binary file?", line, col)
    code = f"U+{ord(ch):04X}"
    if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F:
        raise YamlError(f"control character {code} at {line}:{col}: YAML does not allow it in a file; remove it",
                        line, col)
    raise YamlError(f"character {code} at {line}:{col} is not allowed in YAML (a non-character or lone surrogate); "
                    "remove it", line, col)


def load(text: str) -> tuple[Any, Positions]:
    """Parse one YAML document into plain data and its positions."""
    check_characters(text)
    try:
        return _Builder(_parser(text)).build()
    except ReaderError as exc:  # pragma: no cover - check_characters finds these first
        raise YamlError(f"YAML reader error: {exc.reason}") from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        where = _pos(mark) if mark is not None else (1, 1)
        lines = text.splitlines()
        line_text = lines[where[0] - 1] if 0 < where[0] <= len(lines) else ""
        if "\t" in line_text[: where[1]] or "\\t" in problem:
            problem += " (a tab character: YAML forbids tabs for indentation; use spaces)"
        ctx = f" ({exc.context})" if exc.context and exc.problem else ""
        raise YamlError(f"YAML syntax error: {problem}{ctx}", *where) from None


class _Builder:
    def __init__(self, parser):
        self.parser = parser
        self.positions = Positions()
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.expanded = 0
        self.depth = 0

    def _next(self):
        return self.parser.get_event()

    def build(self) -> tuple[Any, Positions]:
        event = self._next()  # StreamStart
        event = self._next()
        if isinstance(event, ev.StreamEndEvent):
            return None, self.positions
        if not isinstance(event, ev.DocumentStartEvent):
            raise YamlError("expected a YAML document", *_pos(event.start_mark))
        event = self._next()
        self.positions.root = _pos(event.start_mark)
        data, _ = self._node(event)
        end = self._next()
        if not isinstance(end, ev.DocumentEndEvent):
            raise YamlError("unexpected content after the document", *_pos(end.start_mark))
        nxt = self._next()
        if isinstance(nxt, ev.DocumentStartEvent):
            raise YamlError(
                "the file holds more than one YAML document ('---'); a rig spec is one document",
                *_pos(nxt.start_mark),
            )
        return data, self.positions

    def _count(self, n: int, mark) -> None:
        self.expanded += n
        if self.expanded > MAX_EXPANDED_NODES:
            raise YamlError(
                f"aliases expand to more than {MAX_EXPANDED_NODES:,} values (an alias bomb?); "
                "remove the nested aliases",
                *_pos(mark),
            )

    def _node(self, event) -> tuple[Any, int]:
        """Build the value that starts with ``event``; returns (value, expanded size)."""
        if isinstance(event, ev.AliasEvent):
            if event.anchor not in self.anchors:
                raise YamlError(f"unknown alias '*{event.anchor}'", *_pos(event.start_mark))
            value, size = self.anchors[event.anchor]
            self._count(size, event.start_mark)
            return value, size
        if isinstance(event, ev.ScalarEvent):
            # values written out are bounded by the file size; only aliases multiply them
            value = self._scalar(event)
            size = 1
        elif isinstance(event, (ev.SequenceStartEvent, ev.MappingStartEvent)):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise YamlError(f"lists and mappings nest deeper than {MAX_DEPTH} levels (a rig spec needs fewer "
                                "than 10); is the file generated wrongly?", *_pos(event.start_mark))
            build = self._sequence if isinstance(event, ev.SequenceStartEvent) else self._mapping
            value, size = build(event)
            self.depth -= 1
        else:  # pragma: no cover - parser guarantees node events here
            raise YamlError("unexpected YAML event", *_pos(event.start_mark))
        if event.anchor:
            self.anchors[event.anchor] = (value, size)
        return value, size

    def _scalar(self, event) -> Any:
        tag = event.tag
        if tag in (None, "!") and event.implicit[0] and not event.style:
            text = event.value
            if len(text) > MAX_NUMBER_CHARS:
                # Python refuses to convert or print ints of more than 4300 digits
                # (CVE-2020-10735), and no field takes a number this long: the digits stay
                # text, which a number field then refuses at its position
                return text
            return _resolve_plain(text)
        if tag in (None, "!"):
            return event.value
        conv = _TAGGED.get(tag)
        if conv is None:
            raise YamlError(f"unsupported YAML tag '{tag}'", *_pos(event.start_mark))
        try:
            return conv(event.value)
        except ValueError:
            raise YamlError(f"'{event.value}' is not a valid {tag.rsplit(':', 1)[-1]}", *_pos(event.start_mark)) from None

    def _sequence(self, start) -> tuple[list, int]:
        self._check_tag(start, "seq")
        items: list = []
        where: dict[Any, tuple[int, int, int, int]] = {}
        size = 1
        while True:
            event = self._next()
            if isinstance(event, ev.SequenceEndEvent):
                break
            line, col = _pos(event.start_mark)
            value, n = self._node(event)
            where[len(items)] = (line, col, line, col)
            items.append(value)
            size += n
        self.positions.table[id(items)] = where
        return items, size

    def _mapping(self, start) -> tuple[dict, int]:
        self._check_tag(start, "map")
        result: dict = {}
        where: dict[Any, tuple[int, int, int, int]] = {}
        merges: list[dict] = []
        size = 1
        while True:
            event = self._next()
            if isinstance(event, ev.MappingEndEvent):
                break
            kpos = _pos(event.start_mark)
            if not isinstance(event, ev.ScalarEvent):
                raise YamlError("a mapping key must be a plain value, not a list or mapping", *kpos)
            key = self._scalar(event)
            vevent = self._next()
            vpos = _pos(vevent.start_mark)
            value, n = self._node(vevent)
            size += n
            if key == "<<" and not event.style:
                for m in value if isinstance(value, list) else [value]:
                    if not isinstance(m, dict):
                        raise YamlError("'<<' merges a mapping (or a list of mappings)", *vpos)
                    merges.append(m)
                continue
            if isinstance(key, float) or not isinstance(key, (str, int, bool)) and key is not None:
                raise YamlError(f"unsupported mapping key {key!r}", *kpos)
            if key in result:
                first = where[key]
                raise YamlError(
                    f"duplicate key '{key}' (first defined at line {first[0]}); "
                    "YAML keeps only one of them, remove the other",
                    *kpos,
                )
            result[key] = value
            where[key] = (*kpos, *vpos)
        for m in merges:
            sub = self.positions.table.get(id(m), {})
            for k, v in m.items():
                if k not in result:
                    result[k] = v
                    if k in sub:
                        where[k] = sub[k]
        self.positions.table[id(result)] = where
        return result, size

    @staticmethod
    def _check_tag(event, kind: str) -> None:
        if event.tag not in (None, "!", f"tag:yaml.org,2002:{kind}"):
            raise YamlError(f"unsupported YAML tag '{event.tag}'", *_pos(event.start_mark))
