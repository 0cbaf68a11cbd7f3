"""The engine's own memory figures at load, read from its service log, against the plan.

Pure: text in, figures and diagnostics out (``runner`` fetches the log over SSH).

llama.cpp (the build llama-cpp-python 0.3.36 vendors, 0c1e57098) prints, per backend
buffer, at load:

    load_tensors: RPC0[10.0.0.12:50052] model buffer size =     0.38 MiB   (src/llama-model.cpp)
    llama_kv_cache: RPC0[10.0.0.12:50052] KV buffer size =     0.25 MiB   (src/llama-kv-cache.cpp)
    sched_reserve: RPC0[10.0.0.12:50052] compute buffer size =     1.63 MiB (src/llama-context.cpp)

These are libllama INFO lines, which common/log.cpp (common_log_get_verbosity) files at
verbosity 4: the plan starts llama-server with ``--log-verbosity 4`` so they reach the
journal. Buffer names are the backend's: ``RPC<i>[host:port]`` (ggml-rpc.cpp: device i of
that rpc-server), ``CUDA<i>``/``ROCm<i>``/``Vulkan<i>``/``MTL<i>`` (local devices), and
``CPU``, ``CPU_Mapped``, ``CPU_REPACK``, ``CUDA_Host`` (host memory of the llama-server node).

vLLM 0.30.0 prints, per worker process (prefix ``(Worker_TP1 pid=..)``; vllm/v1/executor/
multiproc_executor.py names it), ``Model loading took X GiB memory`` (v1/worker/
gpu_model_runner.py), ``Available KV cache memory: X GiB`` (v1/worker/gpu_worker.py) or on
the CPU backend ``Explicitly set (X/Y) GiB for KV cache`` / ``Auto set (X/Y) GiB for KV
cache`` (v1/worker/cpu_worker.py), and once ``GPU KV cache size: N tokens``
(v1/core/kv_cache_utils.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..diagnostics import Diagnostic, Severity

MIB = 1024.0
# Tolerance of a plan figure (weights or KV cache on one device): the larger of 25 % of the
# planned figure and 64 MiB. 25 %: the flat bits-per-weight estimate of a k-quant differs from
# the real file by up to ~10 % and llama.cpp keeps the token embeddings in host memory (a few
# % of a model), so an honest plan lands well inside it, while a wrong model entry (layers,
# heads, parameter count) is off by far more. 64 MiB: for tiny models relative errors are
# meaningless (the lab's 0.4 MiB model), and 64 MiB is below a single layer of any real model
# while above every fixed buffer llama.cpp adds outside the plan (output buffer, padding).
TOLERANCE_FRACTION = 0.25
TOLERANCE_FLOOR_MIB = 64.0

_LOAD_START = "load_tensors: loading model tensors"
_BUF = r"\s+(?P<buf>\S+) {kind} buffer size =\s*(?P<mib>[0-9.]+) MiB"
_MODEL = re.compile(r"load_tensors:" + _BUF.format(kind="model"))
_KV = re.compile(r"llama_kv_cache:" + _BUF.format(kind="KV"))
_COMPUTE = re.compile(r"\w+:" + _BUF.format(kind="compute"))
_RPC = re.compile(r"^RPC(?P<i>\d+)\[(?P<ep>[^\]]+)\]$")
_LOCAL = re.compile(r"^(?P<kind>[A-Za-z]+?)(?P<i>\d*)(?:_\w+)?$")

_WORKER = re.compile(r"^\((?P<proc>[A-Za-z]*Worker[A-Za-z_0-9]*)(?: pid=\d+[^)]*)?\)")
_VLLM_WEIGHTS = re.compile(r"Model loading took (?P<gib>[0-9.]+) GiB")
_VLLM_KV = re.compile(r"(?:Available KV cache memory: (?P<gib>[0-9.]+) GiB"
                      r"|(?:Explicitly|Auto) set \((?P<cpu>[0-9.]+)/[0-9.]+\) GiB for KV cache)")
_VLLM_TOKENS = re.compile(r"\b[A-Z]+ KV cache size: (?P<n>[0-9,]+) tokens")
_VLLM_START = re.compile(r"Initializing a V1 LLM engine")


@dataclass
class EngineDevice:
    """What the engine reports for one of its devices (MiB)."""

    name: str  # the engine's name: RPC0[10.0.0.12:50052], CUDA0, host, rank0
    weights_mib: float | None = 0.0  # None: the engine does not print it (vLLM's CPU backend)
    kv_mib: float | None = 0.0
    compute_mib: float | None = 0.0


@dataclass
class EngineMemory:
    engine: str  # llama.cpp | vLLM
    devices: dict[str, EngineDevice] = field(default_factory=dict)
    kv_tokens: int | None = None  # vLLM's KV cache size in tokens

    def device(self, name: str) -> EngineDevice:
        return self.devices.setdefault(name, EngineDevice(name))


def device_key(buffer: str) -> str:
    """The device a llama.cpp buffer lives on: RPC<i>[ep], <KIND><i> (local), or host."""
    if _RPC.match(buffer):
        return buffer
    if buffer.startswith("CPU") or buffer.endswith("_Host"):
        return "host"
    m = _LOCAL.match(buffer)
    return f"{m['kind']}{m['i'] or '0'}" if m else buffer


def parse_llamacpp(text: str) -> EngineMemory | None:
    """Per-device buffers of the LAST load in a llama-server log (a journal holds every restart);
    None when the log has no buffer lines (not started yet, or logging below verbosity 4)."""
    start = text.rfind(_LOAD_START)
    block = text[start:] if start >= 0 else text
    out = EngineMemory("llama.cpp")
    seen = False
    for line in block.splitlines():
        for rx, attr in ((_MODEL, "weights_mib"), (_KV, "kv_mib"), (_COMPUTE, "compute_mib")):
            m = rx.search(line)
            if m:
                d = out.device(device_key(m["buf"]))
                setattr(d, attr, getattr(d, attr) + float(m["mib"]))
                seen = True
                break
    return out if seen else None


def parse_vllm(text: str) -> EngineMemory | None:
    """Per-rank weights and KV cache of the last engine start in a vLLM log (None: no lines)."""
    starts = [m.start() for m in _VLLM_START.finditer(text)]
    block = text[starts[-1]:] if starts else text
    ranks: dict[tuple[int, int], EngineDevice] = {}
    tokens = None
    for line in block.splitlines():
        w = _WORKER.match(line)
        pp = tp = 0
        if w:
            mp, mt = re.search(r"_PP(\d+)", w["proc"]), re.search(r"_TP(\d+)", w["proc"])
            pp, tp = int(mp[1]) if mp else 0, int(mt[1]) if mt else 0
        m = _VLLM_WEIGHTS.search(line)
        if m:
            ranks.setdefault((pp, tp), EngineDevice("", None, None, None)).weights_mib = float(m["gib"]) * MIB
            continue
        m = _VLLM_KV.search(line)
        if m:
            ranks.setdefault((pp, tp), EngineDevice("", None, None, None)).kv_mib = float(m["gib"] or m["cpu"]) * MIB
            continue
        m = _VLLM_TOKENS.search(line)
        if m:
            tokens = int(m["n"].replace(",", ""))
    if not ranks:
        return None
    out = EngineMemory("vLLM", kv_tokens=tokens)
    for i, key in enumerate(sorted(ranks)):
        d = ranks[key]
        d.name = f"rank{i}"
        out.devices[d.name] = d
    return out


# ----------------------------------------------------------------- comparison


def tolerance_mib(planned_mib: float) -> float:
    return max(TOLERANCE_FRACTION * planned_mib, TOLERANCE_FLOOR_MIB)


@dataclass
class Row:
    """One line of the plan-vs-engine table."""

    device: str  # the plan's label (h2/cpu, node/gpu0), or the engine's name when unplanned
    engine_name: str | None
    plan_weights_mib: float | None
    plan_kv_mib: float | None
    engine: EngineDevice | None
    off: list[str] = field(default_factory=list)  # "weights", "kv"


def engine_names(fit, head: str, rpc_endpoints: dict[str, str], stack: str) -> list[str]:
    """The engine's name for each of ``fit.devices``, in order.

    llama.cpp: a device on another node is ``RPC<k>[endpoint]`` (k-th device of that node's
    rpc-server), a GPU of the head node its k-th local accelerator, the head's RAM ``host``.
    vLLM: rank i is the i-th device of the plan (tensor-parallel ranks, then pipeline stages).
    """
    if stack == "vllm":
        return [f"rank{i}" for i in range(len(fit.devices))]
    names, per_node = [], {}
    for d in fit.devices:
        k = per_node.get(d.node, 0)
        per_node[d.node] = k + 1
        if d.node != head and d.node in rpc_endpoints:
            names.append(f"RPC{k}[{rpc_endpoints[d.node]}]")
        elif d.gpu_id is None:
            names.append("host")
        else:
            names.append(f"#local{k}")  # resolved against the engine's local devices below
    return names


def _resolve_local(names: list[str], engine: EngineMemory) -> list[str]:
    local = sorted((n for n in engine.devices if n != "host" and not n.startswith("RPC")),
                   key=lambda n: (re.sub(r"\d+$", "", n), int(re.search(r"(\d*)$", n)[1] or 0)))
    return [local[int(n[6:])] if n.startswith("#local") and int(n[6:]) < len(local) else n for n in names]


def compare(fit, engine: EngineMemory, names: list[str]) -> list[Row]:
    """Rows for the plan's devices (in plan order), then engine devices the plan has no row for."""
    names = _resolve_local(names, engine)
    rows = []
    for d, name in zip(fit.devices, names):
        e = engine.devices.get(name)
        pw, pk = d.weights_gib * MIB, d.kv_gib * MIB
        row = Row(d.label, name, pw, pk, e)
        if e is None:
            row.off.append("missing")
        else:
            if e.weights_mib is not None and abs(e.weights_mib - pw) > tolerance_mib(pw):
                row.off.append("weights")
            if e.kv_mib is not None:
                # vLLM fills its pool with as much KV cache as memory allows: only less than planned is off
                short = pk - e.kv_mib if engine.engine == "vLLM" else abs(e.kv_mib - pk)
                if short > tolerance_mib(pk):
                    row.off.append("kv")
        rows.append(row)
    for name, e in engine.devices.items():
        if name not in names:
            rows.append(Row(name, name, None, None, e))
    return rows


