"""Container deployment for real: examples/lab-cpu-containers.yaml on the docker lab.

The lab's llama.cpp CPU image (built here with no registry) goes to the hosts offline;
llama-server on h1 and rpc-server on h2 run as compose services; a completion comes back
through both; the second apply changes nothing; a new context size recreates only the
llama-server container, and its named cache volume keeps what was in it. The docker lab
has its own network, so the example's addresses are rewritten to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "examples" / "lab-cpu-containers.yaml"


def rigctl(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "provisioner", *args], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT, env=os.environ.copy(), stdin=subprocess.DEVNULL)
    r.output = r.stdout + r.stderr
    return r


def host_line(output: str, host: str) -> str:
    return next(line for line in output.splitlines() if line.strip().startswith(host + " ") and "ok=" in line)


@contextlib.contextmanager
def docker_api(ssh_config: str, host: str, tmp: Path):
    """The host's Docker API through an ssh-forwarded socket, as a Docker SDK client."""
    import docker

    sock = tmp / f"{host}-docker.sock"
    fwd = subprocess.Popen(["ssh", "-F", ssh_config, "-N", "-o", "ExitOnForwardFailure=yes",
                            "-o", "ControlPath=none", "-L", f"{sock}:/var/run/docker.sock", host],
                           stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            if sock.exists() or fwd.poll() is not None:
                break
            time.sleep(0.1)
        assert sock.exists(), f"ssh forward to {host} failed: {fwd.stderr.read() if fwd.poll() is not None else ''}"
        client = docker.DockerClient(base_url=f"unix://{sock}", version="auto", timeout=30)
        yield client
        client.close()
    finally:
        fwd.terminate()
        fwd.wait(timeout=10)
        sock.unlink(missing_ok=True)


def test_docker_lab_hosts_run_compose_v2_on_overlay2(docker_lab, docker_lab_shell):
    for host in docker_lab["hosts"]:
        out = docker_lab_shell.out(host, "docker compose version --short; docker info --format '{{.Driver}}'; "
                                         "apt-cache policy docker-compose docker.io | grep Installed")
        compose, driver, plugin, engine = out.splitlines()
        assert compose.startswith("2.") and driver == "overlay2", out
        # only the compose plugin comes from trixie (pinned low); the engine stays bookworm's
        assert "2.26" in plugin and "20.10" in engine, out


@pytest.fixture(scope="module")
def rig(docker_lab, lab_image, tiny_gguf, tmp_path_factory):
    """The example on the docker lab's net, an inventory for it, and the API key."""
    d = tmp_path_factory.mktemp("containers")
    net = docker_lab["net"]
    text = SPEC.read_text().replace("10.213.0.", f"{net}.")
    text = text.replace("/var/tmp/rigctl-lab-cache/models/tiny-llama.gguf", str(tiny_gguf))
    text = text.replace("/var/tmp/rigctl-lab-cache/images", str(lab_image.parent))
    (d / "rig.yaml").write_text(text)
    (d / "inv").mkdir()
    (d / "inv" / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "hosts": {h: {"ansible_host": a} for h, a in docker_lab["addresses"].items()},
        "vars": {"ansible_user": "root", "ansible_python_interpreter": "/usr/bin/python3",
                 "ansible_ssh_private_key_file": docker_lab["key"], "rigctl_docker_source": "distro",
                 "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                                            "-o LogLevel=ERROR"}}}))  # render adds host_key_checking: false
    os.environ.setdefault("RIGCTL_LAB_API_KEY", secrets.token_hex(16))
    return {"spec": d / "rig.yaml", "inv": d / "inv", "key": os.environ["RIGCTL_LAB_API_KEY"],
            "h1": docker_lab["addresses"]["h1"], "dir": d}


def apply(rig) -> subprocess.CompletedProcess:
    return rigctl("apply", str(rig["spec"]), "-i", str(rig["inv"]), "--yes")


def completion(rig) -> dict:
    req = urllib.request.Request(
        f"http://{rig['h1']}:8080/v1/completions", method="POST",
        data=json.dumps({"prompt": "hello", "max_tokens": 8, "ignore_eos": True}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {rig['key']}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def forget_deployment(client) -> None:
    """A clean start on a reused lab: no container, volume or image of an earlier run."""
    for c in client.containers.list(all=True, filters={"label": "com.docker.compose.project=rigctl-llamacpp-rpc"}):
        c.remove(force=True)
    for v in client.volumes.list(filters={"label": "com.docker.compose.project=rigctl-llamacpp-rpc"}):
        v.remove(force=True)
    with contextlib.suppress(Exception):  # docker.errors.ImageNotFound
        client.images.remove("rigctl/llama.cpp-cpu:0.3.36-lab", force=True)


def test_containers_apply_serve_and_converge(rig, docker_lab, tmp_path):
    ssh = docker_lab["ssh_config"]
    for host in ("h1", "h2"):
        with docker_api(ssh, host, tmp_path) as client:
            forget_deployment(client)
    r = apply(rig)
    assert r.returncode == 0, f"apply failed ({r.returncode}):\n{r.output[-4000:]}"
    for host in ("h1", "h2"):  # the image went over offline: loaded on each host
        assert f"{host:12} changed     Load rigctl/llama.cpp-cpu:0.3.36-lab" in r.output

    body = completion(rig)
    assert body["usage"]["completion_tokens"] == 8
    with docker_api(ssh, "h1", tmp_path) as h1, docker_api(ssh, "h2", tmp_path) as h2:
        server, worker = h1.containers.get("rigctl-tiny"), h2.containers.get("rigctl-tiny-rpc")
        assert server.attrs["State"]["Health"]["Status"] == "healthy"
        assert worker.attrs["State"]["Health"]["Status"] == "healthy"
        assert server.labels["com.docker.compose.project"] == "rigctl-llamacpp-rpc"
        assert server.attrs["HostConfig"]["Init"] is True
        assert f"{docker_lab['addresses']['h2']}:50052" in server.attrs["Args"]
        # llama-server used the RPC server for that completion
        assert "Accepted client connection" in worker.logs().decode(errors="replace")
        server.exec_run(["sh", "-c", "echo kept > /root/.cache/llama.cpp/marker"], user="root")
        ids = {"server": server.id, "worker": worker.id}
        volume = h1.volumes.get("rigctl-llamacpp-rpc_llamacpp-cache").attrs["CreatedAt"]

    r = apply(rig)
    assert r.returncode == 0, r.output[-4000:]
    for host in ("h1", "h2"):
        assert " changed=0 " in host_line(r.output, host), r.output[-3000:]

    rig["spec"].write_text(rig["spec"].read_text().replace("context_tokens: 512", "context_tokens: 1024"))
    r = apply(rig)
    assert r.returncode == 0, r.output[-4000:]
    assert " changed=0 " in host_line(r.output, "h2")
    with docker_api(ssh, "h1", tmp_path) as h1, docker_api(ssh, "h2", tmp_path) as h2:
        server = h1.containers.get("rigctl-tiny")
        assert server.id != ids["server"] and "1024" in server.attrs["Args"]
        assert h2.containers.get("rigctl-tiny-rpc").id == ids["worker"]
        assert h1.volumes.get("rigctl-llamacpp-rpc_llamacpp-cache").attrs["CreatedAt"] == volume
        assert server.exec_run(["cat", "/root/.cache/llama.cpp/marker"]).output.strip() == b"kept"
    assert completion(rig)["usage"]["completion_tokens"] == 8


def test_apply_with_a_missing_offline_image_fails_before_any_host(tmp_path):
    spec = tmp_path / "rig.yaml"
    spec.write_text(SPEC.read_text().replace("rigctl/llama.cpp-cpu:0.3.36-lab", "rigctl/not-built:1")
                    .replace("/var/tmp/rigctl-lab-cache/images", str(tmp_path / "images")))
    inv = tmp_path / "inv"
    inv.mkdir()  # closed local ports: a run that got as far as the hosts would fail with exit 5
    (inv / "hosts.yml").write_text("all:\n  hosts:\n    h1: {ansible_host: 127.0.0.1, ansible_port: 9}\n"
                                   "    h2: {ansible_host: 127.0.0.1, ansible_port: 9}\n")
    r = rigctl("apply", str(spec), "-i", str(inv), "--yes", timeout=120)
    assert r.returncode == 1, r.output[-3000:]
    assert "rigctl/not-built:1" in r.output and "image-offline[missing]" in r.output
    assert not (tmp_path / ".rigctl" / "runs").exists()
