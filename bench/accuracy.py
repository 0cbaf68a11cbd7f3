"""How close are rigctl's verdicts, memory and speed estimates to published measurements?

For every row of bench/data/measurements.yaml this builds an in-memory rig (the
row's GPUs in one node, or the row's nodes for RPC rows; one deployment), runs
the same sizing and speed model that `rigctl plan` uses, and compares:

  verdict  the plan's fits / does-not-fit at the row's context against the
           published outcome (a measured run at full offload fits; an OOM report
           does not)
  weights  catalog params x bits-per-weight against the real file size
  decode   the geometric middle of the plan's decode range against the measured
           single-stream tokens/s (goal: within +-30 %)
  prefill  the middle of the prompt range for the row's prompt length against
           the measured prompt tokens/s (goal: within +-50 %)

The speed model's efficiencies are fitted on these rows (bench/fit.py). So the
figures are printed twice: in-sample (the shipped data/efficiency.yaml, fitted on
every row) and held-out (leave one GPU out: the rows of each GPU model are
predicted by a fit on the rows of all the other GPUs, so the held-out rows were
never seen by the fit that predicts them). Verdicts come from the memory model,
which nothing here fits: their in-sample and held-out figures are the same rows.
Rows whose GPU, model or format the catalog lacks are counted and skipped.

    .venv/bin/python bench/accuracy.py [--json] [--rows ID,...] [--no-heldout]
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
from provisioner.plan import speed as speed_mod  # noqa: E402
from provisioner.plan.speed import estimate  # noqa: E402
from provisioner.rules.context import Context  # noqa: E402
from provisioner.spec import catalog as catalog_mod  # noqa: E402
from provisioner.spec.models import Rig  # noqa: E402

DECODE_TOLERANCE = 0.30
PREFILL_TOLERANCE = 0.50
WEIGHTS_TOLERANCE = 0.03
GOALS = {"verdict": 0.95, "decode": 0.80, "prefill": 0.80}


def load_rows(path: Path = ROOT / "data" / "measurements.yaml") -> list[dict]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))["rows"]


def load_catalog():
    return catalog_mod.builtin().extended([ROOT / "data" / "catalog.yaml"])


def missing(row: dict, cat) -> str | None:
    """Why the catalog cannot run this row (None: it can)."""
    for g in row_gpus(row):
        if cat.gpus.get(g) is None:
            return f"GPU {g}"
    if cat.models.get(row["model"]) is None:
        return f"model {row['model']}"
    if cat.formats.get(row["format"]) is None:
        return f"format {row['format']}"
    return None


def row_nodes(row: dict) -> list[dict]:
    return row.get("nodes") or [{"gpus": row["gpus"], **({"cpu": row["cpu"]} if row.get("cpu") else {})}]


def row_gpus(row: dict) -> list[str]:
    return [g for n in row_nodes(row) for g in n.get("gpus", [])]


def rig_for(row: dict, cat) -> Context:
    nodes, placement = [], []
    for i, n in enumerate(row_nodes(row)):
        ids = n.get("gpus", [])
        apple = bool(ids) and all(cat.gpus.get(g).vendor == "apple" for g in ids)
        node = {"name": f"n{i}", "os": "macos" if apple else "ubuntu-22.04", "memory_gib": n.get("memory_gib", 512),
                "gpus": [{"id": f"gpu{j}", "model": g} for j, g in enumerate(ids)]}
        if n.get("cpu"):
            node["cpu"] = {"model": n["cpu"]}
        nodes.append(node)
        placement.append({"node": f"n{i}"} if ids else {"node": f"n{i}", "gpus": []})
    dep = {"name": "bench", "model": row["model"], "format": row["format"], "stack": row["stack"],
           "context_tokens": max(row.get("context", 0), 2048), "placement": placement}
    for key in ("tensor_parallel", "extra_args"):
        if row.get(key):
            dep[key] = row[key]
    rig = {"version": 1, "name": "bench", "nodes": nodes, "serve": [dep]}
    if len(nodes) > 1:
        rig["fabric"] = {"kind": "ethernet", "speed_gbps": row.get("fabric_gbps", 1), "subnet": "10.0.0.0/24"}
        if row.get("fabric_latency_us"):
            rig["fabric"]["latency_us"] = row["fabric_latency_us"]
    return Context(Rig.model_validate(rig), cat)


def average_context(row: dict) -> int:
    """Tokens in the KV cache on average during the test (tgN from an empty context: N/2)."""
    test = row.get("test", "")
    if row.get("context"):
        return row["context"]
    if test.startswith("tg"):
        return max(1, int(test[2:]) // 2)
    return 256


def prefill_tokens(row: dict) -> int:
    """Prompt length of the prefill test (ppN), 512 when the row does not say."""
    test = str(row.get("prefill_test", "pp512"))
    return int(test[2:]) if test.startswith("pp") and test[2:].isdigit() else 512


class Prepared:
    """A row with its rig, deployment and placement built once (the fitter re-predicts often)."""

    def __init__(self, row: dict, cat):
        self.row = row
        self.ctx = rig_for(row, cat)
        self.dep = self.ctx.rig.serve[0]
        self.fit = sizing.fit(self.ctx, self.dep)
        verdict_ctx = row.get("context") or 2048
        self.verdict_fit = sizing.fit(self.ctx, self.dep, context_tokens=verdict_ctx)

    def decode_mid(self) -> float | None:
        if not self.row.get("decode_tps") or self.fit is None:
            return None
        terms = speed_mod.decode_terms(self.ctx, self.dep, self.fit, average_context(self.row))
        if not terms:
            return None
        return 1 / math.sqrt(sum(t.fast_s for t in terms) * sum(t.slow_s for t in terms))

    def prefill_mid(self) -> float | None:
        if not self.row.get("prefill_tps") or self.fit is None:
            return None
        lo, hi = speed_mod.prompt_range(self.ctx, self.dep, self.fit, prefill_tokens(self.row))
        return math.sqrt(lo * hi) if lo and hi else None


def outcome(row: dict) -> str | None:
    """fits | oom: a measured full-offload run fits; an OOM report says so."""
    if row.get("outcome"):
        return row["outcome"]
    return "fits" if row.get("decode_tps") or row.get("prefill_tps") else None


def evaluate(p: Prepared) -> dict:
    row, ctx, dep, fit = p.row, p.ctx, p.dep, p.fit
    out = {"id": row["id"], "gpus": _gpus(row_gpus(row)), "model": f"{row['model']} {row['format']}",
           "stack": row["stack"], "source": row["source"]}
    want = outcome(row)
    if want:
        got = "fits" if p.verdict_fit is not None and p.verdict_fit.fits else "oom"
        out.update(outcome=want, pred_outcome=got, verdict_ok=got == want)
    w = sizing.weights_gib(ctx, dep)
    if row.get("measured_weights_gib") and w:
        out.update(pred_weights_gib=round(w, 2), measured_weights_gib=row["measured_weights_gib"],
                   weights_err=w / row["measured_weights_gib"] - 1)
    if row.get("decode_tps") and fit is not None:
        speed = estimate(ctx, dep, fit, context_tokens=average_context(row))
        mid = math.sqrt(speed.decode_tps_low * speed.decode_tps_high)
        out.update(measured_tps=row["decode_tps"], low=speed.decode_tps_low, high=speed.decode_tps_high,
                   pred_tps=round(mid, 1), speed_err=mid / row["decode_tps"] - 1,
                   in_range=speed.decode_tps_low <= row["decode_tps"] <= speed.decode_tps_high,
                   bottleneck=speed.bottleneck)
    if row.get("decode_tps") and "speed_err" not in out:
        out.update(measured_tps=row["decode_tps"], speed_err=math.inf, no_estimate="decode")
    if row.get("prefill_tps"):
        pre = p.prefill_mid()
        # a row the plan gives no prompt estimate for counts as a miss, not as a row less
        out.update(measured_prefill=row["prefill_tps"], pred_prefill=round(pre) if pre else None,
                   prefill_err=pre / row["prefill_tps"] - 1 if pre else math.inf)
    return out


def _gpus(ids: list[str]) -> str:
    counts: dict[str, int] = {}
    for g in ids:
        counts[g] = counts.get(g, 0) + 1
    return " + ".join(f"{n}x {g}" if n > 1 else g for g, n in counts.items())


def score(results: list[dict]) -> dict:
    """Share of rows right: verdicts, decode within +-30 %, prefill within +-50 %, with row counts."""
    v = [r["verdict_ok"] for r in results if "verdict_ok" in r]
    d = [abs(r["speed_err"]) for r in results if "speed_err" in r]  # inf: no estimate (a miss)
    p = [abs(r["prefill_err"]) for r in results if "prefill_err" in r]
    return {
        "verdict_rows": len(v), "verdict_right": sum(v) / len(v) if v else None,
        "decode_rows": len(d), "decode_within_30pct": sum(e <= DECODE_TOLERANCE for e in d) / len(d) if d else None,
        "decode_median_abs_err": statistics.median(d) if d else None,
        "prefill_rows": len(p), "prefill_within_50pct": sum(e <= PREFILL_TOLERANCE for e in p) / len(p) if p else None,
        "prefill_median_abs_err": statistics.median(p) if p else None,
    }


def summary(results: list[dict]) -> dict:
    w = [abs(r["weights_err"]) for r in results if "weights_err" in r]
    s = [r for r in results if "speed_err" in r and "low" in r]
    worst = max(s, key=lambda r: abs(r["speed_err"])) if s else None
    out = score(results)
    out.update({
        "rows": len(results),
        "weights_rows": len(w),
        "weights_median_abs_err": statistics.median(w) if w else None,
        "weights_worst_abs_err": max(w) if w else None,
        "weights_within_3pct": sum(e <= WEIGHTS_TOLERANCE for e in w) / len(w) if w else None,
        "speed_worst_abs_err": abs(worst["speed_err"]) if worst else None,
        "speed_worst_row": worst["id"] if worst else None,
        "speed_in_range": sum(r["in_range"] for r in s) / len(s) if s else None,
    })
    return out


def _pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def print_table(results: list[dict], summ: dict, held: dict | None, skipped: list[tuple[str, str]]) -> None:
    head = (f"{'row':<26} {'gpus':<22} {'model':<24} {'fit':>9} {'weights pred/real':>19} {'decode range':>15} "
            f"{'mid':>6} {'real':>6} {'err':>6} {'prefill':>7} {'real':>7} {'err':>6}")
    print(head)
    print("-" * len(head))
    for r in results:
        wcol = (f"{r['pred_weights_gib']:.1f}/{r['measured_weights_gib']:.1f} {r['weights_err']:+.1%}"
                if "weights_err" in r else "-")
        fcol = "-" if "verdict_ok" not in r else (r["pred_outcome"] if r["verdict_ok"] else f"{r['pred_outcome']} !")
        if "speed_err" in r and "low" not in r:
            dcol = f"{'no estimate':>15} {'':>6} {r['measured_tps']:>6.1f} {'':>6}"
        elif "speed_err" in r:
            mark = "" if abs(r["speed_err"]) <= DECODE_TOLERANCE else "!"
            dcol = (f"{r['low']:>6.1f}-{r['high']:<8.1f} {r['pred_tps']:>6.1f} {r['measured_tps']:>6.1f} "
                    f"{r['speed_err']:>+5.0%}{mark:1}")
        else:
            dcol = f"{'-':>15} {'':>6} {'':>6} {'':>6}"
        if "prefill_err" in r and r["pred_prefill"] is None:
            pcol = f"{'none':>7} {r['measured_prefill']:>7.0f} {'!':>6}"
        elif "prefill_err" in r:
            mark = "" if abs(r["prefill_err"]) <= PREFILL_TOLERANCE else "!"
            pcol = f"{r['pred_prefill']:>7} {r['measured_prefill']:>7.0f} {r['prefill_err']:>+5.0%}{mark:1}"
        else:
            pcol = ""
        print(f"{r['id'][:26]:<26} {r['gpus'][:22]:<22} {r['model'][:24]:<24} {fcol:>9} {wcol:>19} {dcol} {pcol}")
    print()
    if summ["weights_rows"]:
        print(f"weights: {summ['weights_rows']} rows, median error {summ['weights_median_abs_err']:.1%}, "
              f"worst {summ['weights_worst_abs_err']:.1%}, within 3 %: {summ['weights_within_3pct']:.0%}")
    print(f"{'':<10} {'verdicts right':>22} {'decode within +-30 %':>24} {'prefill within +-50 %':>24}")
    for name, s in (("in-sample", summ), ("held-out", held)):
        if s is None:
            continue
        print(f"{name:<10} {_pct(s['verdict_right']):>14} of {s['verdict_rows']:>3} rows "
              f"{_pct(s['decode_within_30pct']):>16} of {s['decode_rows']:>3} rows "
              f"{_pct(s['prefill_within_50pct']):>16} of {s['prefill_rows']:>3} rows")
    print(f"{'goal':<10} {_pct(GOALS['verdict']):>22} {_pct(GOALS['decode']):>24} {_pct(GOALS['prefill']):>24}")
    if held is not None:
        print(f"held-out: leave one GPU out ({held['folds']} folds: each GPU model's rows predicted by "
              "efficiencies fitted on the other GPUs' rows, bench/fit.py)")
    if summ["speed_worst_row"]:
        print(f"decode median error {summ['decode_median_abs_err']:.1%} in-sample"
              + (f", {held['decode_median_abs_err']:.1%} held-out" if held and held['decode_median_abs_err'] is not None else "")
              + f"; measurement inside the plan's range: {summ['speed_in_range']:.0%}")
    if skipped:
        print(f"skipped {len(skipped)} rows the catalog cannot run yet: "
              + ", ".join(sorted({why for _, why in skipped})))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print rows and summary as JSON")
    ap.add_argument("--rows", help="only these row ids (comma-separated)")
    ap.add_argument("--no-heldout", action="store_true", help="skip the leave-one-GPU-out refits")
    args = ap.parse_args(argv)
    cat = load_catalog()
    rows = load_rows()
    if args.rows:
        keep = set(args.rows.split(","))
        rows = [r for r in rows if r["id"] in keep]
    skipped = [(r["id"], why) for r in rows if (why := missing(r, cat))]
    prepared = [Prepared(r, cat) for r in rows if not missing(r, cat)]
    results = [evaluate(p) for p in prepared]
    summ = summary(results)
    held = None
    if not args.no_heldout:
        import fit as fit_mod  # bench/fit.py

        held = fit_mod.held_out(prepared)
    if args.json:
        print(json.dumps({"rows": results, "summary": summ, "held_out": held, "skipped": skipped}, indent=2))
    else:
        print_table(results, summ, held, skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
