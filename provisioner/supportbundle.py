"""What `rigctl report` puts in its archive, gathered and redacted (nothing here prints).

Members: the spec, the plan (text and JSON, as `rigctl plan` prints them), the last
apply run (status, rc, the tail of Ansible's stdout), the applied state with the
engine versions it records, and per host the GPU probe facts and the last lines of
each service's log. Every secret value rigctl can resolve (env refs from this
environment, file refs and the rendered secret files read on the hosts) is replaced
everywhere, and so is anything shaped like a key (``--api-key X``, ``Bearer X``,
``HF_TOKEN=X``).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

LOG_LINES = 200
STDOUT_TAIL_LINES = 200
MIN_SECRET_LEN = 6  # shorter "secrets" would redact ordinary words everywhere
REDACTED = "<redacted>"
SECRETS_DIR = "/etc/rigctl/secrets"  # where render materialises secrets (provisioner.render.services)

# Key-shaped text, whatever its value: the value group is replaced.
_PATTERNS = [  # a value that is already a placeholder (<...>) or a shell expansion ($...) is left alone
    re.compile(r"(--api-key[= ]+)([^\s<$][^\s]*)"),
    re.compile(r"(?i)(\bbearer\s+)([^\s<$\"']{6,})"),
    re.compile(r"(\b[A-Z][A-Z0-9_]*(?:TOKEN|API_KEY|APIKEY|SECRET|PASSWORD|PASSWD)=[\"']?)([^\s<$\"',][^\s\"',]*)"),
]

_HOST_CODE = r"""
import json, os, subprocess, sys
def run(cmd):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        return {"rc": p.returncode, "out": p.stdout.decode("utf-8", "replace")}
    except Exception as exc:
        return {"rc": None, "out": "%s: %s" % (type(exc).__name__, exc)}
n = str(ARGS["lines"])
logs = {}
for name, mode in ARGS["services"]:
    if mode == "container":
        logs[name] = run(["docker", "logs", "--tail", n, name])
    else:
        logs[name] = run(["journalctl", "-u", name, "-n", n, "--no-pager", "-o", "short-iso"])
paths = list(ARGS["secret_files"])
try:
    paths += [os.path.join(ARGS["secrets_dir"], f) for f in sorted(os.listdir(ARGS["secrets_dir"]))]
except OSError:
    pass
secrets = []
for path in paths:
    try:
        with open(path, "rb") as f:
            secrets.append(f.read(65536).decode("utf-8", "replace"))
    except OSError:
        pass
sys.stdout.write("\n" + json.dumps({"logs": logs, "secrets": secrets}) + "\n")
"""


@dataclass
class Bundle:
    """Archive members (name -> text) and what a user should know about them."""

    members: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)

    def add_secret(self, value: str | None) -> None:
        """A secret value, also each VAR=value line's value (the rendered env files)."""
        for v in [value or ""] + [ln.partition("=")[2] for ln in (value or "").splitlines() if "=" in ln]:
            v = v.strip()
            if len(v) >= MIN_SECRET_LEN:
                self.secrets.add(v)


def redact(text: str, secrets: set[str]) -> str:
    """``text`` with every known secret value and every key-shaped value replaced."""
    for s in sorted(secrets, key=len, reverse=True):  # longest first: a secret containing another
        text = text.replace(s, REDACTED)
    for pat in _PATTERNS:
        text = pat.sub(lambda m: m.group(1) + (m.group(2) if m.group(2) == REDACTED else REDACTED), text)
    return text


def _rigctl(*args: str) -> str:
    """`rigctl ARGS` as a user would run it: its stdout, stderr and exit code as one text."""
    r = subprocess.run([sys.executable, "-m", "provisioner", *args], capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, COLUMNS="120"))
    return r.stdout + (f"\n--- stderr ---\n{r.stderr}" if r.stderr else "") + f"\n--- exit {r.returncode} ---\n"


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]) + "\n"
    except OSError as exc:
        return f"(unreadable: {exc.strerror})\n"


def add_last_run(b: Bundle, spec: str) -> None:
    from .execute import rig_dir

    runs = rig_dir(spec) / "runs"
    dirs = sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    if not dirs:
        b.notes.append(f"apply: no run under {runs} (never applied from here)")
        return
    last = dirs[-1]
    arts = sorted(p for p in (last / "artifacts").iterdir() if p.is_dir()) if (last / "artifacts").is_dir() else []
    if not arts:
        b.notes.append(f"apply: the last run {last.name} has no artifacts (interrupted before Ansible ran?)")
        return
    a = arts[-1]
    status = (a / "status").read_text().strip() if (a / "status").is_file() else "unknown"
    rc = (a / "rc").read_text().strip() if (a / "rc").is_file() else "unknown"
    b.members["apply/last-run.txt"] = (f"run {last}\nstatus {status}\nrc {rc}\n"
                                       f"last {STDOUT_TAIL_LINES} lines of Ansible's stdout:\n\n"
                                       + _tail(a / "stdout", STDOUT_TAIL_LINES))
    b.notes.append(f"apply: last run {last.name}: {status} (rc {rc})")


