"""The plan: per deployment, where it runs and the exact processes to start.

Render turns a Plan into files; nothing here touches the filesystem.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..sizing import Fit


@dataclass(frozen=True)
class Port:
    """A listener beyond the service's main port, as the firewall filters it."""

    port: int
    proto: str = "tcp"  # tcp | udp
    scope: str | None = None  # loopback | subnet | any; None: the service's port_scope
    last: int | None = None  # inclusive end of a range (Ray's worker ports); None: one port
    listens: bool = True  # verify expects a listener (False: only while an optional component runs)

    @property
    def nft(self) -> str:
        """The port as nftables writes it: 52413 or 10002-19999."""
        return f"{self.port}-{self.last}" if self.last else str(self.port)


@dataclass
class Service:
    """One process (native unit or container) on one node."""

    deployment: str
    node: str
    role: str  # server | rpc-worker | ray-head | ray-worker | exo-node | petals-server | petals-dht
    stack: str  # llamacpp | llamacpp-rpc | ollama | vllm | tabbyapi | exo | petals
    name: str  # unit/container name, unique per node: rigctl-<deployment>-<role>
    argv: list[str]  # binary first; the exact command line
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # extra config files: path on host -> content
    port: int | None = None
    bind: str = "127.0.0.1"
    extra_ports: list[Port] = field(default_factory=list)
    port_scope: str = "loopback"  # loopback | subnet | any: who may connect to `port` (firewall)
    gpus: list[str] = field(default_factory=list)  # GPU ids on the node
    gpu_indices: list[int] = field(default_factory=list)
    gpu_uuids: list[str] = field(default_factory=list)
    health_path: str | None = None
    model_path: str | None = None  # where the model file lives on the host
    model_source: str | None = None  # controller path to copy from, when given
    # serve[].source: what the host downloads or finds before the start (plan/sources.py), else None
    model_fetch: dict | None = None
    secret_env: dict[str, dict] = field(default_factory=dict)  # env var -> secret reference (never the value)
    # container: host file a role writes from a secret -> path inside (TabbyAPI's api_tokens.yml)
    secret_mounts: dict[str, str] = field(default_factory=dict)
    ipc_host: bool = False
    shm_size: str | None = None
    deploy_mode: str = "native"  # native (systemd unit) | container (compose service)
    image: str | None = None  # container: image reference (pinned per stack in data/images.yaml)
    image_archive: str | None = None  # images.source offline: controller path of its `docker save` archive
    volumes: dict[str, str] = field(default_factory=dict)  # container: named volume -> path inside
    # container: host directory -> path inside, mounted read-write, created (0700) by the stack's role
    # before start: state the engine writes and must find again after re-creation (Petals DHT identity)
    state_mounts: dict[str, str] = field(default_factory=dict)
    # container: the compose service (same project) whose PID namespace this one joins. vLLM's
    # multi-node server: a Ray driver finds its node's raylet by scanning the process table
    pid_service: str | None = None
    # llama.cpp: the build, image or release the service runs (plan/engines.py); None elsewhere
    engine: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Speed:
    decode_tps_low: float
    decode_tps_high: float
    prompt_tps_low: float | None
    prompt_tps_high: float | None
    bottleneck: str
    notes: list[str] = field(default_factory=list)


@dataclass
class DeploymentPlan:
    name: str
    stack: str
    model: str
    format: str
    fit: Fit | None
    services: list[Service]
    speed: Speed | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    rig: str
    deployments: list[DeploymentPlan]
    # name -> deployments and node -> services, built on first lookup: render and verify
    # look up per host and per service, and a scan there is quadratic in the fleet size
    _index: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def _indexed(self) -> tuple[dict[str, list[DeploymentPlan]], dict[str, list[Service]]]:
        count = len(self.deployments)
        if self._index is None or self._index[0] != count:  # appending a deployment rebuilds it
            by_name: dict[str, list[DeploymentPlan]] = {}
            by_node: dict[str, list[Service]] = {}
            for d in self.deployments:
                by_name.setdefault(d.name, []).append(d)
                for s in d.services:
                    by_node.setdefault(s.node, []).append(s)
            self._index = (count, by_name, by_node)
        return self._index[1], self._index[2]

    def services_on(self, node: str) -> list[Service]:
        return list(self._indexed()[1].get(node, ()))

    def deployments_named(self, name: str) -> list[DeploymentPlan]:
        """The deployment plans called ``name`` (one, in a valid spec), in plan order."""
        return list(self._indexed()[0].get(name, ()))
