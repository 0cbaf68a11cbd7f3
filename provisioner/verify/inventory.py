"""The hosts verify and probe connect to, as `rigctl apply` reaches them.

``effective_inventory`` renders the spec + plan + inventory overrides
(inventories/<env>/) exactly as apply does and reads the rendered inventory;
``load_inventory`` reads any Ansible inventory. Ansible itself parses it (ini or
YAML, group_vars/ and host_vars/ beside it) and templates the connection
variables (e.g. a key path from ``lookup('ansible.builtin.env', ...)``).
"""

from __future__ import annotations

import shlex
import warnings
from dataclasses import dataclass, field
from pathlib import Path


class InventoryError(Exception):
    """The inventory cannot be read; ``str(exc)`` is one line for the user."""


@dataclass(frozen=True)
class InventoryHost:
    name: str  # inventory hostname = node name in the spec
    address: str  # ansible_host, else the name
    user: str | None = None
    port: int | None = None
    key_file: str | None = None
    ssh_options: tuple[str, ...] = ()  # "-o K=V" options from ansible_ssh_common_args/extra_args
    python: str = "python3"
    vars: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Inventory:
    source: str
    hosts: dict[str, InventoryHost]

    def select(self, limit: list[str] | None) -> list[InventoryHost]:
        """Hosts in inventory order, restricted to ``limit`` names when given."""
        if not limit:
            return list(self.hosts.values())
        unknown = [n for n in limit if n not in self.hosts]
        if unknown:
            raise InventoryError(f"--limit {', '.join(unknown)}: not in inventory {self.source} "
                                 f"(hosts: {', '.join(self.hosts) or 'none'})")
        return [h for n, h in self.hosts.items() if n in limit]


def _ssh_options(*args: str | None) -> tuple[str, ...]:
    """'-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null' -> ('StrictHostKeyChecking=no', ...)."""
    out: list[str] = []
    for text in args:
        if not text:
            continue
        words = shlex.split(str(text))
        i = 0
        while i < len(words):
            w = words[i]
            if w == "-o" and i + 1 < len(words):
                out.append(words[i + 1])
                i += 2
                continue
            if w.startswith("-o") and len(w) > 2:
                out.append(w[2:])
            i += 1
    return tuple(out)


def _python(interpreter) -> str:
    text = str(interpreter or "")
    return "python3" if not text or text.startswith("auto") or "{{" in text else text


def load_inventory(path: str | Path) -> Inventory:
    """Parse ``path`` with Ansible's own inventory code; raise InventoryError for the user."""
    p = Path(path)
    if not p.exists():
        raise InventoryError(f"inventory {path} does not exist")
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import init_plugin_loader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    try:
        with warnings.catch_warnings():  # "already configured" on a second inventory in one process
            warnings.simplefilter("ignore")
            init_plugin_loader()
        loader = DataLoader()
        manager = InventoryManager(loader=loader, sources=[str(p)])
        variables = VariableManager(loader=loader, inventory=manager)
        hosts: dict[str, InventoryHost] = {}
        for h in manager.get_hosts():
            raw = variables.get_vars(host=h, include_hostvars=False)
            templar = Templar(loader=loader, variables=raw)
            v = {k: templar.template(raw[k]) for k in raw if k.startswith("ansible_") and k != "ansible_facts"}
            v.update({k: raw[k] for k in raw if k.startswith("rigctl_")})
            port = v.get("ansible_port") or v.get("ansible_ssh_port")
            hosts[h.name] = InventoryHost(
                name=h.name,
                address=str(v.get("ansible_host") or v.get("ansible_ssh_host") or h.name),
                user=v.get("ansible_user") or v.get("ansible_ssh_user"),
                port=int(port) if port else None,
                key_file=v.get("ansible_ssh_private_key_file") or v.get("ansible_private_key_file"),
                ssh_options=_ssh_options(v.get("ansible_ssh_common_args"), v.get("ansible_ssh_extra_args")),
                python=_python(v.get("ansible_python_interpreter")),
                vars={k: v[k] for k in v if k.startswith("rigctl_")},
            )
    except (AnsibleError, ValueError) as exc:
        raise InventoryError(f"inventory {path}: {' '.join(str(exc).split())}") from None
    if not hosts:
        raise InventoryError(f"inventory {path} lists no hosts")
    return Inventory(str(path), hosts)


def effective_inventory(ctx, plan, overrides: str | Path | None = None) -> Inventory:
    """The inventory `rigctl apply` renders from spec, plan and inventories/<env>/, read back.

    Host variables include the rendered ``rigctl_*`` data (services, deploy mode,
    GPU expectations). Raises InventoryError for a bad override file.
    """
    import tempfile

    from ..render import InventoryError as RenderInventoryError
    from ..render import load_overrides, render_project

    try:
        ov = load_overrides(overrides)
        files = render_project(ctx, plan, ov)
    except RenderInventoryError as exc:
        raise InventoryError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="rigctl-inventory-") as tmp:
        for f in files:
            if f.path.startswith("inventory/"):
                target = Path(tmp) / f.path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(f.content, encoding="utf-8")
        inv = load_inventory(Path(tmp) / "inventory" / "hosts.yml")
    inv.source = str(overrides) if overrides else f"{ctx.file} (no inventory overrides)"
    return inv
