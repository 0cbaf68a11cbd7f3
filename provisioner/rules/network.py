"""network family: is there a fabric between the nodes, and is it fast enough for the stack?

Numbers and sources: llama.cpp RPC (https://github.com/ggml-org/llama.cpp/blob/master/tools/rpc/README.md,
https://github.com/ggml-org/llama.cpp/issues/8832, https://github.com/ggml-org/llama.cpp/issues/11474) and vLLM
multi-node (https://docs.vllm.ai/en/v0.8.3/serving/distributed_serving.html,
https://github.com/vllm-project/vllm/blob/main/docs/serving/parallelism_scaling.md); see docs/network-speed.md.
"""

from __future__ import annotations

from .. import sizing
from ..diagnostics import Severity
from ..spec.models import Stack
from .context import Context
from .engine import rule
from .stack import RDMA_FABRICS, cross_node_groups, model_name, stack_name, vllm_groups

MIN_FABRIC_GBPS = 10  # below 10 GbE warns with a speed estimate: a 100 Mb/s link gave ~1.2 t/s (https://github.com/ggml-org/llama.cpp/issues/11474)
RPC_WARN_BELOW_GBPS = 25
TP_FABRIC_GBPS = 100  # InfiniBand-class for multi-node tensor parallel (https://docs.vllm.ai/en/v0.8.3/serving/distributed_serving.html; https://www.mintlify.com/vllm-project/vllm/serving/distributed-serving)


def _multi_node(ctx: Context):
    """(index, deployment, nodes) for every deployment placed on more than one node."""
    for i, dep in enumerate(ctx.rig.serve):
        nodes = ctx.deployment_nodes(dep)
        if len(nodes) > 1:
            yield i, dep, nodes


@rule("fabric-required", "error", "a rig with several nodes describes the network between them", tags=("network",))
def fabric_required(ctx: Context):
    rig = ctx.rig
    if len(rig.nodes) > 1 and rig.fabric is None:
        spanning = [dep.name for _, dep, _ in _multi_node(ctx)]
        why = (f"; {', '.join(spanning)} span{'s' if len(spanning) == 1 else ''} nodes" if spanning else "")
        yield fabric_required.finding(
            f"{len(rig.nodes)} nodes but no fabric: rigctl needs the link kind, speed and rig subnet to check "
            f"multi-node stacks and to open cluster ports only to that subnet{why} — add "
            "fabric: {kind: ethernet, speed_gbps: 25, subnet: 10.0.0.0/24}",
            ("nodes",), tag="missing", at_key=True)
        return
    fabric = rig.fabric
    if fabric is None:
        return
    reported: set[int] = set()
    for _, dep, nodes in _multi_node(ctx):
        for node in nodes:
            ni = ctx.node_index(node.name)
            if ni in reported:
                continue
            fastest = max((nic.speed_gbps for nic in node.nics), default=None)
            if fastest is not None and fastest >= fabric.speed_gbps:
                continue
            reported.add(ni)
            if fastest is None:
                msg = (f"node {node.name} carries {dep.name} across nodes but lists no NIC, so rigctl cannot check "
                       f"its {fabric.speed_gbps:g} Gb/s fabric link — add nics: [{{name: …, speed_gbps: "
                       f"{fabric.speed_gbps:g}, address: …}}]")
                path = ("nodes", ni, "name")
            else:
                msg = (f"node {node.name}'s fastest NIC is {fastest:g} Gb/s but the fabric is {fabric.speed_gbps:g} "
                       f"Gb/s: {dep.name}'s cross-node traffic runs at the slower speed — fit a "
                       f"{fabric.speed_gbps:g} Gb/s NIC, or set fabric.speed_gbps to what the nodes have")
                path = ("nodes", ni, "nics")
            yield fabric_required.finding(msg, path, tag="nic", severity=Severity.warning, at_key=True)


def _remote_share(ctx: Context, dep) -> float:
    """Fraction of the weights llama.cpp RPC sends to other nodes (split by device memory)."""
    placed = [pg for pg in ctx.placed_gpus(dep) if pg.entry is not None]
    if not placed:
        return 1 - 1 / max(len(ctx.deployment_nodes(dep)), 1)
    first = ctx.node_index(dep.placement[0].node)
    total = sum(pg.entry.memory_gib for pg in placed)
    remote = sum(pg.entry.memory_gib for pg in placed if pg.node_index != first)
    return remote / total if total else 0.0


