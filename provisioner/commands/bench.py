"""rigctl bench: measure each deployed endpoint beside the plan's speed range."""

from __future__ import annotations

import re
import sys

from ..diagnostics import EXIT_FINDINGS, EXIT_USAGE
from .validate import add_catalog_arg, exit_code
from .verify import limits

MAX_SOAK_S = 24 * 3600
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


def duration(text: str) -> float:
    """'90', '30s', '5m', '1h' -> seconds (argparse type)."""
    import argparse

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text or "")
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30s, 5m or 1h")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not 0 < seconds <= MAX_SOAK_S:
        raise argparse.ArgumentTypeError(f"{text!r}: a soak runs between 1 s and 24 h")
    return seconds


def register(sub) -> None:
    p = sub.add_parser(
        "bench", help="measure each endpoint: prompt and decode tok/s, time to first token, concurrency, soak",
        description="Against the deployed rig (as `rigctl apply` reached it): per endpoint, prompt and decode "
                    "tokens/s at prompts of 32, 128 and 512 tokens (within the context), time to first token, "
                    "and a run of parallel_sequences requests at once, printed beside the plan's speed range; "
                    "a warning when a measurement falls outside it. --soak repeats multi-turn chats and reports "
                    "errors, latency percentiles and the service's memory growth. The client runs on each "
                    "endpoint's host over SSH (loopback binds work). Exit 0, 1 an endpoint failed "
                    "(or a warning with --strict), 2 unreadable spec or inventory.")
    p.add_argument("spec", help="rig spec file")
    p.add_argument("-i", "--inventory", metavar="DIR", help="inventory overrides used by apply (inventories/<env>/)")
    add_catalog_arg(p)
    p.add_argument("--limit", action="append", default=[], metavar="NODE",
                   help="only endpoints on these nodes (repeatable or comma-separated)")
    p.add_argument("--ssh-config", metavar="FILE", help="extra ssh_config read before the inventory's settings")
    p.add_argument("--soak", type=duration, default=0.0, metavar="DURATION",
                   help="also repeat multi-turn chats for this long (30s, 5m, 1h)")
    p.add_argument("--max-tokens", type=int, default=64, metavar="N",
                   help="tokens generated per measured request (default 64)")
    p.add_argument("--timeout", type=float, default=60, metavar="SECONDS",
                   help="limit per request, and for the endpoint to become ready (default 60)")
    p.add_argument("--strict", action="store_true", help="warnings also fail (exit 1)")
    p.set_defaults(func=run)


class Progress:
    """One \\r-rewritten line on a terminal; plain lines otherwise."""

    WIDTH = 24

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.dirty = False

    def __call__(self, label: str, done: int, total: int) -> None:
        if not self.tty:
            self.stream.write(f"bench: [{done}/{total}] {label}\n")
            self.stream.flush()
            return
        filled = round(self.WIDTH * done / max(total, 1))
        self.stream.write(f"\r\033[K[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total} {label}")
        self.stream.flush()
        self.dirty = True

    def close(self) -> None:
        if self.dirty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def run(args) -> int:
    from .. import report
    from ..execute import unset_secret_env
    from ..render import InventoryError as RenderInventoryError
    from ..render.prepare import prepare
    from ..verify import InventoryError
    from ..verify.bench import run_bench

    if args.ssh_config:
        import os

        if not os.path.isfile(args.ssh_config):
            sys.stderr.write(f"rigctl bench: --ssh-config {args.ssh_config}: no such file\n")
            return EXIT_USAGE
    if not 1 <= args.max_tokens <= 4096:
        sys.stderr.write(f"rigctl bench: --max-tokens {args.max_tokens}: between 1 and 4096\n")
        return EXIT_USAGE
    if not 1 <= args.timeout <= 3600:
        sys.stderr.write(f"rigctl bench: --timeout {args.timeout:g}: between 1 and 3600 s\n")
        return EXIT_USAGE
    try:
        prep = prepare(args.spec, args.inventory, catalog_files=args.catalog)
    except RenderInventoryError as exc:
        sys.stderr.write(f"rigctl bench: {exc}\n")
        return EXIT_USAGE
    load = prep.check.load
    if prep.check.fatal or prep.plan is None:
        sys.stderr.write(report.text(prep.check.diagnostics))
        if not prep.check.fatal:
            sys.stderr.write(f"rigctl bench: not benchmarking {args.spec}: the spec has {len(prep.errors)} "
                             "error(s); fix them first (rigctl validate)\n")
        return EXIT_USAGE if prep.check.fatal else EXIT_FINDINGS
    unset = [load.locate(d) for d in unset_secret_env(prep.ctx, prep.plan)]
    if unset:  # the endpoint would answer 401: say which key is missing instead
        sys.stderr.write(report.text(unset))
        sys.stderr.write("rigctl bench: export the API key variable(s) apply used, then bench again\n")
        return EXIT_USAGE
    progress = Progress()
    try:
        result = run_bench(prep.ctx, prep.plan, args.inventory, args.ssh_config, limits(args.limit) or None,
                           soak_s=args.soak, timeout_s=args.timeout, max_tokens=args.max_tokens, on_step=progress)
    except InventoryError as exc:
        progress.close()
        sys.stderr.write(f"rigctl bench: {exc}\n")
        return EXIT_USAGE
    finally:
        progress.close()
    if not result.endpoints:
        sys.stderr.write(f"rigctl bench: {args.spec} has no HTTP endpoint on the selected nodes\n")
        return EXIT_USAGE
    for res in result.endpoints:
        sys.stdout.write(render_endpoint(res))
    diags = [load.locate(d) for d in result.diagnostics]
    sys.stdout.write(report.text(diags, color=sys.stdout.isatty()) if diags else "no findings: every measurement "
                     "is inside the plan's range\n")
    sys.stderr.write(f"rigctl bench: {len(result.endpoints)} endpoint(s) in {result.seconds:.1f} s\n")
    return exit_code(diags, args.strict)


