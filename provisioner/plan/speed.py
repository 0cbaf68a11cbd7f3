"""Expected single-stream speed of a deployment: decode and prompt tokens/s, as a range.

Decode at batch 1 is memory-bound (rules.md §6): every token streams the weights
on each device once, plus the KV cache read so far. Devices of a layer split run
one after another, so their times add; tensor-parallel ranks run at once and pay
two all-reduces per layer instead. Fixed costs (kernel launches per layer,
handing the hidden state to the next GPU, network round trips) are added on top.

    t_token = sum_sequential(bytes_d / (eff x bandwidth_d)) + layers x overhead
              + crossings + all-reduces + network

The share of peak bandwidth a kernel reaches depends on the memory behind it
(GDDR, HBM, unified LPDDR, host DDR), the architecture and the weights' format
(F16, 8-bit, lower-bit quantized), and MoE expert kernels have their own factor;
those efficiencies are fitted on published rows by bench/fit.py and live, with
the fit's provenance, in data/efficiency.yaml. Fixed costs and vendor figures
live in data/compute.yaml.

Prompt processing is compute-bound: 2 x active params FLOP per token against
an effective rate per device. F16 weights run the tensor-core GEMMs (a fitted
share of the dense FP16 TFLOPS); quantized weights run llama.cpp's dequantize/MMQ
path, a share of that peak capped at a fitted ceiling on every card. A layer
split in llama.cpp pipelines micro-batches across its GPUs, so a long prompt
overlaps the stages instead of running them one after another.
"""

from __future__ import annotations

import math
import re

from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ..sizing import GIB, Device, Fit, kv_bytes_per_token_layer, kv_layer_gib, swa_layout
from ..spec.models import Deployment, Stack
from ..yamlio import safe_load
from .model import Speed


@lru_cache(maxsize=1)
def constants() -> dict:
    text = (resources.files("provisioner.plan") / "data" / "compute.yaml").read_text(encoding="utf-8")
    return safe_load(text)


@lru_cache(maxsize=1)
def _fitted() -> dict:
    text = (resources.files("provisioner.plan") / "data" / "efficiency.yaml").read_text(encoding="utf-8")
    return safe_load(text)


_override: list[dict] = []


def efficiency() -> dict:
    """The fitted efficiencies (data/efficiency.yaml), or the ones bench/fit.py is trying."""
    return _override[-1] if _override else _fitted()


@contextmanager
def efficiency_override(params: dict):
    """Use ``params`` instead of data/efficiency.yaml (the fitter's candidates)."""
    _override.append(params)
    try:
        yield
    finally:
        _override.pop()


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
    effs = sorted({round(decode_efficiency(ctx, dep, d), 2) for d in fit.devices})
    spread = efficiency()["decode"]["spread"]
    lo, hi = effs[0] / spread, min(1.0, effs[-1] * spread)
    notes.append(f"single stream at a {short:,}-token context; {lo:.0%}-{hi:.0%} of peak memory "
                 f"bandwidth ({', '.join(sorted({memory_class(ctx, d) for d in fit.devices}))} memory, "
                 f"{format_class(ctx, dep)} weights) plus fixed per-layer costs, fitted on published "
                 "llama.cpp/vLLM measurements (bench/fit.py)")
    p_low, p_high = prompt_range(ctx, dep, fit)
    long_prompt = c["prompt_long_tokens"]
    if p_high and _pipelined(ctx, dep, fit):
        l_low, l_high = prompt_range(ctx, dep, fit, long_prompt)
        notes.append(f"a {long_prompt:,}-token prompt: {l_low:,}-{l_high:,} tok/s (llama.cpp pipelines "
                     f"{c['ubatch_tokens']}-token micro-batches across the {len(fit.devices)} GPUs of the split)")
    moe = cpu_moe_layers(ctx, dep)
    if moe:
        notes.append(f"experts of {moe} layers in system RAM (--n-cpu-moe/--cpu-moe): each token reads "
                     "their routed experts at host memory bandwidth")
    return Speed(round(1 / slow, 1), round(1 / fast, 1), p_low, p_high, bottleneck(ctx, dep, fit, terms), notes)


# ------------------------------------------------------------------ decode


