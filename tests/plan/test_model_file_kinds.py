"""A model_file that is a FIFO or a device is refused, located, without blocking (issue #10).

Reading a FIFO's GGUF header would block until a writer appears; /dev/zero would be mapped
without end; apply would hand either to Ansible's copy. plan and render say so at
serve[i].model_file instead. Run as subprocesses with a timeout, so a hang fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RIGCTL = Path(sys.executable).parent / "rigctl"


def spec_naming(model_file: str, tmp_path: Path) -> Path:
    text = (ROOT / "examples" / "lab-cpu-rpc.yaml").read_text()
    lines = [f"    model_file: {model_file}" if ln.startswith("    model_file:") else ln for ln in text.splitlines()]
    spec = tmp_path / "rig.yaml"
    spec.write_text("\n".join(lines) + "\n")
    return spec


@pytest.mark.parametrize("kind", ["fifo", "device"])
@pytest.mark.parametrize("command", ["plan", "render"])
def test_a_model_file_that_is_no_regular_file_is_a_located_error(kind, command, tmp_path):
    if kind == "fifo":
        target = tmp_path / "model.gguf"
        os.mkfifo(target)
    else:
        target = Path("/dev/zero")
    spec = spec_naming(str(target), tmp_path)
    args = [str(RIGCTL), command, str(spec)] + (["-o", str(tmp_path / "out")] if command == "render" else [])
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r.stderr
    line = next(ln for ln in (r.stdout + r.stderr).splitlines() if "error model-file" in ln)
    assert line.startswith(f"{spec}:") and "is not a regular file" in line
    assert not (tmp_path / "out").exists()
