"""Validate speed, and fleet-scale cost of validate, plan and render, each next to yamllint.

1. A generated 1,000-node fleet (8 GPUs each, one 2-node deployment) and the cold start
   of `rigctl validate` on a 2-GPU example (issue #2: fleet <= 1 s in-process; cold start <= 0.3 s).
2. Fleets of 100 to 10,000 nodes x 8 GPUs with ONE deployment per node (llama.cpp, vLLM,
   Ollama and TabbyAPI in turn): validate (load + rules), plan (the planner on the validated
   rig) and render (the pure render_project, no disk writes), in-process, best of N, beside
   `yamllint -d relaxed` on the same file (issue 10: 2x the nodes costs at most 2.5x the
   time; each stage at most half of yamllint's time at 1,000 and 10,000 nodes). These are
   CPU seconds (user + system, yamllint's as a child process): all four are single-threaded,
   so on an idle machine they equal wall time, and on a shared one (other jobs on the same
   cores) wall time measures the other jobs more than rigctl.

Run: .venv/bin/python bench/validate.py                    # everything (about 10 minutes on 2 cores)
     .venv/bin/python bench/validate.py --sizes 100 1000   # only these per-node fleets
     .venv/bin/python bench/validate.py --skip-cold        # no issue #2 section
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "examples" / "dual-3090-nvlink.yaml"
SIZES = (100, 1000, 2000, 5000, 10000)  # 1,000 -> 2,000 and 5,000 -> 10,000 show the growth

# One deployment per node, the stacks in turn; each fits a node of 8 H100s and validates clean.
PER_NODE = (
    ("llamacpp", ("model: llama-3.3-70b", "format: Q4_K_M", "context_tokens: 32768")),
    ("vllm", ("model: llama-3.3-70b", "format: fp8", "context_tokens: 16384", "tensor_parallel: 8",
              "source: {token: {env: HF_TOKEN}}")),  # a gated repository: vLLM downloads it with the token
    ("ollama", ("model: llama-3.3-70b", "format: Q4_K_M", "context_tokens: 8192")),
    ("tabbyapi", ("model: llama-3.3-70b", "format: exl3", "bits_per_weight: 4.0", "context_tokens: 16384")),
)


def fleet_yaml(n_nodes: int = 1000, gpus: int = 8, *, per_node: bool = False) -> str:
    """A fleet of ``n_nodes`` x ``gpus`` H100s: one 2-node vLLM deployment, or one deployment per node."""
    out = ["version: 1", "name: fleet", "fabric: {kind: infiniband, speed_gbps: 400, subnet: 10.8.0.0/16}", "nodes:"]
    for i in range(n_nodes):
        out += [f"  - name: node{i:05d}",
                f"    connection: {{address: 10.8.{i // 250}.{i % 250 + 1}, ssh_user: ops}}",  # 10.8.0.0/16: < 62,500 nodes
                "    cpu: {model: epyc-9654}",
                "    memory_gib: 1536",
                "    psu: {watts: 3000, rating: titanium, atx3: true, count: 4}",
                "    circuit: {volts: 415, amps: 63}",
                "    nics: [{name: ib0, speed_gbps: 400}]",
                "    storage: [{type: nvme, capacity_gb: 30000, mount: /models, models_dir: true}]",
                "    gpus:"]
        out += [f"      - {{id: gpu{g}, model: h100-sxm}}" for g in range(gpus)]
    out.append("serve:")
    if not per_node:
        out += ["  - name: llama405",
                "    model: llama-3.1-405b",
                "    format: fp8",
                "    context_tokens: 16384",
                "    stack: vllm",
                "    tensor_parallel: 8",
                "    pipeline_parallel: 2",
                "    placement: [{node: node00000}, {node: node00001}]",
                "    bind: 127.0.0.1",
                "    source: {token: {env: HF_TOKEN}}"]
        return "\n".join(out) + "\n"
    for i in range(n_nodes):
        stack, fields = PER_NODE[i % len(PER_NODE)]
        out += [f"  - name: d{i:05d}", *(f"    {f}" for f in fields), f"    stack: {stack}",
                f"    placement: [{{node: node{i:05d}}}]", "    bind: 127.0.0.1"]
    return "\n".join(out) + "\n"


def best_of(fn, n: int, clock=time.perf_counter) -> tuple[float, object]:
    """Shortest of ``n`` runs (the least disturbed by other work on the machine), and a result."""
    times, result = [], None
    for _ in range(n):
        gc.collect()
        t = clock()
        result = fn()
        times.append(clock() - t)
    return min(times), result


def children_cpu() -> float:
    """CPU seconds of the finished child processes so far (the yamllint runs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# A user's install has bytecode (pip compiles it on install); a sandbox that sets
# PYTHONDONTWRITEBYTECODE would make every run recompile the sources (~40 ms here).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, env=ENV)


def yamllint(path: Path) -> list[str]:
    return [str(BIN / "yamllint"), "-d", "relaxed", str(path)]


def issue2(d: str) -> None:
    from provisioner.check import check_file

    fleet = Path(d) / "fleet.yaml"
    fleet.write_text(fleet_yaml())
    size_mb = fleet.stat().st_size / 1e6
    check_file(str(fleet))  # warm imports and catalogs
    t_fleet, res = best_of(lambda: check_file(str(fleet)), 3)
    t_yl_fleet, _ = best_of(lambda: run(yamllint(fleet)), 2)
    t_cli_fleet, _ = best_of(lambda: run([str(BIN / "rigctl"), "validate", str(fleet)]), 2)

    t_cold = statistics.median([best_of(lambda: run([str(BIN / "rigctl"), "validate", str(EXAMPLE)]), 1)[0] for _ in range(5)])
    t_yl_cold = statistics.median([best_of(lambda: run(yamllint(EXAMPLE)), 1)[0] for _ in range(5)])
    t_python = statistics.median([best_of(lambda: run([sys.executable, "-c", "pass"]), 1)[0] for _ in range(5)])

    print(f"fleet: {size_mb:.2f} MB, 1,000 nodes x 8 GPUs, one 2-node deployment, {len(res.diagnostics)} findings")
    print(f"  validate in-process      {t_fleet:6.3f} s   (goal <= 1.0 s)   {'OK' if t_fleet <= 1.0 else 'MISSED'}")
    print(f"  rigctl validate (CLI)    {t_cli_fleet:6.3f} s")
    print(f"  yamllint                 {t_yl_fleet:6.3f} s   ratio rigctl/yamllint = {t_cli_fleet / t_yl_fleet:.2f}")
    print(f"cold start on {EXAMPLE.name} (median of 5)")
    print(f"  rigctl validate          {t_cold:6.3f} s   (goal <= 0.3 s)   {'OK' if t_cold <= 0.3 else 'MISSED'}")
    print(f"  yamllint                 {t_yl_cold:6.3f} s   ratio rigctl/yamllint = {t_cold / t_yl_cold:.2f}")
    print(f"  python -c pass           {t_python:6.3f} s   (interpreter floor)")


def fleet_stages(path: Path, reps: int) -> dict[str, float | int]:
    """Best-of-``reps`` seconds of validate, plan and render on one spec file, and what they produced."""
    from provisioner.check import check_file
    from provisioner.plan import build_plan
    from provisioner.render import InventoryOverrides, plan_addresses, render_project

    cpu = time.process_time
    t_val, res = best_of(lambda: check_file(str(path)), reps, cpu)
    if res.context is None or res.errors:
        raise SystemExit(f"{path}: the generated fleet does not validate: {res.diagnostics[:3]}")
    ctx, ov = res.context, InventoryOverrides()
    t_plan, plan = best_of(lambda: build_plan(ctx, plan_addresses(ctx, ov)), reps, cpu)
    t_render, files = best_of(lambda: render_project(ctx, plan, ov), reps, cpu)
    return {"validate": t_val, "plan": t_plan, "render": t_render, "findings": len(res.diagnostics),
            "services": sum(len(d.services) for d in plan.deployments), "files": len(files)}


def per_node_fleets(d: str, sizes: list[int]) -> None:
    from provisioner.spec import yamlload

    print("\nfleets x 8 GPUs, one deployment per node: CPU seconds, best of N; ratio = stage / yamllint")
    print(f"{'nodes':>6} {'MB':>6} {'N':>2} {'validate':>9} {'plan':>7} {'render':>7} {'yamllint':>9}"
          f" {'val/yl':>7} {'plan/yl':>8} {'rend/yl':>8}  findings services files")
    rows: dict[int, dict] = {}
    for n in sizes:
        path = Path(d) / f"fleet-{n}.yaml"
        path.write_text(fleet_yaml(n, per_node=True))
        size = path.stat().st_size
        if size > yamlload.MAX_FILE_BYTES:
            raise SystemExit(f"{n} nodes: {size / 1e6:.1f} MB is over the spec size cap "
                             f"({yamlload.MAX_FILE_BYTES / 1e6:.1f} MB)")
        reps = 3 if n <= 2000 else 1  # the same N on both sides of a 2x pair
        if n == sizes[0]:
            fleet_stages(path, 1)  # warm imports, catalogs and templates
        r = fleet_stages(path, reps)
        r["yamllint"], _ = best_of(lambda: run(yamllint(path)), 2 if n <= 2000 else 1, children_cpu)
        rows[n] = r
        yl = r["yamllint"]
        print(f"{n:>6} {size / 1e6:>6.2f} {reps:>2} {r['validate']:>9.3f} {r['plan']:>7.3f} {r['render']:>7.3f}"
              f" {yl:>9.3f} {r['validate'] / yl:>7.2f} {r['plan'] / yl:>8.2f} {r['render'] / yl:>8.2f}"
              f"  {r['findings']:>8} {r['services']:>8} {r['files']:>5}", flush=True)
        path.unlink()

    doubled = [(n, 2 * n) for n in sizes if 2 * n in rows]
    if doubled:
        print("growth for 2x the nodes (goal <= 2.5x):")
        for a, b in doubled:
            parts = []
            for stage in ("validate", "plan", "render", "yamllint"):
                g = rows[b][stage] / rows[a][stage]
                mark = "" if stage == "yamllint" or g <= 2.5 else " MISSED"
                parts.append(f"{stage} {g:.2f}x{mark}")
            print(f"  {a:>5} -> {b:>5}: " + ", ".join(parts))
    for n in (1000, 10000):
        if n in rows:
            worst = max(rows[n][s] / rows[n]["yamllint"] for s in ("validate", "plan", "render"))
            print(f"  {n:>5} nodes: slowest stage is {worst:.2f} of yamllint (goal <= 0.50)"
                  f"   {'OK' if worst <= 0.5 else 'MISSED'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES), help="per-node fleet sizes (nodes)")
    ap.add_argument("--skip-cold", action="store_true", help="skip the issue #2 fleet and cold-start section")
    args = ap.parse_args()

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "provisioner")], check=False, env=ENV)
    with tempfile.TemporaryDirectory() as d:
        if not args.skip_cold:
            issue2(d)
        if args.sizes:
            per_node_fleets(d, sorted(args.sizes))
    print(f"load: {os.getloadavg()[0]:.2f} (1-min load average; other work on the cores inflates all times)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
