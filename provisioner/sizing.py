"""Memory model: where each deployment's weights, KV cache and overheads land.

Pure arithmetic over the spec and catalog (no I/O). The memory rules judge
its result and the planner turns it into engine flags, so what validate
accepts is exactly what plan deploys. Formulas and their sources:
/work/shared/reference/rules.md §1-§5 (weights = params x bpw / 8; KV =
2 x layers x kv_heads x head_dim x ctx x bytes; overheads per GPU).
Everything internal is GiB (2^30 bytes).
"""

from __future__ import annotations

import heapq

import math
from dataclasses import dataclass, field, replace

from . import engineopts
from .spec.models import Deployment, Stack

GIB = float(1 << 30)

# bytes per KV element; q8_0/q4_0 blocks hold 32 values plus a 2-byte scale
KV_BYTES = {"f16": 2.0, "bf16": 2.0, "fp8": 1.0, "q8_0": 34 / 32, "q4_0": 18 / 32}

CUDA_CONTEXT_GIB = 0.35  # CUDA context + cuBLAS workspace per GPU [rules.md §3, L]
DISPLAY_GIB = 0.5  # desktop session on the GPU [rules.md §3]
LLAMACPP_COMPUTE_GIB = 0.30  # compute buffer per device at -ub 512 with flash attention [rules.md §3, L]
UBATCH = 512
VLLM_BATCHED_TOKENS = 2048
VLLM_BASE_OVERHEAD_GIB = 1.0  # non-torch memory + CUDA graphs (vLLM profiling run)
TABBY_OVERHEAD_GIB = 0.5
STACK_DEFAULT_CONTEXT = {Stack.ollama: 4096}  # others: the model's trained context


@dataclass
class Device:
    """One memory pool a deployment uses: a GPU, or a node's RAM for CPU backends."""

    label: str  # node/gpu0, node/cpu
    node: str
    gpu_id: str | None
    path: tuple  # spec path of the GPU (or node) for findings
    name: str  # human name: "RTX 3090"
    capacity_gib: float
    bandwidth_gbs: float | None = None
    nominal_gib: float | None = None  # the card's memory before reservations (vLLM's utilization base)
    layers: int = 0
    weights_gib: float = 0.0
    kv_gib: float = 0.0
    overhead_gib: float = 0.0
    holds_output: bool = False

    @property
    def used_gib(self) -> float:
        return self.weights_gib + self.kv_gib + self.overhead_gib

    @property
    def free_gib(self) -> float:
        return self.capacity_gib - self.used_gib


@dataclass
class Fit:
    deployment: str
    stack: Stack
    mode: str  # layer | tensor | single | cpu
    devices: list[Device]
    weights_gib: float
    context_tokens: int
    parallel: int
    kv_type: str
    kv_bytes_per_token: float  # whole model, one sequence
    max_context_tokens: int | None  # largest per-sequence context that fits (None: weights alone do not fit)
    split: list[float] = field(default_factory=list)
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    user_split: bool = False
    notes: list[str] = field(default_factory=list)
    kv_type_v: str | None = None  # V cache type when it differs from kv_type (the K type)
    pp_layers: list[int] = field(default_factory=list)  # vLLM: layers per pipeline stage
    pp_partition_env: bool = False  # the plan sets VLLM_PP_LAYER_PARTITION (unequal stages)
    host_kv_gib: float = 0.0  # KV cache kept in system RAM (llama.cpp --no-kv-offload)
    host_node: str | None = None  # the node whose RAM holds host_kv_gib

    @property
    def fits(self) -> bool:
        return all(d.free_gib >= 0 for d in self.devices)

    @property
    def overflowing(self) -> list[Device]:
        return [d for d in self.devices if d.free_gib < 0]


# ----------------------------------------------------------------- weights


def hidden_size(model) -> int:
    return model.hidden_size or model.attention_heads * model.head_dim


