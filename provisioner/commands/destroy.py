"""rigctl destroy: take down everything rigctl made on the rig's hosts."""

from __future__ import annotations

import sys

from ..diagnostics import EXIT_USAGE
from .validate import add_catalog_arg

# what destroy leaves on a host, said before it asks (the role says per host what it found)
LEFT = ("model files in /var/lib/rigctl/models (unless --remove-models), installed packages "
        "(base packages, Docker, the NVIDIA Container Toolkit), the NVIDIA driver, Docker's images")


def register(sub) -> None:
    p = sub.add_parser("destroy", help="take down everything rigctl made on the rig's hosts",
                       description="Stop and delete every unit, compose project, secret, firewall table and "
                                   "file rigctl made on the spec's hosts, read from each host's manifest (so "
                                   "deployments the spec no longer names go too). Leaves " + LEFT + ". "
                                   "Exit 0 ok, 1 spec errors, 2 usage or not confirmed, 5 a host failed or "
                                   "was unreachable, 6 locked.")
    p.add_argument("spec", help="rig spec file (its nodes and how to reach them)")
    p.add_argument("-i", "--inventory", metavar="DIR", help="inventories/<env> with a hosts.yml overriding addresses, users, ports")
    add_catalog_arg(p)
    p.add_argument("--limit", metavar="NODE", help="take down only this node")
    p.add_argument("--remove-models", action="store_true", help="delete the model files in /var/lib/rigctl/models too")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation (required without a terminal)")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    from ..execute import destroy
    from .apply import _Live, _summary

    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if not args.yes and not sys.stdin.isatty():
        err.print("rigctl destroy: no terminal to ask for confirmation on (CI?): pass --yes to destroy without asking")
        return EXIT_USAGE
    view = _Live(out)
    try:
        result = destroy(args.spec, args.inventory, yes=args.yes, remove_models=args.remove_models,
                         limit=args.limit, confirm=lambda prep: _confirm(prep, out, args),
                         on_update=view.update, catalog_files=args.catalog)
    finally:
        view.stop()
    if result.diagnostics and result.status in ("invalid", "usage"):
        from .. import report
        from ..rules.engine import load_rules

        sys.stderr.write(report.render(result.diagnostics, "text", rules=load_rules(), color=sys.stderr.isatty()))
    if result.status in ("invalid", "usage", "locked", "aborted"):
        err.print(f"rigctl destroy: {result.message}")
        return result.exit_code
    _summary(out, result, verb_done="removed", command="destroy")
    if result.status == "ok":
        out.print("left on the hosts: " + ("installed packages, the NVIDIA driver, Docker's images"
                                           if args.remove_models else LEFT), markup=False)
    return result.exit_code


def _confirm(prep, out, args) -> bool:
    rig = prep.ctx.rig
    hosts = [args.limit] if args.limit else [n.name for n in rig.nodes]
    out.print(f"rig [bold]{rig.name}[/]: take down every service, compose project, secret and firewall rule "
              f"rigctl made on {', '.join(hosts)}")
    out.print(f"  kept: {LEFT}" if not args.remove_models else "  model files are deleted too (--remove-models)",
              markup=False)
    answer = input("Destroy? [y/N] ").strip().lower()
    return answer in ("y", "yes")