def decode_terms(ctx, dep: Deployment, fit: Fit, context: int) -> list[Term]:
    c = constants()
    model = ctx.model(dep)
    if model is None or not fit.devices:
        return []
    spread = efficiency()["decode"]["spread"]
    active = (getattr(model, "active_params_b", None) or model.params_b) / model.params_b
    kv_layer = kv_bytes_per_token_layer(model, fit.kv_type, fit.kv_type_v)
    # bytes of KV one stream reads per layer at this context (windowed layers read their window)
    full_share, window_cells = swa_layout(model, dep, 1)
    kv_read = kv_layer_gib(kv_layer, context, 1, full_share, window_cells)
    host_kv = fit.host_kv_gib > 0  # --no-kv-offload: the GPUs read no KV, the CPU does
    tensor = fit.mode == "tensor" or fit.tensor_parallel > 1
    tp = fit.tensor_parallel if tensor else 1
    kv_share = max(1.0, model.kv_heads / tp) / model.kv_heads
    # routed experts of the first N layers read from system RAM (--n-cpu-moe N)
    cpu_layers = cpu_moe_layers(ctx, dep) if not tensor else 0
    expert_layer_bytes = routed_expert_bytes_per_layer(ctx, dep, fit) if cpu_layers else 0.0
    moved = expert_layer_bytes * cpu_layers
    terms: list[Term] = []
    stages = _stages(fit) if tensor else [[d] for d in fit.devices]
    row = fit.mode == "row"
    if row:
        # --split-mode row: every GPU holds a share of every matrix and they read it at the same time
        stages = [list(fit.devices)]
    for stage in stages:
        # ranks of a stage read at the same time: the slowest one sets the pace
        times = []
        for d in stage:
            bw = bandwidth_gbs(ctx, d) * 1e9
            weights = d.weights_gib * GIB * active
            if moved > 0 and d.gpu_id is not None:
                take = min(moved, weights * 0.95)
                weights, moved = weights - take, moved - take
            nbytes = weights + (0.0 if host_kv and d.gpu_id is not None else d.layers * kv_read * kv_share)
            eff = decode_efficiency(ctx, dep, d)
            times.append((nbytes / (min(1.0, eff * spread) * bw), nbytes / (eff / spread * bw), d))
        f, s, d = max(times, key=lambda x: x[1])
        label = d.name if len(stage) == 1 else f"{len(stage)}x {d.name}"
        terms.append(Term("stream", label, f, s))
        lo, hi = _layer_overhead(ctx, d)
        layers = model.layers if row else d.layers
        terms.append(Term("overhead", _backend(ctx, d), layers * lo * 1e-6, layers * hi * 1e-6))
        if tensor and len(stage) > 1:
            terms.append(_allreduce(ctx, dep, stage, model, d.layers))
        if row and len(stage) > 1:
            terms.append(_row_gather(ctx, stage, model))
    if host_kv:
        host = _host_device(ctx, dep, fit)
        bw = bandwidth_gbs(ctx, host) * 1e9
        eff = _cell(efficiency()["decode"], "ddr", "cpu", "f16")
        nbytes = kv_read * model.layers
        terms.append(Term("stream", "KV cache in system RAM", nbytes / (min(1.0, eff * spread) * bw),
                          nbytes / (eff / spread * bw)))
    if cpu_layers and expert_layer_bytes > 0:
        host = _host_device(ctx, dep, fit)
        bw = bandwidth_gbs(ctx, host) * 1e9
        eff = _cell(efficiency()["decode"], "ddr", "cpu", format_class(ctx, dep)) * _moe_factor(model)
        nbytes = expert_layer_bytes * cpu_layers
        terms.append(Term("stream", "experts in system RAM", nbytes / (min(1.0, eff * spread) * bw),
                          nbytes / (eff / spread * bw)))
    terms += _crossings(ctx, dep, fit, stages, model)
    return terms


# ------------------------------------------------------------------ efficiency


def memory_class(ctx, d: Device) -> str:
    """gddr | hbm | unified | ddr: what kind of memory the device streams from."""
    if d.gpu_id is None:
        return "ddr"
    e = _entry(ctx, d)
    kind = (getattr(e, "memory_type", None) or "") if e else ""
    for prefix, cls in (("hbm", "hbm"), ("gddr", "gddr"), ("lpddr", "unified"), ("ddr", "ddr")):
        if kind.startswith(prefix):
            return cls
    if e is None:
        return "gddr"
    if e.vendor == "apple":
        return "unified"
    return "hbm" if e.form_factor in ("sxm", "oam") else "gddr"


