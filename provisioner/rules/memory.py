"""memory family: does each model fit where the spec puts it?"""

from __future__ import annotations

from .. import sizing
from ..diagnostics import Severity
from ..spec.models import Stack
from .engine import rule


def _name(ctx, dep) -> str:
    model = ctx.model(dep)
    return f"{model.name if model else dep.model} {dep.format}"


MIN_CONTEXT = 256  # below this no context "fits": the suggestion would be a rig that cannot answer


def _ctx_fix(dep, best: int | None) -> str:
    """The largest context that fits, in the words of the stack's own setting ("" when none fits)."""
    if best is None or best < MIN_CONTEXT:
        return ""
    setting = {Stack.vllm: f"--max-model-len {best}", Stack.ollama: f"OLLAMA_CONTEXT_LENGTH={best}"}.get(
        dep.stack, f"context_tokens: {best}")
    return f"the largest context that fits is {best:,} tokens ({setting})"


@rule("memory-fit", "error", "weights + KV cache + overheads fit on every device the model is placed on",
      tags=("memory",))
def memory_fit(ctx):
    yield from apple_memory(ctx)
    for i, dep in enumerate(ctx.rig.serve):
        f = sizing.fit(ctx, dep)
        if f is None:
            continue
        base = ("serve", i)
        node = ctx.node(f.host_node) if f.host_kv_gib and f.host_node else None
        if node is not None and node.memory_gib:
            room = node.memory_gib - max(1.0, 0.1 * node.memory_gib)
            if f.host_kv_gib > room:
                yield memory_fit.finding(
                    f"{_name(ctx, dep)}: the KV cache kept in system RAM (kv_offload: false / --no-kv-offload) takes "
                    f"{f.host_kv_gib:.1f} GiB ({f.context_tokens:,} tokens x {f.parallel} seq), more than the "
                    f"{room:.1f} GiB node {node.name} leaves beside the OS", base + ("kv_offload",), tag="host-kv",
                    hint="lower the context, quantize the cache, or keep the cache on the GPUs")
        for d in f.overflowing:
            room_for_weights = d.capacity_gib - d.overhead_gib
            kvdesc = f"KV {d.kv_gib:.1f} GiB ({f.context_tokens:,} tokens x {f.parallel} seq, {f.kv_type})"
            usage = (f"weights {d.weights_gib:.1f} + {kvdesc} + overhead {d.overhead_gib:.1f} = "
                     f"{d.used_gib:.1f} GiB > {d.capacity_gib:.1f} GiB usable on {d.label} ({d.name})")
            if d.weights_gib > room_for_weights:
                need = f.weights_gib + sum(x.overhead_gib for x in f.devices)
                have = sum(x.capacity_gib for x in f.devices)
                if f.user_split and need < have:
                    yield memory_fit.finding(
                        f"{_name(ctx, dep)}: tensor split {f.split} puts {d.layers} of {sum(x.layers for x in f.devices)} "
                        f"layers on {d.label}: {usage}",
                        base + ("tensor_split" if dep.tensor_split else "gpu_split_gb",), tag="split",
                        hint="drop tensor_split to let rigctl balance the layers, or move layers off this GPU")
                else:
                    yield memory_fit.finding(
                        f"{_name(ctx, dep)}: {f.weights_gib:.1f} GiB ({f.weights_gib * sizing.GIB / 1e9:.1f} GB) of weights "
                        f"do not fit: {usage}; all placed devices give {have:.1f} GiB for {need:.1f} GiB of weights and overheads",
                        base + ("format",), tag="weights",
                        hint="use a smaller quantization, add GPUs to placement, or pick a smaller model")
                break
            fix = _ctx_fix(dep, f.max_context_tokens and sizing.round_context(f.max_context_tokens)
                           if (f.max_context_tokens or 0) >= MIN_CONTEXT else None)
            if not fix and not f.user_split:
                # no context fits at all: lowering it is no fix, the weights and overheads leave no room
                left = min(x.capacity_gib - x.weights_gib - x.overhead_gib for x in f.devices)
                yield memory_fit.finding(
                    f"{_name(ctx, dep)}: no context fits: {usage}; weights and overheads leave "
                    f"{max(left, 0.0):.2f} GiB for the KV cache on the fullest device, less than {MIN_CONTEXT} tokens",
                    base + ("format",), tag="weights",
                    hint="use a smaller quantization, add GPUs to placement, or pick a smaller model")
                break
            if f.user_split and f.max_context_tokens and f.max_context_tokens >= f.context_tokens * 0.5:
                yield memory_fit.finding(f"{_name(ctx, dep)}: tensor split {f.split} overflows {d.label}: {usage}",
                                         base + ("tensor_split" if dep.tensor_split else "gpu_split_gb",), tag="split",
                                         hint="drop tensor_split to let rigctl balance the layers"
                                         + (f"; {fix}" if fix else ""))
            else:
                path = base + ("context_tokens",) if dep.context_tokens else base + ("model",)
                kvhint = " or a q8_0 KV cache" if f.kv_type in ("f16", "bf16") else ""
                yield memory_fit.finding(f"{_name(ctx, dep)}: context does not fit: {usage}; {fix}", path,
                                         tag="context", hint=f"lower the context{kvhint}, or fewer parallel sequences")
            break


