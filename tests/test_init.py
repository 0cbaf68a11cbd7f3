"""`rigctl init`: a starter rig.yaml from probe facts.

GPU facts come only from the H200 recording in tests/fixtures/probe/ (real hardware);
host facts (OS, memory, NICs) are this machine's, read for real. Over SSH it runs
against the lab in tests/integration/test_report_lab.py.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from provisioner.probe import ProbeUnavailable, collect
from provisioner.probe.host import collect_host, parse_os_release
from provisioner.probe.starter import _nvlink_groups, os_literal

ROOT = Path(__file__).resolve().parent.parent
H200 = ROOT / "tests" / "fixtures" / "probe" / "h200-driver580.159.04-2026-11-28.json"


def answer(text: str, psu: str, circuit: str | None = None) -> str:
    """Answer every node's PSU (and circuit) question as a user does: uncomment the line, fill it in."""
    text, n = re.subn(r"(?m)^(\s*)# psu: \{.*\}$", lambda m: f"{m.group(1)}psu: {psu}", text)
    assert n >= 1, text
    if circuit:
        text, n = re.subn(r"(?m)^(\s*)# circuit: \{.*\}$", lambda m: f"{m.group(1)}circuit: {circuit}", text)
        assert n >= 1, text
    return text


@pytest.fixture
def h200_spec(tmp_path, rigctl):
    out = tmp_path / "rig.yaml"
    rc, stdout, err = rigctl("init", "--facts", H200, "-o", out, "--name", "h200-box")
    assert rc == 0, err
    assert f"wrote {out}" in err and "1 GPU(s)" in err
    return out


def test_h200_facts_give_catalog_model_uuid_and_bus(h200_spec):
    facts = json.loads(H200.read_text())
    gpu = facts["gpus"][0]
    text = h200_spec.read_text()
    assert "name: h200-box" in text
    # NVML's "NVIDIA H200" maps to the catalog id, not the raw name
    assert re.search(r"(?m)^\s+model: h200-sxm  # NVML name: NVIDIA H200$", text), text
    assert f"uuid: {gpu['uuid']}" in text
    assert gpu["pci_bus_id"] in text and "143771 MiB" in text and "PCIe Gen5 x16" in text
    # the power questions name the rule that needs the answer
    assert re.search(r"# QUESTION psu-headroom: .*power supply", text)
    assert re.search(r"# QUESTION wall-circuit: .*wall circuit", text)
    # the recording has no NVLink (an SXM board in a VM, NVLink not exposed): no bridge invented
    assert "nvlink:" not in text
    assert (h200_spec.stat().st_mode & 0o777) == 0o644


def test_h200_spec_validates_once_psu_and_circuit_are_answered(h200_spec, rigctl, tmp_path):
    ok = tmp_path / "answered.yaml"
    ok.write_text(answer(h200_spec.read_text(), "{watts: 2000, rating: platinum}", "{volts: 230, amps: 16}"))
    rc, out, err = rigctl("validate", ok)
    assert rc == 0, out + err


def test_answered_psu_is_what_validate_judges(h200_spec, rigctl, tmp_path):
    # the same spec with a PSU below a 700 W H200's sustained draw: the answer really reaches
    # psu-headroom (an error only above the rating since the severities were graded)
    small = tmp_path / "small.yaml"
    small.write_text(answer(h200_spec.read_text(), "{watts: 650, rating: platinum}"))
    rc, out, _ = rigctl("validate", small)
    assert rc == 1
    line = next(i for i, ln in enumerate(small.read_text().splitlines(), 1) if ln.strip().startswith("psu:"))
    assert re.search(rf"^{re.escape(str(small))}:{line}:\d+: error psu-headroom: .*700 W", out, re.M), out


