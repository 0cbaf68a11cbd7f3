"""Petals: a private swarm. A DHT bootstrap peer on the first node, one server per GPU.

Each server gets an explicit `--block_indices a:b` taken from the fit's layer
split, so the swarm covers every block exactly once (with `--num_blocks` each
server would pick its own range at start-up). The default `--initial_peers` is
the PUBLIC swarm, so rigctl always passes the private one (stacks.md §7).

A bootstrap address ends in the peer's libp2p id, which comes from its identity
key. When `swarm.initial_peers` names a rig node (as the petals-swarm rule asks),
that node runs the DHT with the identity file at STATE_DIR/<deployment>/bootstrap.id
and the servers use the listed addresses verbatim. That directory is a read-write
host mount of the DHT container (`state_mounts`, created by the petals role, which
refuses to start a DHT whose key is missing): hivemind writes a NEW key when the
file is missing (a new peer id, so the listed address goes stale and the servers
fail with "failed to connect to bootstrap peers") and raises FileNotFoundError when
its directory is missing (hivemind p2p_daemon.py at the commit Petals pins).

Without initial peers (the petals-swarm rule refuses such a spec) the servers would
get the placeholder ${PETALS_INITIAL_PEERS}, which nothing fills in: the contract
check (provisioner/contracts/petals.yaml) rejects it as no multiaddr.

Blocks and the throughput estimate go to PETALS_CACHE (src/petals/utils/disk_cache.py),
set to the image's /cache volume so they survive re-creation. The facts behind every
flag are in provisioner/contracts/petals.yaml.
"""

from __future__ import annotations

import posixpath

from ..sizing import Fit
from ..spec.models import Deployment
from .common import gpu_env, node_address
from .model import Service
from .sources import model_fetch, token_env
from .vllm import model_reference

DHT_PORT = 31337
SERVER_PORT = 31330
STATE_DIR = "/var/lib/rigctl/petals"
CACHE_DIR = "/cache"  # the image's VOLUME and PETALS_CACHE (Dockerfile); data/images.yaml names the volume
PEERS_ENV = "PETALS_INITIAL_PEERS"
QUANT = {"int8": "int8", "nf4": "nf4"}
DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def plan(ctx, dep: Deployment, fit: Fit | None, addresses: dict[str, str] | None = None) -> list[Service]:
    nodes = ctx.deployment_nodes(dep)
    if not nodes:
        return []
    services: list[Service] = []
    user_peers = list(dep.swarm.initial_peers) if dep.swarm else []
    peers = user_peers or ["${" + PEERS_ENV + "}"]
    dht_node, dht_port = _bootstrap_node(ctx, nodes, user_peers, addresses)
    if dht_node is not None:
        addr = node_address(dht_node, addresses)
        state = posixpath.join(STATE_DIR, dep.name)
        identity = posixpath.join(state, "bootstrap.id")
        services.append(Service(
            deployment=dep.name, node=dht_node.name, role="petals-dht", stack="petals", name=f"rigctl-{dep.name}-dht",
            argv=["python", "-m", "petals.cli.run_dht", "--host_maddrs", f"/ip4/0.0.0.0/tcp/{dht_port}",
                  "--announce_maddrs", f"/ip4/{addr}/tcp/{dht_port}", "--identity_path", identity],
            port=dht_port, bind="0.0.0.0", port_scope="subnet", state_mounts={state: state}))
        if user_peers and fit is not None:
            fit.notes.append(f"the DHT on {dht_node.name} must use the identity whose peer id is in "
                             f"initial_peers: place its key at {identity} before apply")
    blocks = block_ranges(fit)
    # Petals downloads its blocks by repository id (and announces that id in the DHT), so an hf
    # source is not fetched by the host: the servers get the repo and the token (HF_TOKEN)
    hf = dep.source.hf if dep.source is not None else None
    model = hf.repo if hf else model_reference(ctx, dep)
    local = bool(dep.model_file or (dep.source is not None and dep.source.local and not hf))
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
        argv = ["python", "-m", "petals.cli.run_server", model, "--initial_peers", *peers,
                "--port", str(port), "--announce_maddrs", f"/ip4/{addr}/tcp/{port}",
                "--block_indices", f"{lo}:{hi}", "--quant_type", QUANT.get(fmt, "none")]
        if fmt in DTYPES:
            argv += ["--torch_dtype", DTYPES[fmt]]
        if hf:  # the pinned commit (run_server's --revision, passed to from_pretrained), not the branch head
            argv += ["--revision", hf.revision]
        argv += list(dep.extra_args)
        env = {**gpu_env([pg]), "PETALS_CACHE": CACHE_DIR}  # one GPU per server
        services.append(Service(
            deployment=dep.name, node=pg.node.name, role="petals-server", stack="petals",
            name=f"rigctl-{dep.name}-{pg.gpu.id}", argv=argv, env=env, port=port, bind="0.0.0.0",
            port_scope="subnet", gpus=[pg.gpu.id], gpu_indices=[pg.gpu_index],
            gpu_uuids=[pg.gpu.uuid] if pg.gpu.uuid else [], ipc_host=True,
            model_path=model if local else None, model_source=dep.model_file,
            model_fetch=None if hf else model_fetch(dep), secret_env=token_env(dep)))
    return services


def _bootstrap_node(ctx, nodes, peers: list[str], addresses) -> tuple:
    """The rig node a listed bootstrap address points at (first node when none are listed)."""
    if not peers:
        return nodes[0], DHT_PORT
    for peer in peers:
        parts = peer.split("/")
        if len(parts) > 4 and parts[1] == "ip4" and parts[3] == "tcp":
            for n in ctx.rig.nodes:
                if node_address(n, addresses) == parts[2]:
                    return n, int(parts[4])
    return None, DHT_PORT  # external bootstrap peers: nothing to run here


def block_ranges(fit: Fit | None) -> list[tuple[str, tuple[int, int]]]:
    """(device label, (first block, last block + 1)) in placement order."""
    out = []
    start = 0
    for d in fit.devices if fit else []:
        out.append((d.label, (start, start + d.layers)))
        start += d.layers
    return out
