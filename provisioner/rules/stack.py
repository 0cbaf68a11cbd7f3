"""stack family: does the chosen inference stack run this model, format and layout?

Facts and sources: each stack's own docs, cited in docs/stack-*.md, docs/vllm-tensor-parallel.md,
docs/exo-linux-cpu.md, docs/petals-swarm.md and docs/rpc-image.md (vLLM parallelism:
https://github.com/vllm-project/vllm/blob/main/docs/serving/parallelism_scaling.md).
"""

from __future__ import annotations

import math

from .. import engineopts, sizing
from ..diagnostics import Severity
from ..spec.models import Deployment, Stack
from .context import Context, PlacedGpu
from .engine import rule

RDMA_FABRICS = ("infiniband", "roce")
PETALS_ARCHITECTURES = ("llama", "bloom", "falcon", "mixtral")  # petals src/petals/models/__init__.py
FP8_MIN_CC = 8.9  # FP8 W8A8 on Ada/Hopper+ (https://github.com/vllm-project/vllm/blob/main/docs/features/quantization/README.md)

STACK_NAMES = {
    Stack.llamacpp: "llama.cpp", Stack.llamacpp_rpc: "llama.cpp RPC", Stack.ollama: "Ollama",
    Stack.vllm: "vLLM", Stack.tabbyapi: "TabbyAPI", Stack.exo: "exo", Stack.petals: "Petals",
}

# What each stack loads; sources per format in provisioner/spec/data/formats.yaml.
STACK_LOADS = {
    Stack.llamacpp: "GGUF files only",
    Stack.llamacpp_rpc: "GGUF files only",
    Stack.ollama: "GGUF (safetensors only by converting them to GGUF on import)",
    Stack.vllm: ("Hugging Face safetensors (FP16/BF16, AWQ, GPTQ, FP8); "
                 "GGUF only experimentally, and no EXL2/EXL3"),
    Stack.tabbyapi: "EXL3 and FP16/BF16 on its main branch; EXL2/GPTQ only from the exl2-checkpoint branch",
    Stack.exo: "MLX-format Hugging Face repos",
    Stack.petals: "Hugging Face FP16/BF16 weights, quantized to int8 or nf4 when loaded",
}


# ---------------------------------------------------------------- helpers shared by the other families


def short_name(pg: PlacedGpu) -> str:
    """'RTX 3090' for 'NVIDIA GeForce RTX 3090'; the spec's model id when unknown."""
    if pg.entry is None:
        return pg.gpu.model
    return pg.entry.name.replace("NVIDIA GeForce ", "").replace("NVIDIA ", "")


def stack_name(stack: Stack) -> str:
    return STACK_NAMES.get(stack, stack.value)


def model_name(ctx: Context, dep: Deployment) -> str:
    model = ctx.model(dep)
    return model.name if model is not None else str(dep.model)


def placement_resolved(ctx: Context, dep: Deployment) -> bool:
    """Every placement node and GPU id exists (placement-reference reports the rest)."""
    for p in dep.placement:
        ni = ctx.node_index(p.node)
        if ni is None:
            return False
        if p.gpus is not None and any(ctx.gpu_by_id(ni, g) is None for g in p.gpus):
            return False
    return True


def compute_capability(pg: PlacedGpu) -> float | None:
    if pg.entry is None or not pg.entry.compute_capability:
        return None
    try:
        return float(pg.entry.compute_capability)
    except ValueError:
        return None


def vllm_groups(ctx: Context, dep: Deployment) -> tuple[int, int, list[list[PlacedGpu]]] | None:
    """(tp, pp, TP groups in rank order) as the planner deploys them; None when the
    layout cannot be judged (unresolved placement, or tp x pp != placed GPUs)."""
    placed = ctx.placed_gpus(dep)
    if not placed or not placement_resolved(ctx, dep):
        return None
    tp, pp = sizing.vllm_layout(ctx, dep, len(placed))
    if tp * pp != len(placed):
        return None
    return tp, pp, [placed[k * tp:(k + 1) * tp] for k in range(pp)]


def cross_node_groups(groups: list[list[PlacedGpu]]) -> list[list[PlacedGpu]]:
    return [g for g in groups if len({pg.node_index for pg in g}) > 1]


