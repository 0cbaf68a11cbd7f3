"""rigctl advise: which GPUs and which quantization for a model, ranked by expected speed.

Enumerates GPU combinations (up to --max-gpus cards in one node, from the GPUs
you list or the catalog's) and formats, builds an in-memory rig for each, and
runs the same memory model and speed model as `rigctl plan`.
"""

from __future__ import annotations

import itertools
import json
import math
import sys

from ..diagnostics import EXIT_OK, EXIT_USAGE
from .validate import add_catalog_arg

DEFAULT_FORMATS = {
    "llamacpp": ["q4_k_m", "q5_k_m", "q6_k", "q8_0"],
    "llamacpp-rpc": ["q4_k_m", "q5_k_m", "q6_k", "q8_0"],
    "ollama": ["q4_k_m", "q5_k_m", "q8_0"],
    "vllm": ["awq", "fp8", "bf16"],
    "tabbyapi": ["exl3"],
    "exo": ["mlx-4bit", "mlx-8bit"],
    "petals": ["nf4", "int8"],
}
TABBY_BPW = 4.0


def register(sub) -> None:
    p = sub.add_parser("advise", help="rank GPU combinations and quantizations for a model",
                       description="Enumerate GPU combinations and weight formats for one model, keep those that fit "
                                   "the context, and rank them by expected decode speed (then price).")
    p.add_argument("--model", required=True, help="model catalog id, e.g. llama-3.1-70b")
    p.add_argument("--formats", help="comma-separated format ids (default depends on --stack)")
    p.add_argument("--gpus", help="GPUs available, e.g. '2x rtx-3090,1x rtx-5090' (default: every catalog GPU)")
    p.add_argument("--max-gpus", type=int, default=4, help="most cards in one configuration (default 4)")
    p.add_argument("--price", action="extend", nargs="+", default=[], metavar="GPU=USD",
                   help="price per card, e.g. --price rtx-3090=700 rtx-5090=2000")
    p.add_argument("--context", type=int, default=8192, help="context tokens per sequence (default 8192)")
    p.add_argument("--stack", default="llamacpp", choices=sorted(DEFAULT_FORMATS), help="inference stack")
    p.add_argument("--top", type=int, default=15, help="show this many configurations (default 15)")
    p.add_argument("--format", "-f", choices=("text", "json"), default="text", dest="output", help="output format")
    add_catalog_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..spec import catalog as catalog_mod

    try:
        cat = catalog_mod.builtin().extended([Path(f) for f in args.catalog]) if args.catalog else catalog_mod.builtin()
        model = cat.models.get(args.model)
        if model is None:
            raise ValueError(f"unknown model '{args.model}'" + _did_you_mean(cat.models, args.model))
        pools = parse_gpus(args.gpus, cat, args.max_gpus)
        prices = parse_prices(args.price, cat)
        formats = [f.strip() for f in (args.formats or ",".join(DEFAULT_FORMATS[args.stack])).split(",") if f.strip()]
        for f in formats:
            if cat.formats.get(f) is None:
                raise ValueError(f"unknown format '{f}'" + _did_you_mean(cat.formats, f))
    except ValueError as exc:
        sys.stderr.write(f"rigctl advise: {exc}\n")
        return EXIT_USAGE
    # without --gpus every catalog GPU is a candidate: compare n identical cards (mixing all is combinatorial)
    results = advise(cat, model.id, formats, pools, args.max_gpus, args.context, args.stack, prices,
                     mixed=bool(args.gpus))
    fitting = rank([r for r in results if r["fits"]], bool(prices))[: args.top]
    if args.output == "json":
        sys.stdout.write(json.dumps({"schema_version": 1, "model": model.id, "stack": args.stack,
                                     "context_tokens": args.context, "considered": len(results),
                                     "configurations": fitting}, indent=2) + "\n")
    else:
        print_table(model, args, fitting, len(results))
    return EXIT_OK


