"""macOS nodes render launchd plists, never a systemd unit or a compose file (issue 11, item 8).

Every rendered plist of every example (and of the macOS specs below) is parsed with
plistlib, the reader closest to launchd's CFPropertyList here, and held against the plan:
label, program, argv word for word, environment, port. No Mac ran these: what launchd does
with the file is not tested (playbooks/roles/base/README.md says so).
"""

from __future__ import annotations

import plistlib
from pathlib import Path

import pytest
import yaml

from provisioner.escape import Unrepresentable, launchd_plist
from provisioner.plan import build_plan
from provisioner.render import RenderError, render_project
from provisioner.render.prepare import prepare
from provisioner.rules.context import Context
from provisioner.spec.catalog import builtin
from provisioner.spec.loader import load_text
from tests.consumers import load_ansible_yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
MACOS_EXAMPLES = [ROOT / "examples" / "exo.yaml", ROOT / "examples" / "mac-studio.yaml"]

# Keys of launchd.plist(5) that rigctl writes, with the type launchd reads
# (https://keith.github.io/xcode-man-pages/launchd.plist.5.html): a misspelt key is ignored by
# launchd without a word, so every key of every rendered job must be one of these.
LAUNCHD_KEYS = {"Label": str, "Program": str, "ProgramArguments": list, "EnvironmentVariables": dict,
                "UserName": str, "GroupName": str, "WorkingDirectory": str, "RunAtLoad": bool,
                "KeepAlive": dict, "StandardOutPath": str, "StandardErrorPath": str}
KEEPALIVE_KEYS = {"SuccessfulExit": bool}

MAC_RPC_KEYED = """\
version: 1
name: mac-rpc
fabric: {kind: thunderbolt, speed_gbps: 40, subnet: 10.0.2.0/24}
nodes:
  - name: head
    os: macos
    memory_gib: 192
    gpus: [{id: gpu0, model: apple-m2-ultra}]
    nics: [{name: bridge0, speed_gbps: 40, address: 10.0.2.1}]
  - name: worker
    os: macos
    memory_gib: 192
    gpus: [{id: gpu0, model: apple-m2-ultra}]
    nics: [{name: bridge0, speed_gbps: 40, address: 10.0.2.2}]
serve:
  - name: llama70
    model: llama-3.1-70b
    format: Q4_K_M
    stack: llamacpp-rpc
    bind: 0.0.0.0
    auth: {env: RIGCTL_TEST_MAC_KEY}
    extra_args: ["--alias", "a $HOME %n <&> ]]> 'q' \\"d\\""]
    placement:
      - {node: head}
      - {node: worker}
"""


def _prepared(spec: Path):
    prep = prepare(str(spec))
    assert prep.plan is not None, [d.message for d in prep.errors]
    return prep


def _rendered(prep) -> dict[str, str]:
    return {f.path: f.content for f in render_project(prep.ctx, prep.plan, prep.overrides)}


def _spec_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rig.yaml"
    p.write_text(text)
    return p


