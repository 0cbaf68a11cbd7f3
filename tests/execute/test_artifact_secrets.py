"""Kept runner artifacts hold no secret values (issue #10, item 7).

A real ansible-runner run of a one-task playbook on the controller (local connection) with
a secret in the environment under names a user may pick; afterwards no file under the run's
private data dir contains the value.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from provisioner.execute import REDACTED, RunnerOptions, _run, scrub_env

SECRET = "s3cret-0f-the-rig-7d1c"


def test_scrub_keeps_only_allow_listed_values():
    env = {"PATH": "/usr/bin", "ANSIBLE_RIG_API_KEY": SECRET, "PYTHONSECRET": SECRET, "LC_TOKEN": SECRET,
           "ANSIBLE_CONFIG": "/x/ansible.cfg", "HF_TOKEN": SECRET}
    out = scrub_env(env)
    assert out["PATH"] == "/usr/bin" and out["ANSIBLE_CONFIG"] == "/x/ansible.cfg"
    assert set(out) == set(env)  # names stay: they tell which variables the run saw
    assert all(out[k] == REDACTED for k in ("ANSIBLE_RIG_API_KEY", "PYTHONSECRET", "LC_TOKEN", "HF_TOKEN"))


def test_a_real_run_leaves_no_secret_value_on_disk(tmp_path: Path, monkeypatch):
    project = tmp_path / "run" / "project"
    (project / "inventory").mkdir(parents=True)
    (project / "ansible.cfg").write_text("[defaults]\nstdout_callback = default\n")
    (project / "inventory" / "hosts.yml").write_text(
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n")
    (project / "site.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: read the key the way the secret role does\n"
        "      ansible.builtin.assert:\n"
        "        that: lookup('ansible.builtin.env', 'ANSIBLE_RIG_API_KEY') | length > 0\n"
        "        quiet: true\n")
    for name in ("ANSIBLE_RIG_API_KEY", "PYTHON_RIG_KEY", "LC_RIG_KEY"):
        monkeypatch.setenv(name, SECRET)
    opts = RunnerOptions(private_data_dir=tmp_path / "run", project_dir=project,
                         inventory=project / "inventory" / "hosts.yml")
    result = _run(opts, None)
    assert result.exit_code == 0, result.message
    command = json.loads((tmp_path / "run" / "artifacts" / "apply" / "command").read_text())
    assert command["env"]["ANSIBLE_RIG_API_KEY"] == REDACTED
    leaks = [p for p in (tmp_path / "run").rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaks == []
