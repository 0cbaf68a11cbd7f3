"""The lab itself: real hosts over SSH, systemd, networking, apt via the proxy, and a
real llama.cpp deployment (llama-server on h1 using an RPC server on h2)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

BIN_DIR = "/opt/rigctl-test/bin"
MODEL_DIR = "/opt/rigctl-test/models"


def test_hosts_answer_over_ssh(lab, lab_shell):
    for host in lab["hosts"]:
        out = lab_shell.out(host, "hostname; id -u; ip -4 -o addr show host0")
        name, uid, addr = out.splitlines()
        assert name == host
        assert uid == "0"
        assert f" {lab['addresses'][host]}/24 " in addr


def test_systemd_is_pid1_and_running(lab, lab_shell):
    for host in lab["hosts"]:
        assert lab_shell.out(host, "cat /proc/1/comm") == "systemd"
        state = lab_shell.out(host, "systemctl is-system-running --wait", check=False)
        failed = lab_shell.out(host, "systemctl --failed --no-legend --plain")
        assert state == "running", f"{host}: {state}; failed units: {failed}"


def test_base_has_what_the_roles_need(lab, lab_shell):
    out = lab_shell.out("h1", "dpkg-query -W -f='${Package} ${Status}\\n' "
                              "openssh-server python3 python3-apt sudo dbus iproute2 "
                              "ca-certificates procps curl nftables libgomp1")
    for line in out.splitlines():
        assert line.endswith("install ok installed"), line
    assert len(out.splitlines()) == 11


def test_hosts_reach_each_other_over_tcp(lab, lab_shell):
    h2 = lab["addresses"]["h2"]
    lab_shell.run("h2", f"systemd-run --unit=labtest-http --collect "
                        f"python3 -m http.server 9000 --bind {h2} --directory /etc")
    try:
        body = ""
        for _ in range(50):
            r = lab_shell.run("h1", f"curl -sf --max-time 2 http://{h2}:9000/hostname", check=False)
            if r.returncode == 0:
                body = r.stdout.strip()
                break
            time.sleep(0.2)
        assert body == "h2"
        # names resolve through /etc/hosts, too
        assert lab_shell.out("h1", "curl -sf --max-time 2 http://h2:9000/hostname") == "h2"
    finally:
        lab_shell.run("h2", "systemctl stop labtest-http", check=False)


def test_apt_through_the_proxy(lab, lab_shell):
    assert lab["proxy"] in lab_shell.out("h1", "cat /etc/apt/apt.conf.d/01lab-proxy")
    lab_shell.run("h1", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
                        "apt-get install -y -qq --no-install-recommends jq", timeout=300)
    assert lab_shell.out("h1", "echo '{\"a\": 41}' | jq '.a + 1'") == "42"


def test_ansible_reaches_every_host(lab, tmp_path):
    import ansible_runner

    r = ansible_runner.run(private_data_dir=str(tmp_path), inventory=lab["inventory"],
                           host_pattern="all", module="ansible.builtin.ping", quiet=True)
    assert r.rc == 0, r.stdout.read()
    assert sorted(r.stats["ok"]) == sorted(lab["hosts"])


def _http_json(url: str, payload: dict | None = None, timeout: float = 60):
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read() or b"null")


def _wait_health(url: str, secs: float = 90) -> None:
    deadline = time.monotonic() + secs
    last = None
    while time.monotonic() < deadline:
        try:
            status, _ = _http_json(url, timeout=2)
            if status == 200:
                return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"{url} not healthy after {secs} s: {last}")


def test_llama_server_on_h1_with_rpc_server_on_h2(lab, lab_shell, llamacpp_bin, tiny_gguf):
    h1, h2 = lab["addresses"]["h1"], lab["addresses"]["h2"]
    for host in ("h1", "h2"):
        lab_shell.put(host, [llamacpp_bin / "llama-server", llamacpp_bin / "rpc-server"], BIN_DIR)
    lab_shell.put("h1", [tiny_gguf], MODEL_DIR)
    # the cached binaries run on the hosts' Debian base as they are
    assert "version" in lab_shell.out("h1", f"{BIN_DIR}/llama-server --version 2>&1")

    lab_shell.run("h2", f"systemd-run --unit=labtest-rpc --collect "
                        f"{BIN_DIR}/rpc-server --host {h2} --port 50052")
    try:
        lab_shell.run("h1", f"systemd-run --unit=labtest-llama --collect "
                            f"{BIN_DIR}/llama-server -m {MODEL_DIR}/{tiny_gguf.name} "
                            f"--host {h1} --port 8080 -c 512 --n-gpu-layers 99 "
                            f"--rpc {h2}:50052")
        try:
            _wait_health(f"http://{h1}:8080/health")
            status, body = _http_json(f"http://{h1}:8080/v1/chat/completions", {
                "messages": [{"role": "user", "content": "Hello, lab!"}],
                "max_tokens": 8, "temperature": 0, "ignore_eos": True})
            assert status == 200
            assert body["choices"][0]["message"]["role"] == "assistant"
            assert body["usage"]["completion_tokens"] > 0
            assert body["choices"][0]["message"]["content"]
            # llama-server uses h2's RPC server as a device: it holds a connection open
            # (the RPC server serves one client at a time)
            log = lab_shell.out("h2", "journalctl -u labtest-rpc --no-pager -o cat")
            accepted = log.count("Accepted client connection")
            closed = log.count("Client connection closed")
            assert accepted >= 1 and accepted > closed, log[-3000:]
        finally:
            # llama-server first: stopping the RPC server first makes it abort
            lab_shell.run("h1", "systemctl stop labtest-llama", check=False)
    finally:
        lab_shell.run("h2", "systemctl stop labtest-rpc", check=False)


# ---- no lab needed ---------------------------------------------------------------

def test_tiny_gguf_is_deterministic_and_small(tmp_path):
    from provisioner.testmodels import write_tiny_gguf

    a = write_tiny_gguf(tmp_path / "a.gguf")
    b = write_tiny_gguf(tmp_path / "b.gguf")
    assert a.read_bytes() == b.read_bytes()
    assert a.stat().st_size < 1_000_000
    assert write_tiny_gguf(tmp_path / "c.gguf", seed=1).read_bytes() != a.read_bytes()


def test_tiny_gguf_reads_back_as_llama(tmp_path):
    import gguf

    from provisioner.testmodels import write_tiny_gguf

    r = gguf.GGUFReader(write_tiny_gguf(tmp_path / "m.gguf", n_layers=3))
    f = r.fields
    arch = bytes(f["general.architecture"].parts[-1]).decode()
    assert arch == "llama"
    assert int(f["llama.block_count"].parts[-1][0]) == 3
    assert len(f["tokenizer.ggml.tokens"].data) == 260
    names = {t.name for t in r.tensors}
    assert {"token_embd.weight", "output.weight", "blk.2.ffn_down.weight"} <= names


def test_cli_lab_unavailable_is_exit_4_with_one_line(monkeypatch, capsys):
    from provisioner import lab as labmod
    from provisioner.cli import main

    monkeypatch.setattr(labmod, "can_run_lab", lambda: (False, "the lab must run as root"))
    assert main(["lab", "up", "2"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rigctl lab: lab unavailable: the lab must run as root"]
    assert main(["lab"]) == 2