def _num(x, fmt: str = ",.1f") -> str:
    return "-" if x is None else format(x, fmt)


def render_endpoint(res) -> str:
    from ..verify.bench import measured_decode, measured_prompt, percentile

    ep = res.endpoint
    lines = [f"{ep.deployment}: {ep.stack} {ep.service} on {ep.node} ({ep.address}:{ep.port})"
             + (f", model {res.model}" if res.model else "")]
    if res.error:
        lines.append(f"  not measured: {res.error}")
        return "\n".join(lines) + "\n\n"
    lines.append(f"  {'prompt tokens':>14}  {'prompt tok/s':>12}  {'decode tok/s':>12}  {'request s':>9}  source")
    for r in res.lengths:
        if not r.get("ok"):
            lines.append(f"  {r['target_tokens']:>14}  failed: {r.get('error')}")
            continue
        sent = r.get("prompt_tokens")
        shown = f"{r['target_tokens']} ({sent})" if sent and sent != r["target_tokens"] else str(r["target_tokens"])
        lines.append(f"  {shown:>14}  {_num(r.get('prompt_tps')):>12}  {_num(r.get('decode_tps')):>12}  "
                     f"{r['wall_s']:>9.2f}  {r.get('source', '-')}")
    t = res.ttft or {}
    lines.append(f"  time to first token: {t['ttft_s']:.3f} s" if t.get("ok") else
                 f"  time to first token: failed: {t.get('error')}")
    c = res.concurrent or {}
    if c.get("ok"):
        lat = c.get("latencies_s") or []
        errs = f", {c['error_count']} failed: {'; '.join(c['errors'])}" if c.get("error_count") else ""
        lines.append(f"  {c['n']} concurrent (parallel_sequences): {_num(c.get('aggregate_tps'))} tok/s in total, "
                     f"request p50 {_num(percentile(lat, 50), '.2f')} s, max {_num(max(lat) if lat else None, '.2f')} s"
                     f"{errs}")
    else:
        lines.append(f"  {ep.parallel} concurrent: failed: {c.get('error')}")
    sp = ep.speed
    if sp is not None:
        prompt = (f", prompt {sp.prompt_tps_low:,}-{sp.prompt_tps_high:,} tok/s" if sp.prompt_tps_low
                  else ", prompt: no estimate")
        lines.append(f"  plan: decode {sp.decode_tps_low:g}-{sp.decode_tps_high:g} tok/s{prompt}; measured decode "
                     f"{_num(measured_decode(res))}, prompt {_num(measured_prompt(res), ',.0f')} tok/s")
    else:
        lines.append("  plan: no speed estimate for this deployment")
    if res.soak:
        s = res.soak
        lat = s["latencies_s"]
        pct = "/".join(_num(percentile(lat, q), ".3f") for q in (50, 95, 99))
        lines.append(f"  soak {s['seconds']:.0f} s: {s['requests']} requests in multi-turn chats (up to 3 turns), {s['error_count']} errors; "
                     f"latency p50/p95/p99 {pct} s")
        mem = [m for m in s.get("memory", []) if m.get("ok")]
        if len(mem) >= 2:
            a, b = mem[0]["rss_kib"] / 1024, mem[-1]["rss_kib"] / 1024
            peak = max(m["rss_kib"] for m in mem) / 1024
            lines.append(f"  memory of {ep.service} (RSS, pid {mem[-1]['pid']}): {a:,.1f} -> {b:,.1f} MiB "
                         f"({b - a:+,.1f} MiB, peak {peak:,.1f} MiB) over {len(mem)} samples")
        else:
            why = next((m.get("error") for m in s.get("memory", []) if not m.get("ok")), "no samples")
            lines.append(f"  memory: not measured ({why})")
    return "\n".join(lines) + "\n\n"