def bits_per_weight(ctx, dep: Deployment) -> float | None:
    if dep.bits_per_weight:
        return dep.bits_per_weight
    fmt = ctx.format(dep)
    model = ctx.model(dep)
    if fmt is None or fmt.bits_per_weight is None or model is None:
        return None
    bpw = fmt.bits_per_weight_small_models if model.params_b < 15 and fmt.bits_per_weight_small_models \
        else fmt.bits_per_weight
    if fmt.embed_output_bits:
        # "_L"/"_XL" mixes: the embedding and output matrices (vocab x hidden each, two unless
        # tied) take embed_output_bits instead of the base format's bits
        share = min(0.5, 2 * model.vocab_size * hidden_size(model) / (model.params_b * 1e9))
        bpw += (fmt.embed_output_bits - bpw) * share
    return bpw


def weights_gib(ctx, dep: Deployment) -> float | None:
    """Weights of the whole model in GiB: the real file when known, else the source's stated
    size, else params x bpw / 8."""
    facts = ctx.model_files.get(dep.name)
    if facts and facts.get("weights_bytes"):
        return facts["weights_bytes"] / GIB
    if dep.source is not None and dep.source.size_bytes:
        # the size the spec says the download has: per-tensor types of dynamic quantizations
        # ("UD", most MoE GGUFs) are in it, which no flat bits-per-weight figure is
        return dep.source.size_bytes / GIB
    model = ctx.model(dep)
    bpw = bits_per_weight(ctx, dep)
    if model is None or bpw is None:
        return None
    return model.params_b * 1e9 * bpw / 8 / GIB


def kv_type(dep: Deployment) -> str:
    """The K cache type (kv_cache_type_k over kv_cache_type); engineopts.kv_types gives K and V."""
    return engineopts.kv_types(dep)[0]


def kv_bytes_per_token_layer(model, kv: str, kv_v: str | None = None) -> float:
    """K and V for one token in one layer (GQA-aware: kv_heads, not attention heads).

    K and V may differ in element type (llama.cpp --cache-type-k/-v) and in size per head
    (MLA: GGUF attention.key_length/value_length, read by llama.cpp into n_embd_head_k/_v,
    src/llama-model.cpp load_hparams, https://github.com/ggml-org/llama.cpp/blob/0c1e57098/src/llama-model.cpp).
    """
    dk = getattr(model, "head_dim_k", None) or model.head_dim
    dv = getattr(model, "head_dim_v", None) or model.head_dim
    return model.kv_heads * (dk * KV_BYTES[kv] + dv * KV_BYTES[kv_v or kv])


def swa_layout(model, dep: Deployment, seqs: int) -> tuple[float, int | None]:
    """(share of layers with a full-context cache, cells of a windowed layer's cache or None).

    llama.cpp keeps the sliding-window layers in their own cache of
    min(ctx, n_swa x n_seq + n_ubatch) cells unless --swa-full (llama_kv_cache_iswa,
    src/llama-kv-cache-iswa.cpp, https://github.com/ggml-org/llama.cpp/blob/0c1e57098/src/llama-kv-cache-iswa.cpp);
    a layer is windowed unless il % pattern == pattern - 1 (llama_hparams::set_swa_pattern).
    Other engines are sized with a full cache on every layer.
    """
    window = getattr(model, "sliding_window", None)
    if not window or dep.stack not in engineopts.LLAMA_STACKS or engineopts.options(dep).swa_full:
        return 1.0, None
    pattern = getattr(model, "sliding_window_pattern", None) or 1
    full = model.layers // pattern if pattern > 1 else 0
    return full / model.layers, window * seqs + UBATCH


def kv_layer_gib(kv_tok: float, ctx_tokens: int, seqs: int, full_share: float, swa_cells: int | None) -> float:
    """KV cache of one (average) layer for ctx_tokens x seqs cells, windowed layers capped."""
    cells = ctx_tokens * seqs
    if swa_cells is None:
        return kv_tok * cells
    return kv_tok * (full_share * cells + (1 - full_share) * min(cells, swa_cells))


