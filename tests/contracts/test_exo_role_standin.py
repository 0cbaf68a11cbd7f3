"""The exo role's placement tasks (playbooks/roles/exo/tasks/place.yml) run for real
(ansible-playbook, connection local) against a labelled stand-in of exo's API
(tests/contracts/exo_standin.py): the request it sends, idempotence, and clear failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.check import check_file
from provisioner.plan import build_plan

from .exo_standin import StandIn

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"


@pytest.fixture
def standin():
    s = StandIn()
    yield s
    s.close()


def api_service() -> dict:
    """The rendered API service of examples/exo.yaml (its placement request included)."""
    res = check_file(str(ROOT / "examples" / "exo.yaml"))
    svc = next(s for d in build_plan(res.context).deployments for s in d.services if s.port)
    return svc.to_dict()


def run_place(tmp_path: Path, port: int, svc: dict) -> subprocess.CompletedProcess:
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"exo_service": svc, "exo_api": f"http://127.0.0.1:{port}", "exo_place_timeout_s": 10,
                      "exo_place_retries": 3, "exo_place_delay_s": 0},
             "tasks": [{"ansible.builtin.include_tasks": str(ROOT / "playbooks/roles/exo/tasks/place.yml")}]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    return subprocess.run([sys.executable, str(PLAYBOOK), "-i", "localhost,", str(tmp_path / "play.yml")],
                          capture_output=True, text=True, timeout=120,
                          env={"ANSIBLE_NOCOLOR": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})


def recap(out: str) -> dict:
    line = next(ln for ln in out.splitlines() if ln.startswith("localhost") and "ok=" in ln)
    return {k: int(v) for k, v in (w.split("=") for w in line.split()[2:])}


BODY = {"model_id": "mlx-community/Meta-Llama-3.1-405B-4bit", "sharding": "Pipeline",
        "instance_meta": "MlxRing", "min_nodes": 2}


def test_places_once_then_noop(tmp_path, standin):
    standin.no_fit_times = 2  # the second node is still joining: the fit check is retried
    first = run_place(tmp_path, standin.port, api_service())
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first.stdout)["changed"] == 1
    posts = [(p, b) for m, p, b in standin.requests if m == "POST"]
    assert posts == [("/place_instance", BODY)]
    checks = [q for m, p, q in standin.requests if p == "/instance/placement"]
    assert len(checks) == 3 and checks[-1] == {k: str(v) for k, v in BODY.items()}
    standin.requests.clear()
    second = run_place(tmp_path, standin.port, api_service())
    assert second.returncode == 0, second.stdout
    assert recap(second.stdout)["changed"] == 0
    assert [(m, p) for m, p, _ in standin.requests] == [("GET", "/state/instances")]


def test_placement_that_does_not_fit_fails_with_exos_reason(tmp_path, standin):
    standin.no_fit = "No cycles found with sufficient memory"
    r = run_place(tmp_path, standin.port, api_service())
    assert r.returncode != 0
    assert ("exo: deployment llama405 on localhost: placing mlx-community/Meta-Llama-3.1-405B-4bit failed"
            in r.stdout), r.stdout
    assert "failed at GET /instance/placement (HTTP 400): No cycles found with sufficient memory" in r.stdout
    assert not [p for m, p, _ in standin.requests if m == "POST"]


def test_refused_place_command_fails_with_exos_message(tmp_path, standin):
    standin.fail_place = "Failed to fetch model: 401 Unauthorized"
    r = run_place(tmp_path, standin.port, api_service())
    assert r.returncode != 0
    assert "failed at POST /place_instance (HTTP 500): Failed to fetch model: 401 Unauthorized" in r.stdout, r.stdout


def test_accepted_placement_that_never_appears_fails(tmp_path, standin):
    standin.drop_placements = True
    r = run_place(tmp_path, standin.port, api_service())
    assert r.returncode != 0
    assert "listed no instance of it in /state/instances" in r.stdout, r.stdout


def test_unreachable_api_fails_with_the_deployment_and_host(tmp_path, standin):
    port = standin.port
    standin.close()
    r = run_place(tmp_path, port, api_service())
    assert r.returncode != 0
    assert "exo: deployment llama405 on localhost: placing mlx-community/Meta-Llama-3.1-405B-4bit failed" in r.stdout
    assert "failed at GET /state/instances (no answer)" in r.stdout and "Connection refused" in r.stdout, r.stdout


def test_deployment_without_a_model_id_fails_before_any_request(tmp_path, standin):
    svc = api_service()
    svc["files"] = {}
    r = run_place(tmp_path, standin.port, svc)
    assert r.returncode != 0
    assert "exo: deployment llama405 on localhost: the plan names no exo model id" in r.stdout
    assert standin.requests == []


def test_role_main_places_from_the_rendered_host_vars(tmp_path, standin):
    """The whole role (tasks/main.yml) over the host_vars `rigctl render` writes for the API
    node (values tagged !unsafe, as rendered): no compose project for a native (macOS) service,
    darwin.yml skipped off Darwin, then the placement."""
    from provisioner.render import render_project
    from provisioner.render.prepare import prepare

    spec = tmp_path / "rig.yaml"
    spec.write_text((ROOT / "examples" / "exo.yaml").read_text().replace(
        "    bind: 127.0.0.1\n", f"    bind: 127.0.0.1\n    port: {standin.port}\n"))
    prep = prepare(str(spec))
    files = {f.path: f.content for f in render_project(prep.ctx, prep.plan, prep.overrides)}
    (tmp_path / "studio1.yml").write_text(files["inventory/host_vars/studio1.yml"])
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars_files": [str(tmp_path / "studio1.yml")],
             "vars": {"exo_place_retries": 2, "exo_place_delay_s": 0},
             "roles": [str(ROOT / "playbooks/roles/exo")]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    r = subprocess.run([sys.executable, str(PLAYBOOK), "-i", "localhost,", str(tmp_path / "play.yml")],
                       capture_output=True, text=True, timeout=120,
                       env={"ANSIBLE_NOCOLOR": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                            "ANSIBLE_ROLES_PATH": str(ROOT / "playbooks/roles")})
    assert r.returncode == 0, r.stdout + r.stderr
    assert [(p, b) for m, p, b in standin.requests if m == "POST"] == [("/place_instance", BODY)]
