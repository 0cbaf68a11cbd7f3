# -*- coding: utf-8 -*-
"""Host facts beside the GPU probe: OS, memory, CPU name, network interfaces.

Standalone like ``core.py`` (standard library only, nothing from ``provisioner``):
``rigctl init -i`` sends this file over SSH and runs ``collect_host()`` with the
host's own Python, so a host needs nothing installed. Every read is best effort:
a missing file or tool leaves the field out, never raises.
"""

from __future__ import absolute_import, division, print_function

import json
import os
import platform
import socket
import subprocess


def _read(path):
    try:
        with open(path, "r") as f:
            return f.read()
    except (OSError, IOError, UnicodeDecodeError):
        return None


def parse_os_release(text):
    """os-release(5) KEY=value lines -> dict (quotes removed)."""
    out = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _memory_kib():
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def _cpu_name():
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def _ipv4():
    """Interface -> ["10.0.0.5/24", ...] from `ip -j -4 addr` (iproute2), or {}."""
    try:
        proc = subprocess.run(["ip", "-j", "-4", "addr"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=10, check=False)
        data = json.loads(proc.stdout.decode("utf-8", "replace") or "[]")
    except (OSError, ValueError, subprocess.SubprocessError):
        return {}
    out = {}
    for link in data if isinstance(data, list) else []:
        addrs = ["%s/%s" % (a.get("local"), a.get("prefixlen")) for a in link.get("addr_info") or []
                 if a.get("family") == "inet" and a.get("local")]
        if link.get("ifname"):
            out[link["ifname"]] = addrs
    return out


def _nics():
    base = "/sys/class/net"
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    addrs = _ipv4()
    nics = []
    for name in names:
        if name == "lo":
            continue
        speed = _read(os.path.join(base, name, "speed"))
        try:
            mbps = int(speed.strip()) if speed else None
        except ValueError:
            mbps = None
        real = os.path.realpath(os.path.join(base, name))
        nics.append({
            "name": name,
            # the kernel reports -1 (or refuses the read) when the driver does not know
            "speed_mbps": mbps if mbps is not None and mbps > 0 else None,
            "operstate": (_read(os.path.join(base, name, "operstate")) or "").strip() or None,
            "virtual": "/devices/virtual/" in real,
            "ipv4": addrs.get(name, []),
        })
    return nics


def collect_host():
    """This host's OS, memory, CPU and NICs as a JSON-serialisable dict."""
    facts = {"hostname": socket.gethostname(), "system": platform.system()}
    osr = parse_os_release(_read("/etc/os-release") or _read("/usr/lib/os-release"))
    if osr:
        facts["os_release"] = dict((k, osr[k]) for k in ("ID", "VERSION_ID", "PRETTY_NAME") if k in osr)
    if facts["system"] == "Darwin":
        facts["macos_version"] = platform.mac_ver()[0] or None
    kib = _memory_kib()
    if kib:
        facts["memory_total_kib"] = kib
    cpu = _cpu_name()
    if cpu:
        facts["cpu_name"] = cpu
    facts["nics"] = _nics()
    return facts


if __name__ == "rigctl_remote":  # run over SSH by provisioner.verify.ssh.SshSession.run_python
    import sys

    sys.stdout.write("\n" + json.dumps({"host": collect_host()}) + "\n")
