"""SSH to inventory hosts: one private ssh_config with connection sharing.

Both `rigctl verify` (testinfra's ssh backend) and `rigctl probe -i` connect
through the config written here, so a host is reached the same way by both and
by Ansible (address, user, port, key and -o options from the inventory).
Python code runs remotely by sending it on stdin: no file is left on the host
and no secret appears on a command line.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile

from .inventory import InventoryHost

CONNECT_TIMEOUT_S = 5

# Reads one JSON line {name, code, args} from stdin and runs the code with ARGS set.
_LAUNCHER = ("import json,sys;d=json.loads(sys.stdin.readline());"
             "g={'__name__':'rigctl_remote','ARGS':d['args']};"
             "exec(compile(d['code'],d['name'],'exec'),g)")


class Unreachable(Exception):
    """SSH could not log in; ``str(exc)`` is ssh's own one-line reason."""


class RemoteError(Exception):
    """The host answered, but the remote command failed; one line for the user."""


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class SshSession:
    """A temporary ssh_config for ``hosts``; use as a context manager."""

    def __init__(self, hosts: list[InventoryHost], user_config: str | None = None, *, config: str | None = None):
        """``config``: attach to the ssh_config of a session opened elsewhere (the verify suites)."""
        self.hosts = {h.name: h for h in hosts}
        self.user_config = os.path.abspath(user_config) if user_config else None
        self.dir: str | None = None
        self.config: str | None = config

    def __enter__(self) -> "SshSession":
        self.dir = tempfile.mkdtemp(prefix="rigctl-ssh-")  # short: ControlPath is a unix socket
        self.config = os.path.join(self.dir, "ssh_config")
        with open(self.config, "w", encoding="utf-8") as f:
            f.write(self.render())
        return self

    def __exit__(self, *exc) -> None:
        for name in self.hosts:  # close the shared connections this session opened
            subprocess.run(["ssh", "-F", self.config, "-O", "exit", name], capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=10, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def render(self) -> str:
        """The ssh_config text: the user's config first (ssh takes the first value it reads)."""
        lines = []
        if self.user_config:
            lines.append(f"Include {self.user_config}")
        for h in self.hosts.values():
            lines.append(f"Host {h.name}")
            lines.append(f"  HostName {h.address}")
            if h.user:
                lines.append(f"  User {h.user}")
            if h.port:
                lines.append(f"  Port {h.port}")
            if h.key_file:
                lines += [f"  IdentityFile {os.path.expanduser(h.key_file)}", "  IdentitiesOnly yes"]
            lines += [f"  {opt}" for opt in h.ssh_options]
        lines += ["Host *", "  BatchMode yes", f"  ConnectTimeout {CONNECT_TIMEOUT_S}",
                  "  ServerAliveInterval 5", "  ControlMaster auto",
                  f"  ControlPath {self.dir}/%C", "  ControlPersist 60"]
        return "\n".join(lines) + "\n"

    def run_python(self, name: str, code: str, args: dict, *, label: str = "rigctl",
                   timeout_s: float = 60, sudo: bool = False) -> dict:
        """Run ``code`` with the host's Python; it must print one JSON object last."""
        host = self.hosts[name]
        remote = [host.python, "-c", _LAUNCHER]
        if sudo:
            remote = ["sudo", "-n"] + remote
        payload = json.dumps({"name": label, "code": code, "args": args}) + "\n"
        try:
            proc = subprocess.run(["ssh", "-F", self.config, name, " ".join(shlex.quote(a) for a in remote)],
                                  input=payload, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"no answer within {timeout_s:g} s") from None
        if proc.returncode == 255:
            raise Unreachable(_last_line(proc.stderr) or "ssh failed (exit 255)")
        if proc.returncode != 0:
            why = _last_line(proc.stderr) or _last_line(proc.stdout) or "no output"
            raise RemoteError(f"{host.python} exited {proc.returncode}: {why}")
        try:
            return json.loads(_last_line(proc.stdout))
        except ValueError:
            raise RemoteError(f"unreadable answer from {host.python}: {_last_line(proc.stdout)[:200]!r}") from None
