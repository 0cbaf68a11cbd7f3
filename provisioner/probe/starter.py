"""A commented starter rig spec from probe facts (``rigctl init``).

``starter_spec`` is pure: it turns what was read on each host (GPU facts from
``core.collect``, host facts from ``host.collect_host``, or why there are none)
into YAML text. What the facts cannot tell (the PSU, the wall circuit, a CPU
catalog id, a NIC speed the driver does not report) is left as a commented
QUESTION naming the rule that needs the answer.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Callable, get_args

from ..spec.models import GPU_UUID_PATTERN, NAME_PATTERN, NIC_NAME_PATTERN, Node
from . import _scalar, _pcie_text, _w

OS_CHOICES = get_args(Node.model_fields["os"].annotation)  # the spec's os literals, one source
_OS_DEFAULT = Node.model_fields["os"].default

# Interfaces that never carry a rig fabric (container and VPN plumbing), unless the SSH address is on them.
_PLUMBING = re.compile(r"^(docker|veth|br-|virbr|cni|flannel|cali|tailscale|wg|tun|tap|ifb|dummy|vxlan)")


@dataclass
class HostFacts:
    """Everything read on one host; a reason in place of each part that could not be read."""

    name: str  # node name (inventory hostname, or this host's name)
    connection: dict | None = None  # {address, ssh_user, ssh_port} from the inventory
    gpu: dict | None = None  # core.collect() facts
    gpu_missing: str | None = None  # why there are no GPU facts
    host: dict | None = None  # host.collect_host() facts
    host_missing: str | None = None
    notes: list[str] = field(default_factory=list)


def node_name(text: str) -> str:
    """A valid spec node name for a host name ('GPU_Box.lan' -> 'gpu-box')."""
    name = re.sub(r"[^a-z0-9-]+", "-", str(text).split(".")[0].lower()).strip("-")[:63].strip("-")
    return name if re.match(NAME_PATTERN, name) else "node"


def os_literal(host: dict | None) -> str | None:
    """The spec's os value for os-release facts, or None when rigctl has no literal for it."""
    if not host:
        return None
    if host.get("system") == "Darwin":
        return "macos" if "macos" in OS_CHOICES else None
    osr = host.get("os_release") or {}
    ident, version = osr.get("ID", "").lower(), osr.get("VERSION_ID", "")
    if ident == "debian":
        version = version.split(".")[0]
    candidate = f"{ident}-{version}"
    return candidate if candidate in OS_CHOICES else None


def _nvlink_groups(gpu_facts: dict) -> list[list[int]]:
    """NVLink-joined GPU indexes: one group per fully linked set (an NVSwitch board), else pairs."""
    pairs = [(p["a"], p["b"]) for p in gpu_facts.get("p2p") or [] if p.get("nvlink")]
    linked = {frozenset(p) for p in pairs}
    comp: dict[int, set[int]] = {}
    for a, b in pairs:
        merged = comp.get(a, {a}) | comp.get(b, {b})
        for i in merged:
            comp[i] = merged
    groups, seen = [], set()
    for members in comp.values():
        key = frozenset(members)
        if key in seen:
            continue
        seen.add(key)
        ms = sorted(members)
        if all(frozenset((x, y)) in linked for i, x in enumerate(ms) for y in ms[i + 1:]):
            groups.append(ms)
        else:
            groups += [sorted(p) for p in sorted(pairs) if set(p) <= members]
    return sorted(groups)


