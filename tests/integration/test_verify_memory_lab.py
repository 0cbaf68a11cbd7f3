"""`rigctl verify`'s plan-vs-engine memory comparison against the real lab.

examples/lab-cpu-rpc.yaml (moved onto this session's lab net) is applied: llama-server on
h1 loads the tiny GGUF through the rpc-server on h2 and logs its per-device buffers to
h1's journal. verify reads them over SSH, prints the table and passes; verified again with
a spec whose model entry is wrong (a head size 512x too big: the plan's KV cache on h2 is
off), it fails with a verify-memory finding at the model. The module destroys the rig
at the end, leaving the lab as it found it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "examples" / "lab-cpu-rpc.yaml"
INVENTORY = ROOT / "inventories" / "lab"


def rigctl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "provisioner", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=os.environ.copy())


@pytest.fixture(scope="module")
def rig(lab, lab_rig_env, tmp_path_factory):
    """The example and the lab inventory on this lab's net (LAB_NET), applied; destroyed afterwards."""
    d = tmp_path_factory.mktemp("memory")
    net = lab["addresses"]["h1"].rsplit(".", 1)[0]
    spec = d / "rig.yaml"
    spec.write_text(SPEC.read_text().replace("10.213.0.", f"{net}."))
    (d / "inv").mkdir()
    (d / "inv" / "hosts.yml").write_text((INVENTORY / "hosts.yml").read_text().replace("10.213.0.", f"{net}."))
    r = rigctl("apply", str(spec), "-i", str(d / "inv"), "--yes")
    assert r.returncode == 0, f"apply failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    try:
        yield {"spec": spec, "inv": d / "inv", "net": net, "dir": d}
    finally:
        r = rigctl("destroy", str(spec), "-i", str(d / "inv"), "--yes")
        assert r.returncode == 0, f"destroy failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"


def verify(rig, spec: Path, *extra: str) -> subprocess.CompletedProcess:
    return rigctl("verify", str(spec), "-i", str(rig["inv"]), *extra, timeout=300)


def table_row(stderr: str, device: str) -> list[str]:
    line = next(ln for ln in stderr.splitlines() if ln.strip().startswith(device + " "))
    return re.split(r"\s{2,}", line.strip())


def test_verify_prints_plan_vs_engine_per_device_and_passes(rig, lab_shell):
    # the lines come from the engine: they are in h1's journal of the unit
    journal = lab_shell.out("h1", "journalctl -u rigctl-tiny -o cat --no-pager | grep 'buffer size' | tail -5")
    assert f"RPC0[{rig['net']}.12:50052] model buffer size" in journal, journal
    r = verify(rig, rig["spec"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "no problems found\n"
    assert "memory of tiny: plan vs llama.cpp at load (MiB; tolerance max(25%, 64 MiB))" in r.stderr, r.stderr
    # columns: device, engine device, plan weights, engine weights, plan KV, engine KV, engine compute, verdict
    row = table_row(r.stderr, "h2/cpu")
    assert row[1] == f"RPC0[{rig['net']}.12:50052]" and row[-1] == "ok", row
    assert float(row[3]) > 0 and float(row[5]) == 0.25, row  # 512 tokens x 2 layers x 2 x 64 x f16
    host = table_row(r.stderr, "host")  # h1's own memory: token embeddings, CPU compute buffer
    assert host[2] == "-" and host[-1] == "not planned", host


def test_wrong_model_entry_fails_with_located_finding(rig):
    text = rig["spec"].read_text()
    assert "head_dim: 16\n" in text
    wrong = rig["dir"] / "wrong.yaml"
    wrong.write_text(text.replace("head_dim: 16\n", "head_dim: 8192\n"))
    r = verify(rig, wrong, "--format", "json")
    assert r.returncode == 1, r.stdout + r.stderr
    diags = json.loads(r.stdout)["diagnostics"]
    assert [d["rule"] for d in diags] == ["verify-memory[h2/cpu]"], diags
    d = diags[0]
    assert d["severity"] == "error" and d["path"] == ["serve", 0, "model"]
    line = next(i for i, ln in enumerate(wrong.read_text().splitlines(), 1) if ln.strip() == "model:")
    assert d["file"] == str(wrong) and d["line"] in (line, line + 1), d  # the key, or its mapping's first line
    assert f"on h2/cpu (RPC0[{rig['net']}.12:50052]) llama.cpp loaded KV cache 0.25 MiB, planned 128 MiB" \
        in d["message"], d["message"]
    assert "OFF: kv" in table_row(r.stderr, "h2/cpu")[-1]