def _check_plists(prep, files: dict[str, str]) -> int:
    """Every plist against the plan; every macOS service has one. Returns how many were checked."""
    macos = {n.name for n in prep.ctx.rig.nodes if n.os == "macos"}
    plists = {p: c for p, c in files.items() if p.endswith(".plist")}
    seen = set()
    for node in sorted(macos):
        host_vars = load_ansible_yaml(files[f"inventory/host_vars/{node}.yml"])
        by_name = {sv["name"]: sv for sv in host_vars["rigctl_services"]}
        for svc in prep.plan.services_on(node):
            sv = by_name[svc.name]
            path = f"files/{node}/io.rigctl.{svc.name}.plist"
            assert sv["plist_src"] == path and sv["launchd_label"] == f"io.rigctl.{svc.name}"
            assert "unit_src" not in sv and "compose_src" not in sv and sv["deploy_mode"] == "native"
            job = plistlib.loads(plists[path].encode())
            assert set(job) <= set(LAUNCHD_KEYS) and set(job["KeepAlive"]) <= set(KEEPALIVE_KEYS), job
            assert all(type(v) is LAUNCHD_KEYS[k] for k, v in job.items())
            assert all(type(v) is KEEPALIVE_KEYS[k] for k, v in job["KeepAlive"].items())
            assert all(isinstance(w, str) for w in job["ProgramArguments"])
            assert all(isinstance(v, str) for v in job.get("EnvironmentVariables", {}).values())
            assert job["Label"] == f"io.rigctl.{svc.name}"
            assert job["ProgramArguments"] == svc.argv  # word for word: launchd runs it without a shell
            # argv[0] is the process name; Program is the file launchd executes
            assert job["Program"] == (svc.argv[0] if svc.argv[0].startswith("/") else f"/var/lib/rigctl/bin/{svc.argv[0]}")
            assert job.get("EnvironmentVariables", {}) == svc.env
            assert job["RunAtLoad"] is True and job["KeepAlive"] == {"SuccessfulExit": False}
            assert job["UserName"] == job["GroupName"] == "rigctl"
            assert job["StandardOutPath"] == job["StandardErrorPath"] == f"/var/log/rigctl/{svc.name}.log"
            if svc.port is not None:
                flag = "--api-port" if svc.stack == "exo" else "--port"
                argv = job["ProgramArguments"]
                assert argv[argv.index(flag) + 1] == str(svc.port), (flag, argv)
            seen.add(path)
    assert seen == set(plists), f"plists no macOS service plans: {set(plists) - seen}"
    return len(seen)


@pytest.mark.parametrize("spec", MACOS_EXAMPLES, ids=[p.stem for p in MACOS_EXAMPLES])
def test_macos_examples_render_no_compose_file_and_no_systemd_unit(spec):
    prep = _prepared(spec)
    files = _rendered(prep)
    under_files = [p for p in files if p.startswith("files/")]
    assert under_files and all(p.endswith(".plist") for p in under_files), under_files
    assert _check_plists(prep, files) == sum(len(d.services) for d in prep.plan.deployments)
    for node in prep.ctx.rig.nodes:
        hv = load_ansible_yaml(files[f"inventory/host_vars/{node.name}.yml"])
        assert hv["rigctl_deploy_mode"] == "native"  # container_runtime skips the Mac


