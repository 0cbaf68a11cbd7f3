"""The rigctl lab: throw-away Debian hosts on this machine (systemd-nspawn) for tests.

Thin Python wrapper around ``lab.sh`` (same directory), which does the work::

    from provisioner import lab
    ok, why = lab.can_run_lab()
    lab.up(2)              # h1=10.213.0.11, h2=10.213.0.12
    lab.status()           # {"up": True, "hosts": {...}, "inventory": ..., ...}
    lab.restart("h2")      # reboot one host on the same disk
    lab.down()

Environment: ``LAB_DIR`` (default /tmp/rigctl-lab), ``LAB_CACHE`` (default
/var/tmp/rigctl-lab-cache), ``LAB_NET`` (default 10.213.0; a second lab beside the
default one needs its own LAB_NET and LAB_DIR); see lab.sh for the rest.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "LabError", "lab_script", "lab_dir", "lab_cache", "can_run_lab",
    "up", "down", "restart", "status", "host_address", "using", "BRIDGE", "NET_PREFIX",
]

BRIDGE = "labbr0"
DEFAULT_NET = "10.213.0"
PROXY_PORT = 3142


def _net() -> str:
    return os.environ.get("LAB_NET", DEFAULT_NET)


NET_PREFIX = _net()  # at import time; functions read LAB_NET when called

_EXIT_UNAVAILABLE = 3  # lab.sh: this machine cannot run the lab


class LabError(RuntimeError):
    """The lab cannot run here, or an operation on it failed (one-line message)."""


@contextmanager
def using(net: str, directory: str | os.PathLike):
    """Point this module at another lab (LAB_NET, LAB_DIR) inside the block, e.g. a docker
    lab beside the default one; the previous values come back afterwards."""
    old = {k: os.environ.get(k) for k in ("LAB_NET", "LAB_DIR")}
    os.environ.update(LAB_NET=net, LAB_DIR=str(directory))
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def lab_script() -> Path:
    return Path(__file__).resolve().with_name("lab.sh")


def lab_dir() -> Path:
    return Path(os.environ.get("LAB_DIR", "/tmp/rigctl-lab"))


def lab_cache() -> Path:
    return Path(os.environ.get("LAB_CACHE", "/var/tmp/rigctl-lab-cache"))


def host_address(i: int) -> str:
    """Address of host h<i> (1-based)."""
    return f"{_net()}.{10 + i}"


def _cap_eff() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def can_run_lab() -> tuple[bool, str]:
    """(True, "") when ``up`` can work on this machine, else (False, one-line reason)."""
    if not os.uname().sysname == "Linux":
        return False, "the lab needs Linux (systemd-nspawn)"
    if os.geteuid() != 0:
        return False, "the lab must run as root (systemd-nspawn, bridge and overlay mounts)"
    cap = _cap_eff()
    if not (cap >> 21) & 1 or not (cap >> 12) & 1:
        return False, "the lab needs CAP_SYS_ADMIN and CAP_NET_ADMIN"
    if not Path("/sys/fs/cgroup").is_dir():
        return False, "no /sys/fs/cgroup"
    try:
        fs = Path("/proc/filesystems").read_text()
    except OSError:
        fs = ""
    if "overlay" not in fs and not Path("/sys/module/overlay").exists():
        return False, "the kernel has no overlayfs"
    if shutil.which("systemd-nspawn") is None and shutil.which("apt-get") is None:
        return False, "systemd-nspawn is not installed and there is no apt-get to install it"
    if shutil.which("bash") is None:
        return False, "bash not found"
    return True, ""


def _run(*args: str, timeout: float = 900, stream: bool = False) -> subprocess.CompletedProcess:
    """Run lab.sh; with ``stream`` its progress log goes to our stderr as it comes."""
    env = dict(os.environ, LAB_DIR=str(lab_dir()), LAB_CACHE=str(lab_cache()), LAB_NET=_net())
    try:
        r = subprocess.run(["bash", str(lab_script()), *args], env=env, text=True,
                           stdout=None if stream else subprocess.PIPE,
                           stderr=None if stream else subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabError(f"lab.sh {' '.join(args)} timed out after {timeout:.0f} s") from None
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr or "").splitlines() if ln.strip()]
        msg = next((ln for ln in reversed(lines) if "error" in ln or "unavailable" in ln),
                   lines[-1] if lines else f"exit code {r.returncode}")
        msg = msg.split("] ", 1)[-1] if msg.startswith("[lab ") else msg
        err = LabError(f"lab.sh {args[0]} failed: {msg}" if lines
                       else f"lab.sh {args[0]} failed (exit code {r.returncode})")
        err.returncode = r.returncode  # type: ignore[attr-defined]
        err.stderr = r.stderr  # type: ignore[attr-defined]
        raise err
    return r


def up(n: int = 2, docker: bool = False, *, stream: bool = False) -> dict:
    """Start hosts h1..hn; return ``status()``. Raises LabError."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise LabError(f"number of hosts must be a positive integer, not {n!r}")
    ok, why = can_run_lab()
    if not ok:
        raise LabError(why)
    _run("up", str(n), *(["--docker"] if docker else []), stream=stream)
    return status()


def down(*, stream: bool = False) -> None:
    """Stop the lab and remove everything it made (safe when nothing is up)."""
    ok, why = can_run_lab()
    if not ok:
        raise LabError(why)
    _run("down", timeout=300, stream=stream)


def restart(host: str, *, stream: bool = False) -> dict:
    """Reboot one host (an orderly shutdown, then a boot on the same disk); return ``status()``.
    Raises LabError (not up, no such host, no ssh after the boot)."""
    if not isinstance(host, str) or not host.startswith("h") or not host[1:].isdigit():
        raise LabError(f"a lab host is named like h1, not {host!r}")
    ok, why = can_run_lab()
    if not ok:
        raise LabError(why)
    _run("restart", host, timeout=300, stream=stream)
    return status()


def _ssh_answers(ip: str, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((ip, 22), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def status() -> dict:
    """State of the lab, read from LAB_DIR (no root needed).

    ``{"up": bool, "lab_dir": str, "inventory": str|None, "ssh_config": str|None,
    "proxy": "10.213.0.1:3142", "docker": bool,
    "hosts": {"h1": {"address": "10.213.0.11", "ssh": True}, ...}}``
    """
    d = lab_dir()
    hosts: dict[str, dict] = {}
    try:
        lines = (d / "hosts.list").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split()
        if len(parts) == 2:
            ip, name = parts
            hosts[name] = {"address": ip, "ssh": _ssh_answers(ip)}
    inv, cfg = d / "inventory.ini", d / "ssh_config"
    try:
        docker = (d / "docker-mode").read_text().strip() == "1"
    except OSError:
        docker = False
    return {
        "up": bool(hosts) and inv.is_file(),
        "lab_dir": str(d),
        "inventory": str(inv) if inv.is_file() else None,
        "ssh_config": str(cfg) if cfg.is_file() else None,
        "proxy": f"{_net()}.1:{PROXY_PORT}",
        "docker": docker,
        "hosts": hosts,
    }
