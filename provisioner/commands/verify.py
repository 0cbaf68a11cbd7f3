"""rigctl verify: check live hosts against the spec and the plan."""

from __future__ import annotations

import os
import sys

from ..diagnostics import EXIT_FINDINGS, EXIT_USAGE
from .validate import add_catalog_arg, add_output_args, emit, exit_code


def register(sub) -> None:
    p = sub.add_parser(
        "verify", help="check live hosts against the spec: services, ports, endpoints, GPUs",
        description="Run rigctl's testinfra suites over SSH on every node: planned services active and enabled, "
                    "ports bound where planned, each endpoint's health route and a real completion, and the "
                    "GPUs (count, model, memory, PCIe link, power cap, NVLink, driver) probed through NVML, and the "
                    "memory each llama.cpp/vLLM engine reports at load (its service log) against the plan, per "
                    "device (table on stderr; finding verify-memory beyond max(25 %, 64 MiB)). "
                    "Every difference is a diagnostic at its place in the spec. Exit 0 clean, 1 findings, "
                    "2 unreadable spec or inventory.")
    p.add_argument("spec", help="rig spec file")
    p.add_argument("-i", "--inventory", metavar="DIR",
                   help="inventory overrides used by apply (inventories/<env>/ or its hosts.yml)")
    add_catalog_arg(p)
    p.add_argument("--limit", action="append", default=[], metavar="NODE",
                   help="check only these nodes (repeatable or comma-separated)")
    p.add_argument("--ssh-config", metavar="FILE", help="extra ssh_config read before the inventory's settings")
    p.add_argument("--timeout", type=float, default=60, metavar="SECONDS",
                   help="time budget per endpoint: health route plus one completion (default 60)")
    add_output_args(p)
    p.add_argument("--strict", action="store_true", help="warnings also fail (exit 1)")
    p.add_argument("-v", "--verbose", action="store_true", help="show the test suites' own output on stderr")
    p.set_defaults(func=run)


def limits(values: list[str]) -> list[str]:
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def run(args) -> int:
    from .. import report
    from ..render import InventoryError as RenderInventoryError
    from ..render.prepare import prepare
    from ..verify import InventoryError, run_verify

    if args.ssh_config and not os.path.isfile(args.ssh_config):
        sys.stderr.write(f"rigctl verify: --ssh-config {args.ssh_config}: no such file\n")
        return EXIT_USAGE
    try:
        prep = prepare(args.spec, args.inventory, catalog_files=args.catalog)
    except RenderInventoryError as exc:
        sys.stderr.write(f"rigctl verify: {exc}\n")
        return EXIT_USAGE
    load = prep.check.load
    if prep.check.fatal or prep.plan is None:
        emit(report.render(prep.check.diagnostics, args.format), args.output)
        if not prep.check.fatal:
            sys.stderr.write(f"rigctl verify: not verifying {args.spec}: the spec has {len(prep.errors)} "
                             "error(s); fix them first (rigctl validate)\n")
        return EXIT_USAGE if prep.check.fatal else EXIT_FINDINGS
    try:
        result = run_verify(prep.ctx, prep.plan, args.inventory, args.ssh_config, limits(args.limit) or None,
                            budget_s=args.timeout)
    except InventoryError as exc:
        sys.stderr.write(f"rigctl verify: {exc}\n")
        return EXIT_USAGE
    if args.verbose:
        sys.stderr.write(result.log)
    for table in result.memory_tables:  # stderr: stdout is the report (text, JSON, SARIF)
        sys.stderr.write(table)
    diags = [load.locate(d) for d in result.diagnostics]
    c = result.counts
    sys.stderr.write(f"rigctl verify: {', '.join(result.hosts) or 'no hosts'}: {c.get('passed', 0)} checks passed, "
                     f"{c.get('failed', 0) + c.get('error', 0)} failed, {c.get('skipped', 0)} skipped "
                     f"in {result.seconds:.1f} s\n")
    try:
        emit(report.render(diags, args.format, color=sys.stdout.isatty() and not args.output), args.output)
    except OSError as exc:
        sys.stderr.write(f"rigctl: cannot write report: {exc}\n")
        return EXIT_USAGE
    return exit_code(diags, args.strict)
