"""rigctl render: write the Ansible project for a rig spec (inventory, vars, units, compose, roles)."""

from __future__ import annotations

import sys

from ..diagnostics import EXIT_FINDINGS, EXIT_LOCKED, EXIT_OK, EXIT_USAGE
from .validate import add_catalog_arg


def register(sub) -> None:
    p = sub.add_parser("render", help="write the Ansible project for a rig spec",
                       description="Render a rig spec into a self-contained Ansible project (inventory, "
                                   "group_vars, host_vars, systemd units, compose files, roles). "
                                   "Same spec, same bytes; secrets appear only as references.")
    p.add_argument("spec", help="rig spec file")
    p.add_argument("-o", "--output", required=True, metavar="DIR", type=_output_dir,
                   help="directory to write the project into: new, empty, or rendered by rigctl for this rig "
                        "(it is rebuilt beside DIR and swapped in; files rigctl did not write are kept)")
    p.add_argument("-i", "--inventory", metavar="DIR", help="inventories/<env> with a hosts.yml overriding addresses, users, ports")
    add_catalog_arg(p)
    p.add_argument("--prune", action="store_true", help="delete files that rigctl wrote earlier and the spec no longer produces (never files rigctl did not write)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the summary line")
    p.set_defaults(func=run)


def _output_dir(value: str) -> str:
    import argparse

    if not value.strip():  # "" would render into the current directory
        raise argparse.ArgumentTypeError("must name a directory (an empty -o would mean the current directory)")
    return value


def print_errors(prep) -> None:
    from .. import report
    from ..rules.engine import load_rules

    sys.stderr.write(report.render(prep.check.diagnostics, "text", rules=load_rules(), color=sys.stderr.isatty()))


def run(args) -> int:
    from ..render import InventoryError, OutputDirError, OutputLocked, render_project, write
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
        res = write(files, args.output, rig=prep.ctx.rig.name, prune=args.prune)
    except OutputDirError as exc:
        sys.stderr.write(f"rigctl: not rendering: {exc}\n")
        return EXIT_USAGE
    except OutputLocked as exc:
        sys.stderr.write(f"rigctl: {exc}\n")
        return EXIT_LOCKED
    except OSError as exc:
        sys.stderr.write(f"rigctl: cannot write {args.output}: {exc}\n")
        return EXIT_USAGE
    counts = {"created": 0, "changed": 0, "unchanged": 0}
    for path, status in res.files:
        counts[status] += 1
        if not args.quiet and status != "unchanged":
            print(f"{status:9} {path}")
    for rel in res.deleted:
        print(f"{'deleted':9} {rel}")
    for rel in res.stale:
        print(f"{'stale':9} {rel} (no longer rendered; --prune deletes it)")
    for rel in res.edited:
        print(f"{'kept':9} {rel} (no longer rendered, but edited since rigctl wrote it: not deleted)")
    if not args.quiet:
        for rel in res.foreign:
            print(f"{'kept':9} {rel} (not written by rigctl)")
    for w in res.warnings:
        sys.stderr.write(f"rigctl: warning: {w}\n")
    extra = [f"{len(v)} {k}" for k, v in (("deleted", res.deleted), ("stale", res.stale),
                                         ("kept", res.foreign + res.edited)) if v]
    print(f"{args.output}: {len(res.files)} files, {counts['created']} created, {counts['changed']} changed, "
          f"{counts['unchanged']} unchanged" + "".join(f", {e}" for e in extra))
    return EXIT_OK