def _gpu_lines(gpu_facts: dict, lookup: Callable[[str], str | None] | None) -> list[str]:
    out = ["    gpus:"]
    for gpu in gpu_facts.get("gpus") or []:
        name = gpu.get("name") or "unknown"
        model = None
        if lookup is not None:
            try:
                model = lookup(name)
            except Exception:  # a catalog problem must not cost the user the whole spec
                model = None
        out.append(f"      - id: gpu{gpu.get('index', 0)}")
        if model:
            out.append(f"        model: {_scalar(model)}  # NVML name: {name}")
        else:
            out.append(f"        model: {_scalar(name)}  # QUESTION unknown-gpu: NVML name {name!r} is not in the "
                       "catalog; use an id from `rigctl catalog gpus` or add it with --catalog")
        uuid = gpu.get("uuid")
        if uuid and re.match(GPU_UUID_PATTERN, uuid):
            out.append(f"        uuid: {uuid}")
        mib = gpu.get("memory_total_mib")
        mem = f"{mib} MiB ({mib / 1024:.1f} GiB)" if mib is not None else "memory unknown"
        out.append(f"        # PCI bus {gpu.get('pci_bus_id') or '?'}, {mem}, {_pcie_text(gpu.get('pcie'))}, "
                   f"compute capability {gpu.get('compute_capability') or '?'}")
        slot = gpu.get("slot") or (gpu.get("lspci") or {}).get("physslot")
        if slot:
            out.append(f"        # slot: {_scalar(slot)}  # as the firmware names it; list it under board.slots "
                       "to let pcie-slot and pcie-lanes check it")
        power = gpu.get("power") or {}
        limit, default = power.get("limit_w"), power.get("default_limit_w")
        if limit is not None and default is not None and abs(limit - default) > 0.5:
            out.append(f"        power_limit_w: {_w(limit)}  # set on the card now; its default is {_w(default)} W")
    groups = _nvlink_groups(gpu_facts)
    if groups:
        out.append("    nvlink:  # active NVLink seen by NVML")
        for g in groups:
            out.append(f"      - {{gpus: [{', '.join(f'gpu{i}' for i in g)}]}}")
    return out


def _fabric_nics(h: HostFacts) -> list[dict]:
    """NICs worth a spec entry: physical ones, plus the one carrying the SSH address."""
    address = (h.connection or {}).get("address")
    out = []
    for nic in (h.host or {}).get("nics") or []:
        if not re.match(NIC_NAME_PATTERN, nic.get("name", "")):
            continue
        carries = address and any(a.split("/")[0] == address for a in nic.get("ipv4") or [])
        if carries or (not nic.get("virtual") and not _PLUMBING.match(nic["name"])):
            out.append(dict(nic, ssh=bool(carries)))
    return out


def _nic_lines(h: HostFacts) -> list[str]:
    nics = _fabric_nics(h)
    if not nics:
        return []
    rows = []
    for nic in nics:
        addr = ", ".join(nic.get("ipv4") or []) or "no IPv4 address"
        if nic.get("speed_mbps"):
            gbps = nic["speed_mbps"] / 1000
            rows.append(f"      - {{name: {nic['name']}, speed_gbps: {gbps:g}}}  # {addr}, {nic.get('operstate') or '?'}")
        else:
            rows.append(f"      # - {{name: {nic['name']}, speed_gbps: 10}}  # QUESTION network-speed: the driver "
                       f"reports no link speed ({addr}); give the link's Gbit/s")
    # a list of only comments would read as `nics: null`
    return (["    nics:"] if any(not r.lstrip().startswith("#") for r in rows) else ["    nics: []"]) + rows