def _labels(gpus: list[PlacedGpu], limit: int = 8) -> str:
    names = [pg.label for pg in gpus[:limit]]
    return ", ".join(names) + (f", … ({len(gpus)} in all)" if len(gpus) > limit else "")


def _divisors(n: int) -> list[int]:
    # pairs (d, n // d) up to sqrt(n): a head count from a user catalog may be huge
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


# ---------------------------------------------------------------- vllm-tensor-parallel


@rule("vllm-tensor-parallel", "error",
      "vLLM tensor/pipeline parallel sizes divide the attention heads, match the GPUs and stay within a node",
      tags=("stack", "vllm"))
def vllm_tensor_parallel(ctx: Context):
    for i, dep in enumerate(ctx.rig.serve):
        if dep.stack != Stack.vllm:
            continue
        placed = ctx.placed_gpus(dep)
        if not placed or not placement_resolved(ctx, dep):
            continue
        base = ("serve", i)
        tp, pp = sizing.vllm_layout(ctx, dep, len(placed))
        tp_path = base + (("tensor_parallel",) if dep.tensor_parallel else ("placement",))
        tp_desc = f"tensor_parallel {tp}" + ("" if dep.tensor_parallel else " (rigctl's default: GPUs per node)")

        model = ctx.model(dep)
        if model is not None and tp > 1 and model.attention_heads % tp:
            heads = model.attention_heads
            lower = max(d for d in _divisors(heads) if d < tp)
            higher = min((d for d in _divisors(heads) if d > tp), default=None)
            use = f"{lower} or {higher}" if higher else str(lower)
            yield vllm_tensor_parallel.finding(
                f"{model.name} has {heads} attention heads; {tp_desc} does not divide them and vLLM refuses to start "
                f"('Total number of attention heads ({heads}) must be divisible by tensor parallel size ({tp})') — "
                f"use {use}, or tensor_parallel 1 with pipeline_parallel {tp * pp}",
                tp_path, tag="heads", at_key=True,
                hint="pipeline parallel has no head constraint; 3, 5, 6 or 7 GPUs usually need it")

        if tp * pp != len(placed):
            path = tp_path if dep.tensor_parallel or not dep.pipeline_parallel else base + ("pipeline_parallel",)
            fix = (f"set pipeline_parallel {len(placed) // tp}" if len(placed) % tp == 0
                   else f"use a tensor_parallel that divides {len(placed)}")
            yield vllm_tensor_parallel.finding(
                f"tensor_parallel {tp} × pipeline_parallel {pp} = {tp * pp} GPUs, but the placement gives "
                f"{len(placed)} ({_labels(placed)}) — {fix}, or place {tp * pp} GPUs",
                path, tag="gpu-count", at_key=True)
            continue

        groups = [placed[k * tp:(k + 1) * tp] for k in range(pp)]
        mixed = next((g for g in groups if len({pg.gpu.model for pg in g}) > 1
                      and all(pg.entry is not None for pg in g)), None)
        if tp > 1 and mixed:
            smallest = min(mixed, key=lambda pg: pg.entry.usable_gib)
            slowest = min(mixed, key=lambda pg: pg.entry.bandwidth_gbs)
            parts = " + ".join(f"{pg.label} ({short_name(pg)})" for pg in mixed)
            yield vllm_tensor_parallel.finding(
                f"tensor-parallel group {parts} mixes GPU models: ranks get equal shards, so the smallest "
                f"({short_name(smallest)}, {smallest.entry.memory_gib:g} GiB) bounds capacity and the slowest "
                f"({short_name(slowest)}, {slowest.entry.bandwidth_gbs:g} GB/s) bounds speed — use identical GPUs "
                "in each TP group, or pipeline_parallel across the different models",
                base + ("placement",), tag="mixed-gpus", severity=Severity.warning, at_key=True)

        spanning = cross_node_groups(groups)
        if spanning:
            fabric = ctx.rig.fabric
            nodes = ctx.deployment_nodes(dep)
            per_node = len(placed) // max(len(nodes), 1)
            layout = f"tensor_parallel {per_node} (GPUs per node) and pipeline_parallel {len(nodes)} (nodes)"
            if fabric is not None and fabric.kind in RDMA_FABRICS:
                yield vllm_tensor_parallel.finding(
                    f"the tensor-parallel group {_labels(spanning[0])} spans nodes: every layer all-reduces over the "
                    f"{fabric.speed_gbps:g} Gb/s {fabric.kind} fabric; vLLM recommends TP within a node and PP across "
                    f"nodes — prefer {layout}",
                    tp_path, tag="cross-node", severity=Severity.warning, at_key=True)
            else:
                over = f"{fabric.kind} at {fabric.speed_gbps:g} Gb/s" if fabric else "no fabric"
                yield vllm_tensor_parallel.finding(
                    f"the tensor-parallel group {_labels(spanning[0])} spans nodes over {over}: multi-node tensor "
                    "parallel all-reduces every layer and needs InfiniBand-class networking (vLLM distributed serving docs) — "
                    f"use {layout}",
                    tp_path, tag="cross-node", at_key=True)