def _solve_context(room: float, layers: int, kv_tok: float, seqs: int, full_share: float,
                   swa_cells: int | None) -> float:
    """Largest per-sequence context whose KV for ``layers`` layers fits in ``room`` GiB."""
    if layers == 0 or kv_tok <= 0:
        return float("inf")
    per_ctx = layers * kv_tok * seqs
    if swa_cells is None:
        return room / per_ctx
    # below the window every layer grows; above it only the full-context layers do
    below = room / per_ctx
    if below * seqs <= swa_cells:
        return below
    fixed = layers * kv_tok * (1 - full_share) * swa_cells
    if full_share <= 0:
        return float("inf") if room >= fixed else below
    return (room - fixed) / (per_ctx * full_share)


def default_context(ctx, dep: Deployment) -> int:
    model = ctx.model(dep)
    if dep.context_tokens:
        return dep.context_tokens
    if dep.stack in STACK_DEFAULT_CONTEXT:
        return STACK_DEFAULT_CONTEXT[dep.stack]
    return model.max_context if model else 4096


# ----------------------------------------------------------------- devices


def devices_for(ctx, dep: Deployment) -> list[Device]:
    """Memory pools in placement order. Nodes placed with `gpus: []` (or with no
    GPUs) contribute their RAM, as llama.cpp's CPU/RPC backends use it."""
    out: list[Device] = []
    for p in dep.placement:
        ni = ctx.node_index(p.node)
        if ni is None:
            continue
        node = ctx.rig.nodes[ni]
        placed = [pg for pg in ctx.placed_gpus(dep) if pg.node_index == ni]
        if placed:
            if any(pg.entry is None for pg in placed):
                # an unknown GPU stops the verdict (unknown-gpu reports it): judging the
                # remaining cards alone would print a false "does not fit"
                return []
            for pg in placed:
                e = pg.entry
                cap = e.usable_gib - (DISPLAY_GIB if pg.gpu.display else 0)
                out.append(Device(pg.label, node.name, pg.gpu.id, pg.path, e.name, cap, e.bandwidth_gbs,
                                  nominal_gib=e.memory_gib * e.usable_memory_fraction))
        elif p.gpus == [] or not node.gpus:
            if node.memory_gib:
                # leave the OS ~10 % (at least 1 GiB) of RAM
                cap = node.memory_gib - max(1.0, 0.1 * node.memory_gib)
                out.append(Device(f"{node.name}/cpu", node.name, None, ("nodes", ni, "memory_gib"),
                                  "system RAM", cap, None))
    if dep.stack in (Stack.llamacpp, Stack.llamacpp_rpc) and len(out) > 1 and out[0].gpu_id is None:
        # with -ngl 999 llama.cpp offloads every layer to its devices (local GPUs, RPC
        # servers); the head's own CPU only holds layers when there is no device at all
        out = out[1:]
    if dep.stack == Stack.llamacpp_rpc and out:
        # llama.cpp's model device list (what --tensor-split indexes, and where the output
        # layer lands: the last device) puts RPC servers FIRST, in --rpc order, then the
        # head's local GPUs: "add RPC servers at the front of the list" in src/llama.cpp
        # (https://github.com/ggml-org/llama.cpp/blob/0c1e57098/src/llama.cpp, the build
        # llama-cpp-python 0.3.36 vendors). Each rpc-server exposes its GPUs in order.
        head = ctx.deployment_nodes(dep)[0].name
        out = [d for d in out if d.node != head] + [d for d in out if d.node == head]
    return out


# ----------------------------------------------------------------- placement


def _layer_counts(weights: list[float], n_layers: int) -> list[int]:
    """Layers per device for proportions, as llama.cpp assigns them (cumulative rounding)."""
    total = sum(weights) or 1.0
    counts, cum, prev = [], 0.0, 0
    for w in weights:
        cum += w / total
        upto = round(cum * n_layers)
        counts.append(upto - prev)
        prev = upto
    counts[-1] += n_layers - sum(counts)
    return counts