def test_init_on_this_host_without_gpu_writes_a_node_without_gpus(tmp_path, rigctl):
    try:
        collect()
        pytest.skip("this host has an NVIDIA GPU")
    except ProbeUnavailable as exc:
        reason = exc.reason
    out = tmp_path / "rig.yaml"
    rc, _, err = rigctl("init", "-o", out)
    assert rc == 0, err
    assert "no GPUs (" + reason + ")" in err
    text = out.read_text()
    assert re.search(r"(?m)^    gpus: \[\]  # no GPU facts: ", text)
    host = collect_host()
    want_os = os_literal(host)
    if want_os:
        assert f"    os: {want_os}  # /etc/os-release: " in text
    rc, vout, verr = rigctl("validate", out)
    assert rc == 0, vout + verr


def test_existing_file_is_not_overwritten_without_force(tmp_path, rigctl):
    out = tmp_path / "rig.yaml"
    out.write_text("mine\n")
    rc, _, err = rigctl("init", "--facts", H200, "-o", out)
    assert rc == 2
    assert "exists" in err and "--force" in err
    assert out.read_text() == "mine\n"
    rc, _, err = rigctl("init", "--facts", H200, "-o", out, "--force")
    assert rc == 0, err
    assert "h200-sxm" in out.read_text()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".rig.yaml.")], "temp file left behind"


def test_stdout_output_and_probe_inventory_json(tmp_path, rigctl):
    # `rigctl probe -i INV --format json` writes host -> outcome; a host without GPUs becomes a node without
    facts = json.loads(H200.read_text())
    doc = tmp_path / "fleet.json"
    doc.write_text(json.dumps({"gpu-box": {"facts": facts},
                               "Cpu_Box": {"unavailable": "NVML library not found (libnvidia-ml.so.1)"}}))
    rc, text, err = rigctl("init", "--facts", doc, "-o", "-")
    assert rc == 0, err
    assert "  - name: gpu-box\n" in text and "  - name: cpu-box\n" in text
    assert "gpus: []  # no GPU facts: NVML library not found" in text
    # two nodes need a fabric; nothing read says which, so it is a question, still valid YAML
    assert "QUESTION fabric-required" in text
    spec = tmp_path / "rig.yaml"
    spec.write_text(answer(text, "{watts: 2000, rating: platinum}"))
    rc, out, _ = rigctl("validate", spec)
    assert rc == 0, out


def test_unreadable_facts_file_is_a_usage_error(tmp_path, rigctl):
    bad = tmp_path / "facts.json"
    bad.write_text("{not json")
    rc, _, err = rigctl("init", "--facts", bad, "-o", tmp_path / "rig.yaml")
    assert rc == 2 and err.startswith(f"rigctl init: --facts {bad}: ")
    assert not (tmp_path / "rig.yaml").exists()


@pytest.mark.parametrize("text,system,want", [
    ('PRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\nVERSION_ID="24.04"\n', "Linux", "ubuntu-24.04"),
    ('ID=debian\nVERSION_ID="12"\n', "Linux", "debian-12"),
    ('ID=fedora\nVERSION_ID=40\n', "Linux", None),
    ("", "Darwin", "macos"),
])
def test_os_release_maps_to_the_spec_literals(text, system, want):
    assert os_literal({"system": system, "os_release": parse_os_release(text)}) == want


def test_nvlink_groups_pairs_and_fully_linked_boards():
    # structure only (no NVLink recording exists: the H200 VM exposed none): pairs stay pairs,
    # a fully linked set (an NVSwitch board) is one bridge entry
    pairs = [{"a": 0, "b": 1, "nvlink": True}, {"a": 2, "b": 3, "nvlink": True}, {"a": 0, "b": 2, "nvlink": False}]
    assert _nvlink_groups({"p2p": pairs}) == [[0, 1], [2, 3]]
    full = [{"a": a, "b": b, "nvlink": True} for a in range(4) for b in range(a + 1, 4)]
    assert _nvlink_groups({"p2p": full}) == [[0, 1, 2, 3]]
