"""Check live hosts against the spec and the plan: services, ports, endpoints, GPUs (drift).

``verify`` runs the pytest-testinfra suites shipped in ``suites/`` over SSH and
returns diagnostics at spec paths; ``live_facts`` runs only the GPU probe, for
``rigctl probe -i`` and ``rigctl plan --refresh``.
"""

from __future__ import annotations

from pathlib import Path

from ..diagnostics import Diagnostic
from .drift import facts_diagnostics
from .inventory import Inventory, InventoryError, load_inventory
from .runner import VerifyResult, run_verify


def verify(ctx, plan, inventory: Inventory | str, ssh_config: str | None = None,
           limit: list[str] | None = None, **options) -> list[Diagnostic]:
    """Diagnostics for every difference between the live hosts and spec + plan (none: all good)."""
    return run_verify(ctx, plan, inventory, ssh_config, limit, **options).diagnostics


def live_facts(ctx, inventory: Inventory | str, ssh_config: str | None = None,
               limit: list[str] | None = None) -> dict[str, dict]:
    """Node -> probe outcome: {"facts": ...} or {"unavailable" | "unreachable" | "error": reason}.

    Covers the spec's nodes that are in the inventory (all inventory hosts when
    ``ctx`` is None). ``drift_diagnostics(ctx, outcomes)`` compares them with the spec.
    """
    from .remote_probe import probe_hosts
    from .ssh import SshSession

    inv = load_inventory(inventory) if isinstance(inventory, (str, Path)) else inventory
    hosts = [h for h in inv.select(limit) if ctx is None or ctx.node_index(h.name) is not None]
    with SshSession(hosts, ssh_config) as session:
        return probe_hosts(session, [h.name for h in hosts])


def drift_diagnostics(ctx, outcomes: dict[str, dict]) -> list[Diagnostic]:
    """GPU drift (count, model, memory, PCIe, power cap, NVLink, driver) of ``live_facts`` results."""
    out: list[Diagnostic] = []
    for name, outcome in outcomes.items():
        ni = ctx.node_index(name)
        if ni is not None:
            out += facts_diagnostics(ctx, ni, outcome)
    return out


__all__ = ["verify", "run_verify", "VerifyResult", "live_facts", "drift_diagnostics",
           "load_inventory", "Inventory", "InventoryError"]
