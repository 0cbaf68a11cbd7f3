"""`rigctl report` and `rigctl init -i` against the real lab: examples/lab-cpu-rpc.yaml
applied to h1 (llama-server) and h2 (rpc-server), as in test_verify_lab.py.

Applying is idempotent, so this module applies the example itself at the start even
when another module of the session already did.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "examples" / "lab-cpu-rpc.yaml"
INVENTORY = ROOT / "inventories" / "lab"


def rigctl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "provisioner", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=os.environ.copy())


@pytest.fixture(scope="module")
def applied(lab, lab_rig_env, lab_shell):
    r = rigctl("apply", str(SPEC), "-i", str(INVENTORY), "--yes")
    assert r.returncode == 0, f"apply failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    yield lab_rig_env  # the API key the services were deployed with
    # leave the shared lab as found: later modules start their own servers on these ports
    # (llama-server first: stopping its RPC server first makes it abort)
    lab_shell.run("h1", "systemctl disable --now rigctl-tiny.service; systemctl reset-failed rigctl-tiny.service", check=False)
    lab_shell.run("h2", "systemctl disable --now rigctl-tiny-rpc.service; systemctl reset-failed rigctl-tiny-rpc.service", check=False)


def test_report_archive_has_logs_and_no_api_key(applied, tmp_path):
    key = applied
    out = tmp_path / "report.tar.gz"
    r = rigctl("report", str(SPEC), "-i", str(INVENTORY), "-o", str(out), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"wrote {out} (")
    with tarfile.open(out) as tar:
        members = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    for name in ("MANIFEST.txt", "spec/lab-cpu-rpc.yaml", "plan.txt", "plan.json", "apply/last-run.txt",
                 "state.json", "engines.txt", "hosts/h1/gpu.json", "hosts/h2/gpu.json",
                 "hosts/h1/rigctl-tiny.log", "hosts/h2/rigctl-tiny-rpc.log"):
        assert name in members, sorted(members)
    assert b"status successful" in members["apply/last-run.txt"]
    assert b"llamacpp-rpc" in members["engines.txt"]
    assert b"NVML" in members["hosts/h1/gpu.json"]  # no GPU in the lab: the probe says why
    log = members["hosts/h1/rigctl-tiny.log"].decode()
    assert log.startswith("$ journalctl -u rigctl-tiny") and "exit 0" in log.splitlines()[0]
    assert len(log.splitlines()) > 2, log
    blob = b"".join(members.values())
    assert key.encode() not in blob, "the API key leaked into the report"


def test_init_over_ssh_writes_the_lab_hosts(applied, tmp_path):
    out = tmp_path / "rig.yaml"
    r = rigctl("init", "-i", str(INVENTORY), "-o", str(out), "--name", "lab", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    text = out.read_text()
    assert "  - name: h1\n" in text and "  - name: h2\n" in text
    assert "connection: {address: 10.213.0.11, ssh_user: root}" in text
    assert "os: debian-12  # /etc/os-release: Debian" in text
    assert "gpus: []  # no GPU facts: " in text and "h1: no GPUs (" in r.stderr
    # answer nothing: a GPU-less starter spec is already valid (the fabric read from host0 or asked)
    v = rigctl("validate", str(out))
    assert v.returncode == 0, v.stdout + v.stderr + text