@pytest.mark.parametrize("spec", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_rendered_plist_matches_the_plan(spec):
    prep = prepare(str(spec))
    if prep.plan is None:
        pytest.skip("example has errors by design")
    files = _rendered(prep)
    n = _check_plists(prep, files)
    if not any(node.os == "macos" for node in prep.ctx.rig.nodes):
        assert n == 0
    else:
        assert n > 0


def test_rpc_worker_and_keyed_server_on_macs(tmp_path, monkeypatch):
    secret = "sk-mac-SENTINEL-4471"
    monkeypatch.setenv("RIGCTL_TEST_MAC_KEY", secret)
    prep = _prepared(_spec_file(tmp_path, MAC_RPC_KEYED))
    files = _rendered(prep)
    assert _check_plists(prep, files) == 2
    assert not any(secret in c for c in files.values())
    server = next(s for s in prep.plan.services_on("head") if s.role == "server")
    job = plistlib.loads(files["files/head/io.rigctl.rigctl-llama70.plist"].encode())
    argv = job["ProgramArguments"]
    # the key stays in the root-owned file secret.yml writes; the plist names only its path
    key_file = argv[argv.index("--api-key-file") + 1]
    hv = load_ansible_yaml(files["inventory/host_vars/head.yml"])
    (sf,) = next(sv for sv in hv["rigctl_services"] if sv["name"] == server.name)["secret_files"]
    assert sf["path"] == key_file and sf["format"] == "raw" and sf["ref"] == {"env": "RIGCTL_TEST_MAC_KEY"}
    assert "a $HOME %n <&> ]]> 'q' \"d\"" in argv  # literal: launchd expands nothing
    assert argv[argv.index("--rpc") + 1] == "10.0.2.2:50052"
    worker = plistlib.loads(files["files/worker/io.rigctl.rigctl-llama70-rpc.plist"].encode())
    assert worker["ProgramArguments"] == ["rpc-server", "--host", "10.0.2.2", "--port", "50052"]


def test_render_refuses_a_container_on_a_mac():
    """Behind the rule: a plan that would put a container on a Mac is never rendered."""
    spec = (ROOT / "examples" / "mac-studio.yaml").read_text().replace("version: 1\n",
                                                                         "version: 1\ndeploy_mode: container\n")
    res = load_text(spec, str(ROOT / "examples" / "mac-container.yaml"))
    ctx = Context(res.rig, builtin(), file=str(ROOT / "examples" / "mac-container.yaml"))
    plan = build_plan(ctx)
    with pytest.raises(RenderError, match="macOS node studio would be a container"):
        render_project(ctx, plan)


@pytest.mark.parametrize("bad", ["a\rb", "nul\0", "x\ufffe", "bell\x07"])
def test_plist_writer_refuses_what_xml_cannot_carry(bad):
    with pytest.raises(Unrepresentable, match="launchd property list"):
        launchd_plist({"Label": "io.rigctl.x", "ProgramArguments": ["llama-server", bad]})


def test_plist_writer_round_trips_markup_and_tabs():
    job = {"Label": "io.rigctl.x", "ProgramArguments": ["a<b>&c", "]]>", "tab\there", "new\nline", "ü€"],
           "EnvironmentVariables": {"K": "$PATH %s"}, "RunAtLoad": True}
    text = launchd_plist(job, comment="rig a--b: x-")
    assert plistlib.loads(text.encode()) == job
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<!-- rig a- -b: x -->\n')


HOSTILE = ["$(touch /tmp/rigctl-pwned)", "`id`", "a\nb", "a\tb", "{{ lookup('pipe','id') }}", "%n %h", "${HOME}",
           "$$", "<!-- x -->", "]]></string><string>--evil", "&amp; &lt;", "ü ☃ 𝄞"]


@pytest.mark.parametrize("payload", HOSTILE, ids=[ascii(p)[:24] for p in HOSTILE])
def test_hostile_extra_args_reach_the_plist_literally_or_are_refused(payload, tmp_path):
    doc = yaml.safe_load((ROOT / "examples" / "mac-studio.yaml").read_text())
    doc["serve"][0]["extra_args"] = ["--alias", payload]
    prep = prepare(str(_spec_file(tmp_path, yaml.safe_dump(doc))))
    if any(ord(c) < 0x20 for c in payload):  # control characters: the schema refuses them, at the field
        assert prep.plan is None and [tuple(d.path) for d in prep.errors] == [("serve", 0, "extra_args", 1)]
        return
    files = _rendered(prep)
    job = plistlib.loads(files["files/studio/io.rigctl.rigctl-maverick.plist"].encode())
    assert job["ProgramArguments"][-2:] == ["--alias", payload]
    assert _check_plists(prep, files) == 1


def test_plan_shows_the_key_as_the_launchd_job_gets_it(tmp_path, rigctl, monkeypatch):
    """`rigctl plan` prints the command the Mac runs (the plist's argv), not a systemd credential."""
    monkeypatch.setenv("RIGCTL_TEST_MAC_KEY", "sk-unused")
    spec = _spec_file(tmp_path, MAC_RPC_KEYED)
    code, out, err = rigctl("plan", spec)
    assert code == 0, err
    job = plistlib.loads(_rendered(_prepared(spec))["files/head/io.rigctl.rigctl-llama70.plist"].encode())
    key_file = job["ProgramArguments"][job["ProgramArguments"].index("--api-key-file") + 1]
    assert "CREDENTIALS_DIRECTORY" not in out and "systemd credential" not in out
    assert f"--api-key-file {key_file}" in out
    assert f"key file {key_file} (root-owned, group rigctl 0440, read by the launchd job; " \
           "from env RIGCTL_TEST_MAC_KEY on the controller)" in out
