"""rigctl bench: measure each deployed endpoint and compare it with the plan's speed range.

The measuring client (bench_client.py) runs on the endpoint's host over SSH, one step per
call, so the command line can show progress between steps and every step is bounded
(a request timeout, and the SSH call's own). Nothing here prints: progress goes to the
``on_step`` callback, figures and findings come back in a BenchResult.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..diagnostics import Diagnostic, Severity
from .inventory import Inventory, effective_inventory
from .runner import WILDCARD, _auth, _deploy_mode
from .ssh import RemoteError, SshSession, Unreachable

CODE = (Path(__file__).parent / "bench_client.py").read_text(encoding="utf-8")
PROMPT_TOKENS = (32, 128, 512)
SOAK_CHUNK_S = 5.0  # one SSH call per chunk: progress and memory samples between them


@dataclass
class Endpoint:
    deployment: str
    dep_index: int
    node: str
    service: str
    stack: str
    address: str
    port: int
    health_path: str
    parallel: int
    context_tokens: int
    mode: str
    auth: dict | None
    speed: object | None  # plan Speed (decode/prompt ranges) or None


@dataclass
class EndpointResult:
    endpoint: Endpoint
    model: str | None = None
    error: str | None = None
    lengths: list[dict] = field(default_factory=list)  # per prompt length: completion() answers
    ttft: dict | None = None
    concurrent: dict | None = None
    soak: dict | None = None


@dataclass
class BenchResult:
    endpoints: list[EndpointResult]
    diagnostics: list[Diagnostic]
    seconds: float = 0.0


def endpoints(ctx, plan, inv: Inventory, limit: list[str] | None = None) -> list[Endpoint]:
    """The server services of the plan that answer HTTP, in plan order."""
    dep_index = {d.name: i for i, d in enumerate(ctx.rig.serve)}
    out = []
    for dp in plan.deployments:
        for s in dp.services:
            if s.role != "server" or not s.port or not s.health_path or s.node not in inv.hosts:
                continue
            if limit and s.node not in limit:
                continue
            di = dep_index[dp.name]
            host = inv.hosts[s.node]
            dep = ctx.rig.serve[di]
            fit = dp.fit
            out.append(Endpoint(dp.name, di, s.node, s.name, dp.stack, WILDCARD.get(s.bind, s.bind), s.port,
                                s.health_path, dep.parallel_sequences,
                                (fit.context_tokens if fit else dep.context_tokens) or 2048,
                                _deploy_mode(ctx, host, s), _auth(ctx, di, host, s), dp.speed))
    return out


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    v = sorted(values)
    return v[max(0, min(len(v) - 1, math.ceil(q / 100 * len(v)) - 1))]


def _args(ep: Endpoint, env: dict, timeout_s: float) -> dict:
    a = {"host": ep.address, "port": ep.port, "health_path": ep.health_path, "model_hint": ep.deployment,
         "timeout_s": timeout_s}
    if ep.stack.startswith("llamacpp"):
        a["extra"] = {"ignore_eos": True}  # random or terse models stop early: decode needs tokens
    auth = ep.auth or {}
    if "env" in auth:
        a["key"] = env.get(auth["env"], "")
    elif "key_file" in auth:
        a["key_file"] = auth["key_file"]
    return a


def run_bench(ctx, plan, inventory: Inventory | str | None, ssh_config: str | None = None,
              limit: list[str] | None = None, *, soak_s: float = 0.0, timeout_s: float = 60.0,
              max_tokens: int = 64, env: dict | None = None,
              on_step: Callable[[str, int, int], None] | None = None) -> BenchResult:
    """Measure every endpoint; ``on_step(label, done, total)`` after each step."""
    import os

    t0 = time.monotonic()
    env = dict(os.environ if env is None else env)
    inv = inventory if isinstance(inventory, Inventory) else effective_inventory(ctx, plan, inventory)
    eps = endpoints(ctx, plan, inv, limit)
    hosts = [inv.hosts[n] for n in dict.fromkeys(e.node for e in eps)]
    results: list[EndpointResult] = []
    diags: list[Diagnostic] = []
    with SshSession(hosts, ssh_config) as session:
        for ep in eps:
            res = EndpointResult(ep)
            results.append(res)
            _measure(session, ep, res, env, soak_s, timeout_s, max_tokens, on_step)
            diags += findings(res)
    return BenchResult(results, diags, time.monotonic() - t0)


def _measure(session, ep, res, env, soak_s, timeout_s, max_tokens, on_step) -> None:
    base = _args(ep, env, timeout_s)
    sudo = bool((ep.auth or {}).get("sudo"))
    room = max(8, ep.context_tokens - max_tokens - 16)  # prompt + answer stay inside one sequence's context
    lengths = sorted({min(n, room) for n in PROMPT_TOKENS})
    chunks = math.ceil(soak_s / SOAK_CHUNK_S) if soak_s > 0 else 0
    total = 1 + len(lengths) + 2 + chunks
    done = 0

    def step(label: str, args: dict, budget_s: float) -> dict:
        nonlocal done
        try:
            out = session.run_python(ep.node, CODE, {**base, **args}, label="rigctl_bench",
                                     timeout_s=budget_s + 15, sudo=sudo)
        except (RemoteError, Unreachable) as exc:
            out = {"ok": False, "error": f"could not run on {ep.node}: {exc}"}
        done += 1
        if on_step:
            on_step(f"{ep.deployment}: {label}", done, total)
        return out

    prep = step("waiting for the endpoint", {"op": "prepare", "deadline_s": timeout_s}, timeout_s * 2)
    if not prep.get("ok"):
        res.error = prep.get("error") or "no answer"
        return
    res.model = prep["model"]
    per_word = prep.get("tokens_per_word") or 1.0
    base["model"] = res.model
    for n in lengths:
        words = max(2, round(n / per_word))
        r = step(f"prompt {n} tokens", {"op": "completion", "words": words, "max_tokens": max_tokens}, timeout_s)
        r["target_tokens"] = n
        res.lengths.append(r)
    res.ttft = step("time to first token", {"op": "ttft", "words": max(2, round(lengths[0] / per_word)),
                                             "max_tokens": 8}, timeout_s)
    res.concurrent = step(f"{ep.parallel} concurrent", {"op": "concurrent", "n": ep.parallel,
                                                        "words": max(2, round(lengths[0] / per_word)),
                                                        "max_tokens": max_tokens}, timeout_s)
    if chunks:
        mem = [_memory(session, ep)]
        soak = {"requests": 0, "latencies_s": [], "error_count": 0, "errors": [], "seconds": 0.0}
        left = soak_s
        t_start = time.monotonic()
        for _ in range(chunks):
            dur = min(SOAK_CHUNK_S, left)
            r = step(f"soak {soak_s - left + dur:.0f}/{soak_s:.0f} s", {"op": "soak", "duration_s": dur, "max_tokens": 16,
                                                                       "context_tokens": ep.context_tokens,
                                                                       "tokens_per_word": per_word}, dur + timeout_s)
            left -= dur
            if not r.get("ok", True) or "requests" not in r:
                soak["error_count"] += 1
                soak["errors"].append(r.get("error") or "no answer")
                continue
            soak["requests"] += r["requests"]
            soak["latencies_s"] += r["latencies_s"]
            soak["error_count"] += r["error_count"]
            soak["errors"] += r["errors"]
            mem.append(_memory(session, ep))
        soak["seconds"] = round(time.monotonic() - t_start, 2)
        soak["errors"] = soak["errors"][:5]
        soak["memory"] = mem
        res.soak = soak


def _memory(session, ep) -> dict:
    try:
        return session.run_python(ep.node, CODE, {"op": "memory", "service": ep.service, "mode": ep.mode},
                                  label="rigctl_bench", timeout_s=30)
    except (RemoteError, Unreachable) as exc:
        return {"ok": False, "error": str(exc)}


# ------------------------------------------------------------------ findings


def measured_decode(res: EndpointResult) -> float | None:
    """Single-stream decode at the shortest prompt (the plan's range is for a short context)."""
    vals = [r.get("decode_tps") for r in res.lengths if r.get("ok") and r.get("decode_tps")]
    return vals[0] if vals else None


def measured_prompt(res: EndpointResult) -> float | None:
    """Prompt tokens/s at the longest prompt (compute-bound there, as the plan assumes)."""
    vals = [r.get("prompt_tps") for r in res.lengths if r.get("ok") and r.get("prompt_tps")]
    return vals[-1] if vals else None


def findings(res: EndpointResult) -> list[Diagnostic]:
    ep = res.endpoint
    path = ("serve", ep.dep_index)
    tag = f"{ep.deployment}"
    if res.error:
        return [Diagnostic(f"bench-endpoint[{tag}]", Severity.error,
                           f"{ep.deployment}: cannot benchmark {ep.service} on {ep.node} "
                           f"({ep.address}:{ep.port}): {res.error}", path,
                           hint="run `rigctl verify` for what is wrong with the service")]
    out = []
    failed = [r for r in res.lengths if not r.get("ok")]
    for r in failed:
        out.append(Diagnostic(f"bench-request[{tag}]", Severity.error,
                              f"{ep.deployment}: a {r['target_tokens']}-token prompt failed: {r.get('error')}", path))
    sp = ep.speed
    decode, prompt = measured_decode(res), measured_prompt(res)
    if sp is not None and decode is not None and not sp.decode_tps_low <= decode <= sp.decode_tps_high:
        side = "below" if decode < sp.decode_tps_low else "above"
        out.append(Diagnostic(
            "bench-speed[decode]", Severity.warning,
            f"{ep.deployment}: measured decode {decode:,.1f} tok/s (single stream, {res.lengths[0]['target_tokens']}-"
            f"token prompt) is {side} the plan's {sp.decode_tps_low:g}-{sp.decode_tps_high:g} tok/s", path,
            hint=("check what else runs on the host, the power cap and the PCIe link (rigctl verify); "
                  f"the plan's bottleneck: {sp.bottleneck}") if side == "below" else
                 "the plan underestimates this rig: its speed constants may need a newer fit"))
    if sp is not None and prompt is not None and sp.prompt_tps_low and \
            not sp.prompt_tps_low <= prompt <= sp.prompt_tps_high:
        side = "below" if prompt < sp.prompt_tps_low else "above"
        out.append(Diagnostic(
            "bench-speed[prompt]", Severity.warning,
            f"{ep.deployment}: measured prompt processing {prompt:,.0f} tok/s ({res.lengths[-1]['target_tokens']}-"
            f"token prompt) is {side} the plan's {sp.prompt_tps_low:,}-{sp.prompt_tps_high:,} tok/s", path))
    if res.soak and res.soak["error_count"]:
        out.append(Diagnostic(f"bench-soak[{tag}]", Severity.error,
                              f"{ep.deployment}: {res.soak['error_count']} of {res.soak['requests']} soak requests "
                              f"failed: {'; '.join(res.soak['errors'][:3])}", path))
    return out
