"""Inventory overrides: inventories/<env>/hosts.yml changes how nodes are reached.

The file is an ordinary Ansible YAML inventory (``all: {hosts: …, vars: …}``), so it
also works on its own. ``ansible_*`` keys are connection settings and go to the rendered
inventory; other keys (``rigctl_artifacts_dir``…) override the rendered variables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..spec.inputfile import InputFileError, read_bounded
from ..spec.yamlload import YamlError, check_characters, decode
from ..yamlio import SafeLoader


class InventoryError(Exception):
    """A user error in an inventory override file (message is one line)."""


@dataclass
class InventoryOverrides:
    source: str | None = None
    hosts: dict[str, dict] = field(default_factory=dict)  # node -> vars
    vars: dict = field(default_factory=dict)  # applies to every node

    def address(self, node: str) -> str | None:
        return self.hosts.get(node, {}).get("ansible_host")


def load_overrides(path: str | Path | None) -> InventoryOverrides:
    """Read inventories/<env>/ (a directory holding hosts.yml) or a hosts.yml file."""
    if path is None:
        return InventoryOverrides()
    p = Path(path)
    if p.is_dir():
        p = p / "hosts.yml"
    if not p.exists():
        raise InventoryError(f"{p}: no such inventory file (expected inventories/<env>/hosts.yml)")
    root = _compose(p)
    try:
        data = _construct(root) if root is not None else {}
    except yaml.YAMLError as exc:
        raise InventoryError(_yaml_message(p, exc)) from None
    data = {} if data is None else data
    top, top_node = (data.get("all", data), _child(root, "all") or root) if isinstance(data, dict) else (None, root)
    if not isinstance(top, dict) or not set(top) <= {"hosts", "vars", "children"}:
        raise InventoryError(f"{_at(p, top_node)}: expected 'all:' with 'hosts:' and/or 'vars:'")
    if top.get("children"):
        raise InventoryError(f"{_at(p, _child(top_node, 'children'))}: groups come from the rig spec; "
                             "give only 'all: {hosts, vars}'")
    hosts = top.get("hosts") or {}
    hosts_node = _child(top_node, "hosts")
    if not isinstance(hosts, dict):
        raise InventoryError(f"{_at(p, hosts_node)}: 'hosts' must map node names to variables, "
                             f"not {_kind(hosts)}")
    for name, hvars in hosts.items():
        where = _at(p, _child(hosts_node, name, key=True))
        if not isinstance(name, str):
            raise InventoryError(f"{where}: host name {name!r} must be a node name (text), not {_kind(name)}")
        if not isinstance(hvars, (dict, type(None))):
            raise InventoryError(f"{where}: host '{name}' must map variable names to values, not {_kind(hvars)}")
        _check_var_names(p, hvars or {}, _child(hosts_node, name), f"host '{name}'")
    hvars_all = top.get("vars") or {}
    vars_node = _child(top_node, "vars")
    if not isinstance(hvars_all, dict):
        raise InventoryError(f"{_at(p, vars_node)}: 'vars' must map variable names to values, "
                             f"not {_kind(hvars_all)}")
    _check_var_names(p, hvars_all, vars_node, "'vars'")
    return InventoryOverrides(str(p), {k: dict(v or {}) for k, v in hosts.items()}, dict(hvars_all))


# ------------------------------------------------------------------ reading, with positions
#
# The file is Ansible's YAML (1.1: `yes` is true), so PyYAML reads it as Ansible will; it is
# composed first, with positions, so a wrong shape is reported at its line. Reading is
# bounded like the spec's, and nesting is checked on the event stream before PyYAML's
# recursive composer sees it.

_MAX_DEPTH = 64


def _compose(p: Path):
    try:
        text = decode(read_bounded(p, what="inventory"))
        check_characters(text)
    except InputFileError as exc:
        raise InventoryError(f"{p}: {exc.message}") from None
    except YamlError as exc:
        raise InventoryError(f"{p}:{exc.line}:{exc.column}: {exc.message}") from None
    try:
        depth = 0
        for event in yaml.parse(text, Loader=SafeLoader):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > _MAX_DEPTH:
                    m = event.start_mark
                    raise InventoryError(f"{p}:{m.line + 1}:{m.column + 1}: lists and mappings nest deeper than "
                                         f"{_MAX_DEPTH} levels; an inventory needs about 4")
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
        return yaml.compose(text, Loader=SafeLoader)
    except yaml.YAMLError as exc:
        raise InventoryError(_yaml_message(p, exc)) from None


def _construct(node):
    loader = SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _yaml_message(p: Path, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc).splitlines()[0]
    return f"{where}: not valid YAML: {problem}"


def _child(node, name, *, key: bool = False):
    """The value node (with key=True: the key node) under ``name`` of a mapping node.

    A key that is not text (`yes:`, `1:`) is found by its place among the keys, since
    its YAML spelling differs from the constructed value."""
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and isinstance(name, str) and k.value == name:
            return k if key else v
    if not isinstance(name, str):
        for k, v in node.value:
            if _construct(k) == name:
                return k if key else v
    return None


def _at(p: Path, node) -> str:
    if node is None:
        return str(p)
    return f"{p}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def _kind(value) -> str:
    return {list: "a list", str: "text", int: "a number", float: "a number", bool: "true/false"}.get(
        type(value), type(value).__name__)


def _check_var_names(p: Path, values: dict, node, owner: str) -> None:
    for k in values:
        if not isinstance(k, str):
            raise InventoryError(f"{_at(p, _child(node, k, key=True))}: {owner}: variable name {k!r} "
                                 f"must be text, not {_kind(k)}")


def check_nodes(ov: InventoryOverrides, nodes: list[str]) -> None:
    unknown = sorted(set(ov.hosts) - set(nodes))
    if unknown:
        raise InventoryError(f"{ov.source}: host(s) {', '.join(unknown)} are not nodes of the rig spec "
                             f"(nodes: {', '.join(nodes)})")


_SSH_ARGS = ("ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args")
_KEY_CHECKING = ("ansible_host_key_checking", "ansible_ssh_host_key_checking")
_NO_KEY_CHECK = re.compile(r"StrictHostKeyChecking\s*[= ]\s*no\b", re.IGNORECASE)


def split(values: dict) -> tuple[dict, dict]:
    """(connection vars ansible_*, other vars).

    ssh options that switch off host key checking also get ansible_host_key_checking:
    false. Plain ssh obeys the options, but Mitogen (the rendered strategy) checks host
    keys itself and puts its own StrictHostKeyChecking ahead of them; this keeps the
    inventory meaning what it says under both."""
    conn = {k: v for k, v in values.items() if k.startswith("ansible_")}
    if not any(k in conn for k in _KEY_CHECKING) and any(
            _NO_KEY_CHECK.search(str(conn.get(k) or "")) for k in _SSH_ARGS):
        conn["ansible_host_key_checking"] = False
    return conn, {k: v for k, v in values.items() if not k.startswith("ansible_")}
