"""How close are rigctl's memory and speed estimates to published measurements?

For every row of bench/data/measurements.yaml this builds an in-memory rig (the
row's GPUs in one node, one deployment), runs the same sizing and speed model
that `rigctl plan` uses, and prints predicted vs measured weights (catalog
params x bits-per-weight against the real file size) and decode tokens/s.

The predicted decode speed is the geometric middle of the plan's range; a row
is "in range" when the measurement falls between the range's ends. Goals:
weights within 3 %, decode within +-30 % on at least 80 % of the rows.

    .venv/bin/python bench/accuracy.py [--json] [--rows ID,...]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from provisioner import sizing  # noqa: E402
from provisioner.plan.speed import estimate  # noqa: E402
from provisioner.rules.context import Context  # noqa: E402
from provisioner.spec import catalog as catalog_mod  # noqa: E402
from provisioner.spec.models import Rig  # noqa: E402

SPEED_TOLERANCE = 0.30
WEIGHTS_TOLERANCE = 0.03


def load_rows(path: Path = ROOT / "data" / "measurements.yaml") -> list[dict]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))["rows"]


def rig_for(row: dict, cat) -> Context:
    apple = all(cat.gpus.get(g).vendor == "apple" for g in row["gpus"])
    gpus = [{"id": f"gpu{i}", "model": g} for i, g in enumerate(row["gpus"])]
    dep = {"name": "bench", "model": row["model"], "format": row["format"], "stack": row["stack"],
           "context_tokens": max(row.get("context", 0), 2048), "placement": [{"node": "n0"}]}
    if row.get("tensor_parallel"):
        dep["tensor_parallel"] = row["tensor_parallel"]
    rig = Rig.model_validate({
        "version": 1, "name": "bench",
        "nodes": [{"name": "n0", "os": "macos" if apple else "ubuntu-22.04", "memory_gib": 512, "gpus": gpus}],
        "serve": [dep]})
    return Context(rig, cat)


def average_context(row: dict) -> int:
    """Tokens in the KV cache on average during the test (tgN from an empty context: N/2)."""
    test = row.get("test", "")
    if row.get("context"):
        return row["context"]
    if test.startswith("tg"):
        return max(1, int(test[2:]) // 2)
    return 256


def evaluate(row: dict, cat) -> dict:
    ctx = rig_for(row, cat)
    dep = ctx.rig.serve[0]
    fit = sizing.fit(ctx, dep)
    speed = estimate(ctx, dep, fit, context_tokens=average_context(row))
    out = {"id": row["id"], "gpus": _gpus(row["gpus"]), "model": f"{row['model']} {row['format']}",
           "stack": row["stack"], "measured_tps": row["decode_tps"], "source": row["source"]}
    w = sizing.weights_gib(ctx, dep)
    if row.get("measured_weights_gib"):
        out.update(pred_weights_gib=round(w, 2), measured_weights_gib=row["measured_weights_gib"],
                   weights_err=w / row["measured_weights_gib"] - 1)
    mid = math.sqrt(speed.decode_tps_low * speed.decode_tps_high)
    out.update(low=speed.decode_tps_low, high=speed.decode_tps_high, pred_tps=round(mid, 1),
               speed_err=mid / row["decode_tps"] - 1,
               in_range=speed.decode_tps_low <= row["decode_tps"] <= speed.decode_tps_high,
               bottleneck=speed.bottleneck)
    return out


def _gpus(ids: list[str]) -> str:
    counts: dict[str, int] = {}
    for g in ids:
        counts[g] = counts.get(g, 0) + 1
    return " + ".join(f"{n}x {g}" if n > 1 else g for g, n in counts.items())


def summary(results: list[dict]) -> dict:
    w = [abs(r["weights_err"]) for r in results if "weights_err" in r]
    s = [abs(r["speed_err"]) for r in results]
    worst = max(results, key=lambda r: abs(r["speed_err"]))
    return {
        "rows": len(results),
        "weights_rows": len(w),
        "weights_median_abs_err": statistics.median(w) if w else None,
        "weights_worst_abs_err": max(w) if w else None,
        "weights_within_3pct": sum(e <= WEIGHTS_TOLERANCE for e in w) / len(w) if w else None,
        "speed_median_abs_err": statistics.median(s),
        "speed_worst_abs_err": abs(worst["speed_err"]),
        "speed_worst_row": worst["id"],
        "speed_within_30pct": sum(e <= SPEED_TOLERANCE for e in s) / len(s),
        "speed_in_range": sum(r["in_range"] for r in results) / len(results),
    }


def print_table(results: list[dict], summ: dict) -> None:
    head = (f"{'row':<24} {'gpus':<22} {'model':<24} {'weights GiB pred/real':>22} {'decode tok/s range':>19} "
            f"{'mid':>6} {'real':>6} {'err':>6}")
    print(head)
    print("-" * len(head))
    for r in results:
        wcol = (f"{r['pred_weights_gib']:.2f}/{r['measured_weights_gib']:.2f} {r['weights_err']:+.1%}"
                if "weights_err" in r else "-")
        mark = "" if abs(r["speed_err"]) <= SPEED_TOLERANCE else " !"
        print(f"{r['id']:<24} {r['gpus'][:22]:<22} {r['model'][:24]:<24} {wcol:>22} "
              f"{r['low']:>8.1f}-{r['high']:<8.1f} {r['pred_tps']:>6.1f} {r['measured_tps']:>6.1f} "
              f"{r['speed_err']:>+6.0%}{mark}")
    print()
    print(f"weights: {summ['weights_rows']} rows, median error {summ['weights_median_abs_err']:.1%}, "
          f"worst {summ['weights_worst_abs_err']:.1%}, within 3 %: {summ['weights_within_3pct']:.0%}")
    print(f"decode:  {summ['rows']} rows, median error {summ['speed_median_abs_err']:.1%}, "
          f"worst {summ['speed_worst_abs_err']:.1%} ({summ['speed_worst_row']}), "
          f"within +-30 %: {summ['speed_within_30pct']:.0%}, "
          f"measurement inside the range: {summ['speed_in_range']:.0%}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print rows and summary as JSON")
    ap.add_argument("--rows", help="only these row ids (comma-separated)")
    args = ap.parse_args(argv)
    cat = catalog_mod.builtin().extended([ROOT / "data" / "catalog.yaml"])
    rows = load_rows()
    if args.rows:
        keep = set(args.rows.split(","))
        rows = [r for r in rows if r["id"] in keep]
    results = [evaluate(r, cat) for r in rows]
    summ = summary(results)
    if args.json:
        print(json.dumps({"rows": results, "summary": summ}, indent=2))
    else:
        print_table(results, summ)
    return 0


if __name__ == "__main__":
    sys.exit(main())
