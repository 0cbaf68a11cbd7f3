"""verify on macOS nodes: launchd jobs, lsof listeners, the job's log file (no systemd there).

No Mac is reachable from here, so the host side is checked against labelled stand-in texts in
the formats launchctl(1) and lsof(8) print (the lines the checks read are quoted in each), and
the log reader runs for real on a file written by the test.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from provisioner.check import check_file
from provisioner.plan import build_plan
from provisioner.verify import memory_check
from provisioner.verify.inventory import InventoryHost
from provisioner.verify.runner import _diagnostics, build_checks
from provisioner.verify.suites import test_host

ROOT = Path(__file__).resolve().parents[2]

# stand-in: the head of `launchctl print system/io.rigctl.x` (macOS 14): top-level job keys one
# tab deep, nested blocks (environment, endpoints) deeper
LAUNCHCTL_RUNNING = """system/io.rigctl.studio = {
\tactive count = 1
\tpath = /Library/LaunchDaemons/io.rigctl.studio.plist
\ttype = LaunchDaemon
\tstate = running

\tprogram = /var/lib/rigctl/bin/llama-server
\tenvironment = {
\t\tstate = not-a-job-key
\t}
\tpid = 412
\tlast exit code = (never exited)
}
"""
LAUNCHCTL_CRASHED = LAUNCHCTL_RUNNING.replace("state = running", "state = not running").replace(
    "\tpid = 412\n", "").replace("(never exited)", "1")


def test_launchctl_print_is_read_one_level_deep():
    job = test_host.parse_launchctl_print(LAUNCHCTL_RUNNING)
    assert job["state"] == "running" and job["pid"] == "412"  # not the nested `state`
    crashed = test_host.parse_launchctl_print(LAUNCHCTL_CRASHED)
    assert crashed["state"] == "not running" and crashed["last exit code"] == "1"


def test_a_disabled_job_is_found_in_print_disabled():
    # stand-in: `launchctl print-disabled system`, macOS 11+ (`=> disabled`) and 10.x (`=> true`)
    text = 'disabled services = {\n\t"com.apple.ftpd" => disabled\n\t"io.rigctl.studio" => enabled\n}\n'
    assert not test_host.launchd_disabled(text, "io.rigctl.studio")
    assert test_host.launchd_disabled(text.replace("=> enabled", "=> disabled"), "io.rigctl.studio")
    assert test_host.launchd_disabled('\t"io.rigctl.studio" => true\n', "io.rigctl.studio")
    assert not test_host.launchd_disabled('\t"io.rigctl.studio2" => true\n', "io.rigctl.studio")


def test_lsof_listeners():
    # stand-in: `lsof -nP -iTCP:8080 -sTCP:LISTEN -Fn` (process, fd and name field lines)
    text = "p412\nf5\nn10.0.4.21:8080\nf6\nn[::1]:8080\np9\nf3\nn*:8080\n"
    assert test_host.parse_lsof_listeners(text) == ["10.0.4.21", "[::1]", "*"]
    assert test_host.parse_lsof_listeners("") == []


def test_mac_nodes_get_launchd_checks_and_lsof_ports():
    spec = ROOT / "examples" / "mac-studio.yaml"
    res = check_file(str(spec))
    plan = build_plan(res.context)
    hosts = [InventoryHost(n.name, n.name) for n in res.context.rig.nodes]
    checks = build_checks(res.context, plan, hosts, budget_s=5, max_tokens=4)
    services = [c for c in checks.items if c["kind"] == "service"]
    ports = [c for c in checks.items if c["kind"] == "port"]
    assert services and {c["mode"] for c in services} == {"launchd"}
    assert ports and {c["os"] for c in ports} == {"macos"}
    # the hint names the job's log file and launchctl, not journalctl
    meta = checks.meta[services[0]["id"]]
    diags = _diagnostics(res.context, checks, [{"id": services[0]["id"], "outcome": "failed", "message": "down"}])
    assert meta["mode"] == "launchd" and "/var/log/rigctl/" in diags[0].hint and "launchctl print" in diags[0].hint
    assert "journalctl" not in diags[0].hint


def test_the_launchd_log_is_read_from_the_last_start(tmp_path):
    log = tmp_path / "rigctl-studio.log"
    log.write_text("build: 1 (aaa) with clang for arm64\nold run: load_tensors: Metal_Mapped model buffer size = 1.0 MiB\n"
                   "srv  operator(): stopping\n"
                   "build: 2 (bbb) with clang for arm64\nnew run: load_tensors: Metal_Mapped model buffer size = 2.0 MiB\n")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        exec(memory_check._FETCH, {"ARGS": {"unit": "rigctl-studio", "mode": "launchd", "max_lines": 100,
                                            "log_dir": str(tmp_path)}})
    answer = json.loads(out.getvalue().strip().splitlines()[-1])
    assert answer["text"].startswith("build: 2 (bbb)") and "old run" not in answer["text"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        exec(memory_check._FETCH, {"ARGS": {"unit": "missing", "mode": "launchd", "max_lines": 100,
                                            "log_dir": str(tmp_path)}})
    assert "No such file" in json.loads(out.getvalue().strip().splitlines()[-1])["error"]