def apple_memory(ctx):
    """Apple nodes: the chip's memory is the node's RAM, which the spec must give (a finding per node)."""
    for ni, node in enumerate(ctx.rig.nodes):
        chips = [pg for pg in ctx.gpus(ni) if pg.entry is not None and pg.entry.vendor == "apple"]
        if not chips:
            continue
        chip = ctx.catalog.gpus.get(chips[0].gpu.model) or chips[0].entry
        if not node.memory_gib:
            yield memory_fit.finding(
                f"node {node.name} is an {chip.name} without memory_gib: it is planned as the chip's largest "
                f"configuration ({chip.memory_gib:g} GB, {chip.usable_gib:.1f} GiB for the GPU), which this Mac may "
                "not have", ("nodes", ni, "name"), tag="apple-ram", severity=Severity.warning,
                hint="set memory_gib to the Mac's RAM (About This Mac, or `sysctl hw.memsize`)")
        elif chip.memory_options_gib and all(abs(node.memory_gib - m) > 0.5 for m in chip.memory_options_gib):
            sizes = ", ".join(f"{m:g}" for m in chip.memory_options_gib)
            yield memory_fit.finding(
                f"node {node.name}: {chip.name} Macs are sold with {sizes} GB; memory_gib {node.memory_gib:g} is none "
                "of them", ("nodes", ni, "memory_gib"), tag="apple-ram", severity=Severity.warning,
                hint="set memory_gib to the installed RAM in GB, or pick the chip variant that matches")


@rule("memory-context-limit", "warning", "the requested context is within what the model was trained for",
      tags=("memory",))
def context_limit(ctx):
    for i, dep in enumerate(ctx.rig.serve):
        model = ctx.model(dep)
        if model is None or not dep.context_tokens:
            continue
        if dep.context_tokens > model.max_context:
            yield context_limit.finding(
                f"context_tokens {dep.context_tokens:,} exceeds {model.name}'s trained context of {model.max_context:,} tokens; "
                "quality degrades past it and vLLM refuses to start",
                ("serve", i, "context_tokens"), hint=f"use at most {model.max_context:,}")


@rule("memory-vllm-concurrency", "info", "vLLM's KV cache holds the requested number of full-length sequences",
      tags=("memory", "vllm"))
def vllm_concurrency(ctx):
    for i, dep in enumerate(ctx.rig.serve):
        if dep.stack != Stack.vllm or dep.parallel_sequences <= 1:
            continue
        f = sizing.fit(ctx, dep)
        if f is None or not f.fits or not f.max_context_tokens:
            continue
        seqs = f.max_context_tokens // max(f.context_tokens, 1)
        if seqs < dep.parallel_sequences:
            yield vllm_concurrency.finding(
                f"the KV cache left under gpu_memory_utilization {dep.gpu_memory_utilization} holds {f.max_context_tokens:,} tokens: "
                f"{seqs} full {f.context_tokens:,}-token sequences at once, not {dep.parallel_sequences}; "
                "vLLM queues the rest",
                ("serve", i, "parallel_sequences"), severity=Severity.info,
                hint="raise gpu_memory_utilization, use kv_cache_type fp8, or shorten the context")