def _mib(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if v < 10 else f"{v:.0f}"


def table(deployment: str, engine: EngineMemory, rows: list[Row]) -> str:
    """Plain-text table, one device a line (MiB)."""
    head = (f"memory of {deployment}: plan vs {engine.engine} at load (MiB; tolerance "
            f"max({TOLERANCE_FRACTION:.0%}, {TOLERANCE_FLOOR_MIB:.0f} MiB))")
    cols = [("device", "engine device", "plan weights", "engine weights", "plan KV", "engine KV",
             "engine compute", "check")]
    for r in rows:
        e = r.engine
        verdict = ("no such device in the log" if "missing" in r.off else
                   "OFF: " + ", ".join(r.off) if r.off else
                   "not planned" if r.plan_weights_mib is None else "ok")
        cols.append((r.device, r.engine_name or "-", _mib(r.plan_weights_mib), _mib(e and e.weights_mib),
                     _mib(r.plan_kv_mib), _mib(e and e.kv_mib), _mib(e and e.compute_mib), verdict))
    widths = [max(len(c[i]) for c in cols) for i in range(len(cols[0]))]
    lines = [head] + ["  " + "  ".join(c[i].ljust(widths[i]) if i in (0, 1, 7) else c[i].rjust(widths[i])
                                       for i in range(len(c))).rstrip() for c in cols]
    return "\n".join(lines) + "\n"


def diagnostics(deployment: str, engine: EngineMemory, rows: list[Row], path: tuple,
                source: str) -> list[Diagnostic]:
    """A verify-memory finding per device whose engine figure is off the plan by more than the
    tolerance, at ``path`` (the deployment's model: what a wrong figure traces back to)."""
    out = []
    for r in rows:
        if not r.off:
            continue
        data = {"deployment": deployment, "device": r.device, "engine_device": r.engine_name,
                "plan_weights_mib": r.plan_weights_mib, "plan_kv_mib": r.plan_kv_mib,
                "engine_weights_mib": r.engine and r.engine.weights_mib,
                "engine_kv_mib": r.engine and r.engine.kv_mib,
                "engine_compute_mib": r.engine and r.engine.compute_mib, "source": source}
        if "missing" in r.off:
            msg = (f"{deployment}: the plan puts {_mib(r.plan_weights_mib)} MiB of weights on {r.device}, but "
                   f"{engine.engine}'s load log ({source}) has no buffers on {r.engine_name}")
        else:
            parts = []
            for what, plan_v, eng_v in (("weights", r.plan_weights_mib, r.engine.weights_mib),
                                        ("kv", r.plan_kv_mib, r.engine.kv_mib)):
                if what in r.off:
                    label = "weights" if what == "weights" else "KV cache"
                    parts.append(f"{label} {_mib(eng_v)} MiB, planned {_mib(plan_v)} MiB "
                                 f"(tolerance {_mib(tolerance_mib(plan_v))} MiB)")
            msg = (f"{deployment}: on {r.device} ({r.engine_name}) {engine.engine} loaded "
                   + "; ".join(parts))
        out.append(Diagnostic(f"verify-memory[{r.device}]", Severity.error, msg, path,
                              hint="the plan's model entry (parameters, layers, KV heads, head size, format) "
                                   "does not describe the file the engine loaded: correct the catalog or "
                                   "inline model and plan again", data=data))
    return out
