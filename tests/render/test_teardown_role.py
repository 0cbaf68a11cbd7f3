"""The teardown role run for real (ansible-playbook, connection local): which services of a
host's manifest are stale against the rendered services, that their secrets go and the ones
a remaining service shares stay, and that re-applies never reload systemd unasked.

The units and containers here do not exist on this machine: the stop/compose steps find
nothing to do, so the test touches only files under its tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "playbooks" / "roles" / "teardown" / "tasks"


def native(name: str, secrets: list[str] = ()) -> dict:
    return {"name": name, "deployment": name, "deploy_mode": "native",
            "secret_files": [{"path": p, "ref": {"env": "X"}, "var": "K", "format": "raw"} for p in secrets]}


def container(name: str, project: str) -> dict:
    return {"name": name, "deployment": name, "deploy_mode": "container", "compose_project": project,
            "secret_files": []}


def play(tmp_path: Path, old: list[dict] | None, want: list[dict], tasks: str = "read.yml",
         models: bool = False) -> subprocess.CompletedProcess:
    manifest = tmp_path / "manifest.json"
    if old is not None:
        manifest.write_text(json.dumps({"rig": "r", "services": old}))
    doc = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
            "vars": {"rigctl_manifest_file": str(manifest), "rigctl_teardown_want": want,
                     "rigctl_compose_dir": str(tmp_path / "compose"), "rigctl_teardown_models": models},
            "tasks": [{"ansible.builtin.import_tasks": str(ROLE / "read.yml")},
                      *([{"ansible.builtin.include_tasks": str(ROLE / tasks)}] if tasks != "read.yml" else []),
                      {"ansible.builtin.debug": {"msg": "STALE={{ rigctl_teardown_stale | map(attribute='name') | list | to_json }}"}}]}]
    (tmp_path / "play.yml").write_text(json.dumps(doc))
    env = {"ANSIBLE_NOCOLOR": "1", "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, str(ROOT / ".venv/bin/ansible-playbook"), "-i", "localhost,",
                        str(tmp_path / "play.yml")], capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    return r


def stale(r) -> list[str]:
    line = next(l for l in r.stdout.splitlines() if "STALE=" in l)
    return json.loads(line.split("STALE=", 1)[1].rstrip('"').replace('\\"', '"'))


@pytest.mark.parametrize("old, want, expected", [
    ([native("rigctl-tiny")], [native("rigctl-tiny2")], ["rigctl-tiny"]),  # renamed
    ([native("rigctl-tiny")], [], ["rigctl-tiny"]),  # moved to another node (or left the spec)
    ([native("rigctl-tiny")], [native("rigctl-tiny")], []),  # unchanged
    ([native("rigctl-tiny")], [container("rigctl-tiny", "rigctl-llamacpp")], ["rigctl-tiny"]),  # native -> container
    ([container("rigctl-v", "rigctl-vllm")], [container("rigctl-v", "rigctl-llamacpp")], ["rigctl-v"]),  # other project
    ([container("rigctl-a", "p"), container("rigctl-b", "p")], [container("rigctl-b", "p")], ["rigctl-a"]),
    (None, [native("rigctl-tiny")], []),  # no manifest yet: nothing is known to remove
])
def test_stale_services_from_the_manifest(tmp_path, old, want, expected):
    assert stale(play(tmp_path, old, want)) == expected


@pytest.mark.skipif(os.geteuid() != 0, reason="remove.yml deletes root-owned files")
def test_remove_deletes_the_secrets_of_removed_services_but_not_shared_ones(tmp_path):
    gone, shared = tmp_path / "old.key", tmp_path / "shared.key"
    gone.write_text("k")
    shared.write_text("k")
    old = [native("rigctl-lifecycle-test-absent-a", [str(gone), str(shared)])]
    want = [native("rigctl-lifecycle-test-absent-b", [str(shared)])]
    r = play(tmp_path, old, want, tasks="remove.yml")
    assert not gone.exists() and shared.exists()
    # no unit file was deleted (none existed), so systemd was not reloaded
    reload_task = r.stdout.split("TASK [Reload systemd (a unit file was deleted)]", 1)[1].split("TASK [", 1)[0]
    assert "skipping" in reload_task, reload_task


@pytest.mark.skipif(os.geteuid() != 0, reason="remove.yml deletes root-owned files")
@pytest.mark.parametrize("asked", [False, True])
def test_model_files_go_only_when_asked_and_unshared(tmp_path, asked):
    own, shared = tmp_path / "own.gguf", tmp_path / "shared.gguf"
    own.write_text("m")
    shared.write_text("m")
    old = [dict(native("rigctl-lifecycle-test-absent-a"), model_path=str(own)),
           dict(native("rigctl-lifecycle-test-absent-c"), model_path=str(shared))]
    want = [dict(native("rigctl-lifecycle-test-absent-b"), model_path=str(shared))]
    play(tmp_path, old, want, tasks="remove.yml", models=asked)
    assert own.exists() is not asked and shared.exists()


def _tasks(path: Path):
    for task in yaml.safe_load(path.read_text()) or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from task.get(key, [])


def test_no_role_reloads_systemd_unless_a_unit_changed():
    """A daemon-reload detaches running GPU containers where Docker uses the systemd cgroup
    driver (NVIDIA Container Toolkit troubleshooting): every reload in the roles is tied to a
    registered change, never `daemon_reload: true` on every run."""
    offenders = []
    for path in sorted((ROOT / "playbooks" / "roles").glob("*/*/*.yml")):
        if path.parent.name not in ("tasks", "handlers"):
            continue
        for task in _tasks(path):
            mod = task.get("ansible.builtin.systemd_service") or task.get("ansible.builtin.systemd") or {}
            reload_ = mod.get("daemon_reload") if isinstance(mod, dict) else None
            if reload_ is None or reload_ is False:
                continue
            conditional = (isinstance(reload_, str) and "is changed" in reload_) or \
                ("is changed" in str(task.get("when", "")))
            if not conditional:
                offenders.append(f"{path.relative_to(ROOT)}: {task.get('name')}")
    assert offenders == [], offenders


def test_container_runtime_installs_nvidias_dev_char_guard():
    text = (ROOT / "playbooks" / "roles" / "container_runtime" / "tasks" / "runtime.yml").read_text()
    tasks = list(_tasks(ROOT / "playbooks" / "roles" / "container_runtime" / "tasks" / "runtime.yml"))
    rule = next(t for t in tasks if t.get("ansible.builtin.copy", {}).get("dest") == "/lib/udev/rules.d/71-nvidia-dev-char.rules")
    assert ('ACTION=="add", DEVPATH=="/bus/pci/drivers/nvidia", '
            'RUN+="/usr/bin/nvidia-ctk system create-dev-char-symlinks --create-all"') in rule["ansible.builtin.copy"]["content"]
    assert "rigctl_gpu_required | bool" in str(rule["when"])
    now = next(t for t in tasks if "create-dev-char-symlinks" in str(t.get("ansible.builtin.command", "")))
    assert "rigctl_nvidia_dev_char_rule is changed" in now["when"]
    assert "troubleshooting.html" in text