ACTIVATION_BYTES = 4  # llama.cpp hands f32 activations between devices; vLLM PP bf16 (2), rigctl counts 4


def _link_estimate(ctx: Context, dep, nodes, speed_gbps: float) -> str:
    """What crosses a slow link: weights at load, and per token one hidden-state vector per node boundary."""
    bits_s = speed_gbps * 1e9
    parts = []
    w = sizing.weights_gib(ctx, dep)
    if dep.stack == Stack.llamacpp_rpc and w is not None:
        sent = w * sizing.GIB * _remote_share(ctx, dep)
        parts.append(f"loading sends ~{sent / 1e9:.1f} GB to the other nodes (~{_duration(sent * 8 / bits_s)})")
    model = ctx.model(dep)
    if model is not None:
        per_tok = sizing.hidden_size(model) * ACTIVATION_BYTES * (len(nodes) - 1)
        prompt = 4096
        parts.append(f"each token moves {per_tok / 1024:.0f} KiB across the node boundaries "
                     f"(~{per_tok * 8 / bits_s * 1e3:.2f} ms plus one round trip per boundary, a floor under "
                     f"decode), a {prompt:,}-token prompt {per_tok * prompt / 1e6:.0f} MB "
                     f"(~{_duration(per_tok * prompt * 8 / bits_s)} of prefill on the wire)")
    return "; ".join(parts) or "every token crosses the link"


def _duration(seconds: float) -> str:
    if seconds >= 90:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


@rule("network-speed", "warning", "the fabric is fast enough for what crosses it", tags=("network",))
def network_speed(ctx: Context):
    fabric = ctx.rig.fabric
    if fabric is None:
        return  # fabric-required reports it
    speed = fabric.speed_gbps
    path = ("fabric", "speed_gbps")
    multi = list(_multi_node(ctx))
    if multi and speed < MIN_FABRIC_GBPS:
        # a slow link makes a multi-node rig slow, not broken: llama.cpp RPC over 100 Mb/s still
        # served (~1.2 t/s, llama.cpp#11474); say what the link costs instead of refusing it
        for i, dep, nodes in multi:
            yield network_speed.finding(
                f"fabric is {speed:g} Gb/s and {dep.name} spans {len(nodes)} nodes: it runs, slowly — "
                f"{_link_estimate(ctx, dep, nodes, speed)} (llama.cpp RPC over a 100 Mb/s link ran DeepSeek-R1 "
                "at ~1.2 t/s after a 30-minute load, llama.cpp#11474)",
                path, tag="below-10gbe", severity=Severity.warning,
                hint=f"≥ {MIN_FABRIC_GBPS} GbE between the nodes cuts the load time and the per-token transfers "
                     "tenfold; rpc-server -c caches the weights on each node")

    for i, dep, nodes in multi:
        if dep.stack == Stack.vllm and fabric.kind in RDMA_FABRICS and speed < TP_FABRIC_GBPS:
            layout = vllm_groups(ctx, dep)
            if layout and cross_node_groups(layout[2]):
                yield network_speed.finding(
                    f"{dep.name} runs tensor parallel across nodes over {speed:g} Gb/s {fabric.kind}: TP all-reduces "
                    f"every layer and needs InfiniBand-class links (≥ {TP_FABRIC_GBPS} Gb/s) — use a faster fabric, "
                    "or tensor_parallel = GPUs per node and pipeline_parallel = nodes",
                    path, tag="tensor-parallel", severity=Severity.error)
        if dep.stack == Stack.llamacpp_rpc:
            w = sizing.weights_gib(ctx, dep)
            load = ""
            if w is not None:
                sent_gb = w * sizing.GIB / 1e9 * _remote_share(ctx, dep)
                load = (f"; at load ~{sent_gb:.1f} GB of {model_name(ctx, dep)} weights cross the link "
                        f"(~{sent_gb * 8 / speed:.0f} s at {speed:g} Gb/s, unless rpc-server -c caches them)")
            yield network_speed.finding(
                f"{dep.name}: {stack_name(dep.stack)} synchronises every token across the network, so it is "
                "latency-bound: 1.9 t/s vs 25 t/s local on the same V100 over localhost (llama.cpp#8832); expect "
                f"single-stream decode well below one node's{load}",
                ("serve", i, "stack"), tag="rpc",
                severity=Severity.warning if speed < RPC_WARN_BELOW_GBPS else Severity.info,
                hint="llama.cpp RPC is a proof of concept; for throughput prefer vllm with pipeline_parallel across nodes")
