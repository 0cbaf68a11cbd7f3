"""Fit the speed model's efficiencies on published rows (bench/data/measurements.yaml).

What is fitted (provisioner/plan/speed.py reads it from data/efficiency.yaml):

  decode cells    the share of peak memory bandwidth one token's reads reach, per
                  weights format class (f16, q8, quant) at three levels: all devices,
                  per memory kind (gddr, hbm, unified, ddr), per architecture. A
                  cell below "all" is fitted only on rows from at least two GPU
                  models, so no cell is one card's factor.
  moe_factor      a multiplier for mixture-of-experts models (llama.cpp's MoE kernels)
  prefill         per backend (cuda, metal, rocm) and path (F16 GEMMs, the quantized
                  dequantize/MMQ path): a share of the dense FP16 peak capped at a
                  ceiling in TFLOPS, fitted on single-GPU rows; then the share of the
                  ideal micro-batch overlap that layer splits reach (pipeline_overlap)

Each parameter is a 1-D (the quantized prefill: 2-D) grid search minimising the
sum of |log(predicted / measured)| over its rows, the layers from general to
specific. `held_out()` refits with each GPU model's rows left out and predicts
them (bench/accuracy.py prints that next to the in-sample score).

    .venv/bin/python bench/fit.py            # print the fit
    .venv/bin/python bench/fit.py --write    # and write provisioner/plan/data/efficiency.yaml
"""

from __future__ import annotations

import argparse
import copy
import datetime
import math
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

import accuracy  # noqa: E402
from provisioner.plan import speed  # noqa: E402

OUT = ROOT.parent / "provisioner" / "plan" / "data" / "efficiency.yaml"
DECODE_GRID = [round(0.30 + 0.01 * i, 2) for i in range(71)]          # 0.30 .. 1.00
MOE_GRID = [round(0.50 + 0.02 * i, 2) for i in range(41)]             # 0.50 .. 1.30
SHARE_GRID = [round(0.10 + 0.02 * i, 2) for i in range(71)]           # 0.10 .. 1.50
CAP_GRID = [20 * i for i in range(1, 21)]                             # 20 .. 400 TFLOPS
MIN_GPUS = 2  # a cell below "all" needs rows from this many GPU models

BASE = {
    "decode": {"spread": 1.12, "default": 0.80, "moe_factor": 1.0, "cells": {}},
    "prefill": {"spread": 1.25, "pipeline_overlap": 1.0, "backends": {}},
}
FALLBACK_PREFILL = {"f16_share": 0.6, "f16_cap_tflops": 400, "quant_share": 0.6, "quant_cap_tflops": 400}
OVERLAP_GRID = [round(0.05 * i, 2) for i in range(21)]                # 0 .. 1


def _gpu_key(p) -> str:
    return "+".join(sorted(set(accuracy.row_gpus(p.row))))


def _decode_key(p) -> tuple[str, str, str]:
    d = next((d for d in p.fit.devices if d.gpu_id is not None), p.fit.devices[0])
    e = speed._entry(p.ctx, d) if d.gpu_id is not None else None
    return (speed.format_class(p.ctx, p.dep), speed.memory_class(p.ctx, d), speed.architecture(e))


def _backend(p) -> str:
    d = next((d for d in p.fit.devices if d.gpu_id is not None), p.fit.devices[0])
    return speed._backend(p.ctx, d)


def _loss(params: dict, rows: list, kind: str) -> float:
    total = 0.0
    with speed.efficiency_override(params):
        for p in rows:
            pred = p.decode_mid() if kind == "decode" else p.prefill_mid()
            meas = p.row["decode_tps"] if kind == "decode" else p.row["prefill_tps"]
            total += abs(math.log(pred / meas)) if pred else 10.0
    return total


def _search(params: dict, rows: list, kind: str, setter, grid) -> float:
    best = None
    for value in grid:
        trial = copy.deepcopy(params)
        setter(trial, value)
        loss = _loss(trial, rows, kind)
        if best is None or loss < best[0] - 1e-12:
            best = (loss, value)
    setter(params, best[1])
    return best[1]