def _balanced_split(caps: list[float], fixed: list[float], per_layer: float, n_layers: int) -> list[float]:
    """Layers per device so that the fullest device is as empty as possible."""
    room = [max(c - f, 0.0) for c, f in zip(caps, fixed)]
    if sum(room) <= 0 or per_layer <= 0:
        return [1.0] * len(caps)
    counts = [0] * len(caps)

    def left(i: int) -> float:  # relative room left on device i after one more layer
        return (room[i] - (counts[i] + 1) * per_layer) / max(caps[i], 1e-9)

    # put each next layer where the most room would be left, relative to capacity; only the
    # chosen device's score changes, so a heap keeps this O(layers x log devices) for fleets
    # (ties go to the lowest index, as max() over the devices did)
    heap = [(-left(i), i) for i in range(len(caps))]
    heapq.heapify(heap)
    for _ in range(n_layers):
        _, best = heapq.heappop(heap)
        counts[best] += 1
        heapq.heappush(heap, (-left(best), best))
    return [float(c) for c in counts]


def fit(ctx, dep: Deployment, context_tokens: int | None = None) -> Fit | None:
    """Place one deployment; None when the model, format or GPUs cannot be resolved."""
    model = ctx.model(dep)
    w_total = weights_gib(ctx, dep)
    devices = devices_for(ctx, dep)
    if model is None or w_total is None or not devices:
        return None
    ctx_tokens = context_tokens or default_context(ctx, dep)
    kv = kv_type(dep)
    if dep.stack == Stack.vllm:
        return _fit_vllm(ctx, dep, model, w_total, devices, ctx_tokens, kv)
    if dep.stack == Stack.tabbyapi and (dep.tensor_parallel or 1) > 1:
        return _fit_tensor(dep, model, w_total, devices, ctx_tokens, kv, overhead=TABBY_OVERHEAD_GIB,
                           tp=dep.tensor_parallel or 1)
    if dep.stack == Stack.ollama and not dep.tensor_split:
        single = _fit_ollama_single(dep, model, w_total, devices, ctx_tokens, kv)
        if single is not None:
            return single
    f = _fit_layers(dep, model, w_total, devices, ctx_tokens, kv)
    if f.host_kv_gib and f.max_context_tokens is not None:
        # the cache in system RAM bounds the context instead of the GPUs
        node = ctx.node(f.host_node) if f.host_node else None
        if node is not None and node.memory_gib:
            room = node.memory_gib - max(1.0, 0.1 * node.memory_gib)
            per_ctx = f.host_kv_gib / max(f.context_tokens, 1)
            if per_ctx > 0:
                f.max_context_tokens = min(f.max_context_tokens, int(room / per_ctx))
    better = best_order(dep, model, w_total, devices, ctx_tokens, kv, f)
    if better is not None:
        order, best = better
        f.notes.append(
            f"GPU order matters: the last device holds the output layer and its buffers; in the order "
            f"{', '.join(order)} the largest context is {best:,} tokens, {f.max_context_tokens or 0:,} in the order "
            "given (list the GPUs in that order under placement)")
    return f


ORDERED_STACKS = (Stack.llamacpp, Stack.ollama, Stack.tabbyapi)


def best_order(dep, model, w_total, devices, ctx_tokens, kv, f: Fit) -> tuple[list[str], int] | None:
    """A device order of one node's unequal GPUs that fits a larger context than ``f`` (by > 1 %), or None.

    llama.cpp (and the stacks that split by layers) put the output layer on the last device,
    so the same cards in another order give another largest context.
    """
    if (dep.stack not in ORDERED_STACKS or dep.tensor_split or dep.gpu_split_gb or f.mode != "layer"
            or len({d.node for d in devices}) != 1 or any(d.gpu_id is None for d in devices)
            or len({(d.name, d.capacity_gib) for d in devices}) < 2):
        return None
    kinds = list(dict.fromkeys((d.name, d.capacity_gib) for d in devices))
    if len(kinds) > 4:
        return None  # 24 orders at most
    import itertools

    best: tuple[list[str], int] | None = None
    for perm in itertools.permutations(kinds):
        order = [d for k in perm for d in devices if (d.name, d.capacity_gib) == k]
        if order == devices:
            continue
        trial = _fit_layers(dep, model, w_total, [replace(d) for d in order], ctx_tokens, kv)
        n = trial.max_context_tokens or 0
        cur = f.max_context_tokens or 0
        if n > cur * 1.01 and n - cur >= 256 and (best is None or n > best[1]):
            best = ([d.gpu_id for d in order], n)
    return best