# ---------------------------------------------------------------- stack-format


def _formats_for(ctx: Context, stack: Stack, limit: int = 4) -> list[str]:
    seen_families, out = set(), []
    for f in ctx.catalog.formats:
        if stack.value in f.stacks and f.family not in seen_families:
            seen_families.add(f.family)
            out.append(f.id)
    return out[:limit]


# formats vLLM reads from a checkpoint quantized beforehand (fp8 it can quantize while loading a
# BF16 checkpoint: --quantization fp8, see provisioner/plan/vllm.py)
PREQUANTIZED_FAMILIES = ("awq", "gptq", "int8", "int4", "compressed-tensors")


def _has_local_source(dep) -> bool:
    """A `source` (hf, url or path) names the weights to load instead of the catalog's base repository."""
    source = getattr(dep, "source", None)
    return bool(source is not None and source.local)


@rule("stack-format", "error", "the stack loads the deployment's weight format", tags=("stack",))
def stack_format(ctx: Context):
    for i, dep in enumerate(ctx.rig.serve):
        fmt = ctx.format(dep)
        if fmt is None:
            continue
        base = ("serve", i)
        name = stack_name(dep.stack)
        if dep.stack == Stack.tabbyapi and fmt.family in ("exl2", "gptq"):
            yield stack_format.finding(
                f"{fmt.name} on TabbyAPI: main removed the ExLlamaV2 backend (2026-07-14) and the published images "
                "are built from main, so they load EXL3 and FP16/BF16 only — pin a build of the exl2-checkpoint "
                "branch (docker build -f docker/Dockerfile), or convert the model to exl3",
                base + ("format",), tag="exl2-checkpoint", severity=Severity.warning)
        elif dep.stack.value not in fmt.stacks:
            alternatives = _formats_for(ctx, dep.stack)
            fix = f"serve {fmt.name} with stack {' or '.join(fmt.stacks)}" if fmt.stacks else "pick another format"
            if alternatives:
                fix += f", or give {name} a format it loads ({', '.join(alternatives)})"
            yield stack_format.finding(
                f"{name} cannot serve format {fmt.name} ({fmt.family}): it loads {STACK_LOADS[dep.stack]} — {fix}",
                base + ("format",), tag="unsupported")

        if fmt.family in ("exl2", "exl3") and dep.bits_per_weight is None:
            yield stack_format.finding(
                f"{fmt.name} has no fixed size: bits per weight are chosen at quantization time (e.g. 4.65) and set "
                "memory and disk needs — add bits_per_weight from the model repo's name or config",
                base + ("format",), tag="bits")

        if (dep.stack == Stack.vllm and fmt.family in PREQUANTIZED_FAMILIES and "vllm" in fmt.stacks
                and dep.model_file is None and not _has_local_source(dep)):
            model = ctx.model(dep)
            repo = next((a for a in getattr(model, "aliases", []) if "/" in a), None) if model else None
            base_size = f" ({model.params_b * 2 / 1.073741824:.0f} GiB at 16 bits)" if model else ""
            yield stack_format.finding(
                f"format {fmt.name} on vLLM needs a quantized {fmt.family.upper()} checkpoint, and none is given: vLLM would "
                f"download {repo or 'the catalog model'}, the unquantized base model{base_size}, while memory is "
                f"planned for {fmt.name} — point source.hf (repo and revision of a {fmt.family.upper()} checkpoint) "
                "or model_file at the quantized checkpoint",
                base + ("format",), tag="checkpoint")

        if fmt.family == "fp8" and dep.stack == Stack.vllm:
            old = [pg for pg in ctx.placed_gpus(dep)
                   if (cc := compute_capability(pg)) is not None and cc < FP8_MIN_CC]
            if old:
                pg = old[0]
                yield stack_format.finding(
                    f"FP8 W8A8 compute needs compute capability ≥ {FP8_MIN_CC} (Ada/Hopper or newer); {pg.label} "
                    f"({short_name(pg)}, sm {pg.entry.compute_capability}) has no FP8 units, so vLLM can at best run "
                    "weight-only FP8 kernels there — use awq or gptq on these GPUs",
                    base + ("format",), tag="fp8-compute", severity=Severity.warning)


