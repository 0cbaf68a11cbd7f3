"""base/wait_service.yml run for real (ansible-playbook, connection local): a service that
never becomes healthy fails the host with a message naming the deployment, the service, the
host and what was waited for, with the tail of its journal; a healthy one passes."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "playbooks" / "roles" / "base" / "tasks" / "wait_service.yml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(tmp_path: Path, port: int) -> subprocess.CompletedProcess:
    svc = {"name": "rigctl-waittest-absent", "deployment": "waittest", "port": port, "bind": "127.0.0.1",
           "health_path": "/health"}
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"rigctl_wait_service": svc, "rigctl_unit_wait_s": 4, "rigctl_log_dir": str(tmp_path)},
             "tasks": [{"ansible.builtin.import_tasks": str(TASKS)}]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    env = {"ANSIBLE_NOCOLOR": "1", "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, str(ROOT / ".venv/bin/ansible-playbook"), "-i", "localhost,",
                           str(tmp_path / "play.yml")], capture_output=True, text=True, timeout=180, env=env)


@pytest.mark.skipif(shutil.which("journalctl") is None, reason="needs journalctl (Linux)")
def test_unhealthy_service_fails_with_its_name_and_log(tmp_path):
    port = free_port()  # nothing listens there
    r = run(tmp_path, port)
    assert r.returncode != 0, r.stdout[-3000:]
    assert ("deployment waittest: service rigctl-waittest-absent on localhost did not become healthy within 4 s "
            f"(GET /health on port {port}); last 20 log lines:") in " ".join(r.stdout.split()), r.stdout[-3000:]


def test_healthy_service_passes(tmp_path):
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        r = run(tmp_path, srv.server_address[1])
    finally:
        srv.shutdown()
    assert r.returncode == 0, r.stdout[-3000:]
    assert "did not become healthy" not in r.stdout