def _node_lines(h: HostFacts, lookup: Callable[[str], str | None] | None) -> list[str]:
    out = [f"  - name: {h.name}"]
    for note in h.notes:
        out.append(f"    # {note}")
    c = h.connection
    if c:
        parts = [f"address: {_scalar(c['address'])}"]
        if c.get("ssh_user"):
            parts.append(f"ssh_user: {_scalar(c['ssh_user'])}")
        if c.get("ssh_port") and int(c["ssh_port"]) != 22:
            parts.append(f"ssh_port: {int(c['ssh_port'])}")
        out.append(f"    connection: {{{', '.join(parts)}}}")
    host = h.host
    if host is None:
        out.append(f"    # host facts not read ({h.host_missing or 'unknown reason'}): set os and memory_gib")
    else:
        pretty = (host.get("os_release") or {}).get("PRETTY_NAME") or host.get("system") or "unknown OS"
        os_value = os_literal(host)
        if os_value:
            out.append(f"    os: {os_value}  # /etc/os-release: {pretty}")
        else:
            out.append(f"    # os: {_OS_DEFAULT}  # QUESTION: this host runs {pretty}; rigctl knows "
                       f"{', '.join(OS_CHOICES)} (the default is {_OS_DEFAULT})")
        kib = host.get("memory_total_kib")
        if kib:
            out.append(f"    memory_gib: {kib / 1048576:.1f}  # MemTotal in /proc/meminfo "
                       "(a little under what is installed)")
        cpu = host.get("cpu_name")
        out.append(f"    # cpu: {{model: ...}}  # QUESTION psu-headroom: {json.dumps(cpu) if cpu else 'the CPU'}: "
                   "an id from `rigctl catalog cpus`, or {power_w: N}; without it 150 W is assumed")
    out += [
        "    # QUESTION psu-headroom: which power supply feeds this node? (rated DC watts, 80 PLUS rating,",
        "    # ATX 3.x or not, native 12V-2x6 outputs); without it the PSU is not checked",
        "    # psu: {watts: 1600, rating: platinum, atx3: true, connectors_12v_2x6: 2}",
        "    # QUESTION wall-circuit: which wall circuit feeds it? (volts, breaker amps); without it the",
        "    # wall draw is not checked",
        "    # circuit: {volts: 230, amps: 16}",
    ]
    if h.gpu and h.gpu.get("gpus"):
        head = "    # rigctl probe: " + ", ".join(
            f"{k} {h.gpu[v]}" for k, v in (("driver", "driver_version"), ("CUDA", "cuda_driver_version"),
                                            ("at", "collected_at")) if h.gpu.get(v))
        out.append(head)
        out += _gpu_lines(h.gpu, lookup)
    else:
        out.append(f"    gpus: []  # no GPU facts: {h.gpu_missing or 'no GPU found'}")
    return out + _nic_lines(h)


def _fabric_lines(hosts: list[HostFacts]) -> list[str]:
    """A fabric from the NICs that carry the SSH addresses, when all of them sit on one subnet."""
    nets, speeds = set(), []
    for h in hosts:
        ssh = [n for n in _fabric_nics(h) if n.get("ssh")]
        if not ssh:
            nets.add(None)
            continue
        address = h.connection["address"]
        for a in ssh[0].get("ipv4") or []:
            if a.split("/")[0] == address:
                nets.add(ipaddress.ip_interface(a).network)
        speeds.append(ssh[0].get("speed_mbps"))
    if len(nets) == 1 and None not in nets and speeds and all(speeds):
        net = nets.pop()
        return [f"fabric: {{kind: ethernet, speed_gbps: {min(speeds) / 1000:g}, subnet: {net}}}  "
                "# the NICs carrying the SSH addresses"]
    return ["# QUESTION fabric-required: more than one node needs the network between them, e.g.",
            "fabric: {kind: ethernet, speed_gbps: 10, subnet: 192.168.1.0/24}  # CHECK: not read from the hosts"]


def starter_spec(hosts: list[HostFacts], rig_name: str, *, lookup: Callable[[str], str | None] | None = None,
                 source: str = "this host") -> str:
    """The commented rig.yaml text for ``hosts``."""
    lines = [
        f"# Written by `rigctl init` from what probe read on {source}.",
        "# Check every value, answer each QUESTION (uncomment the line below it), add models",
        "# under serve:, then run `rigctl validate` on this file.",
        "version: 1",
        f"name: {node_name(rig_name)}",
    ]
    if len(hosts) > 1:
        lines += _fabric_lines(hosts)
    lines.append("nodes:")
    for h in hosts:
        lines += _node_lines(h, lookup)
    lines += [
        "serve: []  # models to serve; see `rigctl catalog models` and examples/ for deployments",
    ]
    return "\n".join(lines) + "\n"
