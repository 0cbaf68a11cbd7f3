"""exo (v1): one `exo` process per node; the nodes find each other and partition the model.

exo decides the partition itself (by memory); rigctl's expected layer ranges from
the fit are recorded in RIGCTL_EXPECTED_LAYERS so `verify` can compare them with
exo's /state. Ports (stacks.md §6): API 52415, zenoh TCP 52414, discovery UDP 52413.
The API has no authentication: only the first node serves it.

exo has no option for its listen address (src/exo/main.py `Args` takes --api-port only),
so every port listens on 0.0.0.0 and `bind` is honoured by the firewall instead: the API
port is loopback-only for a loopback bind and rig-subnet-only otherwise (it has no key);
the peer ports are loopback-only on a single node and rig-subnet-only across nodes.
"""

from __future__ import annotations

from ..exposure import endpoint_scope, listen_address
from ..sizing import Fit
from ..spec.models import Deployment
from .common import gpu_env, node_address
from .model import Port, Service

API_PORT = 52415
ZENOH_PORT = 52414
DISCOVERY_PORT = 52413
INSTALL_DIR = "/opt/exo"


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
    services = []
    peer_scope = "subnet" if len(nodes) > 1 else "loopback"  # nobody else needs the peer ports
    for i, node in enumerate(nodes):
        # macOS runs MLX on Metal; CUDA_VISIBLE_DEVICES only means something on Linux
        env = {} if node.os == "macos" else gpu_env([pg for pg in placed if pg.node.name == node.name])
        env["EXO_LIBP2P_NAMESPACE"] = f"rigctl-{ctx.rig.name}-{dep.name}"  # keeps other exo clusters out
        peers = [f"/ip4/{node_address(n, addresses)}/tcp/{ZENOH_PORT}" for n in nodes if n is not node]
        if peers:
            env["EXO_BOOTSTRAP_PEERS"] = ",".join(peers)  # no reliance on multicast across switches
        if node.name in ranges:
            lo, hi = ranges[node.name]
            env["RIGCTL_EXPECTED_LAYERS"] = f"{lo}-{hi - 1}" if hi > lo else "none"
        argv = ["uv", "run", "--directory", INSTALL_DIR, "exo"]
        argv += ["--api-port", str(dep.port or API_PORT)] if i == 0 else ["--no-api"]
        argv += list(dep.extra_args)
        gpus = [pg for pg in placed if pg.node.name == node.name]
        services.append(Service(
            deployment=dep.name, node=node.name, role="exo-node", stack="exo", name=f"rigctl-{dep.name}",
            argv=argv, env=env, port=(dep.port or API_PORT) if i == 0 else None, bind=listen_address(dep),
            extra_ports=[Port(ZENOH_PORT, scope=peer_scope), Port(DISCOVERY_PORT, "udp", scope=peer_scope)],
            port_scope=endpoint_scope(dep),
            gpus=[pg.gpu.id for pg in gpus], gpu_indices=[pg.gpu_index for pg in gpus],
            gpu_uuids=[pg.gpu.uuid for pg in gpus if pg.gpu.uuid],
            health_path="/v1/models" if i == 0 else None))
    return services
