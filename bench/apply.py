"""No-op re-apply timings on the lab (needs `lab.sh up 2`, root, the llama.cpp build).

  python bench/apply.py [--runs N] [--spec examples/lab-cpu-rpc.yaml] [--inventory inventories/lab]

Prints, as medians over N runs after one converging apply:
  tuned   ansible-playbook on the rendered tree with rigctl's ansible.cfg (pipelining,
          ControlPersist, smart gathering + fact cache, the rigctl_linear strategy on Mitogen)
  linear  the same ansible.cfg with ANSIBLE_STRATEGY=linear (everything but Mitogen), to
          show what each part is worth
  stock   the same playbook and inventory with Ansible's defaults (empty ansible.cfg)
  rigctl  `rigctl apply --yes` end to end (validate, plan, render, lock, runner, state)
  runner  ansible_runner.run() on the rendered tree, as rigctl calls it, without rigctl's
          own work: splits the overhead into ansible-runner's (its pty and the awx_display
          event callback) and rigctl's (validate, plan, render, write, state)
  own     `rigctl apply` with the runner call stubbed out: rigctl's own work in seconds
and the ratios stock/tuned (goal >= 2x) and rigctl/tuned - 1 (overhead, goal <= 10 %).
The bytecode of rigctl is compiled first, as `pip install` does (this sandbox sets
PYTHONDONTWRITEBYTECODE, which would make every rigctl run recompile its sources).
Runs are interleaved so background load hits all three alike; the best runs are printed
too (on a shared machine they show the intrinsic cost best).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# ansible-runner alone, as provisioner.execute calls it (same options), in a fresh process
RUNNER = """
import sys
from pathlib import Path
import ansible_runner
from provisioner.execute.options import RunnerOptions
data, project = Path(sys.argv[1]), Path(sys.argv[2])
data.mkdir()
opts = RunnerOptions(private_data_dir=data, project_dir=project, inventory=project / "inventory" / "hosts.yml")
sys.exit(ansible_runner.run(event_handler=lambda e: False, **opts.to_kwargs()).rc)
"""

# rigctl apply with the ansible-runner call replaced by an instant success: rigctl's own
# work (imports, validate, plan, render, write, lock, state) in a fresh process
OWN = """
import sys
import provisioner.execute as ex
ex._run = lambda opts, on_update: ex.ApplyResult("ok", 0)
from provisioner.cli import main
sys.exit(main(sys.argv[1:]))
"""


def timed(cmd: list[str], env: dict, cwd: Path | None = None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed (rc {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}")
    if "changed=0" not in r.stdout and "ok=" in r.stdout and "rigctl" not in cmd[0]:
        print(f"  warning: not a no-op run:\n{[l for l in r.stdout.splitlines() if 'ok=' in l]}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--spec", default=str(ROOT / "examples/lab-cpu-rpc.yaml"))
    ap.add_argument("--inventory", default=str(ROOT / "inventories/lab"))
    args = ap.parse_args()
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", ANSIBLE_NOCOLOR="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "provisioner")], check=False, env=env,
                   stdout=subprocess.DEVNULL)
    env.setdefault("RIGCTL_LAB_API_KEY", "bench-key")
    rigctl = [str(BIN / "rigctl"), "apply", args.spec, "-i", args.inventory, "--yes"]
    print("converging once:", " ".join(rigctl))
    timed(rigctl, env)
    with tempfile.TemporaryDirectory(prefix="rigctl-bench-") as tmp:
        project = Path(tmp) / "project"
        subprocess.run([str(BIN / "rigctl"), "render", args.spec, "-o", str(project), "-i", args.inventory, "-q"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        empty = Path(tmp) / "stock.cfg"
        empty.write_text("[defaults]\n")
        playbook = [str(BIN / "ansible-playbook"), "-i", "inventory/hosts.yml", "site.yml"]
        tuned_env = dict(env, ANSIBLE_CONFIG=str(project / "ansible.cfg"))
        linear_env = dict(tuned_env, ANSIBLE_STRATEGY="linear")
        stock_env = dict(env, ANSIBLE_CONFIG=str(empty))
        timed(playbook, tuned_env, project)  # fills the fact cache, opens the control masters
        timed(playbook, stock_env, project)
        res: dict[str, list[float]] = {"tuned": [], "linear": [], "stock": [], "rigctl": [], "runner": [],
                                       "own": []}
        for i in range(args.runs):  # interleaved, so load changes hit all alike
            res["tuned"].append(timed(playbook, tuned_env, project))
            res["rigctl"].append(timed(rigctl, env))
            res["runner"].append(timed([sys.executable, "-c", RUNNER, str(Path(tmp) / f"runner-{i}"), str(project)],
                                       dict(env, PYTHONPATH=str(ROOT))))
            res["own"].append(timed([sys.executable, "-c", OWN, *rigctl[1:]], dict(env, PYTHONPATH=str(ROOT))))
            res["stock"].append(timed(playbook, stock_env, project))
            res["linear"].append(timed(playbook, linear_env, project))
            print(f"  run {i + 1}: " + "  ".join(f"{k} {v[-1]:.2f} s" for k, v in res.items()), flush=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    best = {k: min(v) for k, v in res.items()}
    print(f"no-op apply on 2 lab hosts, {args.runs} runs (median / best):")
    for k, what in (("tuned", "rigctl's ansible.cfg"), ("linear", "  ... with ANSIBLE_STRATEGY=linear (no Mitogen)"),
                    ("stock", "Ansible's defaults"), ("runner", "ansible-runner on the rendered tree"),
                    ("rigctl", "rigctl apply, end to end"), ("own", "rigctl apply, runner stubbed (own work)")):
        print(f"  {what:<48} {med[k]:6.2f} s  {best[k]:6.2f} s")
    speedup = med["stock"] / med["tuned"]
    print(f"tuned vs stock: {speedup:.2f}x faster (goal >= 2x) {'OK' if speedup >= 2 else 'MISSED'}; "
          f"without Mitogen {med['stock'] / med['linear']:.2f}x")
    # each rigctl run is paired with the tuned run just before it: load drifts cancel
    paired = statistics.median(r / t for r, t in zip(res["rigctl"], res["tuned"])) - 1
    overhead = med["rigctl"] / med["tuned"] - 1
    print(f"rigctl overhead vs raw ansible-playbook: {overhead * 100:+.1f} % of medians, {paired * 100:+.1f} % "
          f"median of paired runs, {best['rigctl'] - best['tuned']:+.2f} s best to best "
          f"(goal <= 10 %) {'OK' if max(overhead, paired) <= 0.10 else 'MISSED'}")
    runner_part = statistics.median(r / t for r, t in zip(res["runner"], res["tuned"])) - 1
    print(f"  of which ansible-runner (pty + event callback): {runner_part * 100:+.1f} %, "
          f"rigctl's own work: {(paired - runner_part) * 100:+.1f} % (medians of paired runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
