"""llama.cpp llama-server (layer split) and llama.cpp RPC across machines."""

from __future__ import annotations

from .. import engineopts
from ..exposure import endpoint_scope
from ..sizing import Fit
from ..spec.models import Deployment, Stack
from .common import fmt_num, gpu_env, model_path, node_address, secret_file
from .model import Service
from .sources import model_fetch, token_env

DEFAULT_PORT = 8080
RPC_PORT = 50052


def plan(ctx, dep: Deployment, fit: Fit | None, addresses: dict[str, str] | None = None) -> list[Service]:
    nodes = ctx.deployment_nodes(dep)
    if not nodes:
        return []
    head, workers = nodes[0], nodes[1:] if dep.stack == Stack.llamacpp_rpc else []
    port = dep.port or DEFAULT_PORT
    head_gpus = [pg for pg in ctx.placed_gpus(dep) if pg.node.name == head.name]
    n_ctx = (fit.context_tokens if fit else dep.context_tokens or 4096) * dep.parallel_sequences
    argv = ["llama-server", "--model", model_path(dep), "--ctx-size", str(n_ctx),
            "--parallel", str(dep.parallel_sequences), "--n-gpu-layers", "999",
            "--host", dep.bind, "--port", str(port),
            # libllama's INFO lines (the per-device "model/KV/compute buffer size" that
            # `rigctl verify` compares with the plan) are verbosity 4 in common/log.cpp
            # common_log_get_verbosity; the default threshold 3 drops them
            "--log-verbosity", "4"]
    services: list[Service] = []
    rpc_endpoints = []
    for w in workers:
        wgpus = [pg for pg in ctx.placed_gpus(dep) if pg.node.name == w.name]
        addr = node_address(w, addresses)
        rpc_endpoints.append(f"{addr}:{RPC_PORT}")
        wargv = ["rpc-server", "--host", addr, "--port", str(RPC_PORT)]
        env = gpu_env(wgpus)
        services.append(Service(
            deployment=dep.name, node=w.name, role="rpc-worker", stack="llamacpp-rpc",
            name=f"rigctl-{dep.name}-rpc", argv=wargv, env=env, port=RPC_PORT, bind=addr,
            port_scope="subnet", gpus=[pg.gpu.id for pg in wgpus], gpu_indices=[pg.gpu_index for pg in wgpus],
            gpu_uuids=[pg.gpu.uuid for pg in wgpus if pg.gpu.uuid]))
    if rpc_endpoints:
        argv += ["--rpc", ",".join(rpc_endpoints)]
    n_devices = len(fit.devices) if fit else len(head_gpus)
    opts = engineopts.options(dep)
    if fit and n_devices > 1:
        # fit.devices is in llama.cpp's device order (RPC servers first, in --rpc order,
        # then local GPUs: sizing.devices_for), which is what --tensor-split indexes
        # (with split_mode row the same proportions split every matrix by rows; a --split-mode
        # in extra_args is left to extra_args, engineopts plans with it)
        if "split_mode" not in opts.from_args:
            argv += ["--split-mode", "row" if fit.mode == "row" else "layer"]
        argv += ["--tensor-split", ",".join(fmt_num(d.layers) for d in fit.devices)]
    if len(head_gpus) > 1:
        argv += ["--main-gpu", "0"]
    kv_v = (fit.kv_type_v or fit.kv_type) if fit else "f16"
    if fit and fit.kv_type not in ("f16",):
        argv += ["--cache-type-k", fit.kv_type]
    if fit and kv_v not in ("f16",):
        argv += ["--cache-type-v", kv_v]
    if dep.kv_offload is False:
        argv += ["--no-kv-offload"]
    # llama.cpp needs flash attention for a quantized V cache only (a K-only cache runs without)
    if dep.flash_attention is not None or (fit and kv_v not in ("f16", "bf16")):
        argv += ["--flash-attn", "on" if dep.flash_attention is not False else "off"]
    secret_env = {}
    if dep.auth:
        # the root-only copy the secret role writes; a native unit runs with its systemd credential
        # instead (${CREDENTIALS_DIRECTORY}/<name>.key), a container with it mounted at this path.
        # LLAMA_API_KEY_FILE is no variable the service sees: its _FILE suffix tells render to write
        # a raw key file (render.services.secret_files); `rigctl plan` shows the deployed form.
        argv += ["--api-key-file", secret_file(dep)]
        secret_env["LLAMA_API_KEY_FILE"] = dep.auth.model_dump(exclude_none=True)
    secret_env.update(token_env(dep))  # the host's download reads it (model_source.yml)
    argv += list(dep.extra_args)
    env = gpu_env(head_gpus)
    services.insert(0, Service(
        deployment=dep.name, node=head.name, role="server", stack=dep.stack.value,
        name=f"rigctl-{dep.name}", argv=argv, env=env, port=port, bind=dep.bind,
        port_scope=endpoint_scope(dep), gpus=[pg.gpu.id for pg in head_gpus],
        gpu_indices=[pg.gpu_index for pg in head_gpus], gpu_uuids=[pg.gpu.uuid for pg in head_gpus if pg.gpu.uuid],
        health_path="/health", model_path=model_path(dep), model_source=dep.model_file, model_fetch=model_fetch(dep),
        secret_env=secret_env))
    return services
