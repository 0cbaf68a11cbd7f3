"""What was last applied, and what a new plan would change.

`rigctl apply` writes `<rendered dir>/.rigctl/state.json` after a successful run
(the content is `plan_state(plan)`); `rigctl plan` compares a fresh plan against
it, Terraform-style. The state holds per host the services' command lines and
environment with a hash over everything that restarts a service, the stack
versions deployed, and the model files' identities. Secrets never enter it:
services carry secret references only.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import asdict
from pathlib import Path

from .model import Plan, Service

STATE_VERSION = 1
STATE_DIR = ".rigctl"
STATE_FILE = "state.json"
RENDER_DIR = "rendered"


class StateError(Exception):
    """The state file exists but cannot be used (bad JSON, newer format)."""


def default_render_dir(spec_file: str | Path, rig_name: str) -> Path:
    """Where `rigctl render` writes by default: <spec dir>/rendered/<rig name>."""
    return Path(spec_file).resolve().parent / RENDER_DIR / rig_name


def state_path(render_dir: str | Path) -> Path:
    return Path(render_dir) / STATE_DIR / STATE_FILE


def load_state(path: str | Path) -> dict | None:
    """The last applied state, or None when nothing was applied yet."""
    p = Path(path)
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"{p}: cannot read the applied state ({exc}); re-run `rigctl apply` or pass --state") from None
    if not isinstance(data, dict) or not isinstance(data.get("hosts"), dict):
        raise StateError(f"{p}: not a rigctl state file (no 'hosts' mapping)")
    if int(data.get("schema_version", 0)) > STATE_VERSION:
        raise StateError(f"{p}: written by a newer rigctl (state version {data['schema_version']}); upgrade rigctl")
    return data


def service_hash(svc: Service) -> str:
    """sha256 over everything that, when changed, means the service must be recreated."""
    keyed = {
        "argv": svc.argv, "env": svc.env, "files": svc.files, "port": svc.port, "bind": svc.bind,
        "extra_ports": [asdict(p) for p in svc.extra_ports], "gpus": svc.gpus, "gpu_uuids": svc.gpu_uuids,
        "secret_env": svc.secret_env, "ipc_host": svc.ipc_host, "shm_size": svc.shm_size,
        "model_path": svc.model_path,
    }
    # what a service runs from: its image, its llama.cpp build, its volumes (only when set, so
    # the hash of a service without them stays what it was)
    # (of the engine only what identifies the binaries: its label names the build host, and an
    # inventory's rigctl_artifacts_dir swaps the files, which the copy's checksum catches)
    engine = {k: svc.engine[k] for k in ("kind", "key", "image") if k in svc.engine} if svc.engine else None
    keyed.update({k: v for k, v in (("image", svc.image), ("engine", engine), ("volumes", svc.volumes),
                                    ("state_mounts", svc.state_mounts), ("pid_service", svc.pid_service)) if v})
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()


def plan_state(plan: Plan, *, versions: dict[str, str] | None = None,
               model_facts: dict[str, dict] | None = None) -> dict:
    """The state `apply` records for this plan: per host services, stack versions, models."""
    hosts: dict[str, dict] = {}
    model_facts = model_facts or {}
    for dp in plan.deployments:
        for svc in dp.services:
            h = hosts.setdefault(svc.node, {"services": {}, "stacks": {}, "models": {}})
            h["services"][svc.name] = {
                "deployment": svc.deployment, "stack": svc.stack, "role": svc.role,
                "argv": list(svc.argv), "env": dict(sorted(svc.env.items())),
                "files": sorted(svc.files), "port": svc.port, "hash": service_hash(svc),
            }
            h["stacks"][svc.stack] = (versions or {}).get(svc.stack, "unpinned")
            if svc.role in ("server", "rpc-worker", "exo-node", "petals-server", "ray-worker"):
                h["models"][dp.name] = _model_identity(dp, model_facts.get(dp.name))
    files = {k: v for k, v in model_facts.items() if v.get("weights_bytes")}
    return {"schema_version": STATE_VERSION, "rig": plan.rig, "hosts": hosts, "model_files": files}


def _model_identity(dp, facts: dict | None) -> dict:
    ident = {"model": dp.model, "format": dp.format}
    if facts and facts.get("weights_bytes"):
        for k in ("path", "file_bytes", "mtime_ns", "weights_bytes", "sha256"):
            if facts.get(k) is not None:
                ident[k] = facts[k]
    return ident


def diff_state(old: dict | None, new: dict) -> dict[str, list[str]]:
    """node -> change lines ('+ create', '~ update', '- remove'); nodes without changes are left out."""
    old_hosts = (old or {}).get("hosts", {})
    out: dict[str, list[str]] = {}
    for node in sorted(set(old_hosts) | set(new["hosts"])):
        o = old_hosts.get(node, {"services": {}, "stacks": {}, "models": {}})
        n = new["hosts"].get(node, {"services": {}, "stacks": {}, "models": {}})
        lines: list[str] = []
        for name in sorted(set(o.get("services", {})) | set(n.get("services", {}))):
            a, b = o.get("services", {}).get(name), n.get("services", {}).get(name)
            if a is None:
                port = f", port {b['port']}" if b.get("port") else ""
                lines.append(f"+ create {name} ({b['stack']} {b['role']}{port})")
            elif b is None:
                lines.append(f"- remove {name} ({a.get('stack')} {a.get('role')})")
            elif a.get("hash") != b["hash"]:
                lines.append(f"~ update {name}: " + (_describe(a, b) or "configuration files changed"))
        for stack, ver in sorted(n.get("stacks", {}).items()):
            before = o.get("stacks", {}).get(stack)
            if before is not None and before != ver:
                lines.append(f"~ {stack} version {before} -> {ver}")
        for dep, ident in sorted(n.get("models", {}).items()):
            before = o.get("models", {}).get(dep)
            if before is not None and before != ident:
                lines.append(f"~ model of {dep}: {_ident_str(before)} -> {_ident_str(ident)}")
        if lines:
            out[node] = lines
    return out


def _describe(a: dict, b: dict) -> str:
    parts = []
    fa, fb = _flags(a.get("argv", [])), _flags(b["argv"])
    if a.get("argv", [])[:1] != b["argv"][:1]:
        parts.append(f"command {shlex.join(a.get('argv', [])[:2])} -> {shlex.join(b['argv'][:2])}")
    for k in sorted(set(fa) | set(fb)):
        if fa.get(k) != fb.get(k):
            parts.append(f"{k} {fa.get(k, '(unset)')} -> {fb.get(k, '(unset)')}")
    ea, eb = a.get("env", {}), b.get("env", {})
    for k in sorted(set(ea) | set(eb)):
        if ea.get(k) != eb.get(k):
            parts.append(f"{k}={ea.get(k, '(unset)')} -> {eb.get(k, '(unset)')}")
    if a.get("port") != b.get("port"):
        parts.append(f"port {a.get('port')} -> {b.get('port')}")
    return "; ".join(parts)


def _flags(argv: list[str]) -> dict[str, str]:
    """--flag value pairs (and bare positionals by position) for a readable diff."""
    out: dict[str, str] = {}
    i, pos = 0, 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("-"):
            val = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else "(set)"
            out[tok] = val
            i += 2 if val != "(set)" else 1
        else:
            out[f"arg{pos}"] = tok
            pos += 1
            i += 1
    return out


def _ident_str(ident: dict) -> str:
    s = f"{ident.get('model')} {ident.get('format')}"
    if ident.get("path"):
        s += f" ({ident['path']}, {ident.get('file_bytes', '?')} B)"
    return s