# ---------------------------------------------------------------- stack-multi-node


@rule("stack-multi-node", "error", "the stack can spread one model over the nodes it is placed on", tags=("stack",))
def stack_multi_node(ctx: Context):
    for i, dep in enumerate(ctx.rig.serve):
        nodes = ctx.deployment_nodes(dep)
        if len(nodes) < 2:
            continue
        base = ("serve", i)
        names = ", ".join(n.name for n in nodes)
        if dep.stack == Stack.ollama:
            yield stack_multi_node.finding(
                f"Ollama has no multi-node inference (ollama#9147; RPC was never merged), but the placement spans "
                f"{len(nodes)} nodes ({names}) — use stack llamacpp-rpc or vllm, or place it on one node",
                base + ("stack",), tag="ollama")
        elif dep.stack == Stack.llamacpp:
            yield stack_multi_node.finding(
                f"llama-server runs on one host; the placement spans {len(nodes)} nodes ({names}) — use stack "
                "llamacpp-rpc (rpc-server on the other nodes, --rpc on the first), or place it on one node",
                base + ("stack",), tag="llamacpp")
        elif dep.stack == Stack.tabbyapi:
            yield stack_multi_node.finding(
                f"TabbyAPI is single-node only; the placement spans {len(nodes)} nodes ({names}) — place it on one "
                "node, or use vllm for a multi-node deployment",
                base + ("stack",), tag="tabbyapi")
        elif dep.stack == Stack.vllm:
            layout = vllm_groups(ctx, dep)
            if layout is None:
                continue  # vllm-tensor-parallel reports the layout problem
            tp, pp, groups = layout
            if cross_node_groups(groups):
                continue  # vllm-tensor-parallel[cross-node] says how to lay it out
            yield stack_multi_node.finding(
                f"vLLM over {len(nodes)} nodes ({names}) runs as a Ray cluster: head on {nodes[0].name} (Ray port "
                f"6379), tensor_parallel {tp} within each node, pipeline_parallel {pp} across nodes; every node needs "
                "the same vllm image and the weights at the same path",
                base + ("stack",), tag="ray", severity=Severity.info,
                hint="rigctl runs the Ray head and workers as services and sets VLLM_HOST_IP, NCCL_SOCKET_IFNAME "
                     "and GLOO_SOCKET_IFNAME per node")


# ---------------------------------------------------------------- exo-linux-cpu


