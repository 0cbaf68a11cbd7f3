"""`rigctl init`: write a commented starter rig.yaml from what probe reads.

On this host, or with ``-i INVENTORY`` on each inventory host over SSH (the same
connection `rigctl probe -i` and verify use): GPUs with catalog ids, UUIDs and
PCI bus ids, NVLink found, memory, OS and NICs. The PSU and wall circuit are
commented questions naming the rule that needs them.

Exit codes:
  0  the spec was written (a host without GPUs gives a node without GPUs, said on stderr)
  2  usage: the output exists (pass --force), unreadable --facts file or inventory
  5  with -i: no host could be reached (nothing is written)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from ..diagnostics import EXIT_APPLY_FAILED, EXIT_OK, EXIT_USAGE


def register(sub) -> None:
    p = sub.add_parser("init", help="write a commented starter rig.yaml from this host's (or -i hosts') probe facts",
                       description="Probe GPUs (NVML), OS, memory and NICs on this host, or on every host of an "
                                   "Ansible inventory over SSH, and write a commented rig spec: check it, answer the "
                                   "QUESTION lines (PSU, wall circuit, CPU), add models under serve:, validate.")
    p.add_argument("-o", "--output", default="rig.yaml", metavar="FILE",
                   help="where to write the spec (default rig.yaml; - for stdout)")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.add_argument("--name", help="rig name (default: this host's name, or the inventory directory's)")
    p.add_argument("-i", "--inventory", metavar="INVENTORY", help="probe every host of this Ansible inventory over SSH")
    p.add_argument("--limit", action="append", default=[], metavar="NODE",
                   help="with -i: only these hosts (repeatable or comma-separated)")
    p.add_argument("--ssh-config", metavar="FILE", help="with -i: extra ssh_config read first")
    p.add_argument("--facts", action="append", default=[], metavar="FILE",
                   help="read GPU facts from `rigctl probe --format json` output instead of probing "
                        "(repeatable; one node per host in the file)")
    p.set_defaults(func=run)


def _local_hosts() -> list:
    from ..probe import ProbeUnavailable, collect
    from ..probe.host import collect_host
    from ..probe.starter import HostFacts, node_name

    host = collect_host()
    h = HostFacts(name=node_name(host.get("hostname", "node")), host=host)
    try:
        h.gpu = collect()
    except ProbeUnavailable as exc:
        h.gpu_missing = exc.reason
    return [h]


def _facts_hosts(files: list[str]) -> list:
    """HostFacts from probe JSON: one host's facts, or `probe -i --format json`'s host -> outcome."""
    from ..probe.starter import HostFacts, node_name

    out = []
    for f in files:
        try:
            doc = json.loads(Path(f).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise _Usage(f"--facts {f}: {exc}") from None
        if isinstance(doc, dict) and "gpus" in doc:
            doc = {doc.get("hostname") or Path(f).stem: {"facts": doc}}
        if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
            raise _Usage(f"--facts {f}: not the JSON `rigctl probe --format json` writes")
        for name, outcome in doc.items():
            h = HostFacts(name=node_name(name), host_missing=f"only GPU facts in {f}")
            h.gpu = outcome.get("facts")
            if h.gpu is None:
                h.gpu_missing = next((str(outcome[k]) for k in ("unavailable", "unreachable", "error") if k in outcome),
                                     "no facts recorded")
            out.append(h)
    return out


def _inventory_hosts(args) -> list:
    from ..probe import host as hostmod
    from ..probe.starter import HostFacts, node_name
    from ..verify import load_inventory
    from ..verify.remote_probe import probe_hosts
    from ..verify.ssh import RemoteError, SshSession, Unreachable

    limit = [n.strip() for v in args.limit for n in v.split(",") if n.strip()]
    hosts = load_inventory(args.inventory).select(limit or None)
    code = Path(hostmod.__file__).read_text(encoding="utf-8")
    out = []
    with SshSession(hosts, args.ssh_config) as session:
        gpu = probe_hosts(session, [h.name for h in hosts])
        for ih in hosts:
            h = HostFacts(name=node_name(ih.name),
                          connection={"address": ih.address, "ssh_user": ih.user, "ssh_port": ih.port})
            if h.name != ih.name:
                h.notes.append(f"inventory host {ih.name!r} (renamed: node names are lowercase letters, digits, '-')")
            outcome = gpu[ih.name]
            if "unreachable" in outcome:
                h.host_missing = h.gpu_missing = f"unreachable over SSH: {outcome['unreachable']}"
                out.append(h)
                continue
            h.gpu = outcome.get("facts")
            h.gpu_missing = outcome.get("unavailable") or outcome.get("error")
            try:
                h.host = session.run_python(ih.name, code, {}, label="rigctl_host", timeout_s=60)["host"]
            except (Unreachable, RemoteError, KeyError, TypeError) as exc:
                h.host_missing = str(exc) or "no answer"
            out.append(h)
    return out


class _Usage(Exception):
    pass


def _write(path: Path, text: str, force: bool) -> None:
    """Atomically, mode 0644; without ``force`` an existing file is never replaced (also not by a race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails with FileExistsError if someone created it meanwhile
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def run(args) -> int:
    from ..probe.starter import starter_spec
    from ..verify import InventoryError
    from .probe import catalog_lookup

    out = None if args.output == "-" else Path(args.output)
    if out is not None and os.path.lexists(out) and not args.force:
        sys.stderr.write(f"rigctl init: {out} exists; not overwriting it (pass --force to replace it)\n")
        return EXIT_USAGE
    try:
        if args.facts:
            hosts, source = _facts_hosts(args.facts), ", ".join(args.facts)
        elif args.inventory:
            hosts, source = _inventory_hosts(args), f"the hosts of {args.inventory} over SSH"
        else:
            hosts, source = _local_hosts(), "this host"
    except (_Usage, InventoryError) as exc:
        sys.stderr.write(f"rigctl init: {exc}\n")
        return EXIT_USAGE
    if not hosts:
        sys.stderr.write("rigctl init: no hosts in the facts given\n")
        return EXIT_USAGE
    if args.inventory and not args.facts and all((h.host_missing or "").startswith("unreachable") for h in hosts):
        for h in hosts:
            sys.stderr.write(f"{h.name}: {h.host_missing}\n")
        sys.stderr.write("rigctl init: no host could be reached over SSH; nothing written\n")
        return EXIT_APPLY_FAILED
    default_name = Path(args.inventory).resolve().name if args.inventory else hosts[0].name
    text = starter_spec(hosts, args.name or default_name, lookup=catalog_lookup, source=source)
    for h in hosts:
        n = len((h.gpu or {}).get("gpus") or [])
        what = f"{n} GPU(s)" if n else f"no GPUs ({h.gpu_missing or 'none found'})"
        sys.stderr.write(f"{h.name}: {what}\n")
    try:
        if out is None:
            sys.stdout.write(text)
        else:
            _write(out, text, args.force)
    except FileExistsError:
        sys.stderr.write(f"rigctl init: {out} appeared while writing; not overwriting it (pass --force)\n")
        return EXIT_USAGE
    except OSError as exc:
        sys.stderr.write(f"rigctl init: cannot write {out}: {exc.strerror or exc}\n")
        return EXIT_USAGE
    if out is not None:
        sys.stderr.write(f"wrote {out}: answer the QUESTION lines, add models under serve:, "
                         f"then `rigctl validate {out}`\n")
    return EXIT_OK
