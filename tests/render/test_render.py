"""rigctl render: deterministic, reporting writes, no secrets, valid Ansible for every example."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provisioner.check import check_file
from provisioner.render import InventoryError, load_overrides, render_project, write
from provisioner.render.prepare import prepare
from tests.consumers import load_ansible_yaml

ROOT = Path(__file__).resolve().parents[2]
LAB_SPEC = ROOT / "examples" / "lab-cpu-rpc.yaml"
LAB_INV = ROOT / "inventories" / "lab"
EXAMPLES = [p for p in sorted((ROOT / "examples").glob("*.yaml")) if check_file(str(p)).errors == 0]
BIN = Path(sys.executable).parent




def render(spec: Path, inventory: Path | None = None):
    prep = prepare(str(spec), str(inventory) if inventory else None)
    assert prep.plan is not None, [d.message for d in prep.errors]
    return render_project(prep.ctx, prep.plan, prep.overrides)


def files_of(spec: Path, inventory: Path | None = None) -> dict[str, str]:
    return {f.path: f.content for f in render(spec, inventory)}


def test_same_spec_same_bytes():
    a, b = render(LAB_SPEC, LAB_INV), render(LAB_SPEC, LAB_INV)
    assert a == b
    assert [f.path for f in a] == sorted(f.path for f in a)


def test_write_reports_created_unchanged_changed(tmp_path):
    files, out = render(LAB_SPEC, LAB_INV), tmp_path / "p"
    assert {s for _, s in write(files, out, rig="lab-cpu-rpc").files} == {"created"}
    assert {s for _, s in write(files, out, rig="lab-cpu-rpc").files} == {"unchanged"}
    (out / "inventory/host_vars/h1.yml").write_text("edited by hand\n")
    report = dict(write(files, out, rig="lab-cpu-rpc").files)
    assert report["inventory/host_vars/h1.yml"] == "changed"
    assert sum(s == "changed" for s in report.values()) == 1
    # the staging and previous trees beside p are gone; inside p only the marker is rigctl's own
    assert sorted(p.name for p in tmp_path.iterdir()) == [".p.rigctl-lock", "p"]
    assert [p.name for p in out.rglob(".rigctl-*")] == [".rigctl-render"]


def test_cli_render_reports(rigctl, tmp_path):
    out = tmp_path / "project"
    code, stdout, _ = rigctl("render", LAB_SPEC, "-o", out, "-i", LAB_INV)
    assert code == 0 and "created   inventory/hosts.yml" in stdout
    code, stdout, _ = rigctl("render", LAB_SPEC, "-o", out, "-i", LAB_INV)
    assert code == 0 and stdout.strip().endswith("0 created, 0 changed, %d unchanged" % len(render(LAB_SPEC, LAB_INV)))


def test_render_refuses_a_spec_with_errors(rigctl, tmp_path):
    bad = sorted((ROOT / "examples" / "pitfalls").glob("*.yaml"))[0]
    code, _, stderr = rigctl("render", bad, "-o", tmp_path / "x")
    assert code == 1 and "not rendering" in stderr
    assert not (tmp_path / "x").exists()


def test_secrets_are_references_only(monkeypatch):
    monkeypatch.setenv("RIGCTL_LAB_API_KEY", "sentinel-secret-4f1c")
    files = files_of(LAB_SPEC, LAB_INV)
    assert not [p for p, c in files.items() if "sentinel-secret-4f1c" in c]
    h1 = load_ansible_yaml(files["inventory/host_vars/h1.yml"])
    server = h1["rigctl_services"][0]
    assert server["secret_files"] == [{"path": "/etc/rigctl/secrets/tiny.key", "ref": {"env": "RIGCTL_LAB_API_KEY"},
                                       "var": "LLAMA_API_KEY_FILE", "format": "raw"}]
    # the unit reads a root-only copy handed over by systemd, never the value
    unit = files["files/h1/rigctl-tiny.service"]
    assert "LoadCredential=tiny.key:/etc/rigctl/secrets/tiny.key" in unit
    assert '--api-key-file "${CREDENTIALS_DIRECTORY}/tiny.key"' in unit


def test_lab_inventory_and_vars():
    files = files_of(LAB_SPEC, LAB_INV)
    inv = load_ansible_yaml(files["inventory/hosts.yml"])["all"]
    assert inv["children"]["llamacpp_rpc"]["hosts"] == {"h2": None}
    assert inv["children"]["llamacpp_server"]["hosts"] == {"h1": None}
    assert inv["children"]["gpu_nodes"]["hosts"] == {}
    assert inv["children"]["rig"]["hosts"]["h1"]["ansible_host"] == "10.213.0.11"
    assert "id_ed25519" in inv["vars"]["ansible_ssh_private_key_file"]
    all_vars = load_ansible_yaml(files["inventory/group_vars/all.yml"])
    assert all_vars["rigctl_profile"] == "lab" and all_vars["rigctl_rig_subnet"] == "10.213.0.0/24"
    assert "llama.cpp-0.3.36/bin" in all_vars["rigctl_artifacts_dir"]  # from inventories/lab, not the spec
    h2 = load_ansible_yaml(files["inventory/host_vars/h2.yml"])
    assert h2["rigctl_firewall_rules"] == [{"port": 50052, "proto": "tcp", "scope": "subnet", "service": "rigctl-tiny-rpc"}]
    assert h2["rigctl_gpu_required"] is False
    # the unit runs the binary from its build's own directory (a new engine lands beside it)
    key = h2["rigctl_services"][0]["engine"]["key"]
    assert h2["rigctl_services"][0]["binary_dest"] == f"/var/lib/rigctl/engines/{key}/rpc-server"
    assert f"ExecStart=/var/lib/rigctl/engines/{key}/rpc-server --host 10.213.0.12 --port 50052\n" \
        in files["files/h2/rigctl-tiny-rpc.service"]
    h1 = load_ansible_yaml(files["inventory/host_vars/h1.yml"])
    assert h1["rigctl_services"][0]["binary_dest"] == f"/var/lib/rigctl/engines/{key}/llama-server"
    assert h1["rigctl_services"][0]["depends_on"] == [
        {"node": "h2", "service": "rigctl-tiny-rpc", "address": "10.213.0.12", "port": 50052}]


def test_inventory_override_rejects_unknown_hosts(tmp_path):
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    h9: {ansible_host: 10.0.0.9}\n")
    with pytest.raises(InventoryError, match="h9 are not nodes of the rig spec"):
        render(LAB_SPEC, tmp_path)


def test_inventory_override_changes_address_and_becomes(tmp_path):
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    h1: {ansible_host: 192.0.2.5, ansible_user: ops}\n")
    ov = load_overrides(tmp_path)
    assert ov.address("h1") == "192.0.2.5"
    inv = load_ansible_yaml({f.path: f.content for f in render(LAB_SPEC, tmp_path)}["inventory/hosts.yml"])
    h1 = inv["all"]["children"]["rig"]["hosts"]["h1"]
    assert h1["ansible_host"] == "192.0.2.5" and h1["ansible_become"] is True


@pytest.mark.parametrize("level", ["vars", "host"])
def test_ssh_options_without_host_key_checking_say_so_to_mitogen_too(tmp_path, level):
    args = {"ansible_ssh_common_args": "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no"}
    doc = {"vars": args} if level == "vars" else {"hosts": {"h1": args}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": doc}))
    inv = load_ansible_yaml(files_of(LAB_SPEC, tmp_path)["inventory/hosts.yml"])
    where = inv["all"]["vars"] if level == "vars" else inv["all"]["children"]["rig"]["hosts"]["h1"]
    assert where["ansible_host_key_checking"] is False


def test_host_key_checking_is_left_alone_when_ssh_options_keep_it_or_the_inventory_sets_it(tmp_path):
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_ssh_common_args": "-o StrictHostKeyChecking=yes"},
        "hosts": {"h2": {"ansible_ssh_extra_args": "-o StrictHostKeyChecking=no", "ansible_host_key_checking": True}}}}))
    text = files_of(LAB_SPEC, tmp_path)["inventory/hosts.yml"]
    inv = load_ansible_yaml(text)
    assert "ansible_host_key_checking" not in inv["all"].get("vars", {})
    assert inv["all"]["children"]["rig"]["hosts"]["h2"]["ansible_host_key_checking"] is True


def test_spec_text_is_quoted_for_systemd_compose_and_ansible(tmp_path):
    spec = LAB_SPEC.read_text().replace(
        "    auth: {env: RIGCTL_LAB_API_KEY}",
        "    auth: {env: RIGCTL_LAB_API_KEY}\n"
        "    extra_args: [--alias, \"my model $HOME 100%\", --chat-template, \"{{ lookup('pipe', 'id') }}\"]")
    p = tmp_path / "rig.yaml"
    p.write_text(spec)
    files = files_of(p)
    unit = files["files/h1/rigctl-tiny.service"]
    assert '--alias "my model $$HOME 100%%"' in unit  # systemd: no $ expansion, no % specifier
    hv = files["inventory/host_vars/h1.yml"]
    assert "!unsafe \"{{ lookup('pipe', 'id') }}\"" in hv or "!unsafe '{{ lookup(''pipe'', ''id'') }}'" in hv


def ansible_env() -> dict:
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", ANSIBLE_NOCOLOR="1")


@pytest.mark.parametrize("spec", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_renders_and_passes_syntax_check(spec, tmp_path):
    out = tmp_path / "project"
    write(render(spec), out, rig=spec.stem)
    r = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", "site.yml"], cwd=out,
                       env=dict(ansible_env(), ANSIBLE_CONFIG=str(out / "ansible.cfg")), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("ansible-lint", path=str(BIN)) is None, reason="ansible-lint not installed")
def test_rendered_tree_passes_ansible_lint_production(tmp_path):
    # one native (lab) and one container-heavy rig: the roles are shared, the variables differ
    for spec, inv in ((LAB_SPEC, LAB_INV), (ROOT / "examples" / "multinode-vllm.yaml", None)):
        out = tmp_path / spec.stem
        write(render(spec, inv), out, rig=spec.stem)
        r = subprocess.run([str(BIN / "ansible-lint"), "--profile", "production", "--nocolor", "--offline"],
                           cwd=out, env=ansible_env(), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]


def test_render_apply_and_verify_take_extra_catalogs_like_validate(rigctl, tmp_path):
    """A spec that names a format only a user catalog has: unknown without --catalog."""
    formats = yaml.safe_load((ROOT / "provisioner" / "spec" / "data" / "formats.yaml").read_text())
    entry = dict(next(f for f in formats if f["id"] == "gguf-f16"), id="lab-f16", aliases=[])
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"formats": [entry]}))
    spec = tmp_path / "rig.yaml"
    spec.write_text(LAB_SPEC.read_text().replace("format: gguf-f16", "format: lab-f16"))
    code, _, err = rigctl("render", spec, "-o", tmp_path / "out", "-q")
    assert code == 1 and "lab-f16" in err
    code, out, err = rigctl("render", spec, "-o", tmp_path / "out", "-q", "--catalog", tmp_path / "mine.yaml")
    assert code == 0, err
    # apply and verify validate with it too: the spec passes, so they get as far as --limit
    for cmd, extra in (("apply", ["--yes"]), ("verify", [])):
        code, _, err = rigctl(cmd, spec, "--limit", "h7", *extra)
        assert code == 1 and "error" in err, err
        code, _, err = rigctl(cmd, spec, "--limit", "h7", *extra, "--catalog", tmp_path / "mine.yaml")
        assert code == 2 and "h7" in err, err
