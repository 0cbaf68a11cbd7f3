"""rigctl apply: render into a private run directory and run site.yml with ansible-runner.

Each run keeps its rendered project and runner artifacts under
``<spec dir>/.rigctl/runs/<timestamp>/`` (the newest KEEP_RUNS are kept); after a
successful full run the applied state goes where ``rigctl plan`` reads it
(``provisioner.plan.state.state_path``). Nothing here prints: progress goes to the
``on_update`` callback, the outcome comes back as an ApplyResult.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..diagnostics import (
    EXIT_APPLY_FAILED,
    EXIT_FINDINGS,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_USAGE,
    Diagnostic,
    Severity,
)
from .events import HostFailure, HostProgress, Progress, Update
from .lock import Locked, RigLock
from .options import RunnerOptions

KEEP_RUNS = 20  # run directories (rendered project + runner artifacts) kept per rig

__all__ = ["apply", "destroy", "ApplyResult", "RunnerOptions", "HostFailure", "HostProgress", "Update", "Locked"]


@dataclass
class ApplyResult:
    status: str  # ok | invalid | locked | aborted | failed | usage
    exit_code: int
    message: str = ""
    diagnostics: list[Diagnostic] = field(default_factory=list)
    hosts: dict[str, HostProgress] = field(default_factory=dict)
    failures: list[HostFailure] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    run_dir: Path | None = None
    state_file: Path | None = None
    elapsed_s: float = 0.0
    check: bool = False

    def host_summary(self) -> list[dict]:
        """Per host: ok/changed/failed/unreachable/skipped from the play recap."""
        s = self.stats
        names = sorted(set(self.hosts) | set(s.get("processed", {})) | set(s.get("dark", {})))
        out = []
        for h in names:
            hp = self.hosts.get(h, HostProgress(h))
            out.append({"host": h, "ok": s.get("ok", {}).get(h, hp.ok), "changed": s.get("changed", {}).get(h, hp.changed),
                        "failed": s.get("failures", {}).get(h, hp.failed), "unreachable": int(h in s.get("dark", {}) or hp.unreachable),
                        "skipped": s.get("skipped", {}).get(h, hp.skipped)})
        return out


def rig_dir(spec: str | os.PathLike) -> Path:
    return Path(spec).resolve().parent / ".rigctl"


def apply(spec: str, inventory: str | None = None, check: bool = False, diff: bool = False,
          limit: str | None = None, yes: bool = False, *,
          confirm: Callable[[object], bool] | None = None,
          on_update: Callable[[Update], None] | None = None,
          envvars: dict[str, str] | None = None, catalog_files: list[str] = ()) -> ApplyResult:
    """Validate, render, lock, confirm, run. ``confirm(prepared)`` is asked unless ``yes``."""
    from ..render import InventoryError, write
    from ..render.prepare import prepare

    t0 = time.monotonic()
    try:
        prep = prepare(spec, inventory, catalog_files=catalog_files)
    except InventoryError as exc:
        return ApplyResult("usage", EXIT_USAGE, str(exc))
    if prep.check.fatal:
        return ApplyResult("usage", EXIT_USAGE, f"cannot read {spec}", diagnostics=prep.check.diagnostics)
    if prep.plan is None:
        return ApplyResult("invalid", EXIT_FINDINGS, f"not applying {spec}: the spec has {len(prep.errors)} error(s)",
                           diagnostics=prep.check.diagnostics)
    from ..images import export_images, preflight

    spec_dir = Path(spec).resolve().parent
    image_diags = [prep.check.load.locate(d) for d in preflight(prep.plan, prep.ctx.rig, spec_dir)]
    if any(d.severity is Severity.error for d in image_diags):
        # an offline rig with an image nobody can ship: stop before touching any host
        return ApplyResult("invalid", EXIT_FINDINGS, f"not applying {spec}: container images are missing",
                           diagnostics=image_diags)
    rig = prep.ctx.rig.name
    files = _rendered_for(prep, limit)
    if isinstance(files, ApplyResult):
        return files
    base = rig_dir(spec)
    try:
        with RigLock(base / f"apply-{rig}.lock"):
            unset = [prep.check.load.locate(d) for d in unset_secret_env(prep.ctx, prep.plan, limit, envvars)]
            if unset:
                # Ansible would find this only in the play that writes the secret, after the other
                # hosts' plays ran, and report it as a host failure (exit 5): stop before any host
                names = ", ".join(sorted({d.data["env"] for d in unset}))
                return ApplyResult("usage", EXIT_USAGE, f"not applying {spec}: environment variable(s) {names} "
                                   "unset or empty on this machine; export them first", diagnostics=unset)
            if not yes and not (confirm and confirm(prep)):
                return ApplyResult("aborted", EXIT_USAGE, "not applied (not confirmed)")
            if not check:
                export_images(prep.plan, prep.ctx.rig, spec_dir)
            if on_update is not None:
                for node in departed_nodes(spec, prep.ctx.rig):
                    on_update(Update(node, f"{node} left the spec: apply no longer reaches it, so what rigctl made "
                                     "there keeps running; take it down with `rigctl destroy --limit "
                                     f"{node}` and the spec that still lists it", "note"))
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            run_dir = base / "runs" / stamp
            project = run_dir / "project"
            write(files, project, rig=rig)  # a fresh run dir: nothing to refuse or keep
            opts = RunnerOptions(private_data_dir=run_dir, project_dir=project,
                                 inventory=project / "inventory" / "hosts.yml", limit=limit, check=check,
                                 diff=diff, envvars=dict(envvars or {}))
            # old runs go while Ansible works (file removal, off the critical path)
            pruner = threading.Thread(target=_prune_runs, args=(base / "runs", KEEP_RUNS), daemon=True)
            pruner.start()
            try:
                result = _run(opts, on_update)
            finally:
                pruner.join()
            result.run_dir, result.check = run_dir, check
            if result.status == "ok" and not check and not limit:  # a --limit run applied part of the plan
                result.state_file = _write_state(spec, prep.plan, rig, prep.model_facts)
    except Locked as exc:
        return ApplyResult("locked", EXIT_LOCKED, str(exc))
    result.elapsed_s = time.monotonic() - t0
    return result


def destroy(spec: str, inventory: str | None = None, yes: bool = False, *, remove_models: bool = False,
            limit: str | None = None, confirm: Callable[[object], bool] | None = None,
            on_update: Callable[[Update], None] | None = None,
            envvars: dict[str, str] | None = None, catalog_files: list[str] = ()) -> ApplyResult:
    """Take down everything rigctl made on the spec's hosts (destroy.yml: each host's
    manifest, then rigctl's own units, firewall table, files and user). Only the spec's
    nodes and how to reach them matter: what is removed comes from the hosts. A spec with
    errors in its deployments can still be destroyed as long as it loads and renders."""
    from ..render import InventoryError
    from ..render.prepare import prepare

    t0 = time.monotonic()
    try:
        prep = prepare(spec, inventory, catalog_files=catalog_files)
    except InventoryError as exc:
        return ApplyResult("usage", EXIT_USAGE, str(exc))
    if prep.check.fatal:
        return ApplyResult("usage", EXIT_USAGE, f"cannot read {spec}", diagnostics=prep.check.diagnostics)
    if prep.plan is None:
        return ApplyResult("invalid", EXIT_FINDINGS, f"not destroying {spec}: the spec has {len(prep.errors)} error(s) "
                           "(destroy renders the rig's inventory from it)", diagnostics=prep.check.diagnostics)
    rig = prep.ctx.rig.name
    files = _rendered_for(prep, limit)
    if isinstance(files, ApplyResult):
        return files
    base = rig_dir(spec)
    try:
        with RigLock(base / f"apply-{rig}.lock"):  # the same lock: no apply while the rig goes down
            if not yes and not (confirm and confirm(prep)):
                return ApplyResult("aborted", EXIT_USAGE, "not destroyed (not confirmed)")
            from ..render import write

            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            run_dir = base / "runs" / stamp
            project = run_dir / "project"
            write(files, project, rig=rig)
            opts = RunnerOptions(private_data_dir=run_dir, project_dir=project,
                                 inventory=project / "inventory" / "hosts.yml", playbook="destroy.yml",
                                 ident="destroy", limit=limit, envvars=dict(envvars or {}),
                                 extravars={"rigctl_teardown_models": bool(remove_models)})
            _prune_runs(base / "runs", KEEP_RUNS)
            result = _run(opts, on_update)
            result.run_dir = run_dir
            if result.status == "ok" and not limit:
                from ..plan.state import default_render_dir, state_path

                # nothing is applied any more: the next plan shows every service as + create
                state_path(default_render_dir(spec, rig)).unlink(missing_ok=True)
    except Locked as exc:
        return ApplyResult("locked", EXIT_LOCKED, str(exc))
    result.elapsed_s = time.monotonic() - t0
    return result


def departed_nodes(spec: str, rig) -> list[str]:
    """Nodes the last applied state has services on that the spec no longer lists."""
    from ..plan.state import StateError, default_render_dir, load_state, state_path

    try:
        old = load_state(state_path(default_render_dir(spec, rig.name)))
    except StateError:
        return []
    names = {n.name for n in rig.nodes}
    return sorted(h for h, v in ((old or {}).get("hosts") or {}).items() if h not in names and v.get("services"))


def unset_secret_env(ctx, plan, limit: str | None = None, envvars: dict | None = None) -> list[Diagnostic]:
    """One error per deployment whose `auth: {env: NAME}` names a variable that is unset or empty
    on the controller (where the secret role's env lookup reads it), for the hosts this run touches."""
    env = {**os.environ, **(envvars or {})}
    out = []
    for i, dep in enumerate(ctx.rig.serve):
        token = dep.source.token if dep.source is not None else None
        refs = [(dep.auth, ("auth", "env"), "its API key", "the key apply deploys"),
                (token, ("source", "token", "env"), "its Hugging Face token", "the token the download uses")]
        for ref, where, what, why in refs:
            name = ref.env if ref is not None else None
            if not name or env.get(name, "").strip():
                continue
            nodes = {s.node for dp in plan.deployments_named(dep.name) for s in dp.services}
            if limit and limit not in nodes:
                continue
            out.append(Diagnostic(
                "secret-env-unset", Severity.error,
                f"deployment {dep.name}: {what} comes from environment variable {name}, which is "
                f"{'empty' if name in env else 'not set'} on this machine — export {name} ({why}) first",
                path=("serve", i, *where), data={"env": name, "deployment": dep.name}))
    return out


# Environment variables whose values may stay in the kept artifacts: exact names, each known
# to hold no secret. Every other value is redacted, prefixes included (ANSIBLE_*, PYTHON*, LC_*
# are free for a user to name a secret after: `auth: {env: ANSIBLE_RIG_API_KEY}`).
ENV_KEEP = frozenset({
    "PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "PWD", "SHELL", "USER", "LOGNAME", "TERM", "TZ",
    "ANSIBLE_CONFIG", "ANSIBLE_FORCE_COLOR", "ANSIBLE_NOCOLOR", "ANSIBLE_HOST_KEY_CHECKING", "ANSIBLE_STRATEGY",
    "LAB_DIR", "LAB_CACHE", "RIGCTL_ARTIFACTS_DIR",
})
REDACTED = "<redacted>"


def scrub_env(env: dict) -> dict:
    """The environment as it may be kept on disk: names kept, values only on the allow-list."""
    return {k: (v if k in ENV_KEEP else REDACTED) for k, v in env.items()}


def scrub_command_artifact(path: Path) -> None:
    """ansible-runner writes the whole process environment into artifacts/<ident>/command
    (mode 0600) as it starts; rewrite it with the values redacted as soon as the run is up."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    doc["env"] = scrub_env(doc.get("env") or {})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


# events kept as artifacts/<ident>/job_events/*.json: what changed, failed or warned, and the
# totals. ok/skipped results and task starts of a no-op run are most of the events and say
# nothing the stdout artifact (kept whole) does not; writing each costs the runner a JSON
# file while Ansible runs.
_KEEP_EVENTS = frozenset({"playbook_on_start", "playbook_on_stats", "runner_on_failed", "runner_on_unreachable",
                          "runner_item_on_failed", "runner_on_async_failed", "warning", "deprecated", "error"})


def _worth_keeping(event: dict) -> bool:
    kind = event.get("event", "")
    if kind in _KEEP_EVENTS:
        return True
    res = (event.get("event_data") or {}).get("res") or {}
    return kind in ("runner_on_ok", "runner_item_on_ok") and bool(res.get("changed"))


def _prune_runs(runs: Path, keep: int) -> None:
    """Keep the newest `keep` run directories (names sort by time; the current run is one)."""
    import shutil

    for old in sorted(p for p in runs.iterdir() if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _run(opts: RunnerOptions, on_update) -> ApplyResult:
    import ansible_runner

    progress = Progress()

    def handler(event: dict) -> bool:
        upd = progress.handle(event)
        if upd is not None and on_update is not None:
            on_update(upd)
        return _worth_keeping(event)

    def status(data: dict, runner_config=None) -> None:
        if data.get("status") == "running":  # the command artifact exists from here on
            scrub_command_artifact(opts.private_data_dir / "artifacts" / opts.ident / "command")

    try:
        runner = ansible_runner.run(event_handler=handler, status_handler=status, **opts.to_kwargs())
    finally:
        scrub_command_artifact(opts.private_data_dir / "artifacts" / opts.ident / "command")
    stats = runner.stats or progress.stats or {}
    res = ApplyResult("ok", EXIT_OK, hosts=progress.hosts, failures=progress.failures, stats=stats)
    if not stats.get("processed"):
        # runner reports success for an empty inventory or a playbook that never started
        res.status, res.exit_code = "failed", EXIT_APPLY_FAILED
        res.message = (f"ansible-playbook ran no host (rc {runner.rc}, status {runner.status}); "
                       f"see {opts.private_data_dir}/artifacts/{opts.ident}/stdout")
    elif runner.rc != 0 or progress.failures or stats.get("failures") or stats.get("dark"):
        res.status, res.exit_code = "failed", EXIT_APPLY_FAILED
        bad = sorted(set(stats.get("failures", {})) | set(stats.get("dark", {})) | {f.host for f in progress.failures})
        res.message = f"{opts.ident} failed on {', '.join(bad) or 'the controller'} (ansible-playbook rc {runner.rc})"
    return res


def _write_state(spec: str, plan, rig: str, model_facts: dict) -> Path:
    from ..plan.state import default_render_dir, plan_state, state_path

    path = state_path(default_render_dir(spec, rig))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(plan_state(plan, model_facts=model_facts), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _rendered_for(prep, limit: str | None):
    """The rendered project of a prepared spec, or the usage result when --limit names no node
    of the rig or the inventory cannot be rendered (apply and destroy share both checks)."""
    from ..render import InventoryError, render_project  # render imports much: load it when used
    if limit and limit not in {n.name for n in prep.ctx.rig.nodes}:
        nodes = ", ".join(n.name for n in prep.ctx.rig.nodes)
        return ApplyResult("usage", EXIT_USAGE, f"--limit {limit}: not a node of rig {prep.ctx.rig.name} (nodes: {nodes})")
    try:
        return render_project(prep.ctx, prep.plan, prep.overrides)
    except InventoryError as exc:
        return ApplyResult("usage", EXIT_USAGE, str(exc))
