"""rigctl plan: placement, engine flags, expected speed, and what apply would change."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from ..diagnostics import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, Diagnostic, Severity
from .validate import add_catalog_arg, emit

PLAN_SCHEMA_VERSION = 1
EXIT_CHANGES = 2  # with --detailed-exitcode, like terraform plan


def register(sub) -> None:
    p = sub.add_parser("plan", help="show where each model runs, the exact engine flags and the expected speed",
                       description="Validate the spec, then show per node and GPU the weights, KV cache, overheads and "
                                   "free memory, the services with their command lines, the expected decode/prompt "
                                   "speed with its bottleneck, and what `rigctl apply` would change.")
    p.add_argument("spec", help="rig spec file")
    p.add_argument("--format", "-f", choices=("text", "json", "html"), default="text",
                   help="output format; html: one self-contained page (memory bars, power budget, topology, "
                        "command lines, findings)")
    p.add_argument("--output", "-o", metavar="FILE", help="write the json or html output to FILE (atomically)")
    p.add_argument("--detailed-exitcode", action="store_true",
                   help="exit 0 when nothing would change, 2 when apply would change something, 1 on errors")
    p.add_argument("--refresh", action="store_true",
                   help="re-read model files even when the applied state records the same size and mtime; "
                        "with -i, also probe the live hosts and list GPU drift in the change summary")
    p.add_argument("-i", "--inventory", metavar="DIR",
                   help="inventory (inventories/<env>): the plan names where it replaces rigctl's llama.cpp build "
                        "(rigctl_artifacts_dir); --refresh reaches the hosts through it")
    add_catalog_arg(p)
    p.add_argument("--state", metavar="FILE",
                   help="applied state to compare with (default: <spec dir>/rendered/<rig>/.rigctl/state.json)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import report
    from ..check import check_file
    from ..plan import build_plan
    from ..plan.modelfile import spec_model_facts, usable_facts
    from ..plan.state import (
        StateError,
        default_render_dir,
        diff_state,
        load_state,
        plan_state,
        state_path,
    )

    error_exit = EXIT_FINDINGS if args.detailed_exitcode else EXIT_USAGE
    if args.output is not None and args.format == "text":
        sys.stderr.write("rigctl plan: -o FILE writes --format json or html; the text view goes to the terminal\n")
        return EXIT_USAGE

    def cannot_plan(diags) -> int:
        # --format json promises one JSON document on stdout, also when the input is unreadable
        sys.stderr.write(report.text(diags))
        if args.format == "json":
            emit(report.to_json(diags, plan=None), args.output)
        return error_exit

    res = check_file(args.spec, catalog_files=args.catalog)
    if res.fatal or res.context is None:
        return cannot_plan(res.diagnostics)
    try:
        spath = Path(args.state) if args.state else state_path(default_render_dir(args.spec, res.context.rig.name))
        old = load_state(spath)
    except StateError as exc:
        return cannot_plan([Diagnostic("state", Severity.error, str(exc))])
    facts = spec_model_facts(res.context, args.spec, cache=None if args.refresh or not old else old.get("model_files"))
    usable = usable_facts(facts)
    if usable:  # judge memory on the real file sizes
        res = check_file(args.spec, catalog_files=args.catalog, model_files=usable)
    diags = res.diagnostics
    plan = None
    if not res.errors:
        from ..escape import Unrepresentable

        try:
            plan = build_plan(res.context)
            if args.inventory:  # say where the inventory replaces rigctl's llama.cpp build
                from ..plan import engines
                from ..render.inventory import InventoryError, load_overrides

                try:
                    engines.mark_override(plan, engines.artifact_overrides(res.context.rig, load_overrides(args.inventory)))
                except InventoryError as exc:
                    return cannot_plan([Diagnostic("inventory", Severity.error, str(exc))])
        except Unrepresentable as exc:  # a value no rendered file could carry (render refuses it too)
            diags = diags + [res.load.locate(Diagnostic("unrepresentable-value", Severity.error, str(exc),
                                                        path=exc.path))]
    if args.format == "html":
        return _html(args, res, plan, diags)
    if plan is None:
        if args.format == "json":
            emit(report.to_json(diags, plan=None), args.output)
        else:
            sys.stdout.write(report.text(diags, color=sys.stdout.isatty()))
            sys.stdout.write("rigctl: fix the errors above before planning\n")
        return EXIT_FINDINGS
    new = plan_state(plan, model_facts=usable)
    changes = diff_state(old, new)
    if args.refresh and args.inventory:
        for node, lines in live_drift(res, args.inventory).items():
            changes.setdefault(node, []).extend(lines)
    if args.format == "json":
        emit(json.dumps(plan_json(plan, facts, changes, diags, spath, old is not None), indent=2) + "\n", args.output)
    else:
        render_text(plan, facts, changes, diags, spath, old is not None,
                    macos_nodes={n.name for n in res.context.rig.nodes if n.os == "macos"})
    if args.detailed_exitcode:
        return EXIT_CHANGES if changes else EXIT_OK
    return EXIT_OK


def _html(args, res, plan, diags) -> int:
    """The page (findings only when the spec has errors); exit as the text view would."""
    from .. import __version__
    from ..planview import plan_page
    from ..report import text as report_text

    page = plan_page(res.context, plan, diags, version=__version__)
    try:
        emit(page, args.output)
    except OSError as exc:
        sys.stderr.write(f"rigctl plan: cannot write {args.output}: {exc.strerror or exc}\n")
        return EXIT_USAGE
    if args.output:
        sys.stderr.write(f"wrote {args.output}\n")
    if plan is None:
        sys.stderr.write(report_text([d for d in diags if d.severity is Severity.error]))
        sys.stderr.write("rigctl: fix the errors above (also listed in the page) before planning\n")
        return EXIT_FINDINGS
    return EXIT_OK


def live_drift(res, inventory: str) -> dict[str, list[str]]:
    """Node -> change lines for what the live hosts differ from the spec (GPU gone, link narrowed, cap lost)."""
    from ..verify import InventoryError, drift_diagnostics, live_facts

    try:
        outcomes = live_facts(res.context, inventory)
        diags = drift_diagnostics(res.context, outcomes, inventory)
    except InventoryError as exc:
        return {"(inventory)": [f"! cannot refresh live facts: {exc}"]}
    # what was probed goes to stderr, not into the changes: a host without GPUs is no change
    for line in probe_summary(outcomes):
        sys.stderr.write(f"rigctl plan --refresh: {line}\n")
    out: dict[str, list[str]] = {}
    for d in diags:
        node = d.rule.split("[", 1)[1].rstrip("]") if "[" in d.rule else "(rig)"
        out.setdefault(node, []).append(f"~ live: {d.message}")
    return out


def probe_summary(outcomes: dict[str, dict]) -> list[str]:
    """One line per host: what the NVML probe over SSH found (GPUs, driver) or why it found none."""
    lines = []
    for node, out in outcomes.items():
        if "facts" in out:
            f = out["facts"]
            names = [g.get("name") or "GPU" for g in f.get("gpus") or []]
            kinds = ", ".join(f"{names.count(n)}x {n}" for n in dict.fromkeys(names))
            lines.append(f"{node}: probed over SSH (NVML): {f.get('gpu_count', len(names))} GPU(s): {kinds}; "
                         f"driver {f.get('driver_version') or 'unknown'}")
        elif "unavailable" in out:
            lines.append(f"{node}: probed over SSH (NVML): no GPU found ({out['unavailable']})")
        elif "unreachable" in out:
            lines.append(f"{node}: not probed: unreachable over SSH ({out['unreachable']})")
        else:
            lines.append(f"{node}: probe failed: {out.get('error') or 'no answer'}")
    return lines


# ------------------------------------------------------------------ JSON


def plan_json(plan, facts: dict, changes: dict, diags, spath: Path, has_state: bool) -> dict:
    from .. import __version__
    from ..report import as_dicts

    deps = []
    for dp in plan.deployments:
        f = dp.fit
        deps.append({
            "name": dp.name, "stack": dp.stack, "model": dp.model, "format": dp.format,
            "fit": None if f is None else {
                "mode": f.mode, "fits": f.fits, "tensor_parallel": f.tensor_parallel,
                "pipeline_parallel": f.pipeline_parallel, "context_tokens": f.context_tokens,
                "max_context_tokens": f.max_context_tokens, "parallel_sequences": f.parallel,
                "kv_type": f.kv_type, "weights_gib": round(f.weights_gib, 3),
                "devices": [{"label": d.label, "node": d.node, "gpu": d.gpu_id, "name": d.name,
                             "layers": d.layers, "capacity_gib": round(d.capacity_gib, 3),
                             "weights_gib": round(d.weights_gib, 3), "kv_gib": round(d.kv_gib, 3),
                             "overhead_gib": round(d.overhead_gib, 3), "free_gib": round(d.free_gib, 3)}
                            for d in f.devices]},
            "services": [s.to_dict() for s in dp.services],
            "speed": None if dp.speed is None else dict(dp.speed.__dict__),
            "model_file": facts.get(dp.name),
            "notes": dp.notes,
        })
    return {"schema_version": PLAN_SCHEMA_VERSION, "tool": {"name": "rigctl", "version": __version__},
            "rig": plan.rig, "deployments": deps,
            "state": {"path": str(spath), "exists": has_state},
            "changes": changes, "has_changes": bool(changes),
            "diagnostics": as_dicts([d for d in diags if d.severity is not Severity.info])}


# ------------------------------------------------------------------ text


def render_text(plan, facts: dict, changes: dict, diags, spath: Path, has_state: bool,
                macos_nodes: set[str] = frozenset()) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..report import text as diag_text

    con = Console(highlight=False, soft_wrap=True, width=max(100, Console().width))
    warn = [d for d in diags if d.severity is Severity.warning]
    if warn:
        con.print(diag_text(warn).rstrip(), markup=False)
        con.print()
    for dp in plan.deployments:
        f = dp.fit
        layout = "" if f is None else _layout(f)
        con.print(f"[bold]{dp.name}[/bold]: {dp.model} {dp.format} on {dp.stack}{layout}")
        if f is not None:
            t = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
            cols = ("node / device", "GPU", "layers", "weights GiB", "KV GiB", "overhead GiB", "free GiB", "of GiB")
            for col in cols:
                t.add_column(col, justify="left" if col in ("node / device", "GPU") else "right")
            for d in f.devices:
                free = f"{d.free_gib:.1f}" if d.free_gib >= 0 else f"[red]{d.free_gib:.1f}[/red]"
                t.add_row(d.label, d.name, str(d.layers), f"{d.weights_gib:.2f}", f"{d.kv_gib:.2f}",
                          f"{d.overhead_gib:.2f}", free, f"{d.capacity_gib:.1f}")
            con.print(t)
            mx = f"{f.max_context_tokens:,}" if f.max_context_tokens else "none (weights do not fit)"
            con.print(f"  context {f.context_tokens:,} tokens x {f.parallel} sequence(s), KV {f.kv_type}; "
                      f"largest context that fits: {mx}")
        mf = facts.get(dp.name)
        if mf:
            con.print("  model file: " + (mf.get("note") or
                      f"{mf['path']} ({mf['weights_bytes'] / 1e9:.2f} GB of tensors, exact)"), markup=False)
            for n in mf.get("notes", []):
                con.print(f"  [yellow]note:[/yellow] {n}")
        for s in dp.services:
            where = f"{s.bind}:{s.port}" if s.port else "no port"
            con.print(f"  [cyan]{s.node}[/cyan] {s.name} ({s.role}, {where}, {s.port_scope})")
            command, secret_lines = deployed_secrets(s, launchd=s.node in macos_nodes)
            con.print(f"    {command}", markup=False)
            if s.engine:  # which llama.cpp build, image or release it runs (plan/engines.py)
                con.print(f"    engine: {s.engine['label']}", markup=False)
            for k, v in s.env.items():
                con.print(f"    {k}={v}", markup=False)
            for line in secret_lines:
                con.print(f"    {line}", markup=False)
            for path in s.files:
                con.print(f"    file {path}", markup=False)
        if dp.speed:
            sp = dp.speed
            prompt = f", prompt {sp.prompt_tps_low:,}-{sp.prompt_tps_high:,} tok/s" if sp.prompt_tps_low else ""
            con.print(f"  speed: decode [bold]{sp.decode_tps_low:g}-{sp.decode_tps_high:g} tok/s[/bold]{prompt}")
            con.print(f"  bottleneck: {sp.bottleneck}", markup=False)
            for n in sp.notes:
                con.print(f"    {n}", markup=False)
        for n in dp.notes:
            con.print(f"  note: {n}", markup=False)
        con.print()
    con.print(f"[bold]changes[/bold] against {spath if has_state else 'no applied state (everything is new)'}:")
    if not changes:
        con.print("  none: the hosts already run this plan")
    for node, lines in changes.items():
        con.print(f"  [cyan]{node}[/cyan]")
        for line in lines:
            color = {"+": "green", "-": "red", "~": "yellow"}.get(line[:1], "")
            con.print(f"    [{color}]{line[:1]}[/{color}]{line[1:]}" if color else f"    {line}", markup=bool(color))


def deployed_secrets(s, launchd: bool = False) -> tuple[str, list[str]]:
    """The command line as the deployed service runs it, and one line per secret saying how it gets there.

    A launchd job (a native service on a macOS node, render.launchd) runs the plan's argv as it
    is: it reads the key file where secret.yml writes it, readable by the service user's group.

    A native unit reads a key file through a systemd credential (LoadCredential), so the path it
    runs with is ${CREDENTIALS_DIRECTORY}/<name>, not the root-only copy in /etc/rigctl/secrets;
    a container gets that file mounted read-only at the same path. Both mirror render's
    native_unit_values and compose service_values.
    """
    from ..render.services import native_unit_values, secret_files

    secrets = secret_files(s)
    native = s.deploy_mode == "native"
    unit = native_unit_values(s, secrets) if native and not launchd else {}
    creds = {c["path"]: c["name"] for c in unit.get("credentials", [])}
    # the credential word stays unquoted: systemd expands ${CREDENTIALS_DIRECTORY} in ExecStart
    command = " ".join(f"${{CREDENTIALS_DIRECTORY}}/{creds[a]}" if a in creds else shlex.quote(a) for a in s.argv)
    lines = model_origin(s)
    for sec in secrets:
        ref = sec["ref"]
        origin = (f"env {ref['env']} on the controller" if "env" in ref else f"vault variable {ref['vault']}"
                  if "vault" in ref else f"{ref.get('file')} on the host")
        if sec["format"] == "env":
            lines.append(f"{sec['var']}=<secret> (EnvironmentFile {sec['path']}, from {origin})")
        elif not native:
            lines.append(f"key file {sec['path']} (mounted read-only, from {origin})")
        elif launchd:
            lines.append(f"key file {sec['path']} (root-owned, group rigctl 0440, read by the launchd job; "
                         f"from {origin})")
        elif sec["var"] in unit.get("extra_env", {}):
            lines.append(f"{sec['var']}={unit['extra_env'][sec['var']]} (systemd credential "
                         f"{creds[sec['path']]} of {sec['path']}, from {origin})")
        else:
            lines.append(f"key file: systemd credential {creds[sec['path']]} (LoadCredential from {sec['path']}, "
                         f"from {origin})")
    return command, lines


def model_origin(s) -> list[str]:
    """What the host fetches before the start (serve[].source), as `rigctl plan` shows it."""
    f = s.model_fetch
    if not f:
        return []
    if f["kind"] == "path":
        return [f"model {f['path']}: already on the host (checked before the start)"]
    if f["kind"] == "url":
        return [f"model {f['dest']}: downloaded on the host from {f['url']} (sha256 {f['sha256'][:12]}...), resumable"]
    files = ", ".join(f["files"]) if f["files"] else "every file"
    return [f"model {s.model_path}: {files} of {f['repo']}@{f['revision'][:12]} downloaded on the host "
            f"(huggingface_hub, checksums from the Hub{', with the HF token' if f.get('token') else ''})"]


def _layout(f) -> str:
    n = len(f.devices)
    if f.tensor_parallel > 1:
        pp = f", pipeline parallel {f.pipeline_parallel}" if f.pipeline_parallel > 1 else ""
        return f" (tensor parallel {f.tensor_parallel}{pp})"
    if f.pipeline_parallel > 1:
        return f" (pipeline parallel {f.pipeline_parallel})"
    if n > 1 and f.mode == "row":
        return f" (row split over {n} GPUs)"
    if n > 1:
        return f" (layer split over {n} devices)"
    return ""
