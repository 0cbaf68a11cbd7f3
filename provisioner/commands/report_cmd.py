"""`rigctl report`: one archive with what someone helping you needs, secrets redacted.

Registered as the command `report` (this module is not provisioner/report.py, the
diagnostics views). The gathering is provisioner/supportbundle.py.

Exit codes:
  0  the archive was written (hosts that SSH did not reach are named in its MANIFEST.txt)
  2  the spec cannot be read, or the archive cannot be written
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..diagnostics import EXIT_OK, EXIT_USAGE
from .validate import add_catalog_arg


def register(sub) -> None:
    p = sub.add_parser("report", help="write one archive for whoever helps you: spec, plan, last apply, "
                                      "GPU facts, engine versions, service logs; secrets redacted",
                       description="Gather the spec, the plan (text and JSON), the last apply run, the applied "
                                   "state with engine versions and, with -i, each host's GPU facts and the last "
                                   "200 lines of each service's log into one .tar.gz. Every secret value rigctl "
                                   "can resolve, and anything shaped like a key, is replaced by <redacted>.")
    p.add_argument("spec", help="rig spec file")
    p.add_argument("-i", "--inventory", metavar="DIR", help="inventories/<env> to reach the hosts (as apply does)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="archive path (default rigctl-report-<rig>-<UTC time>.tar.gz here)")
    p.add_argument("--ssh-config", metavar="FILE", help="extra ssh_config read first")
    add_catalog_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import report
    from ..check import check_file
    from ..plan import build_plan
    from ..supportbundle import gather, write_archive

    res = check_file(args.spec, catalog_files=args.catalog)
    if res.fatal or res.context is None:
        sys.stderr.write(report.text(res.diagnostics))
        sys.stderr.write("rigctl report: cannot read the spec; nothing written\n")
        return EXIT_USAGE
    plan = None
    if not res.errors:
        try:
            plan = build_plan(res.context)
        except Exception as exc:  # noqa: BLE001 - a report is most wanted when planning breaks
            sys.stderr.write(f"rigctl report: planning failed ({type(exc).__name__}: {exc}); the archive has "
                             "the rest\n")
    rig = res.context.rig.name
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(args.output or f"rigctl-report-{rig}-{stamp}.tar.gz")
    bundle = gather(args.spec, args.inventory, args.ssh_config, res.context, plan, args.catalog)
    try:
        write_archive(bundle, out, f"rigctl-report-{rig}-{stamp}")
    except OSError as exc:
        sys.stderr.write(f"rigctl report: cannot write {out}: {exc.strerror or exc}\n")
        return EXIT_USAGE
    for note in bundle.notes:
        sys.stderr.write(f"  {note}\n")
    sys.stdout.write(f"wrote {out} ({len(bundle.members) + 1} files; {len(bundle.secrets)} secret value(s) "
                     "redacted, plus anything key-shaped): check it before you share it\n")
    return EXIT_OK
