"""Tests of the GPU probe (provisioner/probe).

The facts come only from recordings of real hardware in tests/fixtures/probe/
(see the README there); no GPU facts are invented here. On a host without
an NVIDIA driver, the no-NVML path and the Ansible module's failure message
are tested for real.
"""

import argparse
import ast
import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.commands import probe as probe_cmd
from provisioner.probe import ProbeUnavailable, collect, compare, core, spec_fragment

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "probe"
FACT_FILES = sorted(p for p in FIXTURES.glob("*.json") if not p.name.endswith("-compare.json"))
ROLE = ROOT / "playbooks" / "roles" / "gpu_checks"


def _load(path):
    with open(path) as f:
        return json.load(f)


def _recorded_compare(path):
    companion = path.with_name(path.stem + "-compare.json")
    return _load(companion) if companion.exists() else None


@pytest.fixture(params=FACT_FILES, ids=[p.stem for p in FACT_FILES])
def recorded(request):
    return request.param, _load(request.param)


def test_fixtures_exist():
    assert FACT_FILES, "no recorded probe facts in tests/fixtures/probe"


def test_recorded_facts_have_the_schema(recorded):
    _, facts = recorded
    for key in ("schema_version", "hostname", "collected_at", "driver_version",
                "cuda_driver_version", "nvml_version", "gpus", "p2p", "errors"):
        assert key in facts
    assert facts["gpus"], "a recording always has at least one GPU"
    for gpu in facts["gpus"]:
        for key in ("index", "name", "uuid", "pci_bus_id", "memory_total_mib",
                    "pcie", "power", "nvlink", "compute_capability", "persistence_mode"):
            assert key in gpu
        assert set(gpu["pcie"]) >= {"gen_current", "gen_max", "width_current", "width_max"}
        assert set(gpu["power"]) >= {"limit_w", "default_limit_w", "min_limit_w",
                                     "max_limit_w", "enforced_limit_w"}
    # Recorded as JSON, so it round-trips.
    assert json.loads(json.dumps(facts)) == facts


# ------------------------------------------------------------------ compare


def test_compare_empty_expectation_has_no_problems(recorded):
    _, facts = recorded
    assert compare(facts, {}) == []
    assert compare(facts, None) == []


def test_compare_recorded_match_expectation(recorded):
    path, facts = recorded
    rec = _recorded_compare(path)
    if rec is None:
        pytest.skip("no recorded compare expectations for %s" % path.name)
    assert compare(facts, rec["match"]["expected"]) == []


def test_compare_recorded_mismatch_expectation(recorded):
    path, facts = recorded
    rec = _recorded_compare(path)
    if rec is None:
        pytest.skip("no recorded compare expectations for %s" % path.name)
    problems = compare(facts, rec["mismatch"]["expected"])
    assert [p["check"] for p in problems] == [p["check"] for p in rec["mismatch"]["problems"]]
    for p in problems:
        assert set(p) == {"check", "gpu", "expected", "actual", "message"}
        assert p["message"] and "\n" not in p["message"]
        json.dumps(p)  # serialisable for Ansible and --format json


def _first(facts):
    return facts["gpus"][0]


def test_compare_model_names(recorded):
    _, facts = recorded
    gpu = _first(facts)
    name = gpu["name"]
    assert compare(facts, {"gpus": [{"name_contains": name.split()[-1].lower()}]}) == []
    assert compare(facts, {"gpus": [{"name_contains": ["no-such-card", name.split()[-1]]}]}) == []
    assert compare(facts, {"gpus": [{"nvml_names": [name.upper()]}]}) == []
    problems = compare(facts, {"gpus": [{"nvml_names": ["NVIDIA GeForce RTX 3090"]}]})
    assert [p["check"] for p in problems] == ["model"]
    assert problems[0]["actual"] == name
    assert "GPU %d is %r" % (gpu["index"], name) in problems[0]["message"]


