"""driver-architecture: each GPU architecture's driver, CUDA and OS needs, and which stacks run on it.

Sources: CUDA toolkit/driver table (https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/),
open kernel modules (https://developer.nvidia.com/blog/nvidia-transitions-fully-towards-open-source-gpu-kernel-modules/);
more in docs/driver-architecture.md.
"""

from __future__ import annotations

from ..diagnostics import Severity
from ..spec.models import Deployment, Stack
from .context import Context
from .engine import rule
from .stack import compute_capability, short_name, stack_name

CUDA_ONLY_STACKS = (Stack.vllm, Stack.tabbyapi, Stack.petals)
OLLAMA_MIN_CC = 5.0  # https://github.com/ollama/ollama/blob/main/docs/gpu.mdx
PROPRIETARY_ONLY_ARCHS = ("kepler", "maxwell", "pascal", "volta")  # no open kernel modules (NVIDIA blog above)
VLLM_MIN_CC = 7.5  # https://github.com/vllm-project/vllm/blob/main/docs/getting_started/installation/gpu.cuda.inc.md


@rule("driver-architecture", "error",
      "each GPU's architecture has a driver, OS and stack that can run it", tags=("stack", "driver"))
def driver_architecture(ctx: Context):
    for ni, node in enumerate(ctx.rig.nodes):
        gpus = [pg for pg in ctx.gpus(ni) if pg.entry is not None]
        nvidia = [pg for pg in gpus if pg.entry.vendor == "nvidia"]
        apple = [pg for pg in gpus if pg.entry.vendor == "apple"]
        if node.os == "macos" and nvidia:
            yield driver_architecture.finding(
                f"node {node.name} runs macOS but holds {len(nvidia)}× {short_name(nvidia[0])}: NVIDIA ships no "
                "driver or CUDA for current macOS — install debian-12 or ubuntu-24.04 on this node",
                ("nodes", ni, "os"), tag="macos-nvidia")
        if node.os != "macos" and apple:
            yield driver_architecture.finding(
                f"{apple[0].label} is an {short_name(apple[0])}, which only runs macOS (Metal), but node {node.name} "
                f"has os {node.os} — set os: macos",
                ("nodes", ni, "os"), tag="apple-os")

        blackwell = [pg for pg in nvidia if pg.entry.open_kernel_modules_required]
        proprietary = [pg for pg in nvidia if pg.entry.architecture in PROPRIETARY_ONLY_ARCHS]
        if blackwell and proprietary:
            yield driver_architecture.finding(
                f"node {node.name} mixes {short_name(blackwell[0])} ({blackwell[0].entry.architecture}, open kernel "
                f"modules only) with {short_name(proprietary[0])} ({proprietary[0].entry.architecture}, proprietary "
                "modules only): one driver cannot run both — move one of them to another node",
                proprietary[0].path + ("model",), tag="kernel-modules")
        elif blackwell and node.os != "macos":
            e = blackwell[0].entry
            sm = f", sm_{e.compute_capability.replace('.', '')}" if e.compute_capability else ""
            distro = (" (Debian 12's own nvidia-driver is the 535 series and cannot drive it; rigctl uses NVIDIA's "
                      "CUDA repository)") if node.os == "debian-12" else ""
            yield driver_architecture.finding(
                f"{blackwell[0].label} ({short_name(blackwell[0])}, {e.architecture}{sm}): node {node.name} needs driver R{e.min_driver_branch}+ with the open kernel modules and CUDA "
                f"≥ {e.min_cuda or '12.8'}{distro}",
                blackwell[0].path + ("model",), tag="blackwell", severity=Severity.info)

    for i, dep in enumerate(ctx.rig.serve):
        yield from _stack_architecture(ctx, i, dep)


def _stack_architecture(ctx: Context, i: int, dep: Deployment):
    base = ("serve", i)
    placed = [pg for pg in ctx.placed_gpus(dep) if pg.entry is not None]
    name = stack_name(dep.stack)
    apple = [pg for pg in placed if pg.entry.vendor == "apple"]
    if apple and dep.stack in CUDA_ONLY_STACKS:
        yield driver_architecture.finding(
            f"{name} needs CUDA, but {apple[0].label} is an {short_name(apple[0])} — on Apple Silicon use stack "
            "llamacpp, ollama or exo",
            base + ("stack",), tag="cuda-only")

    sm120 = [pg for pg in placed if (cc := compute_capability(pg)) is not None and cc >= 12.0]
    if sm120 and dep.stack == Stack.petals:
        yield driver_architecture.finding(
            f"{sm120[0].label} ({short_name(sm120[0])}) is sm_120 and needs CUDA ≥ 12.8; Petals' image is built on "
            "CUDA 11.0.3 with bitsandbytes 0.41.1, which carry no sm_120 code ('no kernel image is available') — "
            "use vllm or llamacpp-rpc on Blackwell GPUs",
            base + ("stack",), tag="sm120")
    elif sm120 and dep.stack in (Stack.vllm, Stack.tabbyapi):
        yield driver_architecture.finding(
            f"{sm120[0].label} ({short_name(sm120[0])}) is sm_120: {name} needs PyTorch ≥ 2.7 cu128 builds — "
            "images built with CUDA 12.4 carry no sm_120 code and fail with 'no kernel image is available'; pin a "
            "release built with CUDA ≥ 12.8",
            base + ("stack",), tag="sm120", severity=Severity.info)

    minimum = {Stack.vllm: VLLM_MIN_CC, Stack.ollama: OLLAMA_MIN_CC}.get(dep.stack)
    if minimum is not None:
        old = [pg for pg in placed if (cc := compute_capability(pg)) is not None and cc < minimum]
        if old:
            yield driver_architecture.finding(
                f"{name} needs compute capability ≥ {minimum:g}; {old[0].label} ({short_name(old[0])}) has "
                f"{old[0].entry.compute_capability} — use llamacpp on this GPU, or a newer GPU",
                base + ("stack",), tag="compute-capability")
