"""Removals, destroy and GPU-safe re-applies against the real labs.

Native (lab): examples/lab-cpu-rpc.yaml on this lab's net; a second apply runs no systemd
daemon-reload on either host (read from the hosts' own journal: PID 1 logs "Reloading." for
every reload); an engine change (a stand-in cmake flag gives the plan another build key)
installs the new build beside the running one and applying the previous spec again points
both units back at the old build, which was not copied again; the deployment renamed (tiny -> tiny2) leaves no rigctl-tiny unit, secret or
firewall opening behind and tiny2 serves on the same port; moved (llama-server from h1 to
h2, its rpc-server the other way) leaves nothing listening on h1's 8080 and h2 serves;
`rigctl destroy --yes` leaves no rigctl unit, firewall table, listening port or manifest,
keeps the model file and says what it left.

Container (docker lab): examples/lab-cpu-containers.yaml; the second apply runs no
daemon-reload; the renamed deployment's old containers are gone before the new ones
serve; destroy leaves no compose project, container or open port.

Each module takes the rig down again (destroy, or by hand when a test failed earlier).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
NATIVE = ROOT / "examples" / "lab-cpu-rpc.yaml"
CONTAINERS = ROOT / "examples" / "lab-cpu-containers.yaml"
LAB_MODEL = "/var/tmp/rigctl-lab-cache/models/tiny-llama.gguf"


def rigctl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "provisioner", *args], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT, env=os.environ.copy(), stdin=subprocess.DEVNULL)
    r.output = r.stdout + r.stderr
    return r


def write_rig(d: Path, example: Path, addresses: dict[str, str], key_file: str, model: Path,
              extra_vars: dict | None = None) -> dict:
    """The example on this lab's net and an inventory that reaches it."""
    net = addresses["h1"].rsplit(".", 1)[0]
    text = example.read_text().replace("10.213.0.", f"{net}.").replace(LAB_MODEL, str(model))
    (d / "rig.yaml").write_text(text)
    (d / "inv").mkdir(exist_ok=True)
    (d / "inv" / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "hosts": {h: {"ansible_host": a} for h, a in addresses.items()},
        "vars": {"ansible_user": "root", "ansible_python_interpreter": "/usr/bin/python3",
                 "ansible_ssh_private_key_file": key_file, "rigctl_docker_source": "distro",
                 "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                                            "-o LogLevel=ERROR", **(extra_vars or {})}}}))
    os.environ.setdefault("RIGCTL_LAB_API_KEY", secrets.token_hex(16))
    return {"spec": d / "rig.yaml", "inv": d / "inv", "key": os.environ["RIGCTL_LAB_API_KEY"],
            "addresses": addresses, "dir": d, "model": model.name}


def apply(rig) -> subprocess.CompletedProcess:
    r = rigctl("apply", str(rig["spec"]), "-i", str(rig["inv"]), "--yes")
    assert r.returncode == 0, f"apply failed ({r.returncode}):\n{r.output[-5000:]}"
    return r


def destroy(rig, *extra: str) -> subprocess.CompletedProcess:
    return rigctl("destroy", str(rig["spec"]), "-i", str(rig["inv"]), *extra)


def edit(rig, *pairs: tuple[str, str]) -> None:
    text = rig["spec"].read_text()
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new)
    rig["spec"].write_text(text)


def completion(address: str, key: str, port: int = 8080) -> dict:
    req = urllib.request.Request(
        f"http://{address}:{port}/v1/completions", method="POST",
        data=json.dumps({"prompt": "hello", "max_tokens": 4}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def refused(address: str, port: int) -> bool:
    """Nothing accepts on address:port (a connection is refused or times out)."""
    with contextlib.closing(socket.socket()) as s:
        s.settimeout(3)
        try:
            s.connect((address, port))
            return False
        except OSError:
            return True


def host_clock(shell, host: str) -> str:
    return shell.out(host, "date +%s.%N")


def reloads_since(shell, host: str, since: str) -> list[str]:
    """systemd daemon-reloads on the host since `since` (PID 1 logs "Reloading." for each)."""
    out = shell.out(host, f"journalctl -q --no-pager -o short-unix _PID=1 --since @{since.split('.')[0]}")
    return [line for line in out.splitlines() if line.split()[:1] and float(line.split()[0]) >= float(since)
            and "Reloading" in line]


def listening(shell, host: str) -> str:
    return shell.out(host, "ss -Htln")


def rigctl_units(shell, host: str) -> str:
    return shell.out(host, "ls /etc/systemd/system | grep '^rigctl-' || true; "
                           "systemctl list-units --all --no-legend --plain 'rigctl-*' || true")


# ---------------------------------------------------------------- native


@pytest.fixture(scope="module")
def native(lab, llamacpp_bin, lab_shell, tmp_path_factory, tiny_gguf):
    rig = write_rig(tmp_path_factory.mktemp("lifecycle"), NATIVE, lab["addresses"],
                    str(Path(lab["lab_dir"]) / "id_ed25519"), tiny_gguf,
                    {"rigctl_artifacts_dir": str(llamacpp_bin)})
    yield rig
    if not rig.get("destroyed") and destroy(rig, "--yes").returncode != 0:  # a failed test left it up
        for host, unit in (("h1", "rigctl-tiny*"), ("h2", "rigctl-tiny*")):
            lab_shell.run(host, f"systemctl disable --now '{unit}'; rm -f /etc/systemd/system/{unit}.service; "
                                "systemctl daemon-reload; systemctl reset-failed", check=False)


def test_native_apply_then_reapply_runs_no_daemon_reload(native, lab_shell):
    apply(native)
    h1 = native["addresses"]["h1"]
    assert completion(h1, native["key"])["usage"]["completion_tokens"] > 0
    since = {h: host_clock(lab_shell, h) for h in ("h1", "h2")}
    r = apply(native)
    assert "changed=0" in r.output, r.output[-3000:]
    for host in ("h1", "h2"):
        assert reloads_since(lab_shell, host, since[host]) == [], f"a no-op apply reloaded systemd on {host}"
    # the manifest records what rigctl made, for the next apply and for destroy
    manifest = json.loads(lab_shell.out("h1", "cat /var/lib/rigctl/manifest.json"))
    assert [s["name"] for s in manifest["services"]] == ["rigctl-tiny"]
    assert lab_shell.out("h1", "stat -c %a /var/lib/rigctl/manifest.json") == "600"


# A stand-in for a rigctl upgrade that changes the llama.cpp build: one more cmake flag gives the
# plan another build key (the lab inventory's rigctl_artifacts_dir supplies the same binaries,
# so nothing is compiled); what is real is everything the hosts do with the new key.
ENGINE_BUMP = ("import runpy, sys; import provisioner.plan.engines as e; "
               "e.COMMON_ARGS = [*e.COMMON_ARGS, '-DRIGCTL_LAB_ENGINE_BUMP=' + sys.argv.pop(1)]; "
               "runpy.run_module('provisioner', run_name='__main__')")


def apply_bumped(rig, bump: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-c", ENGINE_BUMP, bump, "apply", str(rig["spec"]), "-i", str(rig["inv"]),
                        "--yes"], capture_output=True, text=True, timeout=600, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"apply failed ({r.returncode}):\n{(r.stdout + r.stderr)[-5000:]}"
    return r


def exec_start(shell, host: str, unit: str) -> str:
    return shell.out(host, f"systemctl show -P ExecStart {unit}")


def test_native_engine_change_keeps_the_previous_build_for_a_rollback(native, lab_shell):
    engines = {h: set(lab_shell.out(h, "ls /var/lib/rigctl/engines").split()) - {"history.json"} for h in ("h1", "h2")}
    (old,) = engines["h1"]
    assert engines["h2"] == {old}
    assert f"/var/lib/rigctl/engines/{old}/llama-server" in exec_start(lab_shell, "h1", "rigctl-tiny")
    inode = lab_shell.out("h1", f"stat -c %i /var/lib/rigctl/engines/{old}/llama-server")
    pid = lab_shell.out("h1", "systemctl show -P MainPID rigctl-tiny")

    apply_bumped(native, "1")  # the new build goes beside the running one on both hosts
    new = set(lab_shell.out("h1", "ls /var/lib/rigctl/engines").split()) - {"history.json", old}
    assert len(new) == 1, new
    (new,) = new
    assert f"/var/lib/rigctl/engines/{new}/llama-server" in exec_start(lab_shell, "h1", "rigctl-tiny")
    assert f"/var/lib/rigctl/engines/{new}/rpc-server" in exec_start(lab_shell, "h2", "rigctl-tiny-rpc")
    assert lab_shell.out("h1", "systemctl show -P MainPID rigctl-tiny") != pid
    assert completion(native["addresses"]["h1"], native["key"])["usage"]["completion_tokens"] > 0
    for host in ("h1", "h2"):
        assert {old, new} <= set(lab_shell.out(host, "ls /var/lib/rigctl/engines").split())

    apply(native)  # the previous spec: its build is still on the hosts, the units point back at it
    assert f"/var/lib/rigctl/engines/{old}/llama-server" in exec_start(lab_shell, "h1", "rigctl-tiny")
    assert f"/var/lib/rigctl/engines/{old}/rpc-server" in exec_start(lab_shell, "h2", "rigctl-tiny-rpc")
    assert lab_shell.out("h1", f"stat -c %i /var/lib/rigctl/engines/{old}/llama-server") == inode  # not re-sent
    assert completion(native["addresses"]["h1"], native["key"])["usage"]["completion_tokens"] > 0
    assert json.loads(lab_shell.out("h1", "cat /var/lib/rigctl/engines/history.json")) == [old, new]


def test_native_rename_removes_the_old_unit_before_the_new_one_serves(native, lab_shell):
    edit(native, ("  - name: tiny\n", "  - name: tiny2\n"))
    plan = rigctl("plan", str(native["spec"]), "-i", str(native["inv"]))
    assert "- remove rigctl-tiny " in plan.output and "+ create rigctl-tiny2 " in plan.output, plan.output
    since = host_clock(lab_shell, "h1")
    r = apply(native)
    assert "removing rigctl-tiny from h1" in r.output and "removing rigctl-tiny-rpc from h2" in r.output, r.output
    # the old unit stopped before the new one started (systemd's own log of the run)
    log = lab_shell.out("h1", f"journalctl -q --no-pager -o cat _PID=1 --since @{since.split('.')[0]}").splitlines()
    stopped = next(i for i, line in enumerate(log) if line.startswith("Stopped rigctl-tiny.service"))
    started = next(i for i, line in enumerate(log) if line.startswith("Started rigctl-tiny2.service"))
    assert stopped < started, log
    for host, old in (("h1", "rigctl-tiny"), ("h2", "rigctl-tiny-rpc")):
        units = rigctl_units(lab_shell, host)
        assert f"{old}.service" not in units and f"{old.replace('tiny', 'tiny2')}.service" in units, units
        ruleset = lab_shell.out(host, "nft list table inet rigctl")
        assert f'"{old}:' not in ruleset and f'"{old.replace("tiny", "tiny2")}:' in ruleset, ruleset
    assert lab_shell.out("h1", "ls /etc/rigctl/secrets") == "tiny2.key"  # the old key went
    assert completion(native["addresses"]["h1"], native["key"])["usage"]["completion_tokens"] > 0


def test_native_move_leaves_no_port_open_on_the_old_host(native, lab_shell):
    a1, a2 = native["addresses"]["h1"], native["addresses"]["h2"]
    edit(native, ("      - {node: h1, gpus: []}\n      - {node: h2, gpus: []}\n",
                  "      - {node: h2, gpus: []}\n      - {node: h1, gpus: []}\n"),
         (f"    bind: {a1}\n", f"    bind: {a2}\n"))
    apply(native)
    assert "rigctl-tiny2.service" not in rigctl_units(lab_shell, "h1")
    assert "rigctl-tiny2-rpc.service" not in rigctl_units(lab_shell, "h2")
    assert ":8080 " not in listening(lab_shell, "h1") and refused(a1, 8080)
    assert "dport 8080" not in lab_shell.out("h1", "nft list table inet rigctl")
    assert ":50052 " not in listening(lab_shell, "h2")
    assert completion(a2, native["key"])["usage"]["completion_tokens"] > 0


def test_native_destroy_leaves_no_unit_port_or_table(native, lab_shell):
    r = destroy(native)  # no terminal, no --yes: refused before anything happens
    assert r.returncode == 2 and "pass --yes" in r.output, r.output
    r = destroy(native, "--yes")
    assert r.returncode == 0, r.output[-5000:]
    # models are kept, this rig's and any an earlier lab module left there
    assert re.search(r"left on h1: [1-9]\d* model file\(s\) in /var/lib/rigctl/models", r.output), r.output[-3000:]
    for host in ("h1", "h2"):
        assert rigctl_units(lab_shell, host) == "", rigctl_units(lab_shell, host)
        assert lab_shell.run(host, "nft list table inet rigctl", check=False).returncode != 0
        ports = listening(lab_shell, host)
        assert ":8080 " not in ports and ":50052 " not in ports, ports
        assert lab_shell_gone(lab_shell, host)
        assert lab_shell.out(host, "ls -A /etc/rigctl /var/lib/rigctl") == "/etc/rigctl:\n\n/var/lib/rigctl:\nmodels"
        assert lab_shell.run(host, "id rigctl", check=False).returncode != 0
    assert native["model"] in lab_shell.out("h2", "ls /var/lib/rigctl/models").split()  # models are kept
    assert refused(native["addresses"]["h2"], 8080)
    # nothing is applied any more: the plan creates everything again
    plan = rigctl("plan", str(native["spec"]), "-i", str(native["inv"]))
    assert "- remove" not in plan.output and "+ create rigctl-tiny2 " in plan.output, plan.output
    native["destroyed"] = True


# ---------------------------------------------------------------- containers


@pytest.fixture(scope="module")
def containers(docker_lab, docker_lab_shell, lab_image, tiny_gguf, tmp_path_factory):
    rig = write_rig(tmp_path_factory.mktemp("lifecycle-containers"), CONTAINERS, docker_lab["addresses"],
                    docker_lab["key"], tiny_gguf)
    edit(rig, ("/var/tmp/rigctl-lab-cache/images", str(lab_image.parent)))
    yield rig
    if not rig.get("destroyed") and destroy(rig, "--yes").returncode != 0:
        for host in docker_lab["hosts"]:
            docker_lab_shell.run(host, "docker compose -p rigctl-llamacpp-rpc down --remove-orphans", check=False)


def containers_named(shell, host: str, name: str) -> list[str]:
    return shell.out(host, f"docker ps -a --filter name=^{name}$ --format '{{{{.Names}}}}'").split()


def test_containers_reapply_rename_and_destroy(containers, docker_lab_shell):
    shell, h1 = docker_lab_shell, containers["addresses"]["h1"]
    apply(containers)
    assert completion(h1, containers["key"])["usage"]["completion_tokens"] > 0
    since = {h: host_clock(shell, h) for h in ("h1", "h2")}
    r = apply(containers)
    assert "changed=0" in r.output, r.output[-3000:]
    for host in ("h1", "h2"):  # a GPU-container host must see no reload (NVIDIA's detach)
        assert reloads_since(shell, host, since[host]) == [], f"a no-op apply reloaded systemd on {host}"

    edit(containers, ("  - name: tiny\n", "  - name: tiny2\n"))
    since = host_clock(shell, "h1").split(".")[0]
    r = apply(containers)
    # the old container went before the new one was created (compose alone would remove the
    # orphan only while bringing up the new service)
    events = shell.out("h1", f"docker events --since {since} --until $(date +%s) --filter type=container "
                             "--format '{{.Action}} {{.Actor.Attributes.name}}'").splitlines()
    assert events.index("destroy rigctl-tiny") < events.index("create rigctl-tiny2"), events
    assert "removing rigctl-tiny from h1" in r.output, r.output[-3000:]
    assert containers_named(shell, "h1", "rigctl-tiny") == [] and containers_named(shell, "h2", "rigctl-tiny-rpc") == []
    assert containers_named(shell, "h1", "rigctl-tiny2") == ["rigctl-tiny2"]
    assert completion(h1, containers["key"])["usage"]["completion_tokens"] > 0

    r = destroy(containers, "--yes")
    assert r.returncode == 0, r.output[-5000:]
    containers["destroyed"] = True
    for host in ("h1", "h2"):
        assert shell.out(host, "docker compose ls -a -q") == ""
        assert shell.out(host, "docker ps -aq --filter label=com.docker.compose.project") == ""
        assert shell.out(host, "docker volume ls -q --filter label=com.docker.compose.project") == ""
        ports = listening(shell, host)
        assert ":8080 " not in ports and ":50052 " not in ports, ports
        assert lab_shell_gone(shell, host)
    assert refused(h1, 8080)


def lab_shell_gone(shell, host: str) -> bool:
    """No rigctl unit, firewall table, compose directory or manifest is left."""
    return (rigctl_units(shell, host) == ""
            and shell.run(host, "nft list table inet rigctl", check=False).returncode != 0
            and shell.run(host, "test -e /etc/rigctl/compose || test -e /var/lib/rigctl/manifest.json",
                          check=False).returncode != 0)