def test_compare_gpu_count_defaults_to_listed_gpus(recorded):
    _, facts = recorded
    n = len(facts["gpus"])
    listed = [{} for _ in range(n + 1)]
    problems = compare(facts, {"gpus": listed})
    assert [p["check"] for p in problems] == ["gpu_count"]
    assert problems[0]["expected"] == n + 1 and problems[0]["actual"] == n
    assert "host has %d GPU(s)" % n in problems[0]["message"]


def test_compare_memory_floor(recorded):
    _, facts = recorded
    gpu = _first(facts)
    gib = gpu["memory_total_mib"] / 1024.0
    assert compare(facts, {"gpus": [{"memory_gib_min": int(gib)}]}) == []
    problems = compare(facts, {"gpus": [{"memory_gib_min": int(gib) + 1}]})
    assert [p["check"] for p in problems] == ["memory"]
    assert "%.1f GiB" % gib in problems[0]["message"]


def test_compare_pcie_width_message(recorded):
    _, facts = recorded
    gpu = _first(facts)
    width = gpu["pcie"]["width_current"]
    assert compare(facts, {"gpus": [{"pcie_width_min": width}]}) == []
    problems = compare(facts, {"gpus": [{"pcie_width_min": width * 2}]})
    assert len(problems) == 1
    msg = problems[0]["message"]
    assert msg.startswith("GPU %d PCIe link runs at x%d, spec expects x%d ("
                          % (gpu["index"], width, width * 2))