def _fixed_overheads(dep: Deployment, devices: list[Device]) -> list[float]:
    """Per-device memory the runtime takes before any layer: CUDA context and compute buffers."""
    if dep.stack == Stack.tabbyapi:
        return [TABBY_OVERHEAD_GIB for _ in devices]
    return [CUDA_CONTEXT_GIB + LLAMACPP_COMPUTE_GIB if d.gpu_id is not None else 0.0 for d in devices]


def _fit_layers(dep, model, w_total, devices, ctx_tokens, kv) -> Fit:
    n_layers = model.layers
    hid = hidden_size(model)
    # token embeddings stay in host memory in llama.cpp; the output head sits on the last device
    w_embed = model.vocab_size * hid * (w_total * GIB * 8 / (model.params_b * 1e9)) / 8 / GIB
    w_output = w_embed if dep.stack != Stack.exo else 0.0
    w_layer = max(w_total - w_embed - w_output, 0.0) / n_layers
    llama = dep.stack in engineopts.LLAMA_STACKS
    opts = engineopts.options(dep)
    kv_v = engineopts.kv_types(dep)[1] if llama else kv
    kv_layer_tok = kv_bytes_per_token_layer(model, kv, kv_v) / GIB
    seqs = dep.parallel_sequences
    full_share, swa_cells = swa_layout(model, dep, seqs)
    kv_layer = kv_layer_gib(kv_layer_tok, ctx_tokens, seqs, full_share, swa_cells)
    # --no-kv-offload: llama.cpp allocates the cache in host memory, not on the layer's GPU
    # (llama_kv_cache: `offload ? model.dev_layer(il) : cpu`, src/llama-kv-cache.cpp)
    gpu_kv = llama and not opts.kv_offload
    logits = model.vocab_size * UBATCH * 4 / GIB
    fixed = _fixed_overheads(dep, devices)
    fixed[-1] += w_output + logits
    caps = [d.capacity_gib for d in devices]
    user = dep.tensor_split
    if dep.stack == Stack.tabbyapi and dep.gpu_split_gb and len(dep.gpu_split_gb) == len(devices):
        counts = _gb_cap_counts(dep.gpu_split_gb, w_layer, w_output, n_layers)
        split, user = [float(c) for c in counts], dep.gpu_split_gb
    else:
        if user and len(user) == len(devices):
            split = list(user)
        else:
            split = _balanced_split(caps, fixed, w_layer + (0.0 if gpu_kv else kv_layer), n_layers)
            user = None
        counts = _layer_counts(split, n_layers)
    host_kv = 0.0
    for d, n, f in zip(devices, counts, fixed):
        d.layers = n
        d.weights_gib = n * w_layer
        if gpu_kv and d.gpu_id is not None:
            host_kv += n * kv_layer
        else:
            d.kv_gib = n * kv_layer
        d.overhead_gib = f
    devices[-1].holds_output = True
    devices[-1].weights_gib += w_output
    devices[-1].overhead_gib -= w_output
    max_ctx = _max_context_layers(devices, counts, kv_layer_tok, seqs, full_share, swa_cells,
                                  skip_gpus=gpu_kv)
    mode = "single" if len(devices) == 1 else "layer"
    if devices[0].gpu_id is None and len(devices) == 1:
        mode = "cpu"
    elif llama and opts.split_mode == "row" and sum(d.gpu_id is not None for d in devices) > 1:
        mode = "row"
    f = Fit(dep.name, dep.stack, mode, devices, w_total, ctx_tokens, seqs, kv,
            kv_layer_tok * GIB * n_layers, max_ctx, split=split, user_split=bool(user),
            kv_type_v=kv_v if kv_v != kv else None, host_kv_gib=host_kv,
            host_node=ctx_head(devices) if host_kv else None)
    if swa_cells is not None:
        f.notes.append(f"sliding-window attention: {n_layers - round(full_share * n_layers)} of {n_layers} layers keep "
                       f"{min(swa_cells, ctx_tokens * seqs):,} cells of KV cache (llama.cpp's SWA cache), the others "
                       "the full context")
    if host_kv:
        f.notes.append(f"KV cache in system RAM (--no-kv-offload): {host_kv:.1f} GiB on {f.host_node}; attention "
                       "runs on the CPU")
    return f


