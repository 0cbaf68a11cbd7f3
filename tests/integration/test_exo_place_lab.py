"""The exo role's placement (playbooks/roles/exo/tasks/place.yml) over real SSH to a lab host,
against a STAND-IN of exo's API running on that host (tests/contracts/exo_standin.py: exo itself
cannot run here). The service dict is the one `rigctl render` plans for examples/exo.yaml's API
node, so the request the role sends is the rendered place_instance.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.check import check_file
from provisioner.plan import build_plan

ROOT = Path(__file__).resolve().parents[2]
STANDIN_DIR = "/opt/rigctl-test-exo-standin"
UNIT = "rigctl-test-exo-standin"
PORT = 52415
LOG = f"{STANDIN_DIR}/requests.jsonl"


def start_standin(lab_shell, *args: str) -> None:
    lab_shell.run("h1", f"systemctl stop {UNIT} 2>/dev/null; systemctl reset-failed {UNIT} 2>/dev/null; true")
    quoted = " ".join(json.dumps(a) for a in args)
    lab_shell.run("h1", f"rm -f {LOG}; systemd-run --unit {UNIT} --collect "
                        f"python3 {STANDIN_DIR}/exo_standin.py {PORT} {LOG} {quoted}")
    lab_shell.run("h1", f"for i in $(seq 50); do curl -sf http://127.0.0.1:{PORT}/v1/models && exit 0; "
                        f"sleep 0.2; done; exit 1")


@pytest.fixture
def standin(lab, lab_shell):
    lab_shell.put("h1", [ROOT / "tests" / "contracts" / "exo_standin.py"], STANDIN_DIR)
    start_standin(lab_shell)
    yield lab_shell
    lab_shell.run("h1", f"systemctl stop {UNIT}; systemctl reset-failed {UNIT}; rm -rf {STANDIN_DIR}", check=False)


def requests_seen(lab_shell) -> list[list]:
    out = lab_shell.out("h1", f"cat {LOG}")  # this start's requests
    return [json.loads(line) for line in out.splitlines() if line.startswith("[")]


def run_place(lab, tmp_path: Path) -> subprocess.CompletedProcess:
    res = check_file(str(ROOT / "examples" / "exo.yaml"))
    svc = next(s for d in build_plan(res.context).deployments for s in d.services if s.port).to_dict()
    play = [{"hosts": "h1", "gather_facts": False,
             "vars": {"exo_service": svc, "exo_api": f"http://127.0.0.1:{PORT}",
                      "exo_place_retries": 2, "exo_place_delay_s": 1},
             "tasks": [{"ansible.builtin.include_role": {"name": "exo", "tasks_from": "place.yml"}}]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    env = {"ANSIBLE_NOCOLOR": "1", "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "ANSIBLE_ROLES_PATH": str(ROOT / "playbooks" / "roles"), "ANSIBLE_HOST_KEY_CHECKING": "False"}
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", lab["inventory"],
                           str(tmp_path / "play.yml")], capture_output=True, text=True, timeout=300, env=env)


def recap(out: str) -> dict:
    line = next(ln for ln in out.splitlines() if ln.startswith("h1") and "ok=" in ln)
    return {k: int(v) for k, v in (w.split("=") for w in line.split()[2:])}


def test_placement_runs_over_ssh_and_is_idempotent(lab, standin, tmp_path):
    first = run_place(lab, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first.stdout)["changed"] == 1
    posts = [r for r in requests_seen(standin) if r[0] == "POST"]
    assert posts == [["POST", "/place_instance", {"model_id": "mlx-community/Meta-Llama-3.1-405B-4bit",
                                                  "sharding": "Pipeline", "instance_meta": "MlxRing",
                                                  "min_nodes": 2}]]
    second = run_place(lab, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second.stdout)["changed"] == 0
    assert len([r for r in requests_seen(standin) if r[0] == "POST"]) == 1


def test_placement_that_does_not_fit_fails_clearly(lab, standin, tmp_path):
    start_standin(standin, "No cycles found with sufficient memory")
    r = run_place(lab, tmp_path)
    assert r.returncode != 0
    assert ("exo: deployment llama405 on h1: placing mlx-community/Meta-Llama-3.1-405B-4bit failed at "
            "GET /instance/placement (HTTP 400): No cycles found with sufficient memory") in r.stdout, r.stdout
    assert not [x for x in requests_seen(standin) if x[0] == "POST"]