def test_compare_pcie_width_reduced_link_asks_for_a_reseat(recorded):
    # The recorded card links at full width; a copy with a narrower current
    # width (max unchanged) shows the reseat advice. Only the width differs.
    _, facts = recorded
    facts = copy.deepcopy(facts)
    gpu = _first(facts)
    full = gpu["pcie"]["width_max"]
    gpu["pcie"]["width_current"] = full // 4
    problems = compare(facts, {"gpus": [{"pcie_width_min": full}]})
    assert problems[0]["message"] == (
        "GPU %d PCIe link runs at x%d, spec expects x%d (reseat the card or check the "
        "slot's lane sharing)" % (gpu["index"], full // 4, full))


def test_compare_pcie_gen_uses_max_not_idle_current(recorded):
    _, facts = recorded
    facts = copy.deepcopy(facts)
    gpu = _first(facts)
    gen_max = gpu["pcie"]["gen_max"]
    gpu["pcie"]["gen_current"] = 1  # what an idle link may report
    assert compare(facts, {"gpus": [{"pcie_gen_min": gen_max}]}) == []
    problems = compare(facts, {"gpus": [{"pcie_gen_min": gen_max + 1}]})
    assert [p["check"] for p in problems] == ["pcie_gen"]
    assert "Gen%d at most" % gen_max in problems[0]["message"]


def test_compare_power_limit(recorded):
    _, facts = recorded
    gpu = _first(facts)
    power = gpu["power"]
    limit = power["limit_w"]
    assert compare(facts, {"gpus": [{"power_limit_w": limit}]}) == []
    assert compare(facts, {"gpus": [{"power_limit_w": limit - 0.5}]}) == []
    inside = power["min_limit_w"] + 10
    problems = compare(facts, {"gpus": [{"power_limit_w": inside}]})
    assert [p["check"] for p in problems] == ["power_limit"]
    assert "nvidia-smi -i %d -pl %d" % (gpu["index"], inside) in problems[0]["message"]
    outside = power["max_limit_w"] + 100
    problems = compare(facts, {"gpus": [{"power_limit_w": outside}]})
    assert "outside this card's range" in problems[0]["message"]


def test_compare_nvlink_pairs(recorded):
    _, facts = recorded
    n = len(facts["gpus"])
    linked = [[p["a"], p["b"]] for p in facts["p2p"] if p.get("nvlink")]
    assert compare(facts, {"nvlink_pairs": linked}) == []
    problems = compare(facts, {"nvlink_pairs": [[0, n]]})
    assert [p["check"] for p in problems] == ["nvlink"]
    assert "NVLink between GPU 0 and GPU %d" % n in problems[0]["message"]
    problems = compare(facts, {"nvlink_pairs": [["x"]]})
    assert problems[0]["check"] == "nvlink"


def test_compare_accepts_strings_from_templating(recorded):
    # Ansible may hand numbers over as strings.
    _, facts = recorded
    gpu = _first(facts)
    want = {"gpu_count": str(len(facts["gpus"])),
            "gpus": [{"pcie_width_min": str(gpu["pcie"]["width_current"]),
                      "memory_gib_min": "1"}]}
    assert compare(facts, want) == []


# ------------------------------------------------------------ spec_fragment


def test_spec_fragment_is_valid_yaml(recorded):
    yaml = pytest.importorskip("yaml")
    _, facts = recorded
    text = spec_fragment(facts)
    data = yaml.safe_load(text)
    assert [g["id"] for g in data["gpus"]] == ["gpu%d" % g["index"] for g in facts["gpus"]]
    assert [g["model"] for g in data["gpus"]] == [g["name"] for g in facts["gpus"]]
    for gpu in facts["gpus"]:
        assert gpu["uuid"] in text
        assert gpu["pci_bus_id"] in text
    for item, gpu in zip(data["gpus"], facts["gpus"]):
        differs = gpu["power"]["limit_w"] != gpu["power"]["default_limit_w"]
        assert ("power_limit_w" in item) == differs


def test_spec_fragment_uses_catalog_ids_and_indents(recorded):
    yaml = pytest.importorskip("yaml")
    _, facts = recorded
    seen = []

    def lookup(name):
        seen.append(name)
        return "catalog-id-for-test"

    text = spec_fragment(facts, catalog_lookup=lookup, indent=4)
    data = yaml.safe_load("node:\n" + text)
    assert {g["model"] for g in data["node"]["gpus"]} == {"catalog-id-for-test"}
    assert seen == [g["name"] for g in facts["gpus"]]
    # A lookup that knows nothing, or fails, falls back to the NVML name.
    for bad in (lambda name: None, lambda name: 1 / 0):
        data = yaml.safe_load(spec_fragment(facts, catalog_lookup=bad))
        assert [g["model"] for g in data["gpus"]] == [g["name"] for g in facts["gpus"]]


def test_spec_fragment_power_limit_when_changed(recorded):
    yaml = pytest.importorskip("yaml")
    _, facts = recorded
    facts = copy.deepcopy(facts)
    power = _first(facts)["power"]
    power["limit_w"] = power["min_limit_w"]
    if power["limit_w"] == power["default_limit_w"]:
        pytest.skip("card allows no other limit")
    data = yaml.safe_load(spec_fragment(facts))
    assert data["gpus"][0]["power_limit_w"] == power["min_limit_w"]


# -------------------------------------------------------------- text output


def test_cli_text_format(recorded):
    _, facts = recorded
    text = probe_cmd.format_text(facts)
    gpu = _first(facts)
    assert gpu["name"] in text
    assert "Gen%s x%s" % (gpu["pcie"]["gen_current"], gpu["pcie"]["width_current"]) in text
    assert facts["driver_version"] in text


def test_cli_register():
    parser = argparse.ArgumentParser()
    probe_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["probe", "--format", "yaml-fragment"])
    assert args.func is probe_cmd.run and args.format == "yaml-fragment"
    with pytest.raises(SystemExit):
        parser.parse_args(["probe", "--format", "xml"])


# ------------------------------------------------ this host (no GPU expected)


def _reason_here():
    """The ProbeUnavailable reason on this host, or skip if it has a GPU."""
    try:
        collect()
    except ProbeUnavailable as exc:
        return exc.reason
    pytest.skip("this host has a working NVIDIA GPU")


def test_collect_without_nvml_raises_one_line_reason():
    reason = _reason_here()
    assert reason and "\n" not in reason
    assert reason.startswith((
        "NVML library not found (libnvidia-ml.so.1)",
        "pynvml (nvidia-ml-py) is not installed",
        "NVIDIA driver",
        "NVML",
    ))


def test_collect_without_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with pytest.raises(ProbeUnavailable) as info:
        collect()
    assert info.value.reason.startswith("pynvml (nvidia-ml-py) is not installed")


def test_cli_exit_code_3_without_gpu(capsys):
    reason = _reason_here()
    rc = probe_cmd.run(argparse.Namespace(format="json"))
    out, err = capsys.readouterr()
    assert rc == 3
    assert out == ""
    assert err == "rigctl probe: %s\n" % reason


# ------------------------------------------------------------ shared code


def test_core_is_standalone():
    tree = ast.parse((ROOT / "provisioner" / "probe" / "core.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("provisioner")
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("provisioner") for a in node.names)


def test_module_util_is_a_relative_symlink_to_core():
    link = ROLE / "module_utils" / "rigctl_probe.py"
    assert link.is_symlink()
    target = os.readlink(link)
    assert not os.path.isabs(target)
    assert link.resolve() == (ROOT / "provisioner" / "probe" / "core.py").resolve()


def test_short_bus_id():
    assert core._short_bus_id("00000000:00:06.0") == "0000:00:06.0"
    assert core._short_bus_id("00000001:1A:00.0") == "0001:1a:00.0"


# --------------------------------------------------------------- Ansible


def _ansible_playbook():
    here = Path(sys.executable).parent / "ansible-playbook"
    if here.exists():
        return str(here)
    return shutil.which("ansible-playbook")


def _play(tmp_path, extra_vars):
    exe = _ansible_playbook()
    if not exe:
        pytest.skip("ansible-playbook is not installed")
    play = tmp_path / "play.yml"
    play.write_text("- hosts: all\n  gather_facts: false\n  roles:\n    - gpu_checks\n")
    env = dict(os.environ,
               ANSIBLE_ROLES_PATH=str(ROLE.parent),
               ANSIBLE_HOME=str(tmp_path / "ansible-home"),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
               ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_RETRY_FILES_ENABLED="0")
    cmd = [exe, "-i", "localhost,", "-c", "local", str(play),
           "-e", "ansible_python_interpreter=%s" % sys.executable]
    for key, value in extra_vars.items():
        cmd += ["-e", "%s=%s" % (key, value)]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=env, timeout=300, universal_newlines=True)


def test_ansible_module_fails_with_the_probe_reason(tmp_path):
    reason = _reason_here()
    proc = _play(tmp_path, {})
    assert proc.returncode != 0, proc.stdout
    assert '"msg": "rigctl_gpu_facts: %s"' % reason in proc.stdout, proc.stdout
    assert '"unavailable": true' in proc.stdout


def test_ansible_role_skips_when_no_gpu_is_expected(tmp_path):
    proc = _play(tmp_path, {"rigctl_gpu_required": "false"})
    assert proc.returncode == 0, proc.stdout
    assert "no GPU expected on this host (lab profile)" in proc.stdout


def test_spec_fragment_from_real_facts_pastes_into_a_valid_spec(tmp_path):
    """The fragment `rigctl probe --format yaml-fragment` prints for the recorded H200
    names the catalog model and, pasted under a node, validates."""
    import textwrap

    from provisioner.check import check_file
    from provisioner.commands.probe import catalog_lookup

    facts = json.loads(sorted(FIXTURES.glob("*-2026-11-28.json"))[0].read_text())
    fragment = spec_fragment(facts, catalog_lookup)
    assert "model: h200-sxm" in fragment
    spec = tmp_path / "rig.yaml"
    spec.write_text("version: 1\nname: probed\nnodes:\n  - name: box\n" + textwrap.indent(fragment, "    "))
    res = check_file(str(spec))
    assert res.load.rig is not None and res.load.rig.nodes[0].gpus[0].model == "h200-sxm"
    assert not [d for d in res.diagnostics if d.severity.value == "error"], [d.message for d in res.diagnostics]
