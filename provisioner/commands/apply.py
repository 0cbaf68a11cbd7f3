"""rigctl apply: render the rig and converge its hosts with Ansible."""

from __future__ import annotations

import sys

from ..diagnostics import EXIT_USAGE
from ..execute.events import HIDDEN
from .validate import add_catalog_arg

STATUS_STYLE = {"ok": "green", "changed": "yellow", "failed": "red", "unreachable": "red", "skipped": "dim",
                "running": "cyan"}


def register(sub) -> None:
    p = sub.add_parser("apply", help="converge the rig's hosts (render + ansible-playbook)",
                       description="Validate the spec, render the Ansible project into "
                                   "<spec dir>/.rigctl/runs/<time>/ and run site.yml against the hosts. "
                                   "Exit 0 ok, 1 spec errors, 5 a host failed or was unreachable, 6 locked.")
    p.add_argument("spec", help="rig spec file")
    p.add_argument("-i", "--inventory", metavar="DIR", help="inventories/<env> with a hosts.yml overriding addresses, users, ports")
    add_catalog_arg(p)
    p.add_argument("--check", action="store_true", help="dry run: report what would change, change nothing")
    p.add_argument("--diff", action="store_true", help="show file differences")
    p.add_argument("--limit", metavar="NODE", help="converge only this node")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation (required without a terminal)")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    from ..execute import apply

    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if not (args.yes or args.check) and not sys.stdin.isatty():
        err.print("rigctl apply: no terminal to ask for confirmation on (CI?): pass --yes to apply without asking")
        return EXIT_USAGE
    view = _Live(out)
    try:
        result = apply(args.spec, args.inventory, check=args.check, diff=args.diff, limit=args.limit,
                       yes=args.yes or args.check, confirm=lambda prep: _confirm(prep, out), on_update=view.update,
                       catalog_files=args.catalog)
    finally:
        view.stop()
    if result.diagnostics and result.status in ("invalid", "usage"):
        from .. import report
        from ..rules.engine import load_rules

        sys.stderr.write(report.render(result.diagnostics, "text", rules=load_rules(), color=sys.stderr.isatty()))
    if result.status in ("invalid", "usage", "locked", "aborted"):
        err.print(f"rigctl apply: {result.message}")
        return result.exit_code
    _summary(out, result)
    return result.exit_code


def _confirm(prep, out) -> bool:
    from ..plan.state import (
        StateError,
        default_render_dir,
        diff_state,
        load_state,
        plan_state,
        state_path,
    )

    rig = prep.ctx.rig
    try:
        old = load_state(state_path(default_render_dir(prep.check.load.file, rig.name)))
    except StateError:
        old = None
    changes = diff_state(old, plan_state(prep.plan, model_facts=prep.model_facts))
    out.print(f"rig [bold]{rig.name}[/]: {len(rig.nodes)} host(s): {', '.join(n.name for n in rig.nodes)}")
    for node, lines in changes.items():
        out.print(f"  {node}")
        for line in lines:
            out.print(f"    {line}")
    if not changes:
        out.print("  services as last applied; the run re-checks every host")
    answer = input("Apply? [y/N] ").strip().lower()
    return answer in ("y", "yes")


class _Live:
    """Per-host live lines on a terminal; on a pipe, one line per changed/failed task."""

    def __init__(self, console):
        self.console = console
        self.rows: dict[str, tuple[str, str, dict]] = {}
        self.counts: dict[str, dict] = {}
        self.live = None
        self.tty = console.is_terminal
        self.play = ""

    def update(self, upd) -> None:
        if upd.status == "note":
            self.console.print(f"{upd.host:12} {'note':11} {upd.task}", markup=False)
            return
        c = self.counts.setdefault(upd.host, {"ok": 0, "changed": 0, "failed": 0})
        if upd.status in ("ok", "changed", "failed", "unreachable"):
            c["ok" if upd.status == "ok" else "changed" if upd.status == "changed" else "failed"] += 1
        if not self.tty:
            if upd.play != self.play:
                self.play = upd.play
                self.console.print(f"== {upd.play}")
            if upd.status in ("changed", "failed", "unreachable"):
                hidden = f" ({HIDDEN})" if upd.hidden else ""
                self.console.print(f"{upd.host:12} {upd.status:11} {upd.task}{hidden}", markup=False)
            return
        self.rows[upd.host] = (upd.task, upd.status, c)
        if self.live is None:
            from rich.live import Live

            self.live = Live(self._table(), console=self.console, refresh_per_second=8, transient=True)
            self.live.start()
        self.live.update(self._table())

    def _table(self):
        from rich.table import Table

        t = Table(box=None, show_header=True, header_style="bold")
        for col in ("host", "ok", "changed", "failed", "task"):
            t.add_column(col)
        for host in sorted(self.rows):
            task, status, c = self.rows[host]
            t.add_row(host, str(c["ok"]), str(c["changed"]), str(c["failed"]),
                      f"[{STATUS_STYLE.get(status, '')}]{status}[/] {task}")
        return t

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _summary(out, result, verb_done: str = "changed", command: str = "apply") -> None:
    verb = "would change" if result.check else verb_done
    out.print(f"{'check' if result.check else command}: {result.elapsed_s:.1f} s; artifacts {result.run_dir}")
    for row in result.host_summary():
        line = (f"  {row['host']:12} ok={row['ok']} {verb}={row['changed']} failed={row['failed']} "
                f"unreachable={row['unreachable']} skipped={row['skipped']}")
        if row["changed"] == 0 and not row["failed"] and not row["unreachable"]:
            line += f"  no changes: all {row['ok']} tasks already in desired state"
        out.print(line, markup=False)
        hp = result.hosts.get(row["host"])
        names = list(hp.changed_tasks) if hp else []
        if row["changed"] > len(names):  # every counted change is named, or said to be unnamed
            names.append(f"{row['changed'] - len(names)} more the event stream did not name (see the artifacts)")
        if names:
            out.print(f"    {verb}: " + "; ".join(names), markup=False)
    for f in result.failures:
        out.print(f"[red]  {f}[/]")
    if result.status != "ok":
        out.print(f"[red]rigctl {command}: {result.message}[/]")
    elif command != "apply":
        pass
    elif result.state_file:
        out.print(f"state: {result.state_file}")
    elif not result.check:
        out.print("state not updated: --limit applied only part of the plan")
