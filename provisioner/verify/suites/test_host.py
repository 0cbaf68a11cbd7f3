"""Host checks: reachable over SSH, planned services running and enabled, ports bound where planned."""

import json

import pytest

from provisioner.verify.suites import Failure

WILDCARD = {"0.0.0.0", "*", "::", "[::]"}
LOOPBACK = {"127.0.0.1", "::1", "[::1]", "localhost"}


def test_reachable(check, infra, state):
    state["reach"][check["host"]] = False
    try:
        result = infra.run("true")
    except RuntimeError as exc:  # testinfra's ssh backend raises on ssh's own failure (exit 255)
        result = exc.args[0] if exc.args and hasattr(exc.args[0], "stderr") else None
        if result is None:
            raise
    if result.rc != 0:
        lines = [ln for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
        raise Failure(lines[-1].strip() if lines else f"ssh exited {result.rc}")
    state["reach"][check["host"]] = True


def _systemd(remote, unit):
    props = "LoadState,ActiveState,SubState,Result,UnitFileState,StateChangeTimestamp"
    out = remote.check_output("systemctl show %s --property=%s", unit, props)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _last_log(remote, unit):
    result = remote.run("journalctl -u %s -n 1 -o cat --no-pager", unit)
    return " ".join(result.stdout.split())[:200] if result.rc == 0 else ""


def _native(check, remote):
    name, host = check["name"], check["host"]
    unit = name + ".service"
    s = _systemd(remote, unit)
    if s.get("LoadState") != "loaded":
        raise Failure(f"{host}: service {name} is not installed (systemd: {unit} {s.get('LoadState', '?')}); "
                      "run `rigctl apply`")
    active = s.get("ActiveState") == "active"
    if not active:
        since = s.get("StateChangeTimestamp")
        detail = s.get("SubState", "?") + (f" since {since}" if since else "")
        if s.get("Result") not in (None, "", "success"):
            detail += f", result {s['Result']}"
        log = _last_log(remote, unit)
        raise Failure(f"{host}: service {name} is {s.get('ActiveState')} ({detail})"
                      + (f"; last log line: {log}" if log else ""))
    if s.get("UnitFileState") != "enabled":
        raise Failure(f"{host}: service {name} runs but is {s.get('UnitFileState') or 'not enabled'}: "
                      "it will not start after a reboot (systemctl enable " + name + ")")


def _container(check, remote):
    name, host = check["name"], check["host"]
    result = remote.run("docker inspect --format %s %s",
                        "{{json .State}}|{{.HostConfig.RestartPolicy.Name}}", name)
    if result.rc != 0:
        raise Failure(f"{host}: container {name} does not exist ({' '.join(result.stderr.split())[:160]})")
    raw, _, policy = result.stdout.strip().rpartition("|")
    st = json.loads(raw)
    if not st.get("Running"):
        raise Failure(f"{host}: container {name} is {st.get('Status')} (exit code {st.get('ExitCode')}, "
                      f"since {st.get('FinishedAt', '?')}); see `docker logs {name}`")
    health = (st.get("Health") or {}).get("Status")
    if health == "unhealthy":
        raise Failure(f"{host}: container {name} runs but is unhealthy; see `docker inspect {name}`")
    if policy in ("", "no"):
        raise Failure(f"{host}: container {name} runs without a restart policy: it will not come back "
                      "after a reboot or a crash")


def test_service(check, remote, state):
    key = (check["host"], check["name"])
    state["active"][key] = False
    if check.get("mode") == "container":
        _container(check, remote)
    else:
        _native(check, remote)
    state["active"][key] = True


def _listeners(remote, port):
    out = remote.check_output("ss -Htln")
    addrs = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 4:
            continue
        addr, _, p = cols[3].rpartition(":")
        if p == str(port):
            addrs.append(addr.split("%", 1)[0])  # 127.0.0.53%lo -> 127.0.0.53
    return addrs


def test_port(check, remote, state):
    host, port, bind, name = check["host"], check["port"], check["bind"], check["service"]
    if state["active"].get((host, name)) is False:
        pytest.skip(f"{name} is not running: test_service reports it")
    addrs = _listeners(remote, port)
    shown = ", ".join(f"{a}:{port}" for a in addrs)
    if not addrs:
        raise Failure(f"{host}: nothing listens on port {port} (expected {name} on {bind}:{port})")
    if bind in WILDCARD or bind in addrs or f"[{bind}]" in addrs:
        return
    if bind in LOOPBACK and LOOPBACK & set(addrs):
        return
    if WILDCARD & set(addrs):
        raise Failure(f"{host}: {name} listens on every interface ({shown}), the plan binds {bind}:{port} "
                      "only: it is exposed beyond the planned network")
    raise Failure(f"{host}: port {port} is bound to {shown}, the plan binds {name} to {bind}:{port}")