def ctx_head(devices: list[Device]) -> str | None:
    """The node of the first GPU device (where llama-server's own RAM holds a host KV cache)."""
    return next((d.node for d in devices if d.gpu_id is not None), devices[0].node if devices else None)


def _gb_cap_counts(caps_gb: list[float], w_layer: float, w_output: float, n_layers: int) -> list[int]:
    """Layers per GPU under TabbyAPI's gpu_split: a cap in GB per GPU, filled in order.

    ExLlamaV2 loads module by module onto the first GPU until the next one would pass
    that GPU's share of gpu_split, then moves to the next GPU ("an array of VRAM sizes
    to split between GPUs, in GB", config_sample.yml,
    https://github.com/theroyallab/tabbyAPI/blob/main/config_sample.yml; exllamav2
    model.py load_gen). Layers left when the caps are full stay on the last GPU, where
    memory-fit reports the overflow.
    """
    counts = [0] * len(caps_gb)
    dev, used = 0, 0.0
    for _ in range(n_layers):
        while dev < len(caps_gb) - 1 and (used + w_layer) * GIB / 1e9 > caps_gb[dev]:
            dev, used = dev + 1, 0.0
        counts[dev] += 1
        used += w_layer
    return counts


def _max_context_layers(devices, counts, kv_tok, seqs, full_share, swa_cells, *, skip_gpus: bool) -> int | None:
    """Largest per-sequence context over layer-split devices (KV grows with each device's layers)."""
    best = float("inf")
    for d, n in zip(devices, counts):
        room = d.capacity_gib - d.weights_gib - d.overhead_gib
        if room < 0:
            return None
        if skip_gpus and d.gpu_id is not None:
            continue
        best = min(best, _solve_context(room, n, kv_tok, seqs, full_share, swa_cells))
    return 10_485_760 if best == float("inf") else int(best)


def _fit_ollama_single(dep, model, w_total, devices, ctx_tokens, kv) -> Fit | None:
    """Ollama loads on the one GPU with the most free memory when the model fits there."""
    gpus = [d for d in devices if d.gpu_id is not None]
    if len(gpus) < 2:
        return None
    best = max(gpus, key=lambda d: d.capacity_gib)
    trial = _fit_layers(dep, model, w_total, [replace(best)], ctx_tokens, kv)
    if not trial.fits:
        return None
    trial.notes.append(f"Ollama loads the model on one GPU ({best.label}) because it fits there; "
                       "set OLLAMA_SCHED_SPREAD=1 to spread it")
    return trial


def _fit_tensor(dep, model, w_total, devices, ctx_tokens, kv, *, overhead: float, tp: int, pp: int = 1,
                util: float | None = None) -> Fit:
    """Equal shards over tp x pp GPUs (vLLM, TabbyAPI TP): the smallest GPU bounds capacity."""
    shards = tp * pp
    kv_heads_per_rank = max(1.0, model.kv_heads / tp)
    layers_per_stage = model.layers / pp
    kv_tok = 2 * layers_per_stage * kv_heads_per_rank * model.head_dim * KV_BYTES[kv] / GIB
    seqs = dep.parallel_sequences
    for d in devices:
        if util is not None and d.gpu_id is not None:
            d.capacity_gib = min(d.capacity_gib, util * (d.nominal_gib or d.capacity_gib))
        d.layers = round(layers_per_stage)
        d.weights_gib = w_total / shards
        d.overhead_gib = overhead
    max_ctx = _max_context(devices, [kv_tok] * len(devices))
    # vLLM needs one full-length sequence in the KV cache; more sequences share what is left
    for d in devices:
        d.kv_gib = kv_tok * ctx_tokens * (1 if dep.stack == Stack.vllm else seqs)
    if dep.stack != Stack.vllm and max_ctx is not None:
        max_ctx //= seqs
    return Fit(dep.name, dep.stack, "tensor", devices, w_total, ctx_tokens, seqs, kv,
               kv_bytes_per_token_layer(model, kv) * model.layers, max_ctx, split=[1.0] * len(devices),
               tensor_parallel=tp, pipeline_parallel=pp)


