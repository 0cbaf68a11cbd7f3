"""rigctl catalog gpus|models|formats|cpus: what the built-in catalogs know."""

from __future__ import annotations

import sys

from .validate import add_catalog_arg

KINDS = ("gpus", "models", "formats", "cpus")


def register(sub) -> None:
    p = sub.add_parser("catalog", help="list catalog entries (GPUs, models, formats, CPUs)")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("id", nargs="?", help="show one entry in full, with its source")
    add_catalog_arg(p)
    p.set_defaults(func=run)


def _summary(kind: str, e) -> str:
    if kind == "gpus":
        return f"{e.memory_gib:g} GiB, {e.bandwidth_gbs:g} GB/s, {e.board_power_w or '-'} W, NVLink {'yes' if e.nvlink.present else 'no'}"
    if kind == "models":
        return f"{e.params_b:g}B ({e.active_b:g}B active), {e.layers} layers, {e.attention_heads}/{e.kv_heads} heads, ctx {e.max_context:,}"
    if kind == "formats":
        bpw = f"{e.bits_per_weight:g} bpw" if e.bits_per_weight else "bpw chosen"
        return f"{e.family}, {bpw}, stacks: {', '.join(e.stacks)}"
    return f"{e.pcie_lanes or '-'} lanes, Gen{e.pcie_gen or '-'}, {e.power_w or '-'} W"


def run(args) -> int:
    from pathlib import Path

    import yaml

    from ..spec.catalog import CatalogError, builtin

    try:
        cat = builtin().extended([Path(f) for f in args.catalog]) if args.catalog else builtin()
    except CatalogError as exc:
        sys.stderr.write(f"{exc.file}:{exc.line}: {exc.message}\n")
        return 2
    table = getattr(cat, args.kind)
    if args.id:
        e = table.get(args.id)
        if e is None:
            close = table.suggest(args.id)
            sys.stderr.write(f"rigctl catalog: no {args.kind} entry '{args.id}'"
                             + (f" (did you mean {', '.join(close)}?)" if close else "") + "\n")
            return 2
        sys.stdout.write(yaml.safe_dump(e.model_dump(), sort_keys=False, allow_unicode=True))
        return 0
    for e in sorted(table, key=lambda e: e.id):
        sys.stdout.write(f"{e.id:<28} {e.name:<34} {_summary(args.kind, e)}\n")
    return 0
