"""Validate speed: a generated 1,000-node fleet (8 GPUs each) and the cold start
of `rigctl validate` on a 2-GPU example, each next to yamllint on the same file.

Goals (issue #2): fleet <= 1 s in-process; cold start <= 0.3 s.
Run: .venv/bin/python bench/validate.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "examples" / "dual-3090-nvlink.yaml"


def fleet_yaml(n_nodes: int = 1000, gpus: int = 8) -> str:
    out = ["version: 1", "name: fleet", "fabric: {kind: infiniband, speed_gbps: 400, subnet: 10.8.0.0/16}", "nodes:"]
    for i in range(n_nodes):
        out += [f"  - name: node{i:04d}",
                f"    connection: {{address: 10.8.{i // 250}.{i % 250 + 1}, ssh_user: ops}}",
                "    cpu: {model: epyc-9654}",
                "    memory_gib: 1536",
                "    psu: {watts: 3000, rating: titanium, atx3: true, count: 4}",
                "    circuit: {volts: 415, amps: 63}",
                "    nics: [{name: ib0, speed_gbps: 400}]",
                "    storage: [{type: nvme, capacity_gb: 30000, mount: /models, models_dir: true}]",
                "    gpus:"]
        out += [f"      - {{id: gpu{g}, model: h100-sxm}}" for g in range(gpus)]
    out += ["serve:",
            "  - name: llama405",
            "    model: llama-3.1-405b",
            "    format: fp8",
            "    context_tokens: 16384",
            "    stack: vllm",
            "    tensor_parallel: 8",
            "    pipeline_parallel: 2",
            "    placement: [{node: node0000}, {node: node0001}]",
            "    bind: 127.0.0.1"]
    return "\n".join(out) + "\n"


def best_of(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


# A user's install has bytecode (pip compiles it on install); a sandbox that sets
# PYTHONDONTWRITEBYTECODE would make every run recompile the sources (~40 ms here).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, env=ENV)


def main() -> int:
    from provisioner.check import check_file

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "provisioner")], check=False, env=ENV)
    with tempfile.TemporaryDirectory() as d:
        fleet = Path(d) / "fleet.yaml"
        fleet.write_text(fleet_yaml())
        size_mb = fleet.stat().st_size / 1e6
        check_file(str(fleet))  # warm imports and catalogs
        res = check_file(str(fleet))
        t_fleet = best_of(lambda: check_file(str(fleet)), 3)
        yamllint = [str(BIN / "yamllint"), "-d", "relaxed", str(fleet)]
        t_yl_fleet = best_of(lambda: run(yamllint), 2)
        t_cli_fleet = best_of(lambda: run([str(BIN / "rigctl"), "validate", str(fleet)]), 2)

    t_cold = statistics.median([best_of(lambda: run([str(BIN / "rigctl"), "validate", str(EXAMPLE)]), 1) for _ in range(5)])
    t_yl_cold = statistics.median([best_of(lambda: run([str(BIN / "yamllint"), "-d", "relaxed", str(EXAMPLE)]), 1) for _ in range(5)])
    t_python = statistics.median([best_of(lambda: run([sys.executable, "-c", "pass"]), 1) for _ in range(5)])

    print(f"fleet: {size_mb:.2f} MB, 1,000 nodes x 8 GPUs, {len(res.diagnostics)} findings")
    print(f"  validate in-process      {t_fleet:6.3f} s   (goal <= 1.0 s)   {'OK' if t_fleet <= 1.0 else 'MISSED'}")
    print(f"  rigctl validate (CLI)    {t_cli_fleet:6.3f} s")
    print(f"  yamllint                 {t_yl_fleet:6.3f} s   ratio rigctl/yamllint = {t_cli_fleet / t_yl_fleet:.2f}")
    print(f"cold start on {EXAMPLE.name} (median of 5)")
    print(f"  rigctl validate          {t_cold:6.3f} s   (goal <= 0.3 s)   {'OK' if t_cold <= 0.3 else 'MISSED'}")
    print(f"  yamllint                 {t_yl_cold:6.3f} s   ratio rigctl/yamllint = {t_cold / t_yl_cold:.2f}")
    print(f"  python -c pass           {t_python:6.3f} s   (interpreter floor)")
    print(f"  load: {os.getloadavg()[0]:.2f} (1-min load average; other work on the 2 cores inflates all times)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
