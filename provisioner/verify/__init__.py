"""Check live hosts against the spec and the plan: services, ports, endpoints, GPUs (drift).

``verify`` runs the pytest-testinfra suites shipped in ``suites/`` over SSH and
returns diagnostics at spec paths; ``live_facts`` runs only the GPU probe, for
``rigctl probe -i`` and ``rigctl plan --refresh``.
"""

from __future__ import annotations

from ..diagnostics import Diagnostic
from .drift import facts_diagnostics
from .expect import gpu_expected
from .inventory import Inventory, InventoryError, effective_inventory, load_inventory
from .runner import VerifyResult, run_verify


def verify(ctx, plan, inventory: Inventory | str, ssh_config: str | None = None,
           limit: list[str] | None = None, **options) -> list[Diagnostic]:
    """Diagnostics for every difference between the live hosts and spec + plan (none: all good)."""
    return run_verify(ctx, plan, inventory, ssh_config, limit, **options).diagnostics


def _inventory(ctx, inventory) -> Inventory:
    if isinstance(inventory, Inventory):
        return inventory
    if ctx is None:
        return load_inventory(inventory)
    from ..plan import build_plan

    return effective_inventory(ctx, build_plan(ctx), inventory)


def live_facts(ctx, inventory: Inventory | str | None, ssh_config: str | None = None,
               limit: list[str] | None = None) -> dict[str, dict]:
    """Node -> probe outcome: {"facts": ...} or {"unavailable" | "unreachable" | "error": reason}.

    With a ``ctx``, the spec's nodes reached as `rigctl apply` reaches them
    (``inventory`` = inventories/<env>/ overrides, or None); without, every host
    of the Ansible inventory ``inventory``. Compare with ``drift_diagnostics``.
    """
    from .remote_probe import probe_hosts
    from .ssh import SshSession

    hosts = _inventory(ctx, inventory).select(limit)
    if ctx is not None:  # spec nodes only, in spec order
        hosts = sorted((h for h in hosts if ctx.node_index(h.name) is not None), key=lambda h: ctx.node_index(h.name))
    with SshSession(hosts, ssh_config) as session:
        return probe_hosts(session, [h.name for h in hosts])


def drift_diagnostics(ctx, outcomes: dict[str, dict], inventory: Inventory | str | None = None) -> list[Diagnostic]:
    """GPU drift (count, model, memory, PCIe, power cap, NVLink, driver) of ``live_facts`` outcomes."""
    inv = _inventory(ctx, inventory)
    out: list[Diagnostic] = []
    for name, outcome in outcomes.items():
        ni = ctx.node_index(name)
        if ni is not None and name in inv.hosts:
            out += facts_diagnostics(ctx, ni, outcome, gpu_expected(inv.hosts[name].vars))
    return out


__all__ = ["verify", "run_verify", "VerifyResult", "live_facts", "drift_diagnostics",
           "load_inventory", "Inventory", "InventoryError"]
