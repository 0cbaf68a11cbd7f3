"""placement-reference: deployments name nodes and GPUs that exist, and say so when GPUs are shared."""

from __future__ import annotations

import difflib

from ..diagnostics import Severity
from ..spec.models import Deployment, Stack
from .context import Context
from .engine import rule


def _did_you_mean(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.5)
    return f" — did you mean '{close[0]}'?" if close else ""


@rule("placement-reference", "error", "placements name existing nodes and GPUs, and GPUs are not shared unnoticed",
      tags=("stack",))
def placement_reference(ctx: Context):
    users: dict[tuple[int, str], list[tuple[int, Deployment, tuple]]] = {}
    node_names = [n.name for n in ctx.rig.nodes]
    for i, dep in enumerate(ctx.rig.serve):
        seen_nodes: set[str] = set()
        for j, p in enumerate(dep.placement):
            ppath = ("serve", i, "placement", j)
            ni = ctx.node_index(p.node)
            if ni is None:
                yield placement_reference.finding(
                    f"deployment {dep.name} is placed on node '{p.node}', which is not in nodes "
                    f"({', '.join(node_names)}){_did_you_mean(p.node, node_names)}",
                    ppath + ("node",), tag="node")
                continue
            if p.node in seen_nodes:
                yield placement_reference.finding(
                    f"node {p.node} appears twice in the placement of {dep.name} — list each node once with all "
                    "its GPUs", ppath + ("node",), tag="duplicate")
                continue
            seen_nodes.add(p.node)
            node = ctx.rig.nodes[ni]
            ids = [g.id for g in node.gpus]
            chosen = ids if p.gpus is None else p.gpus
            for k, gid in enumerate(chosen):
                gpath = ppath + (("gpus", k) if p.gpus is not None else ("node",))
                if gid not in ids:
                    have = ", ".join(ids) if ids else "no GPUs"
                    yield placement_reference.finding(
                        f"GPU '{gid}' is not on node {node.name} (it has {have}){_did_you_mean(gid, ids)}",
                        gpath, tag="gpu")
                    continue
                if p.gpus is not None and p.gpus.index(gid) != k:
                    yield placement_reference.finding(
                        f"GPU {gid} is listed twice in the placement of {dep.name} on {node.name}",
                        gpath, tag="duplicate")
                    continue
                users.setdefault((ni, gid), []).append((i, dep, gpath))

    for (ni, gid), deps in users.items():
        if len(deps) < 2:
            continue
        label = f"{ctx.rig.nodes[ni].name}/{gid}"
        vllm_share = sum(d.gpu_memory_utilization for _, d, _ in deps if d.stack == Stack.vllm)
        others = any(d.stack != Stack.vllm for _, d, _ in deps)
        limit = 0.85 if others else 0.95  # leave the others (or the CUDA contexts) room
        names = ", ".join(d.name for _, d, _ in deps)
        i, dep, gpath = deps[-1]
        if vllm_share > limit:
            yield placement_reference.finding(
                f"{label} is shared by {names}; vLLM claims gpu_memory_utilization × total memory "
                f"({vllm_share:g} of it here) without subtracting other processes, so the next one to start runs "
                f"out of memory — give each deployment its own GPUs, or lower gpu_memory_utilization so the vLLM "
                f"shares add up to at most {limit:g}", gpath, tag="shared")
        else:
            yield placement_reference.finding(
                f"{label} is shared by {names}: their memory adds up on one GPU, but the memory rules check each "
                "deployment alone — make sure both fit together, or give each its own GPUs",
                gpath, tag="shared", severity=Severity.warning)