@rule("exo-linux-cpu", "warning", "exo uses NVIDIA GPUs on Linux (it runs on CPU there)", tags=("stack", "exo"))
def exo_linux_cpu(ctx: Context):
    for i, dep in enumerate(ctx.rig.serve):
        if dep.stack != Stack.exo:
            continue
        placed = ctx.placed_gpus(dep)
        for j, p in enumerate(dep.placement):
            ni = ctx.node_index(p.node)
            if ni is None:
                continue
            node = ctx.rig.nodes[ni]
            nvidia = [pg for pg in placed if pg.node_index == ni and pg.entry is not None
                      and pg.entry.vendor == "nvidia"]
            if node.os == "macos" or not nvidia:
                continue
            vram = sum(pg.entry.memory_gib for pg in nvidia)
            ram = f"{node.memory_gib:g} GiB of system RAM" if node.memory_gib else "system RAM (memory_gib not given)"
            yield exo_linux_cpu.finding(
                f"exo runs on CPU on Linux (GPU support is under development; CUDA only as experimental mlx-cuda "
                f"builds for DGX Spark): {node.name}'s {len(nvidia)}× {short_name(nvidia[0])} ({vram:g} GiB) stay "
                f"idle and its share of {model_name(ctx, dep)} comes from {ram} at CPU speed — serve Linux/NVIDIA "
                "nodes with vllm or llamacpp-rpc and keep exo for Apple Silicon",
                ("serve", i, "placement", j, "node"), tag="linux-cpu",
                hint="exo is experimental (v1 rewrite, Dec 2025; Tier 1 platform is Apple Silicon macOS)")


# ---------------------------------------------------------------- petals-swarm

_PUBLIC_BOOTSTRAP = ("petals.dev", "petals.ml")


@rule("petals-swarm", "error", "Petals runs in a private swarm with its own bootstrap peers", tags=("stack", "petals"))
def petals_swarm(ctx: Context):
    for i, dep in enumerate(ctx.rig.serve):
        if dep.stack != Stack.petals:
            continue
        base = ("serve", i)
        swarm = dep.swarm
        public_peers = [k for k, p in enumerate(swarm.initial_peers if swarm else [])
                        if any(h in p for h in _PUBLIC_BOOTSTRAP)]
        if swarm is not None and not swarm.private:
            yield petals_swarm.finding(
                "swarm.private is false: in the public Petals swarm, peers serving model blocks can recover and "
                "modify your inputs and outputs (Petals README, Privacy) — set private: true and list your own "
                "bootstrap peers in initial_peers",
                base + ("swarm", "private"), tag="public")
        elif public_peers:
            k = public_peers[0]
            yield petals_swarm.finding(
                f"initial_peers[{k}] '{swarm.initial_peers[k]}' is a public swarm bootstrap peer — run your own "
                "(python -m petals.cli.run_dht --host_maddrs /ip4/0.0.0.0/tcp/31337 --identity_path bootstrap1.id) "
                "and list its /ip4/<IP>/tcp/31337/p2p/Qm… address",
                base + ("swarm", "initial_peers", k), tag="public")
        elif swarm is None or not swarm.initial_peers:
            yield petals_swarm.finding(
                "no initial_peers: Petals' run_server defaults to the PUBLIC swarm (bootstrap1.petals.dev) — run a "
                "bootstrap peer with run_dht on a rig node and list its multiaddr "
                "(/ip4/<IP>/tcp/31337/p2p/Qm…) under swarm.initial_peers",
                base + (("swarm",) if swarm is not None else ("stack",)), tag="initial-peers")

        model = ctx.model(dep)
        if model is not None and model.architecture not in PETALS_ARCHITECTURES:
            yield petals_swarm.finding(
                f"{model.name} ({model.architecture}) is not a Petals model family: Petals serves BLOOM, Llama, "
                "Falcon and Mixtral only (transformers pinned at 4.43.1) — pick one of those, or another stack",
                base + ("model",), tag="architecture")

        yield petals_swarm.finding(
            "Petals is unmaintained: its last commit is from 2024-08-25, with transformers 4.43.1 and bitsandbytes "
            "0.41.1 pinned and a CUDA 11.0 image — fine for a private experiment; for production use vllm "
            "(pipeline_parallel across nodes) or llamacpp-rpc",
            base + ("stack",), tag="unmaintained", severity=Severity.warning)


# ---------------------------------------------------------------- rpc-image


@rule("rpc-image", "error", "llama.cpp RPC in containers uses an image built with RPC support", tags=("stack", "container"))
def rpc_image(ctx: Context):
    if ctx.rig.deploy_mode != "container":
        return  # native units use the llama.cpp build rigctl installs (GGML_RPC=ON)
    for i, dep in enumerate(ctx.rig.serve):
        if dep.stack == Stack.llamacpp_rpc and not dep.image:
            yield rpc_image.finding(
                f"deployment {dep.name} runs llama.cpp RPC in containers with the official llama.cpp image, "
                "which is built without GGML_RPC: it has no rpc-server and llama-server has no --rpc "
                "(llama.cpp .devops/cuda.Dockerfile)",
                ("serve", i, "stack"),
                hint="set image: to one you build with -DGGML_RPC=ON (the same build on every node), "
                     "or drop deploy_mode: container to run the native build rigctl installs")


