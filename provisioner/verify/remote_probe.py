"""Run the one probe implementation (provisioner/probe/core.py) on remote hosts.

The file itself is sent over SSH and run by the host's Python; nothing of the
probe is copied or rewritten here.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..probe import core
from .ssh import RemoteError, SshSession, Unreachable

# Runs on the host: the host's own nvidia-ml-py when it has one, else the
# controller's copy (NVML bindings are backward compatible across drivers), so
# a host needs only its NVIDIA driver. Then core.py's collect().
_BOOTSTRAP = """
import json, sys, types
try:
    import pynvml
except ImportError:
    pynvml = sys.modules["pynvml"] = types.ModuleType("pynvml")
    exec(compile(ARGS["pynvml"], "pynvml.py", "exec"), pynvml.__dict__)
probe = {"__name__": "rigctl_probe"}
exec(compile(ARGS["core"], "rigctl_probe.py", "exec"), probe)
try:
    out = {"facts": probe["collect"]()}
except probe["ProbeUnavailable"] as exc:
    out = {"unavailable": exc.reason}
sys.stdout.write("\\n" + json.dumps(out) + "\\n")
"""


def _sources() -> dict:
    import pynvml

    return {"core": Path(core.__file__).read_text(encoding="utf-8"),
            "pynvml": Path(pynvml.__file__).read_text(encoding="utf-8")}


def probe_host(session: SshSession, name: str, timeout_s: float = 60) -> dict:
    """One host's outcome: {"facts": ...}, {"unavailable": reason}, {"unreachable": reason} or {"error": reason}."""
    try:
        answer = session.run_python(name, _BOOTSTRAP, _sources(), label="rigctl_probe", timeout_s=timeout_s)
    except Unreachable as exc:
        return {"unreachable": str(exc)}
    except RemoteError as exc:
        return {"error": str(exc)}
    if "facts" in answer or "unavailable" in answer:
        return answer
    return {"error": f"unexpected probe answer: {str(answer)[:200]}"}


def probe_hosts(session: SshSession, names: list[str], timeout_s: float = 60) -> dict[str, dict]:
    """probe_host on every host at once; results in the order of ``names``."""
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(names))) as pool:
        results = list(pool.map(lambda n: probe_host(session, n, timeout_s), names))
    return dict(zip(names, results))
