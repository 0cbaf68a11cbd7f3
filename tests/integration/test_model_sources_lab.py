"""Model sources against the real lab: `rigctl apply` downloads on the host, before the start.

A real HTTP server on the controller (on the lab bridge) serves a generated GGUF; h1 runs
llama-server on it:

- `urlmodel`: `source: {url, sha256}`; the server drops the connection part-way through the
  first GET, so the download must resume (the next request carries `Range: bytes=N-`); the
  service answers a completion from the downloaded file; the second apply changes nothing
  and fetches nothing (the file is there and verified).
- `hfmodel`: `source: {hf: {repo, revision, files}, token: {env: ...}}` fetched by the real
  huggingface_hub client on h1 (installed from a controller-made bundle: lab hosts reach no
  PyPI) from a labelled STAND-IN of the Hub's metadata and resolve routes (HF_ENDPOINT), which
  answers 401 without the token. The token reaches the stand-in, and appears in no rendered
  file, kept artifact or apply output.
- bad input, each a clear message naming the deployment and host, and no unit left behind:
  a wrong sha256, an unreachable URL, a gated repository without a token (401 at the hub).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from model_server import HubRepo, ModelServer, tiny_repo_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
REVISION = "3f1c2a9d5e7b8c0d1e2f3a4b5c6d7e8f9a0b1c2d"  # the stand-in's only commit
REPO = "rigctl-lab/tiny-llama-gguf"  # a stand-in repository, not on the real hub
TOKEN_ENV = "RIGCTL_LAB_HF_TOKEN"
DEPLOYMENTS = ("urlmodel", "hfmodel", "badsum", "nohost", "notoken")

_TINY_ARCH = ("{name: tiny-llama-random, architecture: llama, params_b: 0.0001, layers: 2, attention_heads: 4, "
              "kv_heads: 4, head_dim: 16, hidden_size: 64, vocab_size: 260, max_context: 2048}")


def _deployment(name: str, port: int, source: str) -> str:
    return (f"  - name: {name}\n    model: {_TINY_ARCH}\n    format: gguf-f16\n    source: {source}\n"
            f"    context_tokens: 512\n    stack: llamacpp\n    placement: [{{node: h1, gpus: []}}]\n"
            f"    port: {port}\n")


def _spec(address: str, deployments: list[str], rig: str = "lab-sources") -> str:
    subnet = address.rsplit(".", 1)[0] + ".0/24"
    # (a fabric: without one the firewall role fails on an empty rigctl_rig_subnet today)
    return (f"version: 1\nname: {rig}\nprofile: lab\n"
            f"fabric: {{kind: ethernet, speed_gbps: 10, subnet: {subnet}}}\nnodes:\n  - name: h1\n"
            f"    connection: {{address: {address}, ssh_user: root}}\n"
            "    os: debian-12\n    cpu: {pcie_lanes: 16, power_w: 65}\n    memory_gib: 2\n"
            "    storage: [{type: nvme, capacity_gb: 20, models_dir: true}]\n"
            "serve:\n" + "".join(deployments))


def _rigctl(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "provisioner", *args], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    r.output = r.stdout + r.stderr
    return r


@pytest.fixture(scope="module")
def rig(lab, lab_shell, llamacpp_bin, tiny_gguf, tmp_path_factory):
    from provisioner.lab.hfhub import HfHubBundleError, ensure_hf_hub_bundle

    try:
        bundle = ensure_hf_hub_bundle()
    except HfHubBundleError as exc:
        pytest.skip(f"no huggingface_hub bundle for the lab hosts: {exc}")
    bridge = lab["addresses"]["h1"].rsplit(".", 1)[0] + ".1"  # this machine on the lab bridge
    server = ModelServer(bridge).start()
    data = tiny_gguf.read_bytes()
    token = secrets.token_hex(16)
    url = server.add_file("tiny.gguf", data)
    server.drop_after["tiny.gguf"] = len(data) // 3  # a broken link part-way through the first GET
    server.repos[REPO] = HubRepo(REPO, REVISION, tiny_repo_files(tiny_gguf), token=token)
    sha = hashlib.sha256(data).hexdigest()

    work = tmp_path_factory.mktemp("sources")
    inv_dir = work / "inventory"
    inv_dir.mkdir()
    lab_vars = yaml.safe_load((ROOT / "inventories" / "lab" / "hosts.yml").read_text())["all"]["vars"]
    lab_vars.update({
        "ansible_ssh_private_key_file": str(Path(lab["lab_dir"]) / "id_ed25519"),
        "rigctl_artifacts_dir": str(llamacpp_bin),
        "rigctl_hf_endpoint": server.url,  # the stand-in of the Hub
        "rigctl_hf_hub_bundle": str(bundle),
        "rigctl_model_fetch_slice_s": 5,
    })
    (inv_dir / "hosts.yml").write_text(yaml.safe_dump(
        {"all": {"hosts": {"h1": {"ansible_host": lab["addresses"]["h1"]}}, "vars": lab_vars}}))
    good = [_deployment("urlmodel", 8090, f"{{url: '{url}', sha256: {sha}}}"),
            _deployment("hfmodel", 8091, f"{{hf: {{repo: {REPO}, revision: {REVISION}, files: [tiny.gguf]}}, "
                                         f"token: {{env: {TOKEN_ENV}}}}}")]
    spec = work / "rig.yaml"
    spec.write_text(_spec(lab["addresses"]["h1"], good))
    env = {**os.environ, TOKEN_ENV: token, "LAB_DIR": lab["lab_dir"]}
    yield {"spec": spec, "inventory": inv_dir, "env": env, "server": server, "token": token, "url": url,
           "sha": sha, "work": work, "h1": lab["addresses"]["h1"], "size": len(data)}
    server.stop()
    units = " ".join(f"rigctl-{d}.service" for d in DEPLOYMENTS)
    lab_shell.run("h1", f"systemctl disable --now {units}; rm -f "
                  + " ".join(f"/etc/systemd/system/rigctl-{d}.service" for d in DEPLOYMENTS)
                  + "; systemctl daemon-reload; rm -rf " + " ".join(f"/var/lib/rigctl/models/{d}" for d in DEPLOYMENTS)
                  + " /var/lib/rigctl/pylib /etc/rigctl/secrets/rigctl-*-hf_token.env", check=False)


@pytest.fixture(scope="module")
def applied(rig):
    r = _rigctl("apply", str(rig["spec"]), "-i", str(rig["inventory"]), "--yes", env=rig["env"])
    assert r.returncode == 0, f"apply failed ({r.returncode}):\n{r.output[-5000:]}"
    return r


def _complete(lab_shell, port: int) -> dict:
    body = json.dumps({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4})
    out = lab_shell.out("h1", f"curl -sf -m 60 -H 'Content-Type: application/json' -d {shlex.quote(body)} "
                              f"http://127.0.0.1:{port}/v1/chat/completions")
    return json.loads(out)


def test_url_model_downloads_resumes_and_serves(rig, applied, lab_shell):
    gets = rig["server"].requests("/files/tiny.gguf", "GET")
    assert len(gets) >= 2 and gets[0]["range"] is None
    # the first GET was cut at a third; the next one asked for the rest
    assert gets[1]["range"] == f"bytes={rig['size'] // 3}-", gets
    assert "resuming" in applied.output or "of tiny.gguf" in applied.output
    path = "/var/lib/rigctl/models/urlmodel/tiny.gguf"
    assert lab_shell.out("h1", f"sha256sum {path}").split()[0] == rig["sha"]
    assert lab_shell.out("h1", f"stat -c %a {path}") == "644"
    assert lab_shell.run("h1", f"test -e {path}.part", check=False).returncode != 0
    assert _complete(lab_shell, 8090)["usage"]["completion_tokens"] > 0


def test_hf_model_through_the_real_client_with_the_token(rig, applied, lab_shell):
    srv = rig["server"]
    meta = srv.requests(f"/api/models/{REPO}/revision/{REVISION}")
    files = srv.requests(f"/{REPO}/resolve/{REVISION}/tiny.gguf")
    assert meta and files, srv.log
    assert {r["bearer"] for r in meta + files} == {rig["token"]}  # the token came from the secret reference
    assert not srv.requests("README.md")  # only the listed file is taken
    path = "/var/lib/rigctl/models/hfmodel/tiny.gguf"
    assert lab_shell.out("h1", f"sha256sum {path}").split()[0] == rig["sha"]
    assert "--model /var/lib/rigctl/models/hfmodel/tiny.gguf" in lab_shell.out(
        "h1", "systemctl show -p ExecStart --value rigctl-hfmodel.service")
    # the token file is root-only; the service reads it as HF_TOKEN
    tok = "/etc/rigctl/secrets/rigctl-hfmodel-hf_token.env"
    assert lab_shell.out("h1", f"stat -c '%U %a' {tok}") == "root 600"
    assert _complete(lab_shell, 8091)["usage"]["completion_tokens"] > 0


def test_the_token_is_in_no_rendered_file_artifact_or_log(rig, applied):
    token = rig["token"]
    assert token not in applied.output
    hits = [p for p in rig["work"].rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
    assert not hits, f"the token leaked into {hits}"
    assert any(rig["work"].rglob("host_vars/h1.yml")), "no rendered project under the spec's directory"


def test_second_apply_changes_nothing_and_downloads_nothing(rig, applied):
    before = len(rig["server"].log)
    r = _rigctl("apply", str(rig["spec"]), "-i", str(rig["inventory"]), "--yes", env=rig["env"])
    assert r.returncode == 0, r.output[-3000:]
    line = next(ln for ln in r.output.splitlines() if ln.strip().startswith("h1 ") and "ok=" in ln)
    assert "changed=0" in line, line
    assert rig["server"].log[before:] == []  # verified files: no request to either server


def _bad_apply(rig, lab_shell, name: str, source: str, port: int, env_drop: str | None = None):
    spec = rig["work"] / f"{name}.yaml"
    # a rig of its own: applying it must not take the other deployments away
    spec.write_text(_spec(rig["h1"], [_deployment(name, port, source)], rig=f"lab-sources-{name}"))
    env = {k: v for k, v in rig["env"].items() if k != env_drop}
    r = _rigctl("apply", str(spec), "-i", str(rig["inventory"]), "--yes", env=env)
    state = lab_shell.run("h1", f"systemctl is-active rigctl-{name}.service", check=False).stdout.strip()
    unit = lab_shell.run("h1", f"test -e /etc/systemd/system/rigctl-{name}.service", check=False).returncode
    return r, state, unit


def test_wrong_checksum_fails_before_the_service_starts(rig, applied, lab_shell):
    r, state, unit = _bad_apply(rig, lab_shell, "badsum", f"{{url: '{rig['url']}', sha256: {'0' * 64}}}", 8092)
    assert r.returncode != 0
    assert "deployment badsum on h1" in r.output and f"has sha256 {rig['sha']}" in r.output, r.output[-3000:]
    assert "the service was not started" in r.output
    assert state != "active" and unit != 0  # no unit was installed
    assert lab_shell.run("h1", "ls /var/lib/rigctl/models/badsum/tiny.gguf*", check=False).returncode != 0


def test_unreachable_source_is_a_clear_failure(rig, applied, lab_shell):
    dead = rig["url"].rsplit(":", 1)[0] + ":9/tiny.gguf"  # the discard port: nothing listens
    r, state, unit = _bad_apply(rig, lab_shell, "nohost", f"{{url: '{dead}', sha256: {rig['sha']}}}", 8093)
    assert r.returncode != 0
    assert "deployment nohost on h1: cannot download" in r.output, r.output[-3000:]
    assert state != "active" and unit != 0


def test_gated_repository_without_a_token_is_refused_by_the_hub(rig, applied, lab_shell):
    r, state, unit = _bad_apply(rig, lab_shell, "notoken",
                                f"{{hf: {{repo: {REPO}, revision: {REVISION}, files: [tiny.gguf]}}}}", 8094)
    assert r.returncode != 0
    assert "deployment notoken on h1" in r.output and "answered 401" in r.output, r.output[-3000:]
    assert "no token was given: set source.token" in r.output
    assert state != "active" and unit != 0