def fit_params(prepared: list) -> tuple[dict, dict]:
    """(parameters, provenance: the rows behind each one)."""
    params = copy.deepcopy(BASE)
    prov: dict = {"decode": {}, "prefill": {}}
    dec = [p for p in prepared if p.fit is not None and p.row.get("decode_tps")]
    others = [p for p in dec if p.dep.stack.value not in speed.LLAMACPP_STACKS]
    dec = [p for p in dec if p.dep.stack.value in speed.LLAMACPP_STACKS]
    dense = [p for p in dec if not getattr(p.ctx.model(p.dep), "experts", None)]
    moe = [p for p in dec if getattr(p.ctx.model(p.dep), "experts", None)]

    def set_cell(key):
        return lambda prm, v: prm["decode"]["cells"].__setitem__(key, v)

    levels = [("all", lambda k: f"all/{k[0]}"), ("memory", lambda k: f"{k[1]}/{k[0]}"),
              ("arch", lambda k: f"{k[1]}:{k[2]}/{k[0]}")]
    for level, keyof in levels:
        groups: dict[str, list] = {}
        for p in dense:
            groups.setdefault(keyof(_decode_key(p)), []).append(p)
        for key, rows in sorted(groups.items()):
            gpus = {_gpu_key(p) for p in rows}
            if level != "all" and len(gpus) < MIN_GPUS:
                continue
            _search(params, rows, "decode", set_cell(key), DECODE_GRID)
            prov["decode"][key] = {"rows": len(rows), "gpus": sorted(gpus)}
    engines: dict[str, list] = {}
    for p in others:
        engines.setdefault(f"engine:{p.dep.stack.value}/{_decode_key(p)[0]}", []).append(p)
    for key, rows in sorted(engines.items()):
        gpus = {_gpu_key(p) for p in rows}
        if len(gpus) >= MIN_GPUS:
            _search(params, rows, "decode", set_cell(key), DECODE_GRID)
            prov["decode"][key] = {"rows": len(rows), "gpus": sorted(gpus)}
    if len({_gpu_key(p) for p in moe}) >= 1 and len(moe) >= 2:
        _search(params, moe, "decode", lambda prm, v: prm["decode"].__setitem__("moe_factor", v), MOE_GRID)
        prov["decode"]["moe_factor"] = {"rows": len(moe), "gpus": sorted({_gpu_key(p) for p in moe})}

    pre = [p for p in prepared if p.fit is not None and p.row.get("prefill_tps")]
    single = [p for p in pre if not speed._pipelined(p.ctx, p.dep, p.fit)]
    split = [p for p in pre if speed._pipelined(p.ctx, p.dep, p.fit)]
    # the per-device rates on single-device rows first, then the overlap on the splits
    pooled = _fit_prefill(params, single, dict(FALLBACK_PREFILL))
    for b in ("cuda", "metal", "rocm"):
        rows = [p for p in single if _backend(p) == b]
        if len({_gpu_key(p) for p in rows}) >= MIN_GPUS:
            params["prefill"]["backends"][b] = _fit_prefill(params, rows, dict(pooled), backend=b)
            prov["prefill"][b] = {"rows": len(rows), "gpus": sorted({_gpu_key(p) for p in rows})}
        else:
            params["prefill"]["backends"][b] = dict(pooled)
            prov["prefill"][b] = {"rows": 0, "note": "too few GPU models: the fit over all backends"}
    if len({_gpu_key(p) for p in split}) >= MIN_GPUS:
        _search(params, split, "prefill", lambda prm, v: prm["prefill"].__setitem__("pipeline_overlap", v), OVERLAP_GRID)
        prov["prefill"]["pipeline_overlap"] = {"rows": len(split), "gpus": sorted({_gpu_key(p) for p in split})}
    return params, prov


def _fit_prefill(params: dict, rows: list, start: dict, backend: str | None = None) -> dict:
    """f16 share on the F16 rows; quantized share and cap on the others (all backends when backend is None)."""
    cur = dict(start)
    trial = copy.deepcopy(params)
    names = [backend] if backend else ["cuda", "metal", "rocm"]

    def put(prm, vals):
        for n in names:
            prm["prefill"]["backends"][n] = dict(vals)

    f16 = [p for p in rows if speed.format_class(p.ctx, p.dep) == "f16"]
    quant = [p for p in rows if speed.format_class(p.ctx, p.dep) != "f16"]
    for rows_, share, cap_key in ((f16, "f16_share", "f16_cap_tflops"), (quant, "quant_share", "quant_cap_tflops")):
        if not rows_:
            continue
        best = None
        for cap in reversed(CAP_GRID):  # ties keep the higher cap (the least restrictive)
            for v in SHARE_GRID:
                put(trial, {**cur, share: v, cap_key: cap})
                loss = _loss(trial, rows_, "prefill")
                if best is None or loss < best[0] - 1e-12:
                    best = (loss, v, cap)
        cur[share], cur[cap_key] = best[1], best[2]
    return cur


def held_out(prepared: list) -> dict:
    """Leave one GPU model out: fit on the rest, predict its rows; score over all predictions."""
    groups: dict[str, list] = {}
    for p in prepared:
        groups.setdefault(_gpu_key(p), []).append(p)
    results = []
    for key, rows in sorted(groups.items()):
        held_gpus = set(key.split("+"))
        train = [p for p in prepared if not held_gpus & set(accuracy.row_gpus(p.row))]
        params, _ = fit_params(train)
        with speed.efficiency_override(params):
            results += [accuracy.evaluate(p) for p in rows]
    out = accuracy.score(results)
    out["folds"] = len(groups)
    out["rows"] = results
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(ROOT.parent)}")
    args = ap.parse_args(argv)
    cat = accuracy.load_catalog()
    rows = accuracy.load_rows()
    prepared = [accuracy.Prepared(r, cat) for r in rows if not accuracy.missing(r, cat)]
    params, prov = fit_params(prepared)
    used_decode = sorted(p.row["id"] for p in prepared if p.fit is not None and p.row.get("decode_tps"))
    used_prefill = sorted(p.row["id"] for p in prepared if p.fit is not None and p.row.get("prefill_tps"))
    doc = {
        "provenance": {
            "command": ".venv/bin/python bench/fit.py --write",
            "fitted": datetime.date.today().isoformat(),
            "rows_file": "bench/data/measurements.yaml",
            "method": "grid search per parameter, minimising the sum of |log(predicted/measured)|; "
                      f"cells below 'all' need rows from >= {MIN_GPUS} GPU models",
            "decode_rows": used_decode,
            "prefill_rows": used_prefill,
            "skipped_rows": sorted(r["id"] for r in rows if accuracy.missing(r, cat)),
            "per_parameter": prov,
        },
        **params,
    }
    text = ("# Fitted efficiencies of the speed model (provisioner/plan/speed.py). Generated: do not edit\n"
            "# by hand; change bench/data/measurements.yaml or bench/fit.py and rerun the command below.\n"
            + yaml.safe_dump(doc, sort_keys=False, width=100))
    print(yaml.safe_dump(params, sort_keys=False))
    if args.write:
        OUT.write_text(text, encoding="utf-8")
        print(f"wrote {OUT.relative_to(ROOT.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
