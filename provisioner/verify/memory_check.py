"""rigctl verify: read each engine's load log on its head host and compare its memory with the plan.

The log is the running service's own: for a native unit the journal of its current
invocation (``journalctl _SYSTEMD_INVOCATION_ID=...``), for a container ``docker logs``, for a
launchd job (macOS) its log file from the last start on (llama.cpp's first line of a start is
``build: N (commit) ...``, common_init in common/common.cpp; launchd appends every start).
Only its first lines are read (the load comes first). Parsing and comparing are
``enginelog``'s (pure); this module only fetches and assembles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..diagnostics import Diagnostic, Severity
from ..render import launchd
from . import enginelog
from .ssh import RemoteError, SshSession, Unreachable

MAX_LINES = 20000  # a load log is ~200 lines at --log-verbosity 4; requests follow it

# Runs on the host (ARGS: unit, mode, max_lines); prints one JSON object last.
_FETCH = r"""
import json, subprocess, sys
a = ARGS
if a["mode"] == "native":
    inv = subprocess.run(["systemctl", "show", "-p", "InvocationID", "--value", a["unit"]],
                         capture_output=True, text=True).stdout.strip()
    sel = ["_SYSTEMD_INVOCATION_ID=" + inv] if inv else ["-u", a["unit"]]
    cmd = ["journalctl", *sel, "-o", "cat", "--no-pager"]
elif a["mode"] == "launchd":
    path = a["log_dir"] + "/" + a["unit"] + ".log"
    try:
        with open(path, errors="replace") as f:
            lines = []
            for line in f:
                if line.startswith("build: "):
                    lines = []
                if len(lines) < a["max_lines"]:
                    lines.append(line)
    except OSError as exc:
        sys.stdout.write("\n" + json.dumps({"error": str(exc)}) + "\n")
        raise SystemExit(0)
    sys.stdout.write("\n" + json.dumps({"text": "".join(lines), "command": "read " + path}) + "\n")
    raise SystemExit(0)
else:
    cmd = ["docker", "logs", a["unit"]]
try:
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
except OSError as exc:
    sys.stdout.write("\n" + json.dumps({"error": str(exc)}) + "\n")
    raise SystemExit(0)
lines = []
for line in p.stdout:
    lines.append(line)
    if len(lines) >= a["max_lines"]:
        break
p.kill()
p.wait()
sys.stdout.write("\n" + json.dumps({"text": "".join(lines), "command": " ".join(cmd)}) + "\n")
"""

STACKS = {"llamacpp": "llama.cpp", "llamacpp-rpc": "llama.cpp", "vllm": "vLLM"}


@dataclass
class MemoryReport:
    tables: list[str] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)


def fetch_log(session: SshSession, host, unit: str, mode: str, timeout_s: float = 60) -> dict:
    try:
        return session.run_python(host.name, _FETCH, {"unit": unit, "mode": mode, "max_lines": MAX_LINES,
                                                     "log_dir": launchd.LOG_DIR},
                                  label="rigctl_engine_log", timeout_s=timeout_s,
                                  sudo=host.user not in (None, "root"))
    except (Unreachable, RemoteError) as exc:
        return {"error": str(exc)}


def _rpc_endpoints(dp) -> dict[str, str]:
    """Node -> host:port of its rpc-server, as the head's --rpc names it."""
    return {s.node: f"{s.bind}:{s.port}" for s in dp.services if s.role == "rpc-worker"}


def check_memory(ctx, plan, session: SshSession, hosts: dict, modes: dict, skip_hosts: set[str]) -> MemoryReport:
    """For each llama.cpp / vLLM deployment whose head host is checked (``hosts``) and healthy
    (not in ``skip_hosts``): the plan-vs-engine table, and findings where they differ."""
    out = MemoryReport()
    dep_index = {d.name: i for i, d in enumerate(ctx.rig.serve)}
    for dp in plan.deployments:
        engine_name = STACKS.get(dp.stack)
        head = next((s for s in dp.services if s.role == "server"), None)
        if engine_name is None or dp.fit is None or head is None or head.node not in hosts \
                or any(s.node in skip_hosts for s in dp.services):  # a down part is its own finding
            continue
        di = dep_index.get(dp.name)
        path = ("serve", di, "model") if di is not None else ()
        mode = modes.get((head.node, head.name), "native")
        answer = fetch_log(session, hosts[head.node], head.name, mode)
        source = f"{head.node}: {answer.get('command') or head.name}"
        if "error" in answer:
            out.diagnostics.append(Diagnostic(
                f"verify-engine-log[{head.node}]", Severity.warning,
                f"{dp.name}: cannot read the log of {head.name} on {head.node}: {answer['error']}", path,
                hint="the plan-vs-engine memory comparison needs the service's journal (or docker logs)"))
            continue
        text = answer.get("text", "")
        engine = enginelog.parse_llamacpp(text) if engine_name == "llama.cpp" else enginelog.parse_vllm(text)
        if engine is None:
            out.diagnostics.append(Diagnostic(
                f"verify-engine-log[{head.node}]", Severity.warning,
                f"{dp.name}: the log of {head.name} on {head.node} has no {engine_name} load lines "
                "(per-device buffer sizes), so its memory was not compared with the plan", path,
                hint=("a deployment applied before rigctl passed --log-verbosity 4 logs none: `rigctl apply` "
                      "again" if engine_name == "llama.cpp" else
                      "vLLM logs them at INFO: check VLLM_LOGGING_LEVEL in the service's environment"),
                data={"source": source}))
            continue
        names = enginelog.engine_names(dp.fit, head.node, _rpc_endpoints(dp), dp.stack)
        rows = enginelog.compare(dp.fit, engine, names)
        out.tables.append(enginelog.table(dp.name, engine, rows))
        out.diagnostics += enginelog.diagnostics(dp.name, engine, rows, path, source)
    return out