def _did_you_mean(table, key: str) -> str:
    close = table.suggest(key)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def parse_gpus(spec: str | None, cat, max_gpus: int) -> dict[str, int]:
    """'2x rtx-3090,1x rtx-5090' -> {catalog id: how many are available}."""
    if not spec:
        return {e.id: (1 if e.form_factor == "soc" else max_gpus) for e in cat.gpus}
    pools: dict[str, int] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        count, _, name = part.partition("x ") if "x " in part else ("1", "", part)
        entry = cat.gpus.get(name.strip())
        if entry is None or not count.strip().isdigit():
            raise ValueError(f"cannot read GPU '{part}': write e.g. '2x rtx-3090'"
                             + (_did_you_mean(cat.gpus, name.strip()) if entry is None else ""))
        pools[entry.id] = pools.get(entry.id, 0) + int(count)
    return pools


def parse_prices(items: list[str], cat) -> dict[str, float]:
    prices = {}
    for item in items:
        name, _, value = item.partition("=")
        entry = cat.gpus.get(name.strip())
        try:
            price = float(value)
        except ValueError:
            raise ValueError(f"cannot read price '{item}': write GPU=USD, e.g. rtx-3090=700") from None
        if entry is None:
            raise ValueError(f"unknown GPU '{name}' in --price" + _did_you_mean(cat.gpus, name.strip()))
        prices[entry.id] = price
    return prices


def combinations(pools: dict[str, int], max_gpus: int, mixed: bool = True):
    """Multisets of 1..max_gpus cards within the pools' counts; `mixed=False`: one GPU model per combination."""
    ids = sorted(pools)
    if not mixed:
        for i in ids:
            for n in range(1, min(pools[i], max_gpus) + 1):
                yield {i: n}
        return
    for total in range(1, max_gpus + 1):
        for cards in itertools.combinations_with_replacement(ids, total):
            combo = {i: cards.count(i) for i in dict.fromkeys(cards)}
            if all(c <= pools[i] for i, c in combo.items()):
                yield combo


def advise(cat, model_id: str, formats: list[str], pools: dict[str, int], max_gpus: int, context: int,
           stack: str, prices: dict[str, float], mixed: bool = True) -> list[dict]:
    from .. import sizing
    from ..plan.speed import estimate
    from ..rules.context import Context
    from ..spec.models import Rig

    out = []
    for combo in combinations(pools, max_gpus, mixed):
        entries = {g: cat.gpus.get(g) for g in combo}
        vendors = {e.vendor for e in entries.values()}
        if ("apple" in vendors and sum(combo.values()) > 1) or len(vendors) > 1:
            continue  # one SoC per machine; no mixed vendors in one box
        if stack in ("vllm", "tabbyapi") and len(combo) > 1:
            continue  # tensor parallel wants identical GPUs
        n = sum(combo.values())
        # the last GPU holds the output layer (layer split), so the order of unequal cards changes the
        # largest context: try each order of the card models and keep the best, as the spec must list them
        orders = (list(itertools.permutations(combo)) if len(combo) > 1 and len(combo) <= 4
                  and stack in ("llamacpp", "ollama") else [tuple(combo)])
        # a Mac is sold in several RAM sizes and macOS lets the GPU wire a share of it: one row per size
        apple = next((e for e in entries.values() if e.vendor == "apple"), None)
        sizes = (apple.memory_options_gib or [apple.memory_gib]) if apple else [256]
        for fmt, ram in itertools.product(formats, sizes):
            best = None
            for order in orders:
                row = _evaluate(cat, model_id, fmt, stack, context, vendors, {g: combo[g] for g in order}, n, ram)
                if row is not None and (best is None or (row[0].fits, row[0].max_context_tokens or 0)
                                        > (best[0].fits, best[0].max_context_tokens or 0)):
                    best = row
            if best is None:
                continue
            fit, ctx, d, ordered = best
            speed = estimate(ctx, d, fit) if fit.fits else None
            cost = sum(prices[g] * c for g, c in combo.items()) if all(g in prices for g in combo) else None
            out.append({
                "gpus": " + ".join(f"{c}x {g}" for g, c in ordered.items()) + (f" {ram:g} GB" if apple else ""),
                "gpu_count": n, "format": fmt,
                "fits": fit.fits, "weights_gib": round(fit.weights_gib, 1),
                # memory allows more than the model was trained for: show the trained limit
                "max_context_tokens": min(fit.max_context_tokens or 0, ctx.model(d).max_context),
                "order": [g for g, c in ordered.items() for _ in range(c)] if len(orders) > 1 else None,
                "decode_tps_low": speed.decode_tps_low if speed else None,
                "decode_tps_high": speed.decode_tps_high if speed else None,
                "decode_tps": round(math.sqrt(speed.decode_tps_low * speed.decode_tps_high), 1) if speed else None,
                "bottleneck": speed.bottleneck if speed else None,
                "cost_usd": cost,
            })
    return out


