"""The ollama role's model task run for real (ansible-playbook, connection local) against a
labelled stand-in server (tests/contracts/ollama_standin.py): create body, idempotence, failure."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from .ollama_standin import StandIn

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"


@pytest.fixture
def standin():
    s = StandIn()
    yield s
    s.close()


def run_role(tmp_path: Path, port: int, gguf: Path | None, tag: str = "") -> subprocess.CompletedProcess:
    svc = {"name": "rigctl-chat", "deployment": "chat", "port": port, "bind": "127.0.0.1",
           "model_path": str(gguf) if gguf else None, "files": {"/etc/rigctl/ollama/chat/Modelfile":
                                                              f"FROM {gguf or tag}\nPARAMETER num_ctx 8192\n"}}
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ollama_service": svc, "ollama_api": f"http://127.0.0.1:{port}",
                      "rigctl_state_dir": str(tmp_path / "state"), "ollama_create_timeout_s": 30},
             "tasks": [{"ansible.builtin.include_tasks": str(ROOT / "playbooks/roles/ollama/tasks/model.yml")}]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    return subprocess.run([sys.executable, str(PLAYBOOK), "-i", "localhost,", str(tmp_path / "play.yml")],
                          capture_output=True, text=True, timeout=120,
                          env={"ANSIBLE_NOCOLOR": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})


def recap(out: str) -> dict:
    line = next(ln for ln in out.splitlines() if ln.startswith("localhost") and "ok=" in ln)
    return {k: int(v) for k, v in (w.split("=") for w in line.split()[2:])}


def test_creates_once_then_noop(tmp_path, standin):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    first = run_role(tmp_path, standin.port, gguf)
    assert first.returncode == 0, first.stdout + first.stderr
    creates = [b for m, p, b in standin.requests if p == "/api/create"]
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert creates == [{"model": "chat", "stream": False, "parameters": {"num_ctx": 8192},
                        "files": {"model.gguf": f"sha256:{digest}"}}]
    assert ("POST", f"/api/blobs/sha256:{digest}", 64) in standin.requests
    standin.requests.clear()
    second = run_role(tmp_path, standin.port, gguf)
    assert second.returncode == 0, second.stdout
    assert recap(second.stdout)["changed"] == 0
    assert not [p for m, p, b in standin.requests if m == "POST"]


def test_create_error_fails_with_message(tmp_path, standin):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + b"\1" * 60)
    standin.fail_create = "unsupported architecture 'frobnicator'"
    r = run_role(tmp_path, standin.port, gguf)
    assert r.returncode != 0
    assert "creating model chat failed: unsupported architecture 'frobnicator'" in r.stdout


def test_library_model_is_pulled_then_created_from_it(tmp_path, standin):
    r = run_role(tmp_path, standin.port, None, tag="llama3.3:70b")
    assert r.returncode == 0, r.stdout + r.stderr
    posts = [(p, b) for m, p, b in standin.requests if m == "POST"]
    assert posts == [("/api/pull", {"model": "llama3.3:70b", "stream": False}),
                     ("/api/create", {"model": "chat", "stream": False, "parameters": {"num_ctx": 8192},
                                      "from": "llama3.3:70b"})]
