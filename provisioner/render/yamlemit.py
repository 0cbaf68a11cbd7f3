"""Block-style YAML for rendered variables, byte for byte what PyYAML's dump writes, faster.

Render writes one host_vars file per node; PyYAML's pure-Python pipeline (representer,
serializer, event-driven emitter) spends about 15 ms on each, which made render of a
10,000-node fleet slower than yamllint reading the spec (issue 10). This module walks the
data directly and drives PyYAML's own Emitter for indentation and scalar writing, so quoting,
escaping and line folding stay PyYAML's; it skips the node graph and the event queue, and
writes the common scalar (plain, one word) itself after a cached check.

``dump(data, fallback=..., tags=...)`` returns what
``yaml.dump(data, Dumper=SafeDumper + tags, sort_keys=True, default_flow_style=False,
allow_unicode=True, width=120, explicit_start=True)`` returns when that dumper indents
sequences under their key; for anything outside the shapes it knows (other types, a
mapping that needs a complex key, an object reached twice, which PyYAML writes as an
anchor), it returns ``fallback(data)``, the PyYAML call itself.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from operator import itemgetter

from yaml.emitter import Emitter
from yaml.events import ScalarEvent
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

_STR, _INT, _FLOAT, _BOOL, _NULL = (f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null"))
_WIDTH = 120
_SIMPLE_KEY_MAX = 128 - len("!!str")  # PyYAML counts the (unwritten) !!str tag in a simple key's length
_CACHE_MAX = 100_000


class _Unsupported(Exception):
    """The data has a shape this writer does not reproduce; PyYAML writes it."""


_resolver = Resolver()
# text -> _Writer._facts(text): most scalars repeat (keys, paths, flags); bounded, as every
# node's name is new
_facts: dict[str, tuple[str, bool, bool]] = {}


def _resolve(text: str) -> str:
    return _resolver.resolve(ScalarNode, text, (True, False))


class _Writer(Emitter):
    def __init__(self, tags: dict[type, str]):
        super().__init__(io.StringIO(), indent=2, width=_WIDTH, allow_unicode=True)
        self.tags = tags
        self._tags: dict[str, str] = {}  # tag -> as written
        self.seen: set[int] = set()

    # ------------------------------------------------------------ document
    def document(self, data) -> str:
        if type(data) is not dict or not data:
            raise _Unsupported  # a root scalar has PyYAML's open-ended '...' rules
        self.tag_prefixes = self.DEFAULT_TAG_PREFIXES.copy()  # as a document start sets them
        self.write_indicator("---", True)
        self.root_context = False
        self.node(data)
        self.indent = None
        self.write_indent()
        return self.stream.getvalue()

    def node(self, value) -> None:
        kind = type(value)
        if kind is dict or kind is list:
            if id(value) in self.seen:
                raise _Unsupported  # PyYAML writes an anchor and an alias
            self.seen.add(id(value))
            if not value:
                self.empty("{" if kind is dict else "[", "}" if kind is dict else "]")
            elif kind is dict:
                self.block_mapping(value)
            else:
                self.block_sequence(value)
        else:
            self.scalar(*self.represent(value))

    def block_mapping(self, mapping: dict) -> None:
        if not all(type(k) is str and 0 < len(k) < _SIMPLE_KEY_MAX for k in mapping):
            raise _Unsupported  # PyYAML sorts other keys differently, or writes '? key'
        self.increase_indent(flow=False)
        for key, value in sorted(mapping.items(), key=itemgetter(0)):  # keys are unique: as PyYAML sorts items
            self.write_indent()
            self.simple_key_context = True
            self.scalar(_STR, key, key=True)
            self.simple_key_context = False
            self.write_indicator(":", False)
            self.node(value)
        self.indent = self.indents.pop()

    def block_sequence(self, items: list) -> None:
        # the render dumper indents sequences under their key (indentless=False)
        self.increase_indent(flow=False, indentless=False)
        for item in items:
            self.write_indent()
            self.write_indicator("-", True, indention=True)
            self.node(item)
        self.indent = self.indents.pop()

    def empty(self, start: str, end: str) -> None:
        self.write_indicator(start, True, whitespace=True)
        self.write_indicator(end, False)

    def represent(self, value) -> tuple[str, str]:
        """(tag, text) as PyYAML's SafeRepresenter (plus ``tags``) gives them."""
        kind = type(value)
        if kind is str:
            return _STR, value
        if kind is bool:
            return _BOOL, "true" if value else "false"
        if kind is int:
            return _INT, str(value)
        if value is None:
            return _NULL, "null"
        if kind is float:
            if value != value:
                return _FLOAT, ".nan"
            if value in (float("inf"), float("-inf")):
                return _FLOAT, ".inf" if value > 0 else "-.inf"
            text = repr(value).lower()
            return _FLOAT, text.replace("e", ".0e", 1) if "." not in text and "e" in text else text
        tag = self.tags.get(kind)
        if tag is None:
            raise _Unsupported
        return tag, str(value)

    def scalar(self, tag: str, text: str, key: bool = False) -> None:
        facts = _facts.get(text)
        if facts is None:
            facts = self._facts(text)
        resolved, plain_word, quoted_word = facts
        if tag[0] != "!":  # a standard tag (str, int, ...)
            if plain_word and resolved == tag:
                # plain and untagged: what write_plain does for a word without spaces or breaks
                self._write(text if self.whitespace else " " + text)
                return
        elif quoted_word and not key:
            # a custom tag (!unsafe) is never implicit, so PyYAML picks single quotes: what
            # process_tag and write_single_quoted do for a word without spaces, quotes or breaks
            prepared = self._tags.get(tag) or self._tags.setdefault(tag, self.prepare_tag(tag))
            self._write(f"{prepared} '{text}'" if self.whitespace else f" {prepared} '{text}'")
            return
        if key:
            analysis = self.analyze_scalar(text)
            if analysis.empty or analysis.multiline:
                raise _Unsupported  # PyYAML writes it as a complex key
        # as PyYAML's serializer and emitter do for one scalar event (expect_node, expect_scalar)
        self.event = ScalarEvent(None, tag, (resolved == tag, tag == _STR), text)
        self.analysis, self.style, self.prepared_tag = None, None, None
        self.process_tag()
        self.increase_indent(flow=True)
        self.process_scalar()
        self.indent = self.indents.pop()
        self.event = None

    def _write(self, data: str) -> None:
        self.column += len(data)
        self.whitespace = False
        self.indention = False
        self.stream.write(data)

    def _facts(self, text: str) -> tuple[str, bool, bool]:
        """(tag the text resolves to as a plain scalar, whether PyYAML writes it as one plain
        word, whether it writes it as one single-quoted word when tagged)."""
        a = self.analyze_scalar(text)
        word = not a.multiline and not any(c in text for c in " '\x85\u2028\u2029")
        if len(_facts) >= _CACHE_MAX:
            _facts.clear()
        facts = _facts[text] = (_resolve(text), word and bool(text) and a.allow_block_plain,
                                word and a.allow_single_quoted)
        return facts


def dump(data, *, fallback: Callable[[object], str], tags: dict[type, str] | None = None) -> str:
    """``data`` as PyYAML's block-style dump writes it; ``fallback(data)`` for other shapes."""
    try:
        return _Writer(tags or {}).document(data)
    except _Unsupported:
        return fallback(data)

