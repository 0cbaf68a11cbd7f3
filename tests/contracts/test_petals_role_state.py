"""The petals role's state task run for real (ansible-playbook, connection local) on the DHT
service the plan renders for examples/petals.yaml (paths moved under tmp): the identity key's
directory is created before start, and a DHT whose key is missing is refused instead of
minting a new peer id. Petals itself cannot run here (its hivemind commit is not on PyPI)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .test_petals_contract import one

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the role creates root-owned directories")


def dht_under(tmp_path: Path) -> tuple[dict, Path]:
    svc = one("petals-dht").to_dict()
    (host_dir,) = svc["state_mounts"]
    moved = str(tmp_path / "state" / "llama70")
    svc["state_mounts"] = {moved: moved}
    svc["argv"] = [a.replace(host_dir, moved) for a in svc["argv"]]
    return svc, Path(moved)


def run(tmp_path: Path, services: list[dict]) -> subprocess.CompletedProcess:
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"petals_services": services},
             "tasks": [{"ansible.builtin.include_tasks": str(ROOT / "playbooks/roles/petals/tasks/state.yml")}]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    env = {"ANSIBLE_NOCOLOR": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, str(ROOT / ".venv/bin/ansible-playbook"), "-i", "localhost,",
                           str(tmp_path / "play.yml")], capture_output=True, text=True, timeout=120, env=env)


def test_missing_key_is_refused_after_its_directory_is_made(tmp_path):
    svc, state = dht_under(tmp_path)
    r = run(tmp_path, [svc])
    assert r.returncode != 0
    assert f"rigctl-llama70-dht: no identity key at {state}/bootstrap.id" in r.stdout, r.stdout
    assert "python -m petals.cli.run_dht --identity_path" in r.stdout
    assert state.is_dir() and stat.S_IMODE(state.stat().st_mode) == 0o700


def test_present_key_starts_and_rerun_changes_nothing(tmp_path):
    svc, state = dht_under(tmp_path)
    state.mkdir(parents=True)
    (state / "bootstrap.id").write_bytes(b"\x08\x00\x12\x00")  # stands in for the RSA key: only its presence is read
    first = run(tmp_path, [svc])
    assert first.returncode == 0, first.stdout + first.stderr
    second = run(tmp_path, [svc])
    assert second.returncode == 0 and "changed=0" in second.stdout, second.stdout
