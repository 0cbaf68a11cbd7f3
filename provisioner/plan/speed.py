"""Expected single-stream speed of a deployment: decode and prompt tokens/s, as a range.

Decode at batch 1 is memory-bound (rules.md §6): every token streams the weights
on each device once, plus the KV cache read so far. Devices of a layer split run
one after another, so their times add; tensor-parallel ranks run at once and pay
two all-reduces per layer instead. Fixed costs (kernel launches per layer,
handing the hidden state to the next GPU, network round trips) are added on top.

    t_token = sum_sequential(bytes_d / (eff x bandwidth_d)) + layers x overhead
              + crossings + all-reduces + network

The range combines the low/high efficiency with the high/low overheads; the
constants live in data/compute.yaml and were fitted on published measurements
(bench/accuracy.py). Prompt processing is compute-bound: 2 x active params
FLOP per token against the GPUs' dense FP16 tensor TFLOPS.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ..sizing import GIB, Device, Fit, kv_bytes_per_token_layer
from ..spec.models import Deployment, Stack
from ..yamlio import safe_load
from .model import Speed


@lru_cache(maxsize=1)
def constants() -> dict:
    text = (resources.files("provisioner.plan") / "data" / "compute.yaml").read_text(encoding="utf-8")
    return safe_load(text)


@dataclass
class Term:
    """One additive part of the time per token: (fast end, slow end) in seconds."""

    kind: str  # stream | overhead | crossing | allreduce | network
    label: str
    fast_s: float
    slow_s: float


def estimate(ctx, dep: Deployment, fit: Fit, context_tokens: int | None = None) -> Speed | None:
    """Decode/prompt range at a short context (the start of a conversation); notes give the full context."""
    c = constants()
    short = min(context_tokens or c["short_context_tokens"], fit.context_tokens)
    terms = decode_terms(ctx, dep, fit, short)
    if not terms:
        return None
    fast = sum(t.fast_s for t in terms)
    slow = sum(t.slow_s for t in terms)
    notes = []
    if fit.context_tokens > short * 2:
        full = decode_terms(ctx, dep, fit, fit.context_tokens)
        notes.append(f"at a full {fit.context_tokens:,}-token context: {1 / sum(t.slow_s for t in full):.1f}-"
                     f"{1 / sum(t.fast_s for t in full):.1f} tok/s (KV reads grow with the context)")
    eff = c["decode_efficiency"]
    notes.append(f"single stream at a {short:,}-token context; {eff['low']:.0%}-{eff['high']:.0%} of peak memory "
                 "bandwidth plus fixed per-layer costs, fitted on published llama.cpp/vLLM measurements")
    p_low, p_high = prompt_range(ctx, dep, fit)
    return Speed(round(1 / slow, 1), round(1 / fast, 1), p_low, p_high, bottleneck(ctx, dep, fit, terms), notes)


# ------------------------------------------------------------------ decode


def decode_terms(ctx, dep: Deployment, fit: Fit, context: int) -> list[Term]:
    c = constants()
    model = ctx.model(dep)
    if model is None or not fit.devices:
        return []
    eff = c["decode_efficiency"]
    active = (getattr(model, "active_params_b", None) or model.params_b) / model.params_b
    kv_layer = kv_bytes_per_token_layer(model, fit.kv_type)
    tensor = fit.mode == "tensor" or fit.tensor_parallel > 1
    tp = fit.tensor_parallel if tensor else 1
    kv_share = max(1.0, model.kv_heads / tp) / model.kv_heads
    terms: list[Term] = []
    stages = _stages(fit) if tensor else [[d] for d in fit.devices]
    for stage in stages:
        # ranks of a stage read at the same time: the slowest one sets the pace
        times = []
        for d in stage:
            bw = bandwidth_gbs(ctx, d) * 1e9
            nbytes = d.weights_gib * GIB * active + d.layers * kv_layer * kv_share * context
            times.append((nbytes / (eff["high"] * bw), nbytes / (eff["low"] * bw), d))
        f, s, d = max(times, key=lambda x: x[1])
        label = d.name if len(stage) == 1 else f"{len(stage)}x {d.name}"
        terms.append(Term("stream", label, f, s))
        lo, hi = _layer_overhead(ctx, d)
        terms.append(Term("overhead", _backend(ctx, d), d.layers * lo * 1e-6, d.layers * hi * 1e-6))
        if tensor and len(stage) > 1:
            terms.append(_allreduce(ctx, dep, stage, model, d.layers))
    terms += _crossings(ctx, dep, fit, stages, model)
    return terms


def bandwidth_gbs(ctx, d: Device) -> float:
    if d.bandwidth_gbs:
        return d.bandwidth_gbs
    ram = constants()["cpu_ram_bandwidth_gbs"]
    node = ctx.node(d.node)
    cpu = node.cpu.model if node and node.cpu and node.cpu.model else None
    entry = ctx.catalog.cpus.get(cpu) if cpu else None
    return ram.get(entry.id if entry else "", ram["default"])


def _backend(ctx, d: Device) -> str:
    """Kernel backend, from the GPU vendor: cuda | metal | rocm | cpu."""
    e = _entry(ctx, d) if d.gpu_id is not None else None
    if e is None:
        return "cpu"
    return {"apple": "metal", "amd": "rocm"}.get(e.vendor, "cuda")


def _layer_overhead(ctx, d: Device) -> tuple[float, float]:
    o = constants()["layer_overhead_us"][_backend(ctx, d)]
    return o["low"], o["high"]


def _stages(fit: Fit) -> list[list[Device]]:
    """Pipeline stages of a tensor-parallel fit: consecutive groups of tp ranks."""
    tp = max(1, fit.tensor_parallel)
    return [fit.devices[i:i + tp] for i in range(0, len(fit.devices), tp)]


def link(ctx, devices: list[Device]) -> tuple[str, float, float]:
    """(kind, GB/s per direction, latency µs) between GPUs that exchange activations."""
    c = constants()
    nodes = {d.node for d in devices}
    if len(nodes) > 1:
        return "network", *_network(ctx)
    node = ctx.node(devices[0].node)
    entries = [_entry(ctx, d) for d in devices]
    if any(e is None for e in entries):
        return "host-bounce", 8.0, c["allreduce_latency_us"]["host-bounce"]
    ids = {d.gpu_id for d in devices}
    bridged = any(ids <= set(b.gpus) for b in node.nvlink)
    nv = entries[0].nvlink
    if nv.present and nv.bandwidth_gbs and (bridged or entries[0].form_factor == "sxm"):
        return "nvlink", nv.bandwidth_gbs / 2, c["allreduce_latency_us"]["nvlink"]
    pcie = min(_pcie_gbs(ctx, node, d, e) for d, e in zip(devices, entries))
    if all(e.nvlink.p2p_over_pcie for e in entries):
        return "pcie-p2p", pcie, c["allreduce_latency_us"]["pcie-p2p"]
    return "host-bounce", pcie / 2, c["allreduce_latency_us"]["host-bounce"]


def _entry(ctx, d: Device):
    node = ctx.node(d.node)
    gpu = next((g for g in node.gpus if g.id == d.gpu_id), None) if node else None
    return ctx.gpu_entry(gpu) if gpu else None


def _pcie_gbs(ctx, node, d: Device, entry) -> float:
    """Usable PCIe bandwidth per direction: ~80 % of 0.985 GB/s x 2^(gen-3) per lane."""
    gen, lanes = entry.pcie_gen or 4, entry.pcie_lanes or 16
    gpu = next((g for g in node.gpus if g.id == d.gpu_id), None)
    slot = next((s for s in (node.board.slots if node.board else []) if gpu and s.name == gpu.slot), None)
    if slot is not None:
        gen, lanes = min(gen, slot.pcie_gen), min(lanes, slot.electrical_lanes)
    return 0.8 * 0.985 * 2 ** (gen - 3) * lanes


def _network(ctx) -> tuple[float, float]:
    fabric = ctx.rig.fabric
    c = constants()["network_latency_us"]
    if fabric is None:
        return 1.0, c["ethernet"]
    return fabric.speed_gbps / 8, fabric.latency_us or c[fabric.kind]


def _allreduce(ctx, dep, stage: list[Device], model, layers: int) -> Term:
    kind, gbs, lat_us = link(ctx, stage)
    tp = len(stage)
    msg = (model.hidden_size or model.attention_heads * model.head_dim) * 2  # one fp16 hidden state
    per = lat_us * 1e-6 + msg * 2 * (tp - 1) / tp / (gbs * 1e9)
    n = 2 * layers  # after attention and after the MLP
    return Term("allreduce", f"{kind} ({gbs:.0f} GB/s, {lat_us:.0f} µs)", n * per, n * per * 1.5)


def _crossings(ctx, dep, fit: Fit, stages: list[list[Device]], model) -> list[Term]:
    """Handing the hidden state from one stage to the next (same node or across the network)."""
    c = constants()
    out = []
    hop = c["hop_overhead_ms"].get(dep.stack.value, 0.0) * 1e-3
    msg = (model.hidden_size or model.attention_heads * model.head_dim) * 4
    for a, b in zip(stages, stages[1:]):
        if a[-1].node == b[0].node:
            x = c["split_crossing_us"]
            out.append(Term("crossing", "GPU to GPU", x["low"] * 1e-6, x["high"] * 1e-6))
            continue
        gbs, lat_us = _network(ctx)
        trips = c["rpc_roundtrips_per_crossing"]
        t = trips * lat_us * 1e-6 + msg / (gbs * 1e9) + hop
        out.append(Term("network", f"{a[-1].node} to {b[0].node}", t, t * 1.5))
    if dep.stack in (Stack.exo, Stack.petals) and len(stages) > 0:
        # the client talks to the first hop and gets the token back from the last one
        gbs, lat_us = _network(ctx)
        t = 2 * lat_us * 1e-6 + hop
        out.append(Term("network", "client round trip", t, t * 1.5))
    return out


# ------------------------------------------------------------------ prompt


def prompt_range(ctx, dep: Deployment, fit: Fit) -> tuple[float | None, float | None]:
    """Prompt tokens/s: compute-bound; stages in sequence, TP ranks in parallel."""
    c = constants()
    model = ctx.model(dep)
    tflops = c["fp16_tflops"]
    active_b = getattr(model, "active_params_b", None) or model.params_b
    total = sum(d.weights_gib for d in fit.devices) or 1.0
    stages = _stages(fit) if fit.tensor_parallel > 1 else [[d] for d in fit.devices]
    t = 0.0
    for stage in stages:
        worst = 0.0
        for d in stage:
            e = _entry(ctx, d) if d.gpu_id else None
            if e is None or e.id not in tflops:
                return None, None
            flop = 2 * active_b * 1e9 * d.weights_gib / total
            worst = max(worst, flop / (tflops[e.id] * 1e12))
        t += worst
    eff = c["prompt_efficiency"]
    # a model of a few thousand parameters rounds to no compute time at all: there is no
    # meaningful compute-bound rate then (and dividing would fail), so none is quoted
    if not t > 0 or not math.isfinite(eff["high"] / t):
        return None, None
    return round(eff["low"] / t), round(eff["high"] / t)


# ------------------------------------------------------------------ explanation


def bottleneck(ctx, dep: Deployment, fit: Fit, terms: list[Term]) -> str:
    """Name what dominates the time per token, with its numbers."""
    slow = sum(t.slow_s for t in terms) or 1.0
    by_kind: dict[str, float] = {}
    for t in terms:
        by_kind[t.kind] = by_kind.get(t.kind, 0.0) + t.slow_s
    main = max(by_kind, key=by_kind.get)
    gpus = [d for d in fit.devices if d.gpu_id is not None]
    names = list(dict.fromkeys(d.name for d in fit.devices))
    if main in ("stream", "overhead"):
        parts = [f"{n} ({bandwidth_gbs(ctx, next(d for d in fit.devices if d.name == n)):.0f} GB/s)" for n in names]
        text = "memory bandwidth of " + " and ".join(parts)
        if fit.tensor_parallel > 1:
            text += f", tensor parallel over {fit.tensor_parallel} GPUs splits the reads"
            if fit.pipeline_parallel > 1:
                text += f"; {fit.pipeline_parallel} pipeline stages run in sequence"
        elif len(fit.devices) > 1:
            what = f"{len(gpus)} GPUs" if len(gpus) == len(fit.devices) else f"{len(fit.devices)} devices"
            text += f", layer split runs the {what} in sequence"
        cpu = [d for d in fit.devices if d.gpu_id is None]
        if cpu:
            share = sum(t.slow_s for t in terms if t.kind == "stream" and t.label == cpu[0].name) / slow
            text += f"; {cpu[0].layers} layers in system RAM take {share:.0%} of each token"
    elif main == "allreduce":
        label = next(t.label for t in terms if t.kind == "allreduce")
        text = f"all-reduce between tensor-parallel GPUs over {label}, twice per layer"
    elif main == "network":
        gbs, lat = _network(ctx)
        text = f"network round trips between nodes ({lat:.0f} µs each, {gbs * 8:.0f} Gbit/s) on every token"
    else:
        text = "handing activations from GPU to GPU on every token"
    share = by_kind[main] / slow
    second = sorted(((v, k) for k, v in by_kind.items() if k != main), reverse=True)
    if second and second[0][0] / slow >= 0.25:
        text += f" ({share:.0%} of the time; {second[0][1]} {second[0][0] / slow:.0%})"
    return text