# ---------------------------------------------------------------- extra-args-conflict

# Flags each planner already writes, and the spec field that decides them. extra_args come
# last on the command line, where the engines let the last value win: an override would make
# the process listen, load or split differently from the plan that the firewall, the unit
# and verify follow. (spec field, what rigctl derives from it)
_LISTEN = ("bind", "the listen address, which the firewall and verify follow")
_PORT = ("port", "the port the firewall filters and verify probes")
_AUTH = ("auth", "the API key, kept out of the spec and the process list")
_MODEL = ("model / model_file", "the model rigctl copies, sizes and names")
_PLACE = ("placement", "the layer split the memory fit computed")
_LLAMACPP = {
    ("--host",): _LISTEN, ("--port",): _PORT, ("--api-key", "--api-key-file"): _AUTH,
    ("-m", "--model", "-mu", "--model-url", "-hf", "-hfr", "--hf-repo", "-hff", "--hf-file"): _MODEL,
    ("-c", "--ctx-size"): ("context_tokens", "the context the memory fit sized, times parallel_sequences"),
    ("-np", "--parallel"): ("parallel_sequences", "the parallel slots the KV cache was sized for"),
    ("-ngl", "--gpu-layers", "--n-gpu-layers"): _PLACE,
    ("-ts", "--tensor-split"): ("tensor_split", "the per-GPU layer split the memory fit computed"),
    ("--rpc",): ("placement", "the RPC workers rigctl starts on the other nodes"),
    ("-ctk", "--cache-type-k"): ("kv_cache_type_k", "the K cache type the fit sized"),
    ("-ctv", "--cache-type-v"): ("kv_cache_type_v", "the V cache type the fit sized"),
    ("-fa", "--flash-attn"): ("flash_attention", "flash attention, which a quantized KV cache needs"),
}
_VLLM = {
    ("--host",): _LISTEN, ("--uds",): _LISTEN, ("--port",): _PORT, ("--api-key",): _AUTH,
    ("--model",): _MODEL, ("--served-model-name",): ("name", "the model name clients and verify ask for"),
    ("-tp", "--tensor-parallel-size"): ("tensor_parallel", "the tensor-parallel size the fit and Ray layout use"),
    ("-pp", "--pipeline-parallel-size"): ("pipeline_parallel", "the pipeline stages, one per node"),
    ("--max-model-len",): ("context_tokens", "the context the memory fit sized"),
    ("--gpu-memory-utilization",): ("gpu_memory_utilization", "the memory share the fit assumed"),
    ("--kv-cache-dtype",): ("kv_cache_type", "the KV cache type the fit sized"),
    ("--max-num-seqs",): ("parallel_sequences", "the concurrency the KV cache was sized for"),
    ("-q", "--quantization"): ("format", "the weight format the fit sized"),
    ("--distributed-executor-backend",): ("placement", "Ray across nodes, which rigctl starts"),
}
_TABBYAPI = {  # common/args.py: one --flag per config.yml key
    ("--host",): _LISTEN, ("--port",): _PORT, ("--disable-auth",): _AUTH,
    ("--config",): ("the deployment's fields", "config.yml, which rigctl writes"),
    ("--model-dir", "--model-name"): _MODEL, ("--backend",): ("format", "the backend for the weight format"),
    ("--max-seq-len", "--cache-size"): ("context_tokens", "the context and cache the memory fit sized"),
    ("--cache-mode",): ("kv_cache_type", "the KV cache type the fit sized"),
    ("--tensor-parallel",): ("tensor_parallel", "the layout the fit computed"),
    ("--gpu-split", "--gpu-split-auto"): ("gpu_split_gb", "the per-GPU split the fit computed"),
    ("--log-prompt", "--log-generation-params", "--log-requests"):
        ("no field", "logging off, so prompts stay out of the journal"),
}
_EXO = {  # exo v1.0.71 src/exo/main.py (provisioner/contracts/exo.yaml)
    ("--api-port",): _PORT, ("--no-api",): ("placement", "the API on the first node only"),
    ("--bootstrap-peers",): ("placement", "the peer list of the deployment's nodes"),
    ("--libp2p-port",): ("no field", "the peer port the firewall filters (52414/tcp)"),
}
_PETALS = {  # petals.cli.run_server (underscores; spelled with dashes here, see _normal)
    ("--port", "--host-maddrs", "--announce-maddrs", "--public-ip"):
        ("placement", "the per-GPU ports and addresses the firewall filters"),
    ("--initial-peers", "--new-swarm"): ("swarm.initial_peers", "the private swarm; the default is the public one"),
    ("--block-indices", "--num-blocks"): ("placement", "the block ranges that cover the model exactly once"),
    ("--quant-type", "--torch-dtype"): ("format", "the weight format the fit sized"),
    ("--revision",): ("source.hf.revision", "the commit the servers load, pinned with the repository"),
}
PLANNED_FLAGS = {
    Stack.llamacpp: _LLAMACPP, Stack.llamacpp_rpc: _LLAMACPP, Stack.vllm: _VLLM, Stack.tabbyapi: _TABBYAPI,
    Stack.exo: _EXO, Stack.petals: _PETALS,
    # Ollama takes no flags: the plan configures `ollama serve` by environment
}
# argparse-based engines: --max_model_len means --max-model-len (vLLM), and a unique prefix
# of a long option selects it
_ARGPARSE = (Stack.vllm, Stack.tabbyapi, Stack.exo, Stack.petals)