def format_class(ctx, dep: Deployment) -> str:
    """f16 | q8 | quant, from the format's bits per weight (16-bit, 8-bit, fewer)."""
    fmt = ctx.format(dep)
    bits = dep.bits_per_weight or (fmt.bits_per_weight if fmt else None)
    if bits is None:
        return "quant"
    return "f16" if bits >= 15 else "q8" if bits >= 7.5 else "quant"


LLAMACPP_STACKS = ("llamacpp", "llamacpp-rpc", "ollama")


def _cell(table: dict, mem: str, arch: str | None, fmt: str, stack: str = "llamacpp") -> float:
    """Most specific fitted cell: memory kind and architecture, then memory kind, then all devices.

    The memory-kind cells are fitted on llama.cpp rows (its kernels, not the memory, are
    what reaches a small share of HBM); other engines read their own cells
    (``engine:vllm/quant``) where rows fitted one, else the all-devices cell."""
    cells = table["cells"]
    if stack in LLAMACPP_STACKS:
        keys = ([f"{mem}:{arch}/{fmt}"] if arch else []) + [f"{mem}/{fmt}", f"all/{fmt}"]
    else:
        keys = [f"engine:{stack}/{fmt}", f"all/{fmt}"]
    if fmt == "q8":
        keys += [f"{mem}/quant", "all/quant"]
    for k in keys:
        if k in cells:
            return cells[k]
    return table["default"]


def _moe_factor(model) -> float:
    return efficiency()["decode"].get("moe_factor", 1.0) if getattr(model, "experts", None) else 1.0


def architecture(e) -> str:
    """The entry's architecture; Apple GPUs by generation (M1: G13, M2: G14, M3/M4: G15/G16),
    read from the chip name, since the catalog files them all under one architecture."""
    if e is None:
        return "cpu"
    m = re.match(r"apple m(\d)", e.name.lower()) if e.vendor == "apple" else None
    return f"apple-m{m.group(1)}" if m else e.architecture


def decode_efficiency(ctx, dep: Deployment, d: Device) -> float:
    """Middle of the fitted share of peak bandwidth one token's reads reach on ``d``."""
    e = _entry(ctx, d) if d.gpu_id is not None else None
    eff = _cell(efficiency()["decode"], memory_class(ctx, d), architecture(e), format_class(ctx, dep),
                dep.stack.value)
    return eff * _moe_factor(ctx.model(dep))


_CPU_MOE = re.compile(r"^(?:--n-cpu-moe|-ncmoe)(?:=(\d+))?$")


def cpu_moe_layers(ctx, dep: Deployment) -> int:
    """Layers whose experts llama.cpp keeps in system RAM: ``--n-cpu-moe N`` / ``--cpu-moe``."""
    model = ctx.model(dep)
    if model is None or not getattr(model, "experts", None) or not dep.stack.value.startswith("llamacpp"):
        return 0
    args = [str(a) for a in dep.extra_args]
    for i, a in enumerate(args):
        if a in ("--cpu-moe", "-cmoe"):
            return model.layers
        m = _CPU_MOE.match(a)
        if m:
            val = m.group(1) or (args[i + 1] if i + 1 < len(args) else "")
            if val.isdigit():
                return min(int(val), model.layers)
    return 0


def routed_expert_bytes_per_layer(ctx, dep: Deployment, fit: Fit) -> float:
    """Bytes of routed experts one token reads per layer: active weights minus attention and the output head."""
    model = ctx.model(dep)
    total = sum(d.weights_gib for d in fit.devices) * GIB
    if model is None or not total:
        return 0.0
    per_param = total / (model.params_b * 1e9)
    hidden = model.hidden_size or model.attention_heads * model.head_dim
    attn = hidden * model.head_dim * (2 * model.attention_heads + 2 * model.kv_heads)
    dense = model.layers * attn + model.vocab_size * hidden
    active = (getattr(model, "active_params_b", None) or model.params_b) * 1e9
    return max(0.0, active - dense) * per_param / model.layers