def _evaluate(cat, model_id, fmt, stack, context, vendors, ordered: dict[str, int], n: int,
              ram_gib: float = 256):
    """(fit, context, deployment, ordered combo) of one configuration, or None when it cannot be sized."""
    from .. import sizing
    from ..rules.context import Context
    from ..spec.models import Rig

    gpus = [{"id": f"gpu{i}", "model": g} for i, g in enumerate(g for g, c in ordered.items() for _ in range(c))]
    dep = {"name": "advise", "model": model_id, "format": fmt, "stack": stack,
           "context_tokens": context, "placement": [{"node": "n0"}]}
    if stack in ("vllm", "tabbyapi") and n > 1:
        dep["tensor_parallel"] = n
    if fmt.lower() in ("exl2", "exl3"):
        dep["bits_per_weight"] = TABBY_BPW
    rig = Rig.model_validate({"version": 1, "name": "advise", "serve": [dep], "nodes": [
        {"name": "n0", "os": "macos" if "apple" in vendors else "ubuntu-24.04", "memory_gib": ram_gib,
         "gpus": gpus}]})
    ctx = Context(rig, cat)
    d = rig.serve[0]
    fit = sizing.fit(ctx, d)
    if fit is None:
        return None
    return fit, ctx, d, ordered


def rank(rows: list[dict], by_cost: bool) -> list[dict]:
    """Fastest first; with prices, configurations within 5 % of each other's speed go cheapest first."""
    def key(r):
        speed = r["decode_tps"] or 0.0
        bucket = -math.floor(math.log(speed, 1.05)) if speed > 0 else 0
        cost = r["cost_usd"] if r["cost_usd"] is not None else math.inf
        return (bucket, cost, r["gpu_count"]) if by_cost else (-speed, r["gpu_count"])
    return sorted(rows, key=key)


def print_table(model, args, rows: list[dict], considered: int) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False, soft_wrap=True, width=max(110, Console().width))
    con.print(f"[bold]{model.name}[/bold] on {args.stack}, {args.context:,}-token context: "
              f"{len(rows)} of {considered} configurations shown (those that fit, fastest first)")
    if not rows:
        con.print("nothing fits: allow more GPUs (--max-gpus), a smaller format, or a shorter --context")
        return
    t = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("GPUs", "format", "weights GiB", "max context", "decode tok/s", "cost $"):
        numeric = col in ("weights GiB", "max context", "decode tok/s", "cost $")
        t.add_column(col, justify="right" if numeric else "left", no_wrap=True)
    for r in rows:
        cost = f"{r['cost_usd']:,.0f}" if r["cost_usd"] is not None else "-"
        t.add_row(r["gpus"], r["format"], f"{r['weights_gib']:.1f}", f"{r['max_context_tokens']:,}",
                  f"{r['decode_tps_low']:g}-{r['decode_tps_high']:g}", cost)
    con.print(t)
    con.print(f"bottleneck of the first: {rows[0]['bottleneck']}")
    if any(r.get("order") for r in rows):
        con.print("mixed cards are listed in the order that fits the largest context (the last GPU holds the "
                  "output layer): list them in that order under the deployment's placement, and plan gives "
                  "the same context")
