"""rigctl verify: expectations from spec + plan, the testinfra suites over SSH, diagnostics back.

The suites (provisioner/verify/suites/) run in a pytest subprocess with the
same Python; they read an expectations JSON written here and write a results
JSON that is turned into diagnostics located at spec paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..diagnostics import Diagnostic, Severity
from ..plan.common import secret_file
from ..plan.model import Plan, Service
from ..render import launchd
from ..rules.context import Context
from .drift import facts_diagnostics, unreachable
from .expect import gpu_expected
from .inventory import Inventory, InventoryHost, effective_inventory
from .memory_check import check_memory
from .ssh import SshSession

SUITES_DIR = Path(__file__).parent / "suites"
SUITES = ("test_host.py", "test_gpu.py", "test_endpoint.py")  # in this order: endpoints read unit states
WILDCARD = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


@dataclass
class VerifyResult:
    diagnostics: list[Diagnostic]
    hosts: list[str]
    counts: dict = field(default_factory=dict)  # passed / failed / skipped / error
    seconds: float = 0.0
    log: str = ""  # pytest's own output, for --verbose
    memory_tables: list[str] = field(default_factory=list)  # plan vs engine memory, one per deployment


def _placement_path(ctx: Context, di: int, node: str) -> tuple:
    for pi, p in enumerate(ctx.rig.serve[di].placement):
        if p.node == node:
            return ("serve", di, "placement", pi)
    return ("serve", di)


def _auth(ctx: Context, di: int, host: InventoryHost, service: Service) -> dict | None:
    """How the endpoint check gets the API key: env (read on this controller) or a file read on the host."""
    dep = ctx.rig.serve[di]
    if dep.auth is None:
        return None
    if dep.auth.env:
        return {"env": dep.auth.env}
    path = dep.auth.file
    if path is None:  # vault: read the copy apply wrote for the service
        raw = [f["path"] for sv in host.vars.get("rigctl_services") or [] if sv.get("name") == service.name
               for f in sv.get("secret_files") or [] if f.get("format") == "raw"]
        path = raw[0] if raw else secret_file(dep)
    return {"key_file": str(path), "sudo": host.user not in (None, "root")}


def _deploy_mode(ctx: Context, host: InventoryHost, service: Service) -> str:
    """native (systemd unit), launchd (a native service of a macOS node) or container, as
    rendered for this service."""
    mode = next((str(sv["deploy_mode"]) for sv in host.vars.get("rigctl_services") or []
                 if sv.get("name") == service.name and sv.get("deploy_mode")),
                str(host.vars.get("rigctl_deploy_mode") or "native"))
    node = next((n for n in ctx.rig.nodes if n.name == service.node), None)
    return "launchd" if mode == "native" and node is not None and node.os == "macos" else mode


class _Checks:
    """The checks for the suites, and for each, how its failure becomes a diagnostic."""

    def __init__(self):
        self.items: list[dict] = []
        self.meta: dict[str, dict] = {}

    def add(self, kind: str, host: str, label: str, rule: str, path: tuple, **data) -> None:
        cid = f"c{len(self.items)}"
        self.items.append({"id": cid, "kind": kind, "host": host, "label": f"{host}-{label}", **data})
        self.meta[cid] = {"kind": kind, "host": host, "rule": f"{rule}[{host}]", "path": path, **data}


def build_checks(ctx: Context, plan: Plan, hosts: list[InventoryHost], budget_s: float, max_tokens: int) -> _Checks:
    checks = _Checks()
    dep_index = {d.name: i for i, d in enumerate(ctx.rig.serve)}
    for h in hosts:
        ni = ctx.node_index(h.name)
        node_path = ("nodes", ni)
        checks.add("reachable", h.name, "ssh", "verify-host", node_path, node_index=ni)
        services: list[Service] = plan.services_on(h.name)
        for s in services:
            di = dep_index.get(s.deployment)
            dep_path = ("serve", di) if di is not None else node_path
            place = _placement_path(ctx, di, h.name) if di is not None else node_path
            mode = _deploy_mode(ctx, h, s)
            checks.add("service", h.name, s.name, "verify-service", place, name=s.name, mode=mode)
            ports = ([(s.port, s.bind)] if s.port else []) + [(p.port, "0.0.0.0") for p in s.extra_ports
                                                           if p.proto == "tcp" and p.last is None and p.listens]
            for port, bind in ports:
                port_path = dep_path + ("port",) if s.role == "server" and di is not None and \
                    ctx.rig.serve[di].port is not None else place
                checks.add("port", h.name, f"{s.name}-{port}", "verify-port", port_path,
                           service=s.name, port=port, bind=bind, mode=mode, os=ctx.rig.nodes[ni].os)
            if s.health_path and s.port:
                checks.add("endpoint", h.name, f"{s.name}-http", "verify-endpoint", dep_path,
                           service=s.name, port=s.port, host_address=WILDCARD.get(s.bind, s.bind),
                           health_path=s.health_path, model_hint=s.deployment, budget_s=budget_s,
                           max_tokens=max_tokens, auth=_auth(ctx, di, h, s) if di is not None else None)
        expected = gpu_expected(h.vars)
        if expected is not None:
            checks.add("gpu", h.name, "gpus", "verify-gpu", node_path + ("gpus",), expected=expected,
                       node_index=ni)
    return checks


def _diagnostics(ctx: Context, checks: _Checks, results: list[dict]) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for r in results:
        meta = checks.meta.get(r["id"])
        if meta is None or r["outcome"] in ("passed", "skipped"):
            continue
        host, message = meta["host"], r.get("message") or "failed"
        if r["outcome"] == "error":
            out.append(Diagnostic(f"verify-internal[{host}]", Severity.error,
                                  f"{host}: the {meta['kind']} check crashed: {message.splitlines()[-1]}",
                                  meta["path"], hint="this is a bug in rigctl's verify suites: please report it "
                                  "with the output of `rigctl verify --verbose`", data={"log": message}))
        elif meta["kind"] == "reachable":
            out.append(unreachable(ctx, meta["node_index"], message))
        elif meta["kind"] == "gpu" and "outcome" in r.get("data", {}):
            out += facts_diagnostics(ctx, meta["node_index"], r["data"]["outcome"], meta["expected"])
        else:
            hint = r.get("hint")
            if hint is None and meta["kind"] in ("service", "port"):
                unit = meta.get("name") or meta.get("service")
                mode = meta.get("mode", "native")
                hint = (f"on {host}: `journalctl -u {unit} -n 50`; `rigctl apply` restores the planned state"
                        if mode == "native" else
                        f"on {host}: `tail -n 50 {launchd.LOG_DIR}/{unit}.log` and `sudo launchctl print "
                        f"system/{launchd.LABEL_PREFIX}{unit}`; `rigctl apply` restores the planned state"
                        if mode == "launchd" else f"on {host}: `docker logs {unit}`")
            out.append(Diagnostic(meta["rule"], Severity.error, message, meta["path"], hint=hint,
                                  data=r.get("data", {})))
    return out


def run_verify(ctx: Context, plan: Plan, inventory: Inventory | str | None, ssh_config: str | None = None,
               limit: list[str] | None = None, *, budget_s: float = 60, max_tokens: int = 8) -> VerifyResult:
    """Check every (or each ``limit``) spec node against the plan over SSH; see module doc.

    ``inventory``: an Inventory, or the inventories/<env>/ overrides that apply used (None: none).
    """
    t0 = time.monotonic()
    inv = inventory if isinstance(inventory, Inventory) else effective_inventory(ctx, plan, inventory)
    selected = inv.select(limit)
    names = {h.name for h in selected}
    diags: list[Diagnostic] = []
    for ni, node in enumerate(ctx.rig.nodes):
        if node.name not in inv.hosts and (not limit or node.name in limit):
            diags.append(Diagnostic(f"verify-host[{node.name}]", Severity.error,
                                    f"{node.name}: not in inventory {inv.source}, so it was not checked",
                                    ("nodes", ni, "name"), hint="render the inventory again with `rigctl render`"))
    hosts = sorted((h for h in selected if ctx.node_index(h.name) is not None), key=lambda h: ctx.node_index(h.name))
    if not hosts:
        return VerifyResult(diags, [], seconds=time.monotonic() - t0)
    checks = build_checks(ctx, plan, hosts, budget_s, max_tokens)
    with SshSession(hosts, ssh_config) as session, tempfile.TemporaryDirectory(prefix="rigctl-verify-") as tmp:
        exp, res, ini = (os.path.join(tmp, n) for n in ("expectations.json", "results.json", "pytest.ini"))
        with open(exp, "w", encoding="utf-8") as f:
            json.dump({"ssh_config": session.config, "checks": checks.items,
                       "hosts": {h.name: {"python": h.python} for h in hosts}}, f, indent=1)
        Path(ini).write_text("[pytest]\n", encoding="utf-8")
        cmd = [sys.executable, "-m", "pytest", *(str(SUITES_DIR / s) for s in SUITES), "-c", ini,
               "--rootdir", tmp, "--import-mode=importlib", "-p", "no:cacheprovider",
               "-p", "provisioner.verify.suites.plugin", "-q", "-rfE", "--tb=short",
               "--rigctl-expectations", exp, "--rigctl-results", res]
        env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
        n_endpoints = sum(c["kind"] == "endpoint" for c in checks.items)
        timeout = 120 + len(checks.items) * 20 + n_endpoints * (budget_s + 15)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp)
        log = proc.stdout + proc.stderr
        if proc.returncode not in (0, 1) or not os.path.exists(res):  # 0 all passed, 1 some failed
            raise RuntimeError(f"verify suites did not run (pytest exit {proc.returncode}):\n{log[-4000:]}")
        results = json.loads(Path(res).read_text(encoding="utf-8"))
        # the engine's own memory figures at load, against the plan, where its service is up
        down = {checks.meta[r["id"]]["host"] for r in results if r["outcome"] not in ("passed", "skipped")
                and checks.meta.get(r["id"], {}).get("kind") in ("reachable", "service")}
        modes = {(h.name, s.name): _deploy_mode(ctx, h, s) for h in hosts for s in plan.services_on(h.name)}
        memory = check_memory(ctx, plan, session, {h.name: h for h in hosts}, modes, down)
    counts: dict[str, int] = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    diags += _diagnostics(ctx, checks, results) + memory.diagnostics
    return VerifyResult(diags, sorted(names & {h.name for h in hosts}), counts, time.monotonic() - t0, log,
                        memory.tables)
