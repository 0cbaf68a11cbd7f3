"""`rigctl probe`: report GPUs as NVML sees them, on this host or over SSH.

With ``-i INVENTORY`` the same probe (provisioner/probe/core.py) runs on each
inventory host over SSH (provisioner.verify.remote_probe) and the report is per
host: its facts, or one line saying why there are none.

Exit codes:
  0  facts collected and printed (with -i: from at least one host)
  2  unreadable inventory or unknown --limit node
  3  no GPU or no NVIDIA driver on this host (NVML missing, driver not
     loaded, pynvml not installed, or zero GPUs); the reason goes to stderr.
     With -i: no host gave GPU facts
"""

import json
import sys

from provisioner.probe import ProbeUnavailable, collect, spec_fragment

EXIT_NO_GPU = 3

FORMATS = ("text", "json", "yaml-fragment")


def register(subparsers):
    parser = subparsers.add_parser(
        "probe",
        help="show this host's GPUs (NVML): model, memory, PCIe, power, NVLink",
        description=(
            "Read GPU facts on this host through NVML (nvidia-ml-py) and print "
            "them as a table, as JSON, or as a YAML fragment to paste under a "
            "node of a rig spec. Exit code 3 means no GPU or no NVIDIA driver "
            "on this host."),
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="text",
        help="text (default): a table; json: the full facts; "
             "yaml-fragment: a `gpus:` list for a rig spec")
    parser.add_argument(
        "-i", "--inventory", metavar="INVENTORY",
        help="probe every host of this Ansible inventory over SSH (e.g. inventories/lab)")
    parser.add_argument(
        "--limit", action="append", default=[], metavar="NODE",
        help="with -i: only these hosts (repeatable or comma-separated)")
    parser.add_argument("--ssh-config", metavar="FILE", help="with -i: extra ssh_config read first")
    parser.set_defaults(func=run)
    return parser


def _v(value, unit=""):
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return "%s%s" % (value, unit)


def _table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in rows)


def format_text(facts):
    out = []
    out.append("host %s  driver %s  CUDA %s  NVML %s  (%s)" % (
        facts.get("hostname", "?"), _v(facts.get("driver_version")),
        _v(facts.get("cuda_driver_version")), _v(facts.get("nvml_version")),
        facts.get("collected_at", "?")))
    rows = [("GPU", "NAME", "MEMORY", "PCIE NOW", "PCIE MAX", "POWER LIMIT",
             "DEFAULT", "CC", "NVLINK", "BUS ID")]
    for g in facts.get("gpus") or []:
        pcie = g.get("pcie") or {}
        power = g.get("power") or {}
        mib = g.get("memory_total_mib")
        links = g.get("nvlink") or []
        if not g.get("nvlink_supported", True):
            nvl = "none"
        else:
            nvl = "%d/%d up" % (sum(1 for l in links if l.get("active")), len(links))
        rows.append((
            g.get("index"), g.get("name") or "?",
            "-" if mib is None else "%.1f GiB" % (mib / 1024.0),
            "Gen%s x%s" % (_v(pcie.get("gen_current")), _v(pcie.get("width_current"))),
            "Gen%s x%s" % (_v(pcie.get("gen_max")), _v(pcie.get("width_max"))),
            _v(power.get("limit_w"), " W"), _v(power.get("default_limit_w"), " W"),
            _v(g.get("compute_capability")), nvl, _v(g.get("pci_bus_id")),
        ))
    out.append(_table(rows))
    pairs = facts.get("p2p") or []
    if pairs:
        out.append("")
        prow = [("PAIR", "TOPOLOGY", "P2P READ", "P2P WRITE", "NVLINK")]
        for p in pairs:
            prow.append(("%s-%s" % (p.get("a"), p.get("b")), _v(p.get("topology")),
                         _v(p.get("read")), _v(p.get("write")),
                         "yes" if p.get("nvlink") else "no"))
        out.append(_table(prow))
    errors = facts.get("errors") or []
    if errors:
        out.append("")
        out.append("%d NVML quer%s not answered:" % (len(errors), "y" if len(errors) == 1 else "ies"))
        out.extend("  " + e for e in errors)
    return "\n".join(out) + "\n"


def _host_line(name, outcome):
    for key, prefix in (("unavailable", ""), ("unreachable", "unreachable over SSH: "),
                        ("error", "probe failed: ")):
        if key in outcome:
            return "%s: %s%s" % (name, prefix, outcome[key])
    return None


def run_inventory(args, fmt):
    from provisioner.verify import InventoryError, live_facts

    limit = [n.strip() for v in args.limit for n in v.split(",") if n.strip()]
    try:
        outcomes = live_facts(None, args.inventory, args.ssh_config, limit or None)
    except InventoryError as exc:
        sys.stderr.write("rigctl probe: %s\n" % exc)
        return 2
    if fmt == "json":
        sys.stdout.write(json.dumps(outcomes, indent=2, sort_keys=True) + "\n")
    else:
        for name, outcome in outcomes.items():
            line = _host_line(name, outcome)
            if line:
                sys.stdout.write(("# %s\n" % line) if fmt == "yaml-fragment" else line + "\n")
            elif fmt == "yaml-fragment":
                fragment = spec_fragment(outcome["facts"], getattr(args, "catalog_lookup", None))
                sys.stdout.write("# %s\n%s" % (name, fragment))
            else:
                sys.stdout.write("== %s ==\n%s" % (name, format_text(outcome["facts"])))
    return 0 if any("facts" in o for o in outcomes.values()) else EXIT_NO_GPU


def catalog_lookup(nvml_name):
    """NVML name -> GPU catalog id (the entry whose nvml_names list it; e.g. H200 SXM and NVL
    share "NVIDIA H200", so the memory-based SXM entry, listed first, wins)."""
    from provisioner.spec.catalog import builtin

    for entry in builtin().gpus:
        if nvml_name in entry.nvml_names:
            return entry.id
    hit = builtin().gpus.get(nvml_name)
    return hit.id if hit is not None else None


def run(args):
    args.catalog_lookup = catalog_lookup
    fmt = getattr(args, "format", "text") or "text"
    if getattr(args, "inventory", None):
        return run_inventory(args, fmt)
    try:
        facts = collect()
    except ProbeUnavailable as exc:
        sys.stderr.write("rigctl probe: %s\n" % exc.reason)
        return EXIT_NO_GPU
    if fmt == "json":
        sys.stdout.write(json.dumps(facts, indent=2, sort_keys=True) + "\n")
    elif fmt == "yaml-fragment":
        sys.stdout.write(spec_fragment(facts, getattr(args, "catalog_lookup", None)))
    else:
        sys.stdout.write(format_text(facts))
    return 0
