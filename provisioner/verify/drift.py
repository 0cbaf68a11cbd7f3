"""Drift between live GPU facts and the spec, as located diagnostics.

``probe.compare`` (the one comparison, shared with the gpu_checks role) finds
the problems; this module adds the driver floor and turns each problem into a
Diagnostic at the spec path of the node, GPU or NVLink bridge concerned.
"""

from __future__ import annotations

import re

from ..diagnostics import Diagnostic, Severity
from ..probe import compare
from ..rules.context import Context
from .expect import min_driver_branch, nvlink_bridges

RULE_OF_CHECK = {
    "gpu_count": "verify-gpu",
    "model": "verify-gpu",
    "memory": "verify-gpu",
    "pcie_width": "verify-pcie-width",
    "pcie_gen": "verify-pcie-gen",
    "power_limit": "verify-power-cap",
    "nvlink": "verify-nvlink",
    "driver": "verify-driver",
}


def gpu_problems(facts: dict, expected: dict) -> list[dict]:
    """``compare(facts, expected)`` plus the driver branch floor (``min_driver_branch``)."""
    problems = compare(facts, expected)
    floor = expected.get("min_driver_branch")
    version = facts.get("driver_version") or ""
    m = re.match(r"(\d+)", version)
    if floor and m and int(m.group(1)) < floor:
        problems.append({
            "check": "driver", "gpu": None, "expected": floor, "actual": version,
            "message": f"NVIDIA driver {version} is older than branch {floor}, the oldest that supports "
                       f"these GPUs (install branch {floor} or newer and reboot)"})
    return problems


def _path(ctx: Context, node_index: int, problem: dict, bridges: dict) -> tuple:
    node_path = ("nodes", node_index)
    gpu = problem.get("gpu")
    check = problem.get("check")
    if check == "nvlink" and isinstance(gpu, list) and len(gpu) == 2:
        bi = bridges.get(tuple(sorted(gpu)))
        return node_path + (("nvlink", bi) if bi is not None else ("nvlink",))
    gpus = ctx.rig.nodes[node_index].gpus
    if not isinstance(gpu, int) or not 0 <= gpu < len(gpus):
        return node_path + ("gpus",)
    field = {"model": "model", "memory": "model", "power_limit": "power_limit_w",
             "pcie_width": "slot", "pcie_gen": "slot"}.get(check)
    if field == "slot" and gpus[gpu].slot is None:
        field = None
    return node_path + ("gpus", gpu) + ((field,) if field else ())


def problem_diagnostics(ctx: Context, node_index: int, problems: list[dict],
                        bridges: dict | None = None) -> list[Diagnostic]:
    """One error per problem: rule ``verify-<check>[<node>]``, message prefixed with the node."""
    name = ctx.rig.nodes[node_index].name
    return [Diagnostic(f"{RULE_OF_CHECK.get(p.get('check'), 'verify-gpu')}[{name}]", Severity.error,
                       f"{name}: {p['message']}", _path(ctx, node_index, p, bridges or {}),
                       data={"problem": p})
            for p in problems]


def unreachable(ctx: Context, node_index: int, reason: str) -> Diagnostic:
    node = ctx.rig.nodes[node_index]
    path = ("nodes", node_index) + (("connection",) if node.connection else ())
    return Diagnostic(f"verify-host[{node.name}]", Severity.error, f"{node.name}: unreachable over SSH: {reason}",
                      path, hint="check the address, user and key in the inventory, and that sshd runs")


def facts_diagnostics(ctx: Context, node_index: int, outcome: dict, expected: dict | None) -> list[Diagnostic]:
    """Diagnostics for one node from a probe outcome ({facts} | {unavailable} | {unreachable} | {error}).

    ``expected`` is the node's ``rigctl_gpu_expected`` (see expect.gpu_expected); None: no GPU checks.
    """
    node = ctx.rig.nodes[node_index]
    if "unreachable" in outcome:
        return [unreachable(ctx, node_index, outcome["unreachable"])]
    if expected is None:
        return []
    n = expected.get("gpu_count", len(node.gpus))
    if "facts" not in outcome:
        why = outcome.get("unavailable") or outcome.get("error") or "no answer"
        return [Diagnostic(f"verify-driver[{node.name}]", Severity.error,
                           f"{node.name}: spec puts {n} GPU{'s' if n != 1 else ''} here, but the probe got no "
                           f"GPU facts: {why}", ("nodes", node_index, "gpus"))]
    expected = dict(expected)
    floor = min_driver_branch(ctx, node_index)
    if floor and "min_driver_branch" not in expected:
        expected["min_driver_branch"] = floor
    return problem_diagnostics(ctx, node_index, gpu_problems(outcome["facts"], expected),
                               nvlink_bridges(ctx, node_index))
