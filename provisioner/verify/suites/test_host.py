"""Host checks: reachable over SSH, planned services running and enabled, ports bound where planned."""

import json
import re

import pytest

from provisioner.render.launchd import LABEL_PREFIX, LOG_DIR
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




def parse_launchctl_print(text):
    """The job's own properties from `launchctl print system/<label>`: the lines one tab
    deep (`\tstate = running`, `\tpid = 412`, `\tlast exit code = 1`); nested blocks are deeper."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^\t([a-z][a-z ]*?) = (.*)$", line)
        if m:
            out.setdefault(m.group(1), m.group(2).strip())
    return out


def launchd_disabled(text, label):
    """Whether `launchctl print-disabled system` lists the job as disabled (macOS 11+ prints
    `"label" => disabled`, older releases `"label" => true`)."""
    return re.search(r'"' + re.escape(label) + r'"\s*=>\s*(disabled|true)\b', text) is not None


def _launchd(check, remote):
    name, host = check["name"], check["host"]
    label = LABEL_PREFIX + name  # the job render.launchd writes, in the system domain
    result = remote.run("launchctl print system/%s", label)
    if result.rc != 0:
        raise Failure(f"{host}: service {name} is not loaded (launchd has no job system/{label}); run `rigctl apply`")
    job = parse_launchctl_print(result.stdout)
    if job.get("state") != "running":
        detail = job.get("state", "?")
        if job.get("last exit code") not in (None, "0", "(never exited)"):
            detail += f", last exit code {job['last exit code']}"
        tail = remote.run("tail -n 1 %s", f"{LOG_DIR}/{name}.log")
        log = " ".join(tail.stdout.split())[:200] if tail.rc == 0 else ""
        raise Failure(f"{host}: service {name} is not running (launchd: {detail})"
                      + (f"; last log line: {log}" if log else ""))
    disabled = remote.run("launchctl print-disabled system")
    if disabled.rc == 0 and launchd_disabled(disabled.stdout, label):
        raise Failure(f"{host}: service {name} runs but its job is disabled: it will not start after a reboot "
                      f"(sudo launchctl enable system/{label})")


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
    elif check.get("mode") == "launchd":
        _launchd(check, remote)
    else:
        _native(check, remote)
    state["active"][key] = True


def parse_lsof_listeners(text):
    """Addresses from `lsof -nP -iTCP:<port> -sTCP:LISTEN -Fn` (macOS has no ss): its `n` field
    lines, `n*:8080`, `n10.0.0.5:8080`, `n[::1]:8080`."""
    return [line[1:].rpartition(":")[0] for line in text.splitlines() if line.startswith("n") and ":" in line]


def _listeners(remote, port, os_name="linux"):
    if os_name == "macos":
        result = remote.run("lsof -nP -iTCP:%s -sTCP:LISTEN -Fn", str(port))  # exit 1: nothing listens
        return parse_lsof_listeners(result.stdout)
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
    addrs = _listeners(remote, port, check.get("os", "linux"))
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

