"""`rigctl bench` against the real lab: examples/lab-cpu-rpc.yaml applied to h1 (llama-server)
and h2 (rpc-server). The lab model has random weights and runs on CPUs, so the figures are CPU
speeds; the plan's range may not hold them, and then the speed warning is what a user sees.
Also `plan --refresh` on these GPU-less hosts and `rigctl lab restart`.
"""

from __future__ import annotations

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
                          timeout=timeout, cwd=ROOT, env=os.environ.copy(), stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def applied(lab, lab_rig_env, lab_shell):
    r = rigctl("apply", str(SPEC), "-i", str(INVENTORY), "--yes")
    assert r.returncode == 0, f"apply failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    yield lab
    # leave the shared lab as found: later modules start their own servers on these ports
    # (llama-server first: stopping its RPC server first makes it abort)
    lab_shell.run("h1", "systemctl disable --now rigctl-tiny.service; systemctl reset-failed rigctl-tiny.service", check=False)
    lab_shell.run("h2", "systemctl disable --now rigctl-tiny-rpc.service; systemctl reset-failed rigctl-tiny-rpc.service", check=False)


def _figure(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in:\n{text}"
    return float(m.group(1).replace(",", ""))


def test_bench_prints_figures_beside_the_plan(applied):
    r = rigctl("bench", str(SPEC), "-i", str(INVENTORY), timeout=300)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert out.startswith("tiny: llamacpp-rpc rigctl-tiny on h1 (10.213.0.11:8080), model "), out
    # prompt lengths within the 512-token context (512 itself leaves no room for the answer)
    rows = re.findall(r"^\s+(\d+)(?: \(\d+\))?\s+([\d,.]+|-)\s+([\d,.]+)\s+([\d.]+)\s+(timings|wall)$", out, re.M)
    assert [int(x[0]) for x in rows] == [32, 128, 432], out
    assert all(float(x[2].replace(",", "")) > 0 for x in rows)
    assert _figure(r"time to first token: ([\d.]+) s", out) > 0
    assert _figure(r"1 concurrent \(parallel_sequences\): ([\d,.]+) tok/s in total", out) > 0
    decode = _figure(r"measured decode ([\d,.]+),", out)
    low, high = _figure(r"plan: decode ([\d.]+)-", out), _figure(r"plan: decode [\d.]+-([\d.]+) tok/s", out)
    outside = not low <= decode <= high
    assert ("warning bench-speed[decode]: tiny: measured decode" in out) == outside, out
    if outside:  # the finding sits on the deployment in the spec
        assert re.search(rf"{re.escape(str(SPEC))}:\d+:\d+: warning bench-speed\[decode\]", out), out
    assert "bench: [1/" in r.stderr  # progress, as plain lines without a terminal


def test_bench_soak_reports_percentiles_and_memory(applied):
    r = rigctl("bench", str(SPEC), "-i", str(INVENTORY), "--soak", "5s", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"soak (\d+) s: (\d+) requests in multi-turn chats \(up to 3 turns\), 0 errors; latency p50/p95/p99 "
                  r"([\d.]+)/([\d.]+)/([\d.]+) s", r.stdout)
    assert m, r.stdout
    assert int(m.group(2)) >= 3
    p50, p95, p99 = map(float, m.group(3, 4, 5))
    assert 0 < p50 <= p95 <= p99
    assert re.search(r"memory of rigctl-tiny \(RSS, pid \d+\): [\d,.]+ -> [\d,.]+ MiB", r.stdout), r.stdout
    assert "soak 5/5 s" in r.stderr


def test_plan_refresh_says_what_it_probed_on_gpu_less_hosts(applied):
    r = rigctl("plan", str(SPEC), "--refresh", "-i", str(INVENTORY), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    for host in ("h1", "h2"):
        assert re.search(rf"^rigctl plan --refresh: {host}: probed over SSH \(NVML\): no GPU found \(.+\)$",
                         r.stderr, re.M), r.stderr


def test_lab_restart_reboots_one_host_and_its_service_comes_back(applied, lab_shell):
    boot_before = lab_shell.out("h2", "cat /proc/sys/kernel/random/boot_id")
    r = subprocess.run([sys.executable, "-m", "provisioner", "lab", "restart", "h2"], capture_output=True,
                       text=True, timeout=300, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert "h2 restarted in" in r.stderr
    assert lab_shell.out("h2", "cat /proc/sys/kernel/random/boot_id") != boot_before
    assert lab_shell.out("h2", "systemctl is-active rigctl-tiny-rpc", check=False) == "active"
    assert lab_shell.out("h1", "systemctl is-active rigctl-tiny") == "active"  # the other host is untouched
