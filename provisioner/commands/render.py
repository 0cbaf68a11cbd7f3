"""rigctl render: write the Ansible project for a rig spec (inventory, vars, units, compose, roles)."""

from __future__ import annotations

import sys

from ..diagnostics import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE
from .validate import add_catalog_arg


def register(sub) -> None:
    p = sub.add_parser("render", help="write the Ansible project for a rig spec",
                       description="Render a rig spec into a self-contained Ansible project (inventory, "
                                   "group_vars, host_vars, systemd units, compose files, roles). "
                                   "Same spec, same bytes; secrets appear only as references.")
    p.add_argument("spec", help="rig spec file")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write the project into")
    p.add_argument("-i", "--inventory", metavar="DIR", help="inventories/<env> with a hosts.yml overriding addresses, users, ports")
    add_catalog_arg(p)
    p.add_argument("--prune", action="store_true", help="delete files under inventory/, files/, roles/ that the spec no longer produces")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    p.set_defaults(func=run)


def print_errors(prep) -> None:
    from .. import report
    from ..rules.engine import load_rules

    sys.stderr.write(report.render(prep.check.diagnostics, "text", rules=load_rules(), color=sys.stderr.isatty()))


def run(args) -> int:
    import os

    from ..render import MANAGED_DIRS, InventoryError, render_project, stale, write
    from ..render.prepare import prepare

    try:
        prep = prepare(args.spec, args.inventory, catalog_files=args.catalog)
    except InventoryError as exc:
        sys.stderr.write(f"rigctl: {exc}\n")
        return EXIT_USAGE
    if prep.check.fatal:
        print_errors(prep)
        return EXIT_USAGE
    if prep.plan is None:
        print_errors(prep)
        sys.stderr.write(f"rigctl: not rendering {args.spec}: fix the {len(prep.errors)} error(s) above first\n")
        return EXIT_FINDINGS
    try:
        files = render_project(prep.ctx, prep.plan, prep.overrides)
    except InventoryError as exc:
        sys.stderr.write(f"rigctl: {exc}\n")
        return EXIT_USAGE
    try:
        results = write(files, args.output)
    except OSError as exc:
        sys.stderr.write(f"rigctl: cannot write {args.output}: {exc}\n")
        return EXIT_USAGE
    old = stale(files, args.output, MANAGED_DIRS)
    for rel in old:
        if args.prune:
            os.unlink(os.path.join(args.output, rel))
    counts = {"created": 0, "changed": 0, "unchanged": 0}
    for path, status in results:
        counts[status] += 1
        if not args.quiet and status != "unchanged":
            print(f"{status:9} {path}")
    for rel in old:
        print(f"{'deleted' if args.prune else 'stale':9} {rel}" + ("" if args.prune else " (no longer rendered; --prune deletes it)"))
    print(f"{args.output}: {len(results)} files, {counts['created']} created, {counts['changed']} changed, "
          f"{counts['unchanged']} unchanged")
    return EXIT_OK