def _host_device(ctx, dep: Deployment, fit: Fit) -> Device:
    """The head node's RAM, where llama.cpp keeps CPU-resident experts."""
    nodes = ctx.deployment_nodes(dep)
    name = nodes[0].name if nodes else fit.devices[0].node
    return Device(f"{name}/cpu", name, None, (), "system RAM", 0.0, None)


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


ROW_MATMULS_PER_LAYER = 7  # q, k, v, o, gate, up, down of a dense block


def _row_gather(ctx, stage: list[Device], model) -> Term:
    """--split-mode row: after each split matrix product the GPUs' row blocks are copied to the main
    GPU and synchronised (ggml_cuda_op_mul_mat, ggml/src/ggml-cuda/ggml-cuda.cu in
    https://github.com/ggml-org/llama.cpp), once per matrix of every layer on every token."""
    kind, gbs, lat_us = link(ctx, stage)
    msg = (model.hidden_size or model.attention_heads * model.head_dim) * 4
    n = ROW_MATMULS_PER_LAYER * model.layers
    per = lat_us * 1e-6 + msg * (len(stage) - 1) / len(stage) / (gbs * 1e9)
    return Term("allreduce", f"row split over {kind} ({gbs:.0f} GB/s, {lat_us:.0f} µs)", n * per, n * per * 1.5)


def _crossings(ctx, dep, fit: Fit, stages: list[list[Device]], model) -> list[Term]:
    """Handing the hidden state from one stage to the next (same node or across the network)."""
    c = constants()
    out = []
    hop = c["hop_overhead_ms"].get(dep.stack.value, 0.0) * 1e-3
    msg = (model.hidden_size or model.attention_heads * model.head_dim) * 4
    rpc = dep.stack == Stack.llamacpp_rpc
    for a, b in zip(stages, stages[1:]):
        if a[-1].node == b[0].node:
            x = c["split_crossing_us"]
            out.append(Term("crossing", "GPU to GPU", x["low"] * 1e-6, x["high"] * 1e-6))
            continue
        if rpc:
            continue  # RPC traffic all goes through the client: counted per split below
        gbs, lat_us = _network(ctx)
        trips = c["rpc_roundtrips_per_crossing"]
        t = trips * lat_us * 1e-6 + msg / (gbs * 1e9) + hop
        out.append(Term("network", f"{a[-1].node} to {b[0].node}", t, t * 1.5))
    if rpc:
        out += _rpc_client_terms(ctx, dep, fit, msg)
    if dep.stack in (Stack.exo, Stack.petals) and len(stages) > 0:
        # the client talks to the first hop and gets the token back from the last one
        gbs, lat_us = _network(ctx)
        t = 2 * lat_us * 1e-6 + hop
        out.append(Term("network", "client round trip", t, t * 1.5))
    return out


def _rpc_client_terms(ctx, dep, fit: Fit, msg: int) -> list[Term]:
    """llama.cpp RPC: the client drives every remote device's graph split on every token.

    Per split and token the client sets the split's input tensor, sends the split's
    graph (GRAPH_COMPUTE serializes every node and source tensor as a 296-byte
    rpc_tensor) and waits, then reads the output back: a few round trips plus the
    graph's bytes (ggml/src/ggml-rpc/ggml-rpc.cpp, serialize_graph, in
    https://github.com/ggml-org/llama.cpp). A client without a device of its own has
    no local split to hide any of it behind.
    """
    c = constants()["rpc"]
    nodes = ctx.deployment_nodes(dep)
    head = nodes[0].name if nodes else None
    gbs, lat_us = _network(ctx)
    out = []
    for d in fit.devices:
        if d.node == head:
            continue
        graph = d.layers * c["graph_tensors_per_layer"] * c["rpc_tensor_bytes"]
        t = c["roundtrips_per_split"] * 2 * lat_us * 1e-6 + (graph + 2 * msg) / (gbs * 1e9)
        out.append(Term("network", f"client to {d.label} (RPC split)", t, t * 1.5))
    return out


# ------------------------------------------------------------------ prompt