def add_state(b: Bundle, spec: str, rig: str) -> dict | None:
    from .plan.state import StateError, default_render_dir, load_state, state_path

    path = state_path(default_render_dir(spec, rig))
    try:
        state = load_state(path)
    except StateError as exc:
        b.notes.append(f"state: {exc}")
        return None
    if state is None:
        b.notes.append(f"state: none at {path} (no full apply recorded)")
        return None
    b.members["state.json"] = json.dumps(state, indent=2, sort_keys=True) + "\n"
    lines = [f"{host}: {stack} {ver}" for host, h in sorted(state.get("hosts", {}).items())
             for stack, ver in sorted(h.get("stacks", {}).items())]
    b.members["engines.txt"] = "engine versions as last applied (state.json):\n" + "\n".join(lines) + "\n"
    return state


def add_hosts(b: Bundle, ctx, plan, inventory: str | None, ssh_config: str | None) -> None:
    """GPU facts, service logs and on-host secret values of every node that SSH reaches."""
    from .verify import Inventory, InventoryError, live_facts
    from .verify.inventory import effective_inventory, load_inventory
    from .verify.ssh import RemoteError, SshSession, Unreachable

    try:
        inv = effective_inventory(ctx, plan, inventory) if plan is not None else load_inventory(inventory)
    except InventoryError as exc:
        b.notes.append(f"hosts: inventory unreadable: {exc}")
        return
    names = [n.name for n in ctx.rig.nodes if n.name in inv.hosts]
    hosts = [inv.hosts[n] for n in names]
    facts = live_facts(ctx, Inventory(inv.source, {h.name: h for h in hosts}), ssh_config)
    file_refs = sorted({d.auth.file for d in ctx.rig.serve if d.auth and d.auth.file})
    with SshSession(hosts, ssh_config) as session:
        for name in names:
            outcome = facts.get(name, {})
            if "unreachable" in outcome:
                b.notes.append(f"{name}: unreachable over SSH: {outcome['unreachable']}")
                continue
            b.members[f"hosts/{name}/gpu.json"] = json.dumps(outcome, indent=2, sort_keys=True) + "\n"
            services = [(s.name, s.deploy_mode) for s in (plan.services_on(name) if plan else [])]
            try:
                answer = session.run_python(name, _HOST_CODE, {"services": services, "lines": LOG_LINES,
                                                               "secret_files": file_refs, "secrets_dir": SECRETS_DIR},
                                            label="rigctl_report", timeout_s=90,
                                            sudo=(inv.hosts[name].user or "root") != "root")
            except (Unreachable, RemoteError) as exc:
                b.notes.append(f"{name}: logs not read: {exc}")
                continue
            for value in answer.get("secrets", []):
                b.add_secret(value)
            for unit, log in answer.get("logs", {}).items():
                how = "docker logs" if dict(services).get(unit) == "container" else "journalctl -u"
                b.members[f"hosts/{name}/{unit}.log"] = f"$ {how} {unit} (last {LOG_LINES} lines), exit {log['rc']}\n{log['out']}"
            b.notes.append(f"{name}: GPU facts ({'yes' if 'facts' in outcome else next(iter(outcome.values()), '?')}), "
                           f"{len(services)} service log(s)")


def gather(spec: str, inventory: str | None, ssh_config: str | None, ctx, plan, catalog: list[str]) -> Bundle:
    """Everything for the archive, redacted. ``ctx``/``plan`` may be None when the spec does not plan."""
    b = Bundle()
    for d in (ctx.rig.serve if ctx else []):
        if d.auth and d.auth.env:
            b.add_secret(os.environ.get(d.auth.env))
            if not os.environ.get(d.auth.env):
                b.notes.append(f"secret: ${d.auth.env} is not set here; only its key-shaped uses are redacted")
        if d.auth and d.auth.vault:
            b.notes.append(f"secret: vault variable {d.auth.vault} is not resolved here; the rendered secret files "
                           "on the hosts are")
    b.members["spec/" + Path(spec).name] = Path(spec).read_text(encoding="utf-8", errors="replace")
    cat = [a for c in catalog for a in ("--catalog", c)]
    b.members["plan.txt"] = _rigctl("plan", spec, *cat)
    b.members["plan.json"] = _rigctl("plan", spec, "--format", "json", *cat)
    add_last_run(b, spec)
    if ctx is not None:
        add_state(b, spec, ctx.rig.name)
        if inventory:
            add_hosts(b, ctx, plan, inventory, ssh_config)
        else:
            b.notes.append("hosts: no -i INVENTORY given; no GPU facts or service logs")
    b.notes.append("verify: rigctl keeps no verify results; run `rigctl verify` and attach its output")
    b.members = {k: redact(v, b.secrets) for k, v in b.members.items()}
    b.notes = [redact(n, b.secrets) for n in b.notes]
    return b


def write_archive(b: Bundle, path: Path, top: str) -> None:
    """A .tar.gz of the members under ``top/`` plus MANIFEST.txt; atomic, mode 0600 (logs can hold prompts)."""
    now = time.time()
    manifest = "rigctl report\n\n" + "\n".join(b.notes) + "\n\nmembers:\n" + "\n".join(sorted(b.members)) + "\n"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for name, text in [("MANIFEST.txt", manifest)] + sorted(b.members.items()):
                data = text.encode("utf-8")
                info = tarfile.TarInfo(f"{top}/{name}")
                info.size, info.mtime, info.mode = len(data), int(now), 0o644
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
