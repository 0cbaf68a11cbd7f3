"""What a host should look like, from the rendered inventory (the data `rigctl apply` used).

The GPU expectations are the rendered host variables ``rigctl_gpu_required`` and
``rigctl_gpu_expected``, the same dict the ``gpu_checks`` role checks at apply
time: render owns the spec -> expectations mapping, verify only reads it. This
module adds what is needed to locate findings and the driver floor.
"""

from __future__ import annotations

from itertools import combinations

from ..rules.context import Context


def gpu_expected(host_vars: dict) -> dict | None:
    """``rigctl_gpu_expected`` where the host must have NVIDIA GPUs; None for no GPU checks (lab, CPU nodes)."""
    if not host_vars.get("rigctl_gpu_required"):
        return None
    return dict(host_vars.get("rigctl_gpu_expected") or {})


def nvlink_bridges(ctx: Context, node_index: int) -> dict[tuple[int, int], int]:
    """NVLink GPU index pair -> index of the bridge in the spec that joins them."""
    node = ctx.rig.nodes[node_index]
    index = {g.id: i for i, g in enumerate(node.gpus)}
    out: dict[tuple[int, int], int] = {}
    for bi, bridge in enumerate(node.nvlink):
        for pair in combinations(sorted(index[g] for g in bridge.gpus if g in index), 2):
            out.setdefault(pair, bi)
    return out


def min_driver_branch(ctx: Context, node_index: int) -> int | None:
    """The oldest driver branch that supports every GPU of the node (catalog), if known."""
    branches = [pg.entry.min_driver_branch for pg in ctx.gpus(node_index)
                if pg.entry is not None and pg.entry.min_driver_branch]
    return max(branches) if branches else None
