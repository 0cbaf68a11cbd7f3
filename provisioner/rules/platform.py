"""macos-native: what a macOS node can run, the way rigctl deploys it there.

On macOS rigctl runs llama.cpp (llama-server, rpc-server: Metal builds from the official
release archive) and exo (MLX) as launchd jobs; it installs no Docker, no systemd unit and
no firewall there. Docker on macOS runs containers in a Linux VM that has no access to
Metal (Docker Desktop GPU support is NVIDIA on Windows/WSL2 only:
https://docs.docker.com/desktop/features/gpu/), so a container there runs on the CPU, and the
compose files rigctl writes reserve NVIDIA devices a Mac does not have. Power caps are
`nvidia-smi -pl` from a systemd unit (roles/power_limits). Sources and the per-stack reasons:
docs/macos-native.md.
"""

from __future__ import annotations

from ..diagnostics import Severity
from ..exposure import checks_keys, is_loopback
from ..spec.models import Stack
from .context import Context
from .drivers import CUDA_ONLY_STACKS
from .engine import rule
from .stack import stack_name

MACOS_STACKS = (Stack.llamacpp, Stack.llamacpp_rpc, Stack.exo)  # native under launchd (plan/images.py)
# why each other stack cannot run on a macOS node as rigctl deploys it
CONTAINER_ONLY = {
    Stack.ollama: "rigctl runs Ollama only in its Linux container (roles/ollama)",
    Stack.vllm: "vLLM needs CUDA (its macOS build is CPU-only and experimental) and rigctl runs it in a CUDA container",
    Stack.tabbyapi: "TabbyAPI's ExLlamaV2/V3 kernels need CUDA or ROCm and rigctl runs it in a CUDA container",
    Stack.petals: "Petals runs from its CUDA container image (learningathome/petals)",
}
_FIX = "use stack llamacpp (GGUF on Metal) or exo (MLX) on macOS nodes, or place it on a Linux node"


def _macos(ctx: Context, node_name: str) -> tuple[int, object] | None:
    ni = ctx.node_index(node_name)
    if ni is None or ctx.rig.nodes[ni].os != "macos":
        return None
    return ni, ctx.rig.nodes[ni]


@rule("macos-native", "error",
      "services on macOS nodes run natively under launchd: no containers, CUDA-only stacks, nvidia-smi or downloads",
      tags=("platform", "macos"))
def macos_native(ctx: Context):
    rig = ctx.rig
    for i, dep in enumerate(rig.serve):
        placed = ctx.placed_gpus(dep)
        containerised = source_reported = None
        for j, p in enumerate(dep.placement):
            hit = _macos(ctx, p.node)
            if hit is None:
                continue
            ni, node = hit
            if containerised is None and rig.deploy_mode == "container":
                containerised = node
                yield macos_native.finding(
                    f"deploy_mode: container puts deployment {dep.name} on macOS node {node.name} in a container: "
                    "Docker on macOS runs a Linux VM that cannot reach Metal, so it would run on the CPU, and "
                    "rigctl's compose files reserve NVIDIA devices — remove deploy_mode: container (rigctl runs "
                    "llama.cpp and exo natively under launchd on macOS) or move the containers to Linux nodes",
                    ("deploy_mode",), tag="container")
            why = CONTAINER_ONLY.get(dep.stack)
            # an Apple GPU placed for a CUDA-only stack: driver-architecture[cuda-only] reports it at serve[].stack
            cuda_reported = dep.stack in CUDA_ONLY_STACKS and any(
                pg.node_index == ni and pg.entry is not None and pg.entry.vendor == "apple" for pg in placed)
            if why is not None and not cuda_reported:
                yield macos_native.finding(
                    f"{stack_name(dep.stack)} cannot run on macOS node {node.name}: {why}, and Docker on macOS "
                    f"cannot reach Metal — {_FIX}",
                    ("serve", i, "placement", j, "node"), tag="stack")
            if dep.stack in MACOS_STACKS:
                yield from _unfiltered(ctx, i, j, dep, node)
            src = dep.source
            key = next((k for k in ("hf", "url", "token") if src is not None and getattr(src, k) is not None), None)
            if key is not None and source_reported is None:
                source_reported = node
                yield macos_native.finding(
                    f"source.{key} on deployment {dep.name}, placed on macOS node {node.name}: rigctl downloads "
                    "models (and hands a Hugging Face token to the service, as an environment file) only on Linux "
                    "hosts (base/model_source.yml installs its tools with apt; a launchd job has no environment "
                    "file) — copy the file with model_file, or put it on the Mac and give source.path",
                    ("serve", i, "source", key), tag="source")

    for ni, node in enumerate(rig.nodes):
        if node.os != "macos":
            continue
        for gi, g in enumerate(node.gpus):
            if g.power_limit_w is not None:
                yield macos_native.finding(
                    f"{node.name}/{g.id} has power_limit_w {g.power_limit_w}: rigctl sets power caps with "
                    "nvidia-smi from a systemd unit, and macOS has neither (Apple GPUs have no settable power "
                    "cap) — remove power_limit_w from this GPU",
                    ("nodes", ni, "gpus", gi, "power_limit_w"), tag="power-limit")


def _unfiltered(ctx: Context, i: int, j: int, dep, node):
    """Ports the plan limits with the Linux firewall that stay open on a Mac (no firewall there)."""
    if dep.stack == Stack.exo:
        ports = "its API (no key), libp2p and MLX ring ports on every interface (exo has no listen-address option)"
    elif dep.stack == Stack.llamacpp_rpc and j > 0:
        ports = "rpc-server (50052, no authentication) on its fabric address"
    elif not is_loopback(dep.bind) and not checks_keys(dep):
        ports = f"llama-server ({dep.bind}, no API key) without the rig-subnet filter the plan shows"
    else:
        return
    yield macos_native.finding(
        f"macOS node {node.name} runs {stack_name(dep.stack)} with {ports}: rigctl's firewall is nftables and "
        "is not installed on macOS, so every network that reaches the Mac reaches these ports — keep the Macs on "
        "a network only the rig uses, or block the ports with pf yourself",
        ("serve", i, "placement", j, "node"), tag="firewall", severity=Severity.warning)
