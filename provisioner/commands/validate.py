"""rigctl validate: check a rig spec against hardware rules."""

from __future__ import annotations

import contextlib
import sys

from ..diagnostics import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, Severity


def register(sub) -> None:
    p = sub.add_parser("validate", help="check a rig spec against hardware rules",
                       description="Check a rig spec; print every problem with file:line:col, rule id, numbers and a fix.")
    p.add_argument("spec", nargs="+", help="rig spec file(s)")
    add_output_args(p)
    p.add_argument("--strict", action="store_true", help="warnings also fail (exit 1)")
    add_catalog_arg(p)
    p.add_argument("--only", action="append", default=[], metavar="RULE", help="run only these rule ids or families")
    p.add_argument("--skip", action="append", default=[], metavar="RULE", help="skip rule ids (incl. [tags]) or families")
    p.set_defaults(func=run)


def add_catalog_arg(p) -> None:
    """--catalog FILE: user catalog files over the built-in one, the same for every command
    that reads a spec (same schema; the same id wins)."""
    p.add_argument("--catalog", action="append", default=[], metavar="FILE",
                   help="extra catalog file (repeatable); same schema as the built-in one, same id wins")


def add_output_args(p) -> None:
    p.add_argument("--format", "-f", choices=("text", "json", "sarif", "github"), default="text", help="output format")
    p.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE (atomically) instead of stdout")


def emit(text: str, output: str | None) -> None:
    """Write a report to stdout or atomically to a file (never half-written).

    The file gets the mode a plain open() would give (0644 under the usual umask, not
    mkstemp's 0600): a report is for CI viewers and other users to read."""
    if not output:
        sys.stdout.write(text)
        return
    import os
    import tempfile

    d = os.path.dirname(os.path.abspath(output))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".rigctl-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
            umask = os.umask(0o022)
            os.umask(umask)
            os.fchmod(f.fileno(), 0o666 & ~umask)
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def exit_code(diags, strict: bool) -> int:
    worst = {d.severity for d in diags}
    if Severity.error in worst or (strict and Severity.warning in worst):
        return EXIT_FINDINGS
    return EXIT_OK


def run(args) -> int:
    from .. import report
    from ..check import check_file
    from ..rules.engine import load_rules

    all_diags = []
    unreadable = []  # why an input could not be checked at all
    for spec in args.spec:
        res = check_file(spec, catalog_files=args.catalog, only=set(args.only) or None, skip=set(args.skip) or None)
        all_diags += res.diagnostics
        if res.fatal:
            unreadable += res.load.diagnostics
    fatal = bool(unreadable)
    try:
        emit(report.render(all_diags, args.format, rules=load_rules(), color=sys.stdout.isatty() and not args.output),
             args.output)
    except OSError as exc:
        sys.stderr.write(f"rigctl: cannot write report: {exc}\n")
        return EXIT_USAGE
    if args.output:
        # the report went to a file: still say on stderr what kept the input from being checked
        for d in unreadable:
            sys.stderr.write(f"{d.location or '<rig>'}: {d.severity.value} {d.rule}: {d.message}\n")
        sys.stderr.write(f"rigctl: {report.summary(all_diags)}; report written to {args.output}\n")
    if fatal:
        return EXIT_USAGE
    return exit_code(all_diags, args.strict)
