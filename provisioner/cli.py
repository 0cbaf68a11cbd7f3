"""rigctl command line. Each subcommand lives in provisioner/commands/<name>.py
with ``register(subparsers)``; heavy imports happen inside each command's run().

Exit codes (stable, for CI):
  0  success, nothing to report (warnings allowed unless --strict)
  1  error findings (validate/verify), or an error (plan --detailed-exitcode)
  2  usage error or unreadable input; plan --detailed-exitcode: changes present
  3  no NVIDIA driver/GPU on this host (probe)
  4  the lab cannot run on this machine
  5  apply failed on at least one host
  6  another apply holds the lock for this rig
  70 internal error (a bug: please report it with the traceback)
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from .diagnostics import EXIT_INTERNAL, EXIT_USAGE

COMMANDS = ("validate", "plan", "advise", "render", "apply", "destroy", "verify", "bench", "probe", "init", "report", "lab", "rules",
            "schema", "catalog")
MODULES = {"report": "report_cmd"}  # provisioner/report.py is the diagnostics views, not a command


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 2 with one line, no traceback
        self.print_usage(sys.stderr)
        sys.stderr.write(f"rigctl: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only``, just that subcommand is imported (faster start)."""
    from . import __version__

    parser = _Parser(prog="rigctl", description="Declarative multi-GPU LLM inference rigs.",
                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"rigctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in (only,) if only in COMMANDS else COMMANDS:
        try:
            mod = importlib.import_module(f"provisioner.commands.{MODULES.get(name, name)}")
        except ModuleNotFoundError as exc:
            if exc.name == f"provisioner.commands.{MODULES.get(name, name)}":
                continue  # command not built yet
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("rigctl: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except SystemExit:
        raise
    except Exception:  # noqa: BLE001 - internal errors show the traceback
        traceback.print_exc()
        sys.stderr.write("rigctl: internal error (this is a bug; please report it with the traceback above)\n")
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
