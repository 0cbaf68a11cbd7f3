"""Endpoint checks, run on the serving host: the stack's health route, then a real completion."""

import os
from pathlib import Path

import pytest

from provisioner.verify import endpoint_probe
from provisioner.verify.ssh import RemoteError, Unreachable
from provisioner.verify.suites import Failure

CODE = Path(endpoint_probe.__file__).read_text(encoding="utf-8")
REFUSED_GRACE_S = 15  # a unit that is active may still be binding its port (just restarted)


def test_endpoint(check, ssh, state, record):
    host = check["host"]
    if state["reach"].get(host) is False:
        pytest.skip(f"{host} is unreachable")
    args = {k: check[k] for k in ("host_address", "port", "health_path", "model_hint", "budget_s", "max_tokens")}
    args["host"] = args.pop("host_address")
    args["refused_grace_s"] = REFUSED_GRACE_S if state["active"].get((host, check["service"])) else 0
    auth = check.get("auth") or {}
    if "env" in auth:
        key = os.environ.get(auth["env"])
        if not key:
            raise Failure(f"{host}: cannot check {check['service']} with its API key: environment variable "
                          f"{auth['env']} is not set on this controller",
                          hint=f"export {auth['env']} with the key `rigctl apply` deployed, then verify again")
        args["key"] = key
    elif "key_file" in auth:
        args["key_file"] = auth["key_file"]
    try:
        result = ssh.run_python(host, CODE, args, label="endpoint_probe", timeout_s=check["budget_s"] + 15,
                                sudo=bool(auth.get("sudo")))
    except (RemoteError, Unreachable) as exc:
        raise Failure(f"{host}: endpoint check of {check['service']} could not run: {exc}") from None
    record["result"] = result
    if not result.get("ok"):
        raise Failure(f"{host}: {result.get('error')}", hint=_hint(check, result))


def _hint(check, result):
    status, error, unit = result.get("status"), result.get("error") or "", check["service"]
    if status in (401, 403):
        ref = check.get("auth") or {}
        where = f"${ref['env']}" if "env" in ref else ref.get("key_file", "no key")
        return f"the server refuses the key from {where}: run `rigctl apply` with the current key"
    if "timed out" in error or "budget" in error or "still loading" in error:
        return "the server is slow to answer: raise the budget with --timeout, or check its load"
    return f"on {check['host']}: `journalctl -u {unit} -n 50`"
