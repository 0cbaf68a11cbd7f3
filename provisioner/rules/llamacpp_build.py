"""llamacpp-build: rigctl can build llama.cpp for every GPU a native llama.cpp service's node has.

Native llama.cpp on Linux runs rigctl's own build (plan/engines.py, role llamacpp_build): CUDA
for the architectures the catalog's compute_capability names, or CPU. A GPU without a compute
capability (an inline gpu_models entry that leaves it out) or from another vendor (AMD, Intel,
Apple on Linux) has no build, and the plan would otherwise name one that cannot drive it.
"""

from __future__ import annotations

from ..spec.models import Stack
from .context import Context
from .engine import rule

LLAMACPP = (Stack.llamacpp, Stack.llamacpp_rpc)


def _native_linux_nodes(ctx: Context) -> list[int]:
    """Indices of the Linux nodes that run a native llama.cpp service (plan/images.py decides)."""
    if ctx.rig.deploy_mode == "container":
        return []
    names = {n.name for dep in ctx.rig.serve if dep.stack in LLAMACPP for n in ctx.deployment_nodes(dep)}
    return [i for i, n in enumerate(ctx.rig.nodes) if n.name in names and n.os != "macos"]


@rule("llamacpp-build", "error", "rigctl can build native llama.cpp for the GPUs of its Linux nodes",
      tags=("stack", "llamacpp"))
def llamacpp_build(ctx: Context):
    for ni in _native_linux_nodes(ctx):
        node = ctx.rig.nodes[ni]
        for gi, g in enumerate(node.gpus):
            entry = ctx.gpu_entry(g, node)
            if entry is None:
                continue  # unknown-gpu says so
            where = ("nodes", ni, "gpus", gi, "model")
            if entry.vendor != "nvidia":
                yield llamacpp_build.finding(
                    f"node {node.name} runs native llama.cpp on {entry.name} ({entry.vendor}), and rigctl builds "
                    "llama.cpp for NVIDIA GPUs (CUDA) and CPUs only",
                    where, tag="vendor",
                    hint="set deploy_mode: container and serve[].image to a llama.cpp image for this GPU, "
                         "or point rigctl_artifacts_dir (inventory) at a build of your own")
            elif not entry.compute_capability:
                yield llamacpp_build.finding(
                    f"node {node.name}: {entry.name} has no compute_capability, so rigctl cannot tell which CUDA "
                    "architecture to build llama.cpp for",
                    where, tag="cuda-arch",
                    hint=f"add compute_capability (e.g. \"8.6\", from nvidia-smi --query-gpu=compute_cap) "
                         f"to the gpu_models entry {g.model}")
