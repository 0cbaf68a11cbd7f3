"""Parse rendered files the way their consumers do (test helper).

- Ansible YAML (inventory, group_vars, host_vars): PyYAML with Ansible's ``!unsafe`` tag.
- systemd units: ``systemd-analyze verify`` (binaries rigctl installs on the host are
  swapped for /bin/true, since verify insists that ExecStart's program exists here).
- compose files: the docker compose v2 CLI's ``config`` (scripts/consumer_tools.sh caches
  it in LAB_CACHE/compose/), which applies compose's own interpolation and schema.
- the nftables ruleset: the firewall role's template filled from a host's rendered vars,
  checked with ``nft -c -f``.

Each checker returns a list of problems (empty = the consumer accepts the file); a tool
that is missing here raises ``ToolMissing`` so a test can skip and say which.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import jinja2
import yaml

from provisioner.escape import Unsafe

ROOT = Path(__file__).resolve().parent.parent
BIN_DIRS = ("/var/lib/rigctl/bin/", "/var/lib/rigctl/engines/")  # render.services BIN_DIR, ENGINES_DIR


class ToolMissing(Exception):
    pass


class AnsibleLoader(yaml.SafeLoader):
    """PyYAML plus Ansible's !unsafe, kept as provisioner.escape.Unsafe so tests can check
    which strings render marked."""


AnsibleLoader.add_constructor("!unsafe", lambda loader, node: Unsafe(loader.construct_scalar(node)))


def load_ansible_yaml(text: str):
    return yaml.load(text, Loader=AnsibleLoader)  # noqa: S506 - SafeLoader subclass


def compose_bin() -> str:
    cache = Path(os.environ.get("LAB_CACHE", "/var/tmp/rigctl-lab-cache")) / "compose" / "docker-compose"
    for cand in (os.environ.get("RIGCTL_COMPOSE_BIN"), str(cache), shutil.which("docker-compose")):
        if cand and os.access(cand, os.X_OK):
            out = subprocess.run([cand, "version"], capture_output=True, text=True)
            if out.returncode == 0 and "version v1" not in out.stdout.lower() and " 1." not in out.stdout:
                return cand
    raise ToolMissing("docker compose v2 CLI (run scripts/consumer_tools.sh as root)")


def _tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None)
    if not path:
        raise ToolMissing(f"{name} (apt-get install {'nftables' if name == 'nft' else 'systemd'})")
    return path


def check_compose(text: str) -> list[str]:
    """`docker compose config` on one rendered compose file (interpolation, schema)."""
    binary = compose_bin()
    with tempfile.TemporaryDirectory() as d:
        # env files are the host's secrets (written by the secret role); compose insists they
        # exist, so point them at empty stand-ins under the temporary directory
        doc = yaml.safe_load(text) or {}
        for svc in (doc.get("services") or {}).values():
            for path in svc.get("env_file") or []:
                stand_in = Path(d) / "secrets" / str(path).lstrip("/")
                stand_in.parent.mkdir(parents=True, exist_ok=True)
                stand_in.touch()
                text = text.replace(json.dumps(path), json.dumps(str(stand_in)))
        f = Path(d) / "compose.yml"
        f.write_text(text, encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "HOME": d}  # nothing to interpolate from
        out = subprocess.run([binary, "-f", str(f), "config", "-q"], capture_output=True, text=True, env=env,
                             cwd=d, timeout=60)
    return [out.stderr.strip() or f"exit {out.returncode}"] if out.returncode else []


_EXEC = re.compile(r"^ExecStart=(\S+)", re.M)


def check_units(units: dict[str, str]) -> list[str]:
    """`systemd-analyze verify` on rendered units (name -> text), in one call."""
    if not units:
        return []
    tool = _tool("systemd-analyze")
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i, (name, text) in enumerate(sorted(units.items())):
            # the engine binaries exist only on the hosts; verify needs an executable
            text = _EXEC.sub(lambda m: "ExecStart=/bin/true" if m.group(1).startswith(BIN_DIRS) else m.group(0), text)
            p = Path(d) / f"u{i}.service"  # the name may carry a payload; verify reads any
            p.write_text(text, encoding="utf-8")
            paths.append(str(p))
        out = subprocess.run([tool, "verify", "--man=no", *paths], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in (out.stdout + out.stderr).splitlines()
             if ln.strip() and "Unit sysinit.target not found" not in ln]
    return lines if out.returncode or lines else []


def nft_ruleset(host_vars: dict, group_vars: dict) -> str:
    """The firewall role's template filled as Ansible would for one host."""
    src = (ROOT / "playbooks" / "roles" / "firewall" / "templates" / "rigctl.nft.j2").read_text()
    defaults = yaml.safe_load((ROOT / "playbooks" / "roles" / "firewall" / "defaults" / "main.yml").read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    values = {**defaults, **group_vars, **host_vars, "ansible_managed": "Ansible managed", "ansible_port": 22}
    values["rigctl_firewall_ssh_port"] = 22
    return env.from_string(src).render(**values)


def check_nft(ruleset: str) -> list[str]:
    tool = _tool("nft")
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as fh:
        fh.write(ruleset)
    try:
        out = subprocess.run([tool, "-c", "-f", fh.name], capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(fh.name)
    return [out.stderr.strip() or f"exit {out.returncode}"] if out.returncode else []


def nft_accepts(ruleset: str) -> list[str]:
    """The accept rules of the ruleset, one per line (for "no extra accept" assertions)."""
    return [ln.strip() for ln in ruleset.splitlines()
            if re.search(r"\baccept\b", ln.split(" comment ")[0]) and "policy" not in ln]