def vllm_layout(ctx, dep: Deployment, n_gpus: int) -> tuple[int, int]:
    """(tensor_parallel, pipeline_parallel): given values, else TP = GPUs per node, PP = nodes."""
    nodes = max(1, len(ctx.deployment_nodes(dep)))
    tp = dep.tensor_parallel or max(1, n_gpus // (dep.pipeline_parallel or nodes))
    pp = dep.pipeline_parallel or max(1, n_gpus // tp)
    return tp, pp


# CUDA graphs vLLM captures after sizing the KV cache (its log: "Graph capturing finished ...
# took X GiB", typically a few hundred MiB to ~1 GiB per rank): an assumed figure per rank, used
# only for releases that do not count them under --gpu-memory-utilization
VLLM_CUDA_GRAPH_GIB = 0.75
# "CUDA graph memory profiling is enabled (default since v0.21.0)": from that release the
# profiler counts the graphs inside the utilization share (vllm/v1/worker/gpu_worker.py,
# determine_available_memory, https://github.com/vllm-project/vllm/blob/v0.30.0/vllm/v1/worker/gpu_worker.py)
VLLM_GRAPHS_PROFILED_SINCE = (0, 21)


def vllm_image_version(dep: Deployment) -> tuple[int, int] | None:
    """(major, minor) of a vLLM image tag such as vllm/vllm-openai:v0.10.2 (None: no image or no version)."""
    if not dep.image:
        return None
    import re

    m = re.search(r":v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+.][A-Za-z0-9._-]*)?(?:@|$)", dep.image)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _fit_vllm(ctx, dep, model, w_total, devices, ctx_tokens, kv) -> Fit:
    tp, pp = vllm_layout(ctx, dep, len(devices))
    hid = hidden_size(model)
    # the profiling run's peak: the residual stream and hidden states are whole on every rank
    # (row-parallel outputs are all-reduced to the full width), the logits are vocab-parallel;
    # only the sharded part shrinks with more ranks, so more TP does not always fit better
    activation = VLLM_BATCHED_TOKENS * (hid * 16 + model.vocab_size * 4 / tp) / GIB
    version = vllm_image_version(dep)
    old_graphs = version is not None and version < VLLM_GRAPHS_PROFILED_SINCE
    if old_graphs:
        # an older image captures its CUDA graphs on top of the utilization share: that share
        # plus the graphs must fit in the card
        for d in devices:
            if d.gpu_id is not None:
                d.capacity_gib -= VLLM_CUDA_GRAPH_GIB
    requested = dep.context_tokens or model.max_context
    f = _fit_tensor(dep, model, w_total, devices, requested, kv if kv != "q8_0" else "fp8",
                    overhead=VLLM_BASE_OVERHEAD_GIB + CUDA_CONTEXT_GIB + activation, tp=tp, pp=pp,
                    util=dep.gpu_memory_utilization)
    f.mode = "tensor" if tp > 1 else ("pipeline" if pp > 1 else "single")
    if old_graphs:
        f.notes.append(f"image {dep.image}: vLLM {version[0]}.{version[1]} captures CUDA graphs outside "
                       f"--gpu-memory-utilization (counted inside from v0.21); ~{VLLM_CUDA_GRAPH_GIB} GiB per GPU "
                       "is kept free above the share")
    if pp > 1 and len(f.devices) == tp * pp:
        _vllm_stages(f, model, w_total, requested, kv if kv != "q8_0" else "fp8", tp, pp)
    if dep.context_tokens is None and f.max_context_tokens is not None:
        # vLLM would take the model's full context; the plan sets --max-model-len to what fits
        chosen = min(model.max_context, f.max_context_tokens)
        if chosen >= 256:
            for d in f.devices:  # each rank's own KV per token (pipeline stages differ)
                d.kv_gib = d.kv_gib / requested * chosen if requested else 0.0
            f.context_tokens = chosen
            if chosen < model.max_context:
                f.notes.append(f"--max-model-len {chosen:,} (the largest that fits; the model supports {model.max_context:,})")
    # what vLLM really does: everything left under the utilization cap becomes KV cache
    return f


def vllm_default_partition(n_layers: int, pp: int) -> list[int]:
    """Layers per stage as vLLM deals them without VLLM_PP_LAYER_PARTITION: equal shares, the
    remainder one each to the stages before the last (get_pp_indices, vllm/distributed/utils.py,
    https://github.com/vllm-project/vllm/blob/v0.30.0/vllm/distributed/utils.py)."""
    parts = [n_layers // pp] * pp
    for i in range(2, n_layers % pp + 2):
        parts[-i] += 1
    return parts


def _vllm_stages(f: Fit, model, w_total: float, ctx_tokens: int, kv: str, tp: int, pp: int) -> None:
    """Pipeline stages with their own layer counts, embeddings on the first, lm_head on the last.

    Each rank sizes its own KV cache, and vLLM cuts every rank to the smallest block count
    (vllm/v1/core/kv_cache_utils.py, min_num_blocks), so the tightest stage sets the context.
    Over unequal GPUs the plan deals the layers by each stage's room and sets
    VLLM_PP_LAYER_PARTITION (vllm/envs.py), as the default equal deal would leave the small
    GPUs' stage the bottleneck.
    """
    hid = hidden_size(model)
    embed = model.vocab_size * hid * (w_total * GIB * 8 / (model.params_b * 1e9)) / 8 / GIB
    w_layer = max(w_total - 2 * embed, 0.0) / model.layers
    kv_heads_per_rank = max(1.0, model.kv_heads / tp)
    dk = getattr(model, "head_dim_k", None) or model.head_dim
    dv = getattr(model, "head_dim_v", None) or model.head_dim
    kv_layer_tok = kv_heads_per_rank * (dk + dv) * KV_BYTES[kv] / GIB  # one layer, one token, one rank
    stages = [f.devices[i * tp:(i + 1) * tp] for i in range(pp)]
    extras = [(embed if s == 0 else 0.0) + (embed if s == pp - 1 else 0.0) for s in range(pp)]
    caps = [min(d.capacity_gib for d in st) for st in stages]
    overhead = [max(d.overhead_gib for d in st) for st in stages]
    parts = vllm_default_partition(model.layers, pp)
    if len({round(c, 2) for c in caps}) > 1:
        fixed = [o + e / tp for o, e in zip(overhead, extras)]
        per_layer = w_layer / tp + kv_layer_tok * ctx_tokens
        parts = [int(c) for c in _balanced_split(caps, fixed, per_layer, model.layers)]
        f.pp_partition_env = parts != vllm_default_partition(model.layers, pp)
    f.pp_layers = parts
    best = float("inf")
    for st, n, e in zip(stages, parts, extras):
        for d in st:
            d.layers = n
            d.weights_gib = (n * w_layer + e) / tp
            d.kv_gib = n * kv_layer_tok * ctx_tokens
            room = d.capacity_gib - d.weights_gib - d.overhead_gib
            if room < 0:
                best = -1
            elif n:
                best = min(best, room / (n * kv_layer_tok)) if best >= 0 else best
    f.max_context_tokens = None if best < 0 else (10_485_760 if best == float("inf") else int(best))


def _max_context(devices: list[Device], kv_per_token: list[float]) -> int | None:
    best: float | None = None
    for d, per_tok in zip(devices, kv_per_token):
        room = d.capacity_gib - d.weights_gib - d.overhead_gib
        if room < 0:
            return None
        if per_tok > 0:
            n = room / per_tok
            best = n if best is None else min(best, n)
    if best is None:
        return 10_485_760
    return int(best)


def round_context(n: int) -> int:
    """Round a context length down to a friendly size (multiple of 256, or a power of two above 8k)."""
    if n >= 8192:
        p = 2 ** int(math.log2(n))
        return p if n - p < 1024 else n - n % 1024
    return max(256, n - n % 256)
