"""Values for templates/compose.yml.j2: one compose project per stack per host.

Every container service of the plan becomes a service of its host's ``rigctl-<stack>``
project: host networking (the firewall role governs its ports, Ray and NCCL need the
host's interfaces), ``init: true`` (a server as PID 1 ignores SIGTERM), a healthcheck
against the stack's health route, GPUs reserved by UUID or index, named volumes for
model caches. Pure: no filesystem, no network.
"""

from __future__ import annotations

import posixpath

from ..escape import bind_path, compose_name
from ..plan.images import catalog
from ..plan.model import Service
from .services import compose_project

HEALTH_TIMEOUT_S = 5
HEALTH_RETRIES = 3
_PY_PROBE = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=4)"


def gpu_ids(svc: Service) -> list[str]:
    """device_ids for the NVIDIA reservation: UUIDs when every GPU has one, else indices."""
    if svc.gpu_uuids and len(svc.gpu_uuids) == len(svc.gpus):
        return list(svc.gpu_uuids)
    return [str(i) for i in svc.gpu_indices]


def healthcheck(svc: Service, entry: dict) -> list[str] | None:
    """The healthcheck test: GET the health route, else the service's port listens."""
    host = "127.0.0.1" if svc.bind in ("0.0.0.0", "::", "") else svc.bind
    host = f"[{host}]" if ":" in host else host
    kind = entry.get("health", "curl")
    if svc.health_path and svc.port and kind != "listen":
        url = f"http://{host}:{svc.port}{svc.health_path}"
        if kind == "ollama":  # no curl in the image; the CLI asks the server (OLLAMA_HOST)
            return ["CMD", "ollama", "list"]
        if kind == "python":
            return ["CMD", "python3", "-c", _PY_PROBE, url]
        return ["CMD", "curl", "-fsS", "-o", "/dev/null", url]
    tcp = [p.port for p in svc.extra_ports if p.proto == "tcp" and p.last is None and p.listens]
    port = svc.port or (tcp[0] if tcp else None)
    if port is None:
        return None
    # a listening socket, not a connection: rpc-server serves one client at a time
    return ["CMD-SHELL", f"grep -qiE ':{port:04X} [0-9A-F]+:0000 0A ' /proc/net/tcp /proc/net/tcp6"]


def health_wait_s(svc: Service) -> int:
    """Longest a healthcheck lets the container take to turn healthy: start_period, then
    `retries` failed probes of up to interval + timeout each. compose `up --wait` must wait
    at least this long (vLLM's start_period alone is 1800 s, the role's default wait 900 s)."""
    entry = catalog().get(svc.stack, {})
    if healthcheck(svc, entry) is None:
        return 0
    return (int(entry.get("start_period_s", 300))
            + HEALTH_RETRIES * (int(entry.get("interval_s", 10)) + HEALTH_TIMEOUT_S))


def service_values(rig: str, svc: Service, secrets: list[dict], offline: bool, siblings: list[Service]) -> dict:
    """One service of the project, as plain data for the template."""
    entry = catalog().get(svc.stack, {})
    binary = svc.argv[0]
    if entry.get("bin_dir") and "/" not in binary:
        binary = posixpath.join(entry["bin_dir"], binary)
    # short-syntax mounts (SRC:DST:ro): bind_path refuses a ':' that would split one
    paths = [posixpath.dirname(svc.model_path.rstrip("/"))] if svc.model_path else []
    paths += sorted(svc.files) + [s["path"] for s in secrets if s["format"] == "raw"]
    binds = [f"{p}:{p}:ro" for p in map(bind_path, paths)]
    binds += [f"{bind_path(h)}:{bind_path(c)}:ro" for h, c in sorted(svc.secret_mounts.items())]
    # read-write: state the engine keeps across re-creation (the role creates the host directory)
    binds += [f"{bind_path(h)}:{bind_path(c)}" for h, c in sorted(svc.state_mounts.items())]
    ids = gpu_ids(svc)
    env = dict(svc.env)
    if ids and env.get("CUDA_VISIBLE_DEVICES", "").split(",") in ([str(i) for i in svc.gpu_indices], svc.gpu_uuids):
        # the container sees only its reserved GPUs, renumbered from 0
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(ids)))
    # a server starts after the other services of its deployment in this project (vLLM: the Ray head);
    # a Petals server after the DHT it bootstraps from (else: "failed to connect to bootstrap peers")
    after = [{"name": s.name, "condition": "service_healthy" if healthcheck(s, catalog().get(s.stack, {}))
              else "service_started"}
             for s in siblings if s.deployment == svc.deployment and s.name != svc.name
             and (svc.role == "server" or (svc.role, s.role) == ("petals-server", "petals-dht"))]
    return {
        "key": svc.name, "image": svc.image, "pull_policy": "never" if offline else "missing",
        "entrypoint": [binary], "command": list(svc.argv[1:]), "env": env,
        "env_files": [s["path"] for s in secrets if s["format"] == "env"],
        "volumes": binds + [f"{compose_name(name, 'volume name')}:{bind_path(path)}"
                            for name, path in sorted(svc.volumes.items())],
        "gpu_ids": ids, "pid_service": svc.pid_service, "ipc_host": svc.ipc_host, "shm_size": None if svc.ipc_host else svc.shm_size,
        "health": healthcheck(svc, entry), "interval_s": entry.get("interval_s", 10),
        "start_period_s": entry.get("start_period_s", 300), "timeout_s": HEALTH_TIMEOUT_S,
        "retries": HEALTH_RETRIES, "depends_on": after,
        "labels": {"io.rigctl.rig": rig, "io.rigctl.deployment": svc.deployment, "io.rigctl.role": svc.role},
    }


def project_values(rig: str, services: list[tuple[Service, list[dict]]], offline: bool) -> dict:
    """Template values for one project: its services (sorted by name) and named volumes."""
    svcs = [s for s, _ in services]
    values = [service_values(rig, s, secrets, offline, svcs) for s, secrets in sorted(services, key=lambda x: x[0].name)]
    return {"rig": rig, "project": compose_project(svcs[0]), "stack": svcs[0].stack, "services": values,
            "named_volumes": sorted({name for s in svcs for name in s.volumes})}
