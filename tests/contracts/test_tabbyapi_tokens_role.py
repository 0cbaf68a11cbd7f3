"""The tabbyapi role's api_tokens.yml task run for real (ansible-playbook, connection local):
the spec's key becomes api_key, an admin key is generated once, the file is 0600, a re-run
changes nothing. TabbyAPI itself cannot run here (CUDA-only kernels)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the role writes root-owned secret files")


def run(tmp_path: Path, key: str) -> subprocess.CompletedProcess:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    svc = {"name": "rigctl-llama70", "deployment": "llama70",
           "secret_files": [{"path": str(secrets / "rigctl-llama70-tabby_api_key_file"), "ref": {"env": "TABBY_KEY"},
                             "var": "TABBY_API_KEY_FILE", "format": "raw"}],
           "secret_mounts": {str(secrets / "rigctl-llama70-api_tokens.yml"): "/app/api_tokens.yml"}}
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"tabbyapi_service": svc, "rigctl_secrets_dir": str(secrets)},
             "tasks": [{"ansible.builtin.include_tasks": str(ROOT / "playbooks/roles/tabbyapi/tasks/tokens.yml")},
                       {"ansible.builtin.debug": {"msg": "RECREATE={{ tabbyapi_tokens_changed | default([]) }}"}}]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    env = {"ANSIBLE_NOCOLOR": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TABBY_KEY": key}
    return subprocess.run([sys.executable, str(ROOT / ".venv/bin/ansible-playbook"), "-i", "localhost,",
                           str(tmp_path / "play.yml")], capture_output=True, text=True, timeout=120, env=env)


def test_tokens_file_written_once(tmp_path):
    key = 'sk-"quoted": key'
    first = run(tmp_path, key)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "RECREATE=['rigctl-llama70']" in first.stdout
    tokens = tmp_path / "secrets" / "rigctl-llama70-api_tokens.yml"
    data = yaml.safe_load(tokens.read_text())
    assert data["api_key"] == key
    assert len(data["admin_key"]) == 32 and data["admin_key"] != key
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    second = run(tmp_path, key)
    assert second.returncode == 0, second.stdout
    assert "changed=0" in second.stdout and "RECREATE=[]" in second.stdout
    assert yaml.safe_load(tokens.read_text()) == data
