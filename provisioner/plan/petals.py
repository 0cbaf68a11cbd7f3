"""Petals: a private swarm. A DHT bootstrap peer on the first node, one server per GPU.

Each server gets an explicit `--block_indices a:b` taken from the fit's layer
split, so the swarm covers every block exactly once (with `--num_blocks` each
server would pick its own range at start-up). The default `--initial_peers` is
the PUBLIC swarm, so rigctl always passes the private one (stacks.md §7).

The bootstrap peer's address ends in its libp2p peer id, which exists only once
its identity file has been generated on the host. Servers therefore read it
from ${PETALS_INITIAL_PEERS}, an environment file that apply writes after the
DHT starts (systemd and compose both expand ${VAR} in the command line).
"""

from __future__ import annotations

import posixpath

from ..sizing import Fit
from ..spec.models import Deployment
from .common import node_address
from .model import Service
from .vllm import model_reference

DHT_PORT = 31337
SERVER_PORT = 31330
STATE_DIR = "/var/lib/rigctl/petals"
PEERS_ENV = "PETALS_INITIAL_PEERS"
QUANT = {"int8": "int8", "nf4": "nf4"}
DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def plan(ctx, dep: Deployment, fit: Fit | None, addresses: dict[str, str] | None = None) -> list[Service]:
    nodes = ctx.deployment_nodes(dep)
    if not nodes:
        return []
    services: list[Service] = []
    user_peers = list(dep.swarm.initial_peers) if dep.swarm else []
    if user_peers:
        peers = ",".join(user_peers)
    else:
        head = nodes[0]
        addr = node_address(head, addresses)
        state = posixpath.join(STATE_DIR, dep.name)
        services.append(Service(
            deployment=dep.name, node=head.name, role="petals-dht", stack="petals", name=f"rigctl-{dep.name}-dht",
            argv=["python", "-m", "petals.cli.run_dht", "--host_maddrs", f"/ip4/0.0.0.0/tcp/{DHT_PORT}",
                  "--announce_maddrs", f"/ip4/{addr}/tcp/{DHT_PORT}",
                  "--identity_path", posixpath.join(state, "bootstrap.id")],
            port=DHT_PORT, bind="0.0.0.0", port_scope="subnet"))
        peers = "${" + PEERS_ENV + "}"
    blocks = block_ranges(fit)
    model = model_reference(ctx, dep)
    fmt = dep.format.lower()
    placed = {pg.label: pg for pg in ctx.placed_gpus(dep)}
    per_node: dict[str, int] = {}
    for label, (lo, hi) in blocks:
        pg = placed.get(label)
        if pg is None or hi <= lo:
            continue
        n = per_node.get(pg.node.name, 0)
        per_node[pg.node.name] = n + 1
        port = SERVER_PORT + n
        addr = node_address(pg.node, addresses)
        argv = ["python", "-m", "petals.cli.run_server", model, "--initial_peers", peers,
                "--port", str(port), "--announce_maddrs", f"/ip4/{addr}/tcp/{port}",
                "--block_indices", f"{lo}:{hi}", "--quant_type", QUANT.get(fmt, "none")]
        if fmt in DTYPES:
            argv += ["--torch_dtype", DTYPES[fmt]]
        argv += list(dep.extra_args)
        env = {"CUDA_VISIBLE_DEVICES": pg.gpu.uuid or str(pg.gpu_index),
               "PETALS_CACHE": posixpath.join(STATE_DIR, "cache")}
        services.append(Service(
            deployment=dep.name, node=pg.node.name, role="petals-server", stack="petals",
            name=f"rigctl-{dep.name}-{pg.gpu.id}", argv=argv, env=env, port=port, bind="0.0.0.0",
            port_scope="subnet", gpus=[pg.gpu.id], gpu_indices=[pg.gpu_index],
            gpu_uuids=[pg.gpu.uuid] if pg.gpu.uuid else [], ipc_host=True,
            model_path=model if dep.model_file else None, model_source=dep.model_file))
    return services


def block_ranges(fit: Fit | None) -> list[tuple[str, tuple[int, int]]]:
    """(device label, (first block, last block + 1)) in placement order."""
    out = []
    start = 0
    for d in fit.devices if fit else []:
        out.append((d.label, (start, start + d.layers)))
        start += d.layers
    return out
