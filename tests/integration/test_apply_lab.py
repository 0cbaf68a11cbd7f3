"""`rigctl apply` against the real lab: examples/lab-cpu-rpc.yaml puts llama-server on h1
and its rpc-server on h2; a completion comes back over HTTP; the second apply and
`--check` change nothing; a lock refuses a concurrent apply; an unreachable h2 fails
the run with exit 5 naming h2 and the task while h1 completes, and the run after h2
is back converges.

"Outside the rig subnet": every lab address is inside 10.213.0.0/24, so the test adds
10.99.0.1/32 to this machine's end of the lab bridge for a moment and sends from it
(h2 routes replies to its gateway, this machine). The nft counters on h2 show the
drop; ssh from the same address works, so the route is fine and the rule did it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "examples" / "lab-cpu-rpc.yaml"
INVENTORY = ROOT / "inventories" / "lab"
H1, H2 = "10.213.0.11", "10.213.0.12"
OUTSIDE = "10.99.0.1"


def rigctl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "provisioner", *args], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT, env=os.environ.copy(), stdin=subprocess.DEVNULL)
    r.output = r.stdout + r.stderr
    return r


def apply(*extra: str) -> subprocess.CompletedProcess:
    return rigctl("apply", str(SPEC), "-i", str(INVENTORY), "--yes", *extra)


def host_line(output: str, host: str) -> str:
    return next(line for line in output.splitlines() if line.strip().startswith(host + " ") and "ok=" in line)


@pytest.fixture(scope="module")
def key(lab, lab_rig_env, lab_shell):
    if lab["addresses"] != {"h1": H1, "h2": H2}:
        pytest.skip(f"examples/lab-cpu-rpc.yaml binds the default lab addresses, this lab has {lab['addresses']}")
    r = apply()
    assert r.returncode == 0, f"apply failed ({r.returncode}):\n{r.output[-4000:]}"
    # GPU roles are skipped visibly on the lab profile
    assert "GPU roles (nvidia_driver, gpu_checks, power_limits) skipped on h1" in r.output
    assert "skipped: rigctl_deploy_mode is native on h2" in r.output
    yield lab_rig_env
    # the lab is shared by the session: free port 8080 and 50052 for the next module
    # (llama-server first: stopping its RPC server first makes it abort)
    lab_shell.run("h1", "systemctl disable --now rigctl-tiny.service", check=False)
    lab_shell.run("h2", "systemctl disable --now rigctl-tiny-rpc.service", check=False)


def chat(key: str | None) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://{H1}:8080/v1/chat/completions", method="POST",
        data=json.dumps({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def test_chat_completion_from_this_machine(key, lab_shell):
    status, body = chat(key)
    assert status == 200, body
    assert body["usage"]["completion_tokens"] > 0 and body["choices"][0]["message"]["content"]
    assert chat(None)[0] == 401  # the key from the env reference is enforced
    assert chat("wrong-key")[0] == 401
    # llama-server offloads to h2's rpc-server: its connection is established from h1
    assert f"{H2}:50052" in lab_shell.out("h1", f"ss -Htn state established dst {H2}")


def _counters(lab_shell) -> dict[str, int]:
    text = lab_shell.out("h2", "nft list table inet rigctl")
    return {kind: int(m.group(1)) for kind in ("accept", "drop")
            for m in [re.search(rf"dport 50052 counter packets (\d+) bytes \d+ {kind}", text)] if m}


def _connect(src: str, port: int) -> bool:
    with contextlib.closing(socket.socket()) as s:
        s.settimeout(2)
        s.bind((src, 0))
        try:
            s.connect((H2, port))
            return True
        except OSError:
            return False


def test_rpc_port_only_from_the_rig_subnet(key, lab_shell):
    ruleset = lab_shell.out("h2", "nft list table inet rigctl")
    assert "ip saddr 10.213.0.0/24 tcp dport 50052 counter" in ruleset and "tcp dport 50052 counter packets" in ruleset
    assert "dport 8080" not in ruleset  # h1's endpoint is not on h2
    assert "tcp dport 22 accept" in ruleset
    subprocess.run(["ip", "addr", "add", f"{OUTSIDE}/32", "dev", "labbr0"], check=True)
    try:
        before = _counters(lab_shell)
        assert not _connect(OUTSIDE, 50052), "rpc-server answered a source outside the rig subnet"
        assert _connect(OUTSIDE, 22), "no route back from h2 to the outside address: the test itself is broken"
        after = _counters(lab_shell)
    finally:
        subprocess.run(["ip", "addr", "del", f"{OUTSIDE}/32", "dev", "labbr0"], check=False)
    assert after["drop"] > before["drop"]
    # from inside the subnet the accept rule matches (rpc-server serves one client at a
    # time, so the connection itself may wait in its backlog)
    _connect("10.213.0.1", 50052)
    assert _counters(lab_shell)["accept"] > after["accept"]


def test_second_apply_and_check_change_nothing(key):
    r = apply()
    assert r.returncode == 0, r.output[-4000:]
    # the API key reached the host, but no kept artifact or output holds it
    assert key not in r.output
    runs = ROOT / "examples" / ".rigctl" / "runs"
    leaked = [p for p in runs.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert not leaked, leaked
    for host in ("h1", "h2"):
        line = host_line(r.output, host)
        assert "changed=0" in line and "no changes: all" in line, r.output[-3000:]
    # the run went through Mitogen (the rigctl_linear strategy says when it falls back)
    newest = max((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.name)
    stdout = (newest / "artifacts" / "apply" / "stdout").read_text(encoding="utf-8", errors="replace")
    assert "PLAY RECAP" in stdout and "Mitogen for Ansible not used" not in stdout, stdout[-2000:]
    c = apply("--check")
    assert c.returncode == 0, c.output[-4000:]
    for host in ("h1", "h2"):
        assert "would change=0" in host_line(c.output, host), c.output[-3000:]


def test_plan_detailed_exitcode_against_the_applied_rig(key, tmp_path):
    """Terraform-style: 0 when the applied rig matches the spec, 2 with the change per host."""
    r = rigctl("plan", str(SPEC), "--detailed-exitcode")
    assert r.returncode == 0, r.output[-3000:]
    # the same rig with a larger context, next to the same applied state
    changed = tmp_path / "lab-cpu-rpc.yaml"
    changed.write_text(SPEC.read_text().replace("context_tokens: 512", "context_tokens: 1024"))
    from provisioner.plan.state import default_render_dir, state_path

    state = state_path(default_render_dir(str(SPEC), "lab-cpu-rpc"))
    r = rigctl("plan", str(changed), "--detailed-exitcode", "--state", str(state))
    assert r.returncode == 2, r.output[-3000:]
    h1_section = r.output.split("  h1", 1)[1]
    assert "--ctx-size 512 -> 1024" in h1_section, r.output
    assert "\n  h2" not in r.output.split("changes against", 1)[1], "h2's rpc-server does not change"


def test_concurrent_apply_is_refused(key):
    from provisioner.execute import rig_dir
    from provisioner.execute.lock import RigLock

    with RigLock(rig_dir(SPEC) / "apply-lab-cpu-rpc.lock"):
        r = apply()
    assert r.returncode == 6 and "another rigctl apply is running" in r.output


def _payload_cgroup(lab_dir: str, host: str) -> Path:
    pid = (Path(lab_dir) / "hosts" / host / "pid").read_text().strip()
    rel = next(line.split("::", 1)[1] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
               if line.startswith("0::"))
    return Path("/sys/fs/cgroup/unified" if Path("/sys/fs/cgroup/unified").is_dir() else "/sys/fs/cgroup") \
        / rel.strip("/").rsplit("/", 1)[0] / "payload"


def _close_masters(host_ip: str) -> None:
    """Drop ssh control masters to the host so the next connection is a new one."""
    for sock in Path("~/.ansible/cp").expanduser().glob("*"):
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", f"root@{host_ip}"],
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=10)


def test_unreachable_h2_fails_the_run_h1_completes_then_recovers(key, lab):
    freeze = _payload_cgroup(lab["lab_dir"], "h2") / "cgroup.freeze"
    _close_masters(H2)
    freeze.write_text("1")  # h2 hangs like a dead machine: ssh gets no banner
    try:
        r = apply()
    finally:
        freeze.write_text("0")
    assert r.returncode == 5, r.output[-4000:]
    failure = next(line for line in r.output.splitlines() if line.strip().startswith("h2: unreachable in task"))
    assert re.search(r"task '[^']+' \(play '[^']+'\): \S", failure), failure
    h1 = host_line(r.output, "h1")
    assert "failed=0" in h1 and "unreachable=0" in h1, r.output[-3000:]
    assert "not starting rigctl-tiny: RPC worker(s) h2 failed earlier in this run" in r.output
    again = apply()
    assert again.returncode == 0, again.output[-4000:]
    assert chat(key)[0] == 200


def test_gpu_role_on_a_gpu_less_host_fails_fast_and_clearly_under_mitogen(lab, tmp_path):
    """The lab profile skips the GPU roles; forced on a host without a GPU, gpu_checks (a
    custom module with a module_util, run by Mitogen) fails at once and says why."""
    project = tmp_path / "project"
    r = rigctl("render", str(SPEC), "-o", str(project), "-i", str(INVENTORY), "-q")
    assert r.returncode == 0, r.output
    (project / "gpu.yml").write_text(
        "- name: Force the GPU checks on h1\n  hosts: h1\n  gather_facts: false\n  roles:\n"
        "    - role: gpu_checks\n      vars:\n        rigctl_gpu_required: true\n"
        "        rigctl_nvml_install: false\n        rigctl_gpu_module_python: /usr/bin/python3\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(project / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    p = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "gpu.yml"], cwd=project, env=env,
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    out = p.stdout + p.stderr
    assert p.returncode == 2, out[-3000:]
    assert "rigctl_gpu_facts: pynvml (nvidia-ml-py) is not installed for this Python" in out, out[-3000:]
    assert '"unavailable": true' in out and "Mitogen for Ansible not used" not in out, out[-3000:]
