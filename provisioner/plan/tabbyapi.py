"""TabbyAPI (ExLlamaV2/V3): a config.yml per deployment and `python main.py --config`.

Keys from theroyallab/tabbyAPI config_sample.yml (stacks.md §5). EXL2 needs the
`exl2-checkpoint` branch (main dropped ExLlamaV2); EXL3 runs on main.
"""

from __future__ import annotations

import math
import posixpath

import yaml

from ..exposure import endpoint_scope
from ..sizing import GIB, Fit
from ..spec.models import Deployment
from .common import gpu_env, model_path
from .model import Service
from .sources import model_fetch, token_env

DEFAULT_PORT = 5000
CONFIG_DIR = "/etc/rigctl/tabbyapi"
SECRETS_DIR = "/etc/rigctl/secrets"
INSTALL_DIR = "/app"  # the image's WORKDIR (ghcr.io/theroyallab/tabbyapi, docker/Dockerfile)
CACHE_MODES = {"f16": "FP16", "bf16": "FP16", "auto": "FP16", "fp8": "Q8", "q8_0": "Q8", "q4_0": "Q4"}


def plan(ctx, dep: Deployment, fit: Fit | None, addresses: dict[str, str] | None = None) -> list[Service]:
    nodes = ctx.deployment_nodes(dep)
    if not nodes:
        return []
    node = nodes[0]  # TabbyAPI is single-node
    placed = [pg for pg in ctx.placed_gpus(dep) if pg.node.name == node.name]
    port = dep.port or DEFAULT_PORT
    config_path = posixpath.join(CONFIG_DIR, dep.name, "config.yml")
    secret_env, secret_mounts = {}, {}
    if dep.auth:
        # TabbyAPI reads keys only from api_tokens.yml in its working directory (common/auth.py) and
        # generates random ones when it is missing: the role writes that file from the raw key file
        # materialised here (verify reads the same file) and the compose file mounts it there.
        secret_env["TABBY_API_KEY_FILE"] = dep.auth.model_dump(exclude_none=True)
        secret_mounts[tokens_path(f"rigctl-{dep.name}")] = posixpath.join(INSTALL_DIR, "api_tokens.yml")
    secret_env.update(token_env(dep))  # HF_TOKEN: the host's download and TabbyAPI's own downloader
    return [Service(
        deployment=dep.name, node=node.name, role="server", stack="tabbyapi", name=f"rigctl-{dep.name}",
        argv=["python3", posixpath.join(INSTALL_DIR, "main.py"), "--config", config_path] + list(dep.extra_args),
        env=gpu_env(placed), files={config_path: render_config(ctx, dep, fit, port)},
        port=port, bind=dep.bind, port_scope=endpoint_scope(dep),
        gpus=[pg.gpu.id for pg in placed], gpu_indices=[pg.gpu_index for pg in placed],
        gpu_uuids=[pg.gpu.uuid for pg in placed if pg.gpu.uuid], health_path="/health",
        model_path=model_path(dep, ext=""), model_source=dep.model_file, model_fetch=model_fetch(dep),
        secret_env=secret_env,
        secret_mounts=secret_mounts, shm_size="8g")]


def tokens_path(service_name: str) -> str:
    """Host path of the api_tokens.yml the tabbyapi role writes (root-only, beside the other secrets)."""
    return f"{SECRETS_DIR}/{service_name}-api_tokens.yml"


def config(ctx, dep: Deployment, fit: Fit | None, port: int) -> dict:
    """config.yml as a mapping (kept separate so tests read values, not YAML text)."""
    model = ctx.model(dep)
    path = model_path(dep, ext="")
    max_seq = fit.context_tokens if fit else (dep.context_tokens or (model.max_context if model else 4096))
    cache_size = _round_up(max_seq * dep.parallel_sequences, 256)
    mcfg: dict = {
        "model_dir": posixpath.dirname(path),
        "model_name": posixpath.basename(path),
        "backend": "exllamav3" if dep.format.lower() in ("exl3", "exllamav3") else "exllamav2",
        "max_seq_len": max_seq,
        "cache_size": cache_size,
        "cache_mode": CACHE_MODES.get(dep.kv_cache_type, "FP16"),
    }
    tp = fit.tensor_parallel if fit else (dep.tensor_parallel or 1)
    gpus = [d for d in fit.devices if d.gpu_id is not None] if fit else []
    if tp > 1:
        mcfg["tensor_parallel"] = True
        mcfg["gpu_split_auto"] = False
        mcfg["gpu_split"] = list(dep.gpu_split_gb or [])  # empty: even split over the visible GPUs
    elif dep.gpu_split_gb:
        mcfg["tensor_parallel"] = False
        mcfg["gpu_split_auto"] = False
        mcfg["gpu_split"] = list(dep.gpu_split_gb)
    elif len(gpus) > 1:
        # pin the plan's layer split: autosplit has loaded onto one GPU and OOMed (tabbyAPI#250, #67).
        # gpu_split is a cap in GB per GPU that ExLlamaV2 fills in order (sizing._gb_cap_counts): each
        # cap is the GPU's planned weights plus half a layer, so the fill stops where the plan does
        mcfg["tensor_parallel"] = False
        mcfg["gpu_split_auto"] = False
        layer_gb = next((d.weights_gib / d.layers for d in gpus[:-1] if d.layers), 0.0) * GIB / 1e9
        half = layer_gb / 2
        mcfg["gpu_split"] = [math.floor((d.weights_gib * GIB / 1e9 + half) * 100) / 100 for d in gpus]
    else:
        mcfg["tensor_parallel"] = False
        mcfg["gpu_split_auto"] = True
    return {
        "network": {"host": dep.bind, "port": port, "disable_auth": False, "api_servers": ["OAI"]},
        "logging": {"log_prompt": False, "log_generation_params": False, "log_requests": False},
        "model": mcfg,
    }


def render_config(ctx, dep: Deployment, fit: Fit | None, port: int) -> str:
    head = f"# rigctl: TabbyAPI config for deployment {dep.name} (generated; edits are overwritten)\n"
    return head + yaml.safe_dump(config(ctx, dep, fit, port), sort_keys=False, default_flow_style=False)


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step
