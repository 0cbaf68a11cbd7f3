"""rigctl apply without hosts: refusals happen before Ansible runs (exit codes 1, 2, 6)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from provisioner.execute import rig_dir
from provisioner.execute.events import Progress, reason
from provisioner.execute.lock import RigLock
from provisioner.execute.options import RunnerOptions

ROOT = Path(__file__).resolve().parents[2]


def lab_copy(tmp_path) -> Path:
    spec = tmp_path / "lab.yaml"
    shutil.copy(ROOT / "examples" / "lab-cpu-rpc.yaml", spec)
    return spec


def test_refuses_a_spec_with_errors(rigctl):
    bad = sorted((ROOT / "examples" / "pitfalls").glob("*.yaml"))[0]
    code, _, err = rigctl("apply", bad, "--yes")
    assert code == 1 and "not applying" in err and "error" in err


def test_without_a_terminal_asks_for_yes(rigctl, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    code, _, err = rigctl("apply", lab_copy(tmp_path))
    assert code == 2 and "pass --yes" in err


def test_second_apply_on_the_same_rig_is_locked(rigctl, tmp_path):
    spec = lab_copy(tmp_path)
    with RigLock(rig_dir(spec) / "apply-lab-cpu-rpc.lock"):
        code, _, err = rigctl("apply", spec, "-i", ROOT / "inventories" / "lab", "--yes")
    assert code == 6 and "another rigctl apply is running on this rig (pid" in err


def test_unknown_limit_is_a_usage_error(rigctl, tmp_path):
    code, _, err = rigctl("apply", lab_copy(tmp_path), "--limit", "h7", "--yes")
    assert code == 2 and "not a node of rig lab-cpu-rpc" in err


def test_runner_options_keep_host_key_checking_and_shared_fact_cache(tmp_path):
    o = RunnerOptions(private_data_dir=tmp_path, project_dir=tmp_path / "project", inventory=tmp_path / "hosts.yml",
                      check=True, diff=True, limit="h1")
    kw = o.to_kwargs()
    assert kw["cmdline"] == "--check --diff" and kw["limit"] == "h1"
    # ansible-runner turns host key checking off unless told; rigctl keeps Ansible's default
    assert kw["envvars"]["ANSIBLE_HOST_KEY_CHECKING"] == os.environ.get("ANSIBLE_HOST_KEY_CHECKING", "True")
    assert kw["fact_cache_type"] != "jsonfile"  # runner would otherwise cache facts per run


def test_progress_names_host_task_and_reason():
    p = Progress()
    p.handle({"event": "playbook_on_play_start", "event_data": {"play": "Prepare every rig node"}})
    p.handle({"event": "runner_on_ok", "event_data": {"host": "h1", "task": "Create dirs", "res": {"changed": True}}})
    p.handle({"event": "runner_on_unreachable", "event_data": {
        "host": "h2", "task": "Install the base packages",
        "res": {"msg": "ssh: connect to host 10.213.0.12 port 22: Connection timed out", "unreachable": True}}})
    p.handle({"event": "runner_on_failed", "event_data": {
        "host": "h1", "task": "Loop", "res": {"msg": "One or more items failed",
                                              "results": [{"failed": True, "msg": "boom"}, {"failed": False}]}}})
    assert p.hosts["h1"].changed == 1 and p.hosts["h2"].unreachable
    assert str(p.failures[0]) == ("h2: unreachable in task 'Install the base packages' (play 'Prepare every rig node'): "
                                  "ssh: connect to host 10.213.0.12 port 22: Connection timed out")
    assert p.failures[1].reason == "One or more items failed — boom"
    assert reason({}) == "no message (see the run's artifacts)"


def test_prune_keeps_the_newest_runs(tmp_path):
    from provisioner.execute import _prune_runs

    stamps = [f"20261128T0700{i:02d}.000000Z" for i in range(6)]
    for s in reversed(stamps):  # creation order must not matter, names do
        (tmp_path / s / "project").mkdir(parents=True)
        (tmp_path / s / "project" / "site.yml").write_text("---\n")
    _prune_runs(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == stamps[-2:]


def test_kept_events_are_what_changed_failed_or_warned():
    from provisioner.execute import _worth_keeping

    def ev(kind, changed=None):
        data = {"host": "h1", "task": "t"}
        if changed is not None:
            data["res"] = {"changed": changed}
        return {"event": kind, "event_data": data}

    kept = [ev("runner_on_ok", True), ev("runner_item_on_ok", True), ev("runner_on_failed", False),
            ev("runner_on_unreachable"), ev("playbook_on_stats"), ev("warning")]
    dropped = [ev("runner_on_ok", False), ev("runner_on_skipped"), ev("playbook_on_task_start"),
               ev("runner_on_start"), ev("playbook_on_play_start")]
    assert all(_worth_keeping(e) for e in kept)
    assert not any(_worth_keeping(e) for e in dropped)
