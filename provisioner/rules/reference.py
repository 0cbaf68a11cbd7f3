"""reference family: every catalog id in the spec names a known entry."""

from __future__ import annotations

from ..spec.models import ModelArch
from .engine import rule


def _did_you_mean(table, key: str, kind: str) -> str:
    close = table.suggest(key)
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return f"see `rigctl catalog {kind}`, or add it with a catalog file (`catalog:` in the spec)"


@rule("unknown-gpu", "error", "GPU models name a catalog entry", tags=("reference",))
def unknown_gpu(ctx):
    for pg in ctx.all_gpus():
        if pg.entry is None:
            hint = _did_you_mean(ctx.catalog.gpus, pg.gpu.model, "gpus")
            if hint.startswith("see "):
                hint += "; or define it in the spec under gpu_models (id, name, vendor, architecture, memory_gib, bandwidth_gbs)"
            yield unknown_gpu.finding(f"unknown GPU model '{pg.gpu.model}' for {pg.label}", pg.path + ("model",),
                                      hint=hint)


@rule("unknown-cpu", "error", "CPU models name a catalog entry", tags=("reference",))
def unknown_cpu(ctx):
    for i, node in enumerate(ctx.rig.nodes):
        if node.cpu and node.cpu.model and ctx.cpu_entry(node) is None:
            yield unknown_cpu.finding(f"unknown CPU model '{node.cpu.model}' on node {node.name}",
                                      ("nodes", i, "cpu", "model"),
                                      hint=_did_you_mean(ctx.catalog.cpus, node.cpu.model, "cpus")
                                      + "; or give pcie_lanes and power_w instead of model")


@rule("unknown-model", "error", "models name a catalog entry or give an inline architecture", tags=("reference",))
def unknown_model(ctx):
    for i, dep in enumerate(ctx.rig.serve):
        if isinstance(dep.model, ModelArch) or ctx.model(dep) is not None:
            continue
        yield unknown_model.finding(f"unknown model '{dep.model}' in deployment {dep.name}", ("serve", i, "model"),
                                    hint=_did_you_mean(ctx.catalog.models, dep.model, "models")
                                    + "; or describe it inline (layers, attention_heads, kv_heads, head_dim, ...)")


@rule("unknown-format", "error", "formats name a catalog entry", tags=("reference",))
def unknown_format(ctx):
    for i, dep in enumerate(ctx.rig.serve):
        if ctx.format(dep) is None:
            yield unknown_format.finding(f"unknown format '{dep.format}' in deployment {dep.name}",
                                         ("serve", i, "format"),
                                         hint=_did_you_mean(ctx.catalog.formats, dep.format, "formats"))
