"""Ollama: `ollama serve` configured by environment, plus a Modelfile for the model.

Ollama reads its settings from the environment (stacks.md §3, envconfig/config.go):
GPU choice, spreading, parallel slots, context length, keep-alive, KV type.
It has no multi-node mode and no API keys.
"""

from __future__ import annotations

import posixpath

from ..escape import Unrepresentable, modelfile_arg
from ..exposure import endpoint_scope, host_port
from ..sizing import Fit
from ..spec.models import Deployment
from .common import gpu_env, model_path
from .model import Service

DEFAULT_PORT = 11434
CONFIG_DIR = "/etc/rigctl/ollama"


def plan(ctx, dep: Deployment, fit: Fit | None, addresses: dict[str, str] | None = None) -> list[Service]:
    nodes = ctx.deployment_nodes(dep)
    if not nodes:
        return []
    node = nodes[0]  # Ollama does not span machines; the rules report extra nodes
    placed = [pg for pg in ctx.placed_gpus(dep) if pg.node.name == node.name]
    port = dep.port or DEFAULT_PORT
    context = fit.context_tokens if fit else (dep.context_tokens or 4096)
    env = gpu_env(placed)
    if not placed and node.gpus:
        env["CUDA_VISIBLE_DEVICES"] = "-1"  # placement `gpus: []`: an invalid id forces CPU (docs/gpu.mdx)
    gpu_devices = [d for d in fit.devices if d.gpu_id is not None] if fit else []
    if len(gpu_devices) > 1:
        env["OLLAMA_SCHED_SPREAD"] = "1"
    env["OLLAMA_NUM_PARALLEL"] = str(dep.parallel_sequences)
    env["OLLAMA_CONTEXT_LENGTH"] = str(context)
    env["OLLAMA_KEEP_ALIVE"] = "-1"  # a served model stays loaded (default unloads after 5 min)
    env["OLLAMA_MAX_LOADED_MODELS"] = "1"
    env["OLLAMA_HOST"] = host_port(dep.bind, port)  # Ollama parses it with net.SplitHostPort: IPv6 needs brackets
    kv = fit.kv_type if fit else dep.kv_cache_type
    if kv in ("q8_0", "q4_0"):
        env["OLLAMA_KV_CACHE_TYPE"] = kv
        env["OLLAMA_FLASH_ATTENTION"] = "1"  # quantized KV needs flash attention
    elif dep.flash_attention is not None:
        env["OLLAMA_FLASH_ATTENTION"] = "1" if dep.flash_attention else "0"
    modelfile = posixpath.join(CONFIG_DIR, dep.name, "Modelfile")
    return [Service(
        deployment=dep.name, node=node.name, role="server", stack="ollama", name=f"rigctl-{dep.name}",
        argv=["ollama", "serve"] + list(dep.extra_args), env=env,
        files={modelfile: render_modelfile(ctx, dep, context)},
        port=port, bind=dep.bind, port_scope=endpoint_scope(dep),
        gpus=[pg.gpu.id for pg in placed], gpu_indices=[pg.gpu_index for pg in placed],
        gpu_uuids=[pg.gpu.uuid for pg in placed if pg.gpu.uuid], health_path="/",
        model_path=model_path(dep) if dep.model_file else None, model_source=dep.model_file)]


def render_modelfile(ctx, dep: Deployment, context: int) -> str:
    """`ollama create <name> -f Modelfile` imports the GGUF (or pulls the library tag)."""
    source = model_path(dep) if dep.model_file else library_tag(ctx, dep)
    try:
        source = modelfile_arg(source)
    except Unrepresentable as exc:
        i = next(i for i, d in enumerate(ctx.rig.serve) if d is dep)
        raise Unrepresentable(str(exc), ("serve", i, "model_file" if dep.model_file else "model")) from None
    lines = [f"FROM {source}", f"PARAMETER num_ctx {int(context)}"]
    return "\n".join(lines) + "\n"


def library_tag(ctx, dep: Deployment) -> str:
    """The Ollama library tag for a catalog model (aliases with a colon, e.g. llama3.3:70b)."""
    entry = ctx.model(dep)
    tag = next((a for a in getattr(entry, "aliases", []) if ":" in a and "/" not in a), None)
    return tag or str(dep.model if isinstance(dep.model, str) else dep.name)
