"""GPU checks: the probe (provisioner/probe/core.py) run on the host, compared with the spec."""

import pytest

from provisioner.verify.drift import gpu_problems
from provisioner.verify.remote_probe import probe_host
from provisioner.verify.suites import Failure


def test_gpu(check, ssh, state, record):
    host = check["host"]
    if state["reach"].get(host) is False:
        pytest.skip(f"{host} is unreachable")
    outcome = probe_host(ssh, host)
    record["outcome"] = outcome  # the parent turns it into located diagnostics
    if "facts" not in outcome:
        why = outcome.get("unavailable") or outcome.get("unreachable") or outcome.get("error")
        raise Failure(f"{host}: no GPU facts: {why}")
    problems = gpu_problems(outcome["facts"], check["expected"])
    if problems:
        raise Failure(f"{host}: " + "; ".join(p["message"] for p in problems))
