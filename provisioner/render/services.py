"""Per-host variables from the plan: services (with their rendered files), groups,
firewall rules, GPU expectations, power caps. Pure: no filesystem, no network."""

from __future__ import annotations

import posixpath
from pathlib import PurePosixPath

from ..plan.model import Plan, Port, Service

BIN_DIR = "/var/lib/rigctl/bin"
# one directory per llama.cpp build (its plan key): an engine change installs beside the old
# build instead of over it, so applying the previous spec points the unit back at a build that
# is still there (the llama.cpp roles keep the builds in use plus rigctl_engine_keep_previous)
ENGINES_DIR = "/var/lib/rigctl/engines"
SECRETS_DIR = "/etc/rigctl/secrets"
SERVICE_USER = "rigctl"
# (stack, service role) -> inventory group (playbooks/VARIABLES.md); None = any role
GROUPS = {
    ("llamacpp", "server"): "llamacpp_server",
    ("llamacpp-rpc", "server"): "llamacpp_server",
    ("llamacpp-rpc", "rpc-worker"): "llamacpp_rpc",
    ("vllm", "ray-head"): "ray_head",
    ("vllm", "ray-worker"): "ray_workers",
    ("vllm", "server"): "vllm",
    ("ollama", None): "ollama",
    ("tabbyapi", None): "tabbyapi",
    ("exo", None): "exo",
    ("petals", None): "petals",
}
STACK_GROUPS = ("llamacpp_rpc", "llamacpp_server", "ollama", "ray_head", "ray_workers", "vllm",
                "tabbyapi", "exo", "petals")


def deploy_mode(svc: Service) -> str:
    return svc.deploy_mode


def group_of(svc: Service) -> str:
    return GROUPS.get((svc.stack, svc.role)) or GROUPS.get((svc.stack, None)) or svc.stack.replace("-", "_")


def unit_path(svc: Service) -> str:
    return f"files/{svc.node}/{svc.name}.service"


def compose_project(svc: Service) -> str:
    """One compose project per stack per host: rigctl-<stack>."""
    return f"rigctl-{svc.stack}"


def compose_path(svc: Service) -> str:
    return f"files/{svc.node}/{compose_project(svc)}/compose.yml"


def secret_files(svc: Service) -> list[dict]:
    """Where each secret of a service is materialised on the host.

    A `*_FILE` variable is a raw key file (the path `--api-key-file` names when the argv has
    one); any other variable becomes `VAR=value` in its own env file.
    """
    out = []
    for var, ref in sorted(svc.secret_env.items()):
        if var.endswith("_FILE"):
            path = _flag_value(svc.argv, "--api-key-file") or f"{SECRETS_DIR}/{svc.name}-{var.lower()}"
            out.append({"path": path, "ref": dict(ref), "var": var, "format": "raw"})
        else:
            out.append({"path": f"{SECRETS_DIR}/{svc.name}-{var.lower()}.env", "ref": dict(ref),
                        "var": var, "format": "env"})
    return out


def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, a in enumerate(argv[:-1]):
        if a == flag:
            return argv[i + 1]
    return None


def depends_on(svc: Service, plan: Plan) -> list[dict]:
    """Services of the same deployment this one needs first (llama-server -> its RPC workers)."""
    if svc.role != "server" or svc.stack != "llamacpp-rpc":
        return []
    return [{"node": s.node, "service": s.name, "address": s.bind, "port": s.port}
            for d in plan.deployments_named(svc.deployment)
            for s in d.services if s.role == "rpc-worker"]


def host_binary(svc: Service) -> str:
    """Absolute path of a native service's binary on its host."""
    if svc.argv[0].startswith("/"):
        return svc.argv[0]
    if svc.engine and svc.engine.get("kind") == "build":
        return f"{ENGINES_DIR}/{svc.engine['key']}/{svc.argv[0]}"
    return f"{BIN_DIR}/{svc.argv[0]}"


def service_vars(svc: Service, plan: Plan, model_source: str | None, image_archive: str | None = None,
                 node_os: str | None = None) -> dict:
    """The service dict roles read (Service.to_dict() plus render's keys, VARIABLES.md).
    A native service on a macOS node gets a launchd plist (``plist_src``), not a unit."""
    d = svc.to_dict()
    d["model_source"] = model_source
    d["image_archive"] = image_archive
    d["deploy_mode"] = deploy_mode(svc)
    d["secret_files"] = secret_files(svc)
    d["depends_on"] = depends_on(svc, plan)
    if d["deploy_mode"] == "native":
        d["binary_src"] = PurePosixPath(svc.argv[0]).name
        if node_os == "macos":
            from . import launchd  # launchd imports this module

            d["plist_src"] = launchd.plist_path(svc)
            d["launchd_label"] = launchd.label(svc)
        else:
            d["unit_src"] = unit_path(svc)
            d["binary_dest"] = host_binary(svc)
    else:
        d["compose_src"] = compose_path(svc)
        d["compose_project"] = compose_project(svc)
        from .compose import health_wait_s  # compose imports this module
        d["health_wait_s"] = health_wait_s(svc)
    return d


def native_unit_values(svc: Service, secrets: list[dict]) -> dict:
    """Values for templates/systemd.service.j2: the ExecStart line and the secret plumbing.

    Raw key files stay root-only in /etc/rigctl/secrets; systemd hands the service a
    private copy (LoadCredential), so the unprivileged service user can read it.
    """
    from .templating import systemd_word

    creds = {s["path"]: posixpath.basename(s["path"]) for s in secrets if s["format"] == "raw"}
    words = [systemd_word(host_binary(svc))]
    for arg in svc.argv[1:]:
        if arg in creds:
            words.append(systemd_word("${CREDENTIALS_DIRECTORY}/" + creds[arg], expand=True))
        else:
            words.append(systemd_word(arg))
    env_files = [s["path"] for s in secrets if s["format"] == "env"]
    raw_vars = {s["var"]: "${CREDENTIALS_DIRECTORY}/" + creds[s["path"]]
                for s in secrets if s["format"] == "raw" and s["path"] not in svc.argv}
    return {"exec_start": " ".join(words), "env_files": env_files,
            "credentials": [{"name": n, "path": p} for p, n in sorted(creds.items())],
            "extra_env": raw_vars, "user": SERVICE_USER}


def firewall_rules(services: list[Service]) -> list[dict]:
    """One rule per (port or range, protocol) of the host's services; `port` is what nft writes
    after `dport` (52413, or 10002-19999 for a range). The first service to claim a port sets its scope."""
    rules = {}
    for s in services:
        ports = ([Port(s.port)] if s.port else []) + list(s.extra_ports)
        for p in ports:
            rules.setdefault((p.port, p.last or p.port, p.proto), {
                "port": p.port if p.last is None else p.nft, "proto": p.proto,
                "scope": p.scope or s.port_scope, "service": s.name})
    return [rules[k] for k in sorted(rules)]
