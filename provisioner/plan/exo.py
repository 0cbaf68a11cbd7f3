"""exo (v1.0.71): one `exo` process per node; the nodes dial each other and exo partitions the model.

rigctl pins exo v1.0.71, the last tagged release (provisioner/contracts/exo.yaml says why and
holds every fact used here, each with its source file at that tag). What the plan renders:

- `--api-port` on the first node, `--no-api` on the others (the API has no authentication).
- `--libp2p-port 52414` on every node: its default 0 lets the OS pick a random port, which the
  firewall and the peers could not know (src/exo/main.py, rust/networking/src/swarm.rs).
- `--bootstrap-peers` with every other node's /ip4/<addr>/tcp/52414, dialed every 5 s, so the
  nodes find each other without mDNS across switches (rust/networking/src/discovery.rs).
- EXO_LIBP2P_NAMESPACE=rigctl-<rig>-<deployment>: hashed into the private-network key, so
  another exo cluster on the same network cannot join (rust/networking/src/swarm.rs).
- a rendered request body, /etc/rigctl/exo/<deployment>/place_instance.json, on the first node:
  exo starts with no model, and the exo role POSTs it to /place_instance once the API is up
  (Pipeline sharding over all the deployment's nodes, MLX ring). The model id comes from
  data/exo_models.yaml; a model without one gets no placement and a plan note.

exo has no option for its listen address, so every port listens on 0.0.0.0 and `bind` is
honoured by the firewall instead: the API port is loopback-only for a loopback bind and
rig-subnet-only otherwise (it has no key); the libp2p port is loopback-only on a single node and
rig-subnet-only across nodes. Two listeners are not filtered (the contract marks them): libp2p's
mDNS on UDP 5353 (the host's own mDNS port) and the MLX ring port exo picks at random in
49152-65535 per placed instance (a rule there would also drop replies to the host's own
outgoing connections, as for NCCL). The layer ranges rigctl expects from the fit are plan notes:
exo decides the partition itself (by memory).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from ..exposure import endpoint_scope, listen_address
from ..sizing import Fit
from ..spec.models import Deployment
from ..yamlio import safe_load
from .common import gpu_env, node_address
from .model import Port, Service

API_PORT = 52415
LIBP2P_PORT = 52414  # --libp2p-port; exo's default (0) is a random port
EXE = "/opt/exo/.venv/bin/exo"  # console script `exo` of the checkout in /opt/exo (images.yaml)
PLACE_DIR = "/etc/rigctl/exo"
SHARDING = "Pipeline"  # layer ranges per node, like the fit's; Tensor needs supports_tensor cards
INSTANCE_META = "MlxRing"  # TCP ring; MlxJaccl needs RDMA over Thunderbolt 5


@lru_cache(maxsize=1)
def model_ids() -> dict:
    """catalog id -> format id -> exo model id (data/exo_models.yaml)."""
    text = (resources.files("provisioner.plan") / "data" / "exo_models.yaml").read_text(encoding="utf-8")
    return safe_load(text) or {}


def model_id(dep: Deployment) -> str | None:
    """The exo model id to place for the deployment, or None when rigctl knows none."""
    return (model_ids().get(str(dep.model)) or {}).get(dep.format) if isinstance(dep.model, str) else None


def place_path(dep: Deployment) -> str:
    return f"{PLACE_DIR}/{dep.name}/place_instance.json"


def layer_ranges(fit: Fit | None) -> dict[str, tuple[int, int]]:
    """node -> (first layer, last layer + 1), from the fit's per-device layer counts in order."""
    out: dict[str, tuple[int, int]] = {}
    if fit is None:
        return out
    start = 0
    for d in fit.devices:
        lo, hi = out.get(d.node, (start, start))
        out[d.node] = (lo, hi + d.layers)
        start += d.layers
    return out


def plan(ctx, dep: Deployment, fit: Fit | None, addresses: dict[str, str] | None = None) -> list[Service]:
    nodes = ctx.deployment_nodes(dep)
    ranges = layer_ranges(fit)
    placed = ctx.placed_gpus(dep)
    mid = model_id(dep)
    if fit is not None:
        split = ", ".join(f"{n.name} {lo}-{hi - 1}" if hi > lo else f"{n.name} none"
                          for n in nodes if n.name in ranges for lo, hi in [ranges[n.name]])
        if split:
            fit.notes.append(f"exo decides the layer split itself; the fit expects {split}")
        if mid is None:
            fit.notes.append(f"exo: rigctl knows no exo model id for {dep.model} in {dep.format} "
                             f"(provisioner/plan/data/exo_models.yaml), so nothing is placed: the exo role "
                             f"fails until one is added")
    services = []
    peer_scope = "subnet" if len(nodes) > 1 else "loopback"  # nobody else needs the libp2p port
    for i, node in enumerate(nodes):
        # macOS runs MLX on Metal; CUDA_VISIBLE_DEVICES only means something on Linux
        env = {} if node.os == "macos" else gpu_env([pg for pg in placed if pg.node.name == node.name])
        env["EXO_LIBP2P_NAMESPACE"] = f"rigctl-{ctx.rig.name}-{dep.name}"  # keeps other exo clusters out
        argv = [EXE]
        argv += ["--api-port", str(dep.port or API_PORT)] if i == 0 else ["--no-api"]
        argv += ["--libp2p-port", str(LIBP2P_PORT)]
        peers = [f"/ip4/{node_address(n, addresses)}/tcp/{LIBP2P_PORT}" for n in nodes if n is not node]
        if peers:
            argv += ["--bootstrap-peers", ",".join(peers)]  # no reliance on mDNS across switches
        argv += list(dep.extra_args)
        files = {}
        if i == 0 and mid is not None:
            body = {"model_id": mid, "sharding": SHARDING, "instance_meta": INSTANCE_META, "min_nodes": len(nodes)}
            files[place_path(dep)] = json.dumps(body, sort_keys=True) + "\n"
        gpus = [pg for pg in placed if pg.node.name == node.name]
        services.append(Service(
            deployment=dep.name, node=node.name, role="exo-node", stack="exo", name=f"rigctl-{dep.name}",
            argv=argv, env=env, files=files, port=(dep.port or API_PORT) if i == 0 else None,
            bind=listen_address(dep), extra_ports=[Port(LIBP2P_PORT, scope=peer_scope)],
            port_scope=endpoint_scope(dep),
            gpus=[pg.gpu.id for pg in gpus], gpu_indices=[pg.gpu_index for pg in gpus],
            gpu_uuids=[pg.gpu.uuid for pg in gpus if pg.gpu.uuid],
            health_path="/v1/models" if i == 0 else None))
    return services