def _normal(flag: str, stack: Stack) -> str:
    return flag.replace("_", "-") if stack in _ARGPARSE and flag.startswith("--") else flag


def _planned(flag: str, stack: Stack) -> tuple[str, tuple[str, str]] | None:
    """(planned flag, (field, what)) that an extra_args item sets, if any."""
    table = PLANNED_FLAGS.get(stack, {})
    name = _normal(flag.partition("=")[0], stack)
    if not name.startswith("-"):
        return None
    for flags, why in table.items():
        if name in flags:
            return name, why
    if stack in _ARGPARSE and name.startswith("--") and len(name) >= 6:
        hits = [(f, why) for flags, why in table.items() for f in flags if f.startswith(name)]
        if len(hits) == 1:
            return hits[0]
    return None


@rule("extra-args-conflict", "error", "extra_args do not set what rigctl already sets from the spec",
      tags=("stack", "security"))
def extra_args_conflict(ctx: Context):
    for i, dep in enumerate(ctx.rig.serve):
        for j, arg in enumerate(dep.extra_args):
            hit = _planned(arg, dep.stack)
            if hit is None:
                continue
            flag, (field, what) = hit
            fix = ("remove it" if field == "no field"
                   else f"remove it and set {field} instead")
            given = arg.partition("=")[0]
            sets = (flag if arg == flag else f"{flag} ({arg})" if given == flag
                    else f"{arg} (read as {flag})")
            source = "itself" if field == "no field" else f"from {field}"
            yield extra_args_conflict.finding(
                f"{dep.name}: extra_args[{j}] sets {sets}, which rigctl already sets {source} ({what}); extra_args "
                f"come last, so {stack_name(dep.stack)} would run differently from the plan — {fix}",
                ("serve", i, "extra_args", j), flag=flag)
        # options the plan reads from extra_args when their field is not set (engineopts):
        # given both ways, the field is planned and the flag that comes last would win
        for c in engineopts.options(dep).conflicts:
            yield extra_args_conflict.finding(
                f"{dep.name}: extra_args[{c.index}] ({c.arg}) sets {c.option} to {_word(c.arg_value)}, but the spec "
                f"sets {c.option}: {_word(c.field_value)}; rigctl plans memory and speed with the field while "
                f"{stack_name(dep.stack)} would run with the flag, which comes last — remove one of them",
                ("serve", i, "extra_args", c.index), tag="field", flag=c.arg)


def _word(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)