def prompt_range(ctx, dep: Deployment, fit: Fit, prompt_tokens: int | None = None
                 ) -> tuple[float | None, float | None]:
    """Prompt tokens/s for a prompt of ``prompt_tokens`` (compute-bound).

    The prompt runs in batches of ``batch_tokens``, each in micro-batches of
    ``ubatch_tokens``; TP ranks of a stage run at once, the stages of a layer split
    one after another, except that llama.cpp pipelines the micro-batches of a batch
    across the GPUs of one node: after the first micro-batch has crossed every
    stage, each further one costs only the slowest stage.
    """
    c = constants()
    model = ctx.model(dep)
    if model is None or not fit.devices:
        return None, None
    prompt = prompt_tokens or c["prompt_reference_tokens"]
    ubatch = min(prompt, c["ubatch_tokens"])
    batch = min(prompt, max(ubatch, c["batch_tokens"]))
    batches, micro = math.ceil(prompt / batch), math.ceil(batch / ubatch)
    active_b = getattr(model, "active_params_b", None) or model.params_b
    total = sum(d.weights_gib for d in fit.devices) or 1.0
    stages = _stages(fit) if fit.tensor_parallel > 1 else [[d] for d in fit.devices]
    fmt = format_class(ctx, dep)
    times = []
    for stage in stages:
        worst = 0.0
        for d in stage:
            rate = prefill_tflops(ctx, d, fmt, dep.stack.value)
            if rate is None:
                return None, None
            flop = 2 * active_b * 1e9 * d.weights_gib / total * ubatch
            worst = max(worst, flop / (rate * 1e12))
        times.append(worst)
    sequential = batches * micro * sum(times)
    if _pipelined(ctx, dep, fit):
        # micro-batches of one batch overlap across the stages; batches run one after another.
        # How much of the ideal overlap published splits reach is fitted (pipeline_overlap).
        ideal = batches * (sum(times) + (micro - 1) * max(times))
        overlap = efficiency()["prefill"].get("pipeline_overlap", 1.0)
        t = overlap * ideal + (1 - overlap) * sequential
    else:
        t = sequential
    spread = efficiency()["prefill"]["spread"]
    # a model of a few thousand parameters rounds to no compute time at all: there is no
    # meaningful compute-bound rate then (and dividing would fail), so none is quoted
    if not t > 0 or not math.isfinite(prompt * spread / t):
        return None, None
    mid = prompt / t
    return round(mid / spread), round(mid * spread)


def prefill_tflops(ctx, d: Device, fmt: str, stack: str = "llamacpp") -> float | None:
    """Effective TFLOPS of ``d`` on a prompt: a fitted share of its dense FP16 peak, capped
    at a fitted ceiling per path (F16 GEMMs; the quantized dequantize/MMQ path): the
    datasheet peak of pro and datacenter cards is far above what llama.cpp's kernels
    reach. None: no figure for the card."""
    e = _entry(ctx, d) if d.gpu_id is not None else None
    if e is None:
        return None
    peak = e.fp16_tflops or constants()["fp16_tflops"].get(e.id)
    if not peak:
        return None
    if e.vendor == "nvidia" and "geforce" in e.name.lower():
        # fp16_tflops is the FP32-accumulate rate, which GeForce cards run at half speed;
        # llama.cpp's GEMMs (FP16 accumulate) and MMQ (int8) run at the full tensor rate
        peak *= 2
    if stack not in LLAMACPP_STACKS:
        # the caps are llama.cpp's kernels; other engines keep the dense share the model
        # used before (no published prompt rows for them here yet)
        return peak * constants()["other_engine_prompt_share"]
    p = efficiency()["prefill"]["backends"].get(_backend(ctx, d)) or efficiency()["prefill"]["backends"]["cuda"]
    if fmt == "f16":
        return min(peak * p["f16_share"], p["f16_cap_tflops"])
    return min(peak * p["quant_share"], p["quant_cap_tflops"])


def _pipelined(ctx, dep: Deployment, fit: Fit) -> bool:
    """llama.cpp's pipeline parallelism: a layer split over several GPUs of one node."""
    if dep.stack not in (Stack.llamacpp, Stack.llamacpp_rpc, Stack.ollama) or fit.tensor_parallel > 1:
        return False
    devs = fit.devices
    return len(devs) > 1 and all(d.gpu_id is not None for d in devs) and len({d.node for d in devs}) == 1


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
        text = (f"gathering each split matrix product on the main GPU, {label}, {ROW_MATMULS_PER_LAYER} per layer"
                if label.startswith("row split") else
                f"all-reduce between tensor-parallel GPUs over {label}, twice per layer")
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
