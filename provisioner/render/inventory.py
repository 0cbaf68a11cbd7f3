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

from ..yamlio import safe_load


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
    if not p.is_file():
        raise InventoryError(f"{p}: no such inventory file (expected inventories/<env>/hosts.yml)")
    try:
        data = safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InventoryError(f"{p}: not valid YAML: {exc}".splitlines()[0]) from None
    top = data.get("all", data) if isinstance(data, dict) else None
    if not isinstance(top, dict) or not set(top) <= {"hosts", "vars", "children"}:
        raise InventoryError(f"{p}: expected 'all:' with 'hosts:' and/or 'vars:'")
    if top.get("children"):
        raise InventoryError(f"{p}: groups come from the rig spec; give only 'all: {{hosts, vars}}'")
    hosts = top.get("hosts") or {}
    if not isinstance(hosts, dict) or not all(isinstance(v, (dict, type(None))) for v in hosts.values()):
        raise InventoryError(f"{p}: 'hosts' must map node names to variables")
    return InventoryOverrides(str(p), {k: dict(v or {}) for k, v in hosts.items()}, dict(top.get("vars") or {}))


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
