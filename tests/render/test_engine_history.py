"""Issue 12 item 5: the previous llama.cpp build stays on the host.

The rendered unit runs ``/var/lib/rigctl/engines/<key>/<binary>`` (render.services.host_binary);
base/llamacpp_install.yml copies each build into its own directory and keeps the builds in use
plus ``rigctl_engine_keep_previous`` of the most recently used others (history.json). Here the
task file runs for real under ansible-playbook (connection local) against a temporary engines
directory, through an engine change, a rollback and a third engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.plan.model import Service
from provisioner.render import services as svcmod

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the task file installs root-owned files")


def test_the_unit_runs_the_binary_from_its_builds_directory():
    svc = Service(name="rigctl-x", deployment="x", node="h1", stack="llamacpp", role="server",
                  argv=["llama-server", "--port", "8080"], port=8080, bind="127.0.0.1")
    assert svcmod.host_binary(svc) == "/var/lib/rigctl/bin/llama-server"  # no build named (override)
    svc.engine = {"kind": "build", "key": "llama.cpp-0.3.36-cpu-abc"}
    assert svcmod.host_binary(svc) == "/var/lib/rigctl/engines/llama.cpp-0.3.36-cpu-abc/llama-server"
    assert svcmod.native_unit_values(svc, [])["exec_start"].startswith(
        "/var/lib/rigctl/engines/llama.cpp-0.3.36-cpu-abc/llama-server ")
    svc.argv[0] = "/opt/mine/llama-server"  # an absolute binary is the spec's own choice
    assert svcmod.host_binary(svc) == "/opt/mine/llama-server"


def _install(tmp: Path, key: str, keep: int = 1) -> str:
    """base/llamacpp_install.yml for a host running llama-server and rpc-server of build `key`;
    returns the play recap line."""
    engines = tmp / "engines"
    src = tmp / "src"
    src.mkdir(exist_ok=True)
    for name in ("llama-server", "rpc-server"):
        (src / name).write_text(f"#!/bin/sh\necho {name}\n")  # the same files for every key
    services = [{"name": f"rigctl-{n}", "binary_dest": f"{engines}/{key}/{n}"} for n in ("llama-server", "rpc-server")]
    services.append({"name": "rigctl-vllm"})  # a container service has no binary_dest
    (tmp / "play.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.include_role:\n        name: base\n        tasks_from: llamacpp_install.yml\n"
        "      vars:\n        rigctl_engine_services: \"{{ rigctl_services | selectattr('binary_dest', 'defined') | list }}\"\n")
    (tmp / "vars.json").write_text(json.dumps({
        "rigctl_services": services, "rigctl_engine_src_dir": str(src), "rigctl_engine_dir": str(engines),
        "rigctl_engine_keep_previous": keep, "ansible_python_interpreter": sys.executable}))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "playbooks" / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "False"}
    r = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                        "-e", f"@{tmp / 'vars.json'}", str(tmp / "play.yml")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    return next(line for line in r.stdout.splitlines() if line.startswith("localhost"))


def _state(tmp: Path) -> tuple[set[str], list[str]]:
    engines = tmp / "engines"
    dirs = {p.name for p in engines.iterdir() if p.is_dir()}
    return dirs, json.loads((engines / "history.json").read_text())


def test_an_engine_change_keeps_the_previous_build_and_a_rollback_copies_nothing(tmp_path):
    _install(tmp_path, "k0")
    assert _state(tmp_path) == ({"k0"}, ["k0"])
    assert "changed=0" in _install(tmp_path, "k0")  # a re-apply changes nothing
    inode = (tmp_path / "engines" / "k0" / "llama-server").stat().st_ino

    _install(tmp_path, "k1")  # an engine change: the new build lands beside the old one
    assert _state(tmp_path) == ({"k0", "k1"}, ["k1", "k0"])

    recap = _install(tmp_path, "k0")  # the previous spec again: its build is still there
    assert _state(tmp_path) == ({"k0", "k1"}, ["k0", "k1"])
    assert (tmp_path / "engines" / "k0" / "llama-server").stat().st_ino == inode  # not copied again
    assert "changed=1" in recap  # only history.json

    _install(tmp_path, "k2")  # a third build: the one used most recently before it stays, k1 goes
    assert _state(tmp_path) == ({"k2", "k0"}, ["k2", "k0"])

    _install(tmp_path, "k2", keep=0)
    assert _state(tmp_path) == ({"k2"}, ["k2"])
