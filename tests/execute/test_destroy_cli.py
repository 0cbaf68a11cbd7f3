"""rigctl destroy without hosts: refusals happen before Ansible runs; the runner gets
destroy.yml and the model flag as data."""

from __future__ import annotations

import shutil
from pathlib import Path

from provisioner.execute import rig_dir
from provisioner.execute.lock import RigLock
from provisioner.execute.options import RunnerOptions

ROOT = Path(__file__).resolve().parents[2]


def lab_copy(tmp_path) -> Path:
    spec = tmp_path / "lab.yaml"
    shutil.copy(ROOT / "examples" / "lab-cpu-rpc.yaml", spec)
    return spec


def test_without_a_terminal_asks_for_yes(rigctl, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    code, _, err = rigctl("destroy", lab_copy(tmp_path))
    assert code == 2 and "pass --yes" in err
    assert not (tmp_path / ".rigctl" / "runs").exists()


def test_destroy_waits_for_no_apply(rigctl, tmp_path):
    spec = lab_copy(tmp_path)
    with RigLock(rig_dir(spec) / "apply-lab-cpu-rpc.lock"):
        code, _, err = rigctl("destroy", spec, "-i", ROOT / "inventories" / "lab", "--yes")
    assert code == 6 and "another rigctl apply is running on this rig (pid" in err


def test_unknown_limit_and_bad_spec_are_refused(rigctl, tmp_path):
    code, _, err = rigctl("destroy", lab_copy(tmp_path), "--limit", "h7", "--yes")
    assert code == 2 and "not a node of rig lab-cpu-rpc" in err
    bad = sorted((ROOT / "examples" / "pitfalls").glob("*.yaml"))[0]
    code, _, err = rigctl("destroy", bad, "--yes")
    assert code == 1 and "not destroying" in err


def test_runner_gets_the_destroy_playbook_and_the_model_flag(tmp_path):
    o = RunnerOptions(private_data_dir=tmp_path, project_dir=tmp_path / "p", inventory=tmp_path / "h.yml",
                      playbook="destroy.yml", ident="destroy", extravars={"rigctl_teardown_models": True})
    kw = o.to_kwargs()
    assert kw["playbook"] == "destroy.yml" and kw["extravars"] == {"rigctl_teardown_models": True}
    assert "extravars" not in RunnerOptions(private_data_dir=tmp_path, project_dir=tmp_path,
                                            inventory=tmp_path / "h.yml").to_kwargs()


def test_rendered_project_has_the_destroy_playbook_and_teardown_runs_before_services():
    import yaml

    site = yaml.safe_load((ROOT / "playbooks" / "site.yml").read_text())
    prep = next(p for p in site if p["name"] == "Prepare every rig node")
    assert prep["roles"][:2] == ["base", "teardown"]  # before firewall and every service play
    assert site.index(prep) < min(i for i, p in enumerate(site) if p["name"].startswith("Start"))
    destroy = yaml.safe_load((ROOT / "playbooks" / "destroy.yml").read_text())
    assert destroy[0]["hosts"] == "rig"


def test_a_node_that_left_the_spec_is_named(tmp_path):
    import json

    from provisioner.execute import departed_nodes
    from provisioner.plan.state import default_render_dir, state_path
    from provisioner.spec.loader import load_rig

    spec = lab_copy(tmp_path)
    rig = load_rig(spec).rig
    assert departed_nodes(str(spec), rig) == []  # nothing applied yet
    p = state_path(default_render_dir(spec, rig.name))
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps({"schema_version": 1, "hosts": {"h1": {"services": {"rigctl-tiny": {}}},
                                                            "h9": {"services": {"rigctl-old": {}}},
                                                            "h8": {"services": {}}}}))
    assert departed_nodes(str(spec), rig) == ["h9"]
