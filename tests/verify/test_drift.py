"""Drift between live GPU facts and a spec, with facts recorded on real hardware only.

The facts are tests/fixtures/probe/*.json (see the README there), never invented;
only the specs vary. Each case asserts what a user sees: the rule id, the spec
location and the numbers in the message.
"""

import functools
import json
from pathlib import Path

from provisioner.diagnostics import Location
from provisioner.plan import build_plan
from provisioner.rules.context import Context
from provisioner.spec import catalog
from provisioner.spec.loader import load_text
from provisioner.verify.drift import facts_diagnostics, gpu_problems
from provisioner.verify.expect import gpu_expected
from provisioner.verify.inventory import effective_inventory

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "probe"
H200 = json.loads((FIXTURES / "h200-driver580.159.04-2026-11-28.json").read_text())


def spec(gpus: str, profile: str = "production", nvlink: str = "") -> str:
    return f"""\
version: 1
name: h200-box
profile: {profile}
nodes:
  - name: g1
    connection: {{address: 10.0.0.5}}
    board:
      slots:
        - {{name: SLOT1, position: 1, electrical_lanes: 16, pcie_gen: 5}}
        - {{name: SLOT2, position: 3, electrical_lanes: 16, pcie_gen: 5}}
    gpus:
{gpus}{nvlink}
"""


def loaded(text: str):
    load = load_text(text, "rig.yaml")
    assert load.rig is not None, load.diagnostics
    return load, Context(load.rig, catalog.builtin(), file="rig.yaml")


@functools.lru_cache
def expected_of(text: str) -> dict | None:
    """The GPU expectations `rigctl apply` renders for node g1 (what verify reads back)."""
    ctx = loaded(text)[1]
    inv = effective_inventory(ctx, build_plan(ctx))
    return gpu_expected(inv.hosts["g1"].vars)


def located(text: str, outcome: dict):
    load, ctx = loaded(text)
    return [load.locate(d) for d in facts_diagnostics(ctx, 0, outcome, expected_of(text))]


ONE = "      - {id: gpu0, model: h200, slot: SLOT1}\n"
TWO = ONE + "      - {id: gpu1, model: h200, slot: SLOT2}\n"


def test_matching_spec_has_no_drift():
    assert located(spec(ONE), {"facts": H200}) == []


def test_pcie_x16_and_gen5_expectation_passes():
    expected = expected_of(spec(ONE))
    assert expected["gpus"][0]["pcie_width_min"] == 16 and expected["gpus"][0]["pcie_gen_min"] == 5
    assert gpu_problems(H200, expected) == []


def test_missing_gpu_is_verify_gpu_at_the_gpus_list():
    diags = located(spec(TWO), {"facts": H200})
    assert [d.rule for d in diags] == ["verify-gpu[g1]"]
    d = diags[0]
    assert "g1: host has 1 GPU(s) (NVIDIA H200), spec expects 2" in d.message
    assert d.path == ("nodes", 0, "gpus")
    assert d.location == Location("rig.yaml", 12, 7)


def test_power_cap_drift_is_located_at_power_limit_w():
    gpus = "      - {id: gpu0, model: h200, slot: SLOT1, power_limit_w: 500}\n"
    diags = located(spec(gpus), {"facts": H200})
    assert [d.rule for d in diags] == ["verify-power-cap[g1]"]
    assert "power limit is 700 W, spec expects 500 W" in diags[0].message
    assert diags[0].path == ("nodes", 0, "gpus", 0, "power_limit_w")
    assert diags[0].location.line == 12


def test_wrong_model_and_memory_are_verify_gpu():
    diags = located(spec("      - {id: gpu0, model: rtx-3090}\n"), {"facts": H200})
    assert {d.rule for d in diags} == {"verify-gpu[g1]"}
    assert any("'NVIDIA H200'" in d.message and "GeForce RTX 3090" in d.message for d in diags)


def test_nvlink_expected_on_a_vm_without_nvlink():
    nvlink = "    nvlink:\n      - {gpus: [gpu0, gpu1]}\n"
    diags = located(spec(TWO, nvlink=nvlink), {"facts": H200})
    nv = [d for d in diags if d.rule == "verify-nvlink[g1]"]
    assert len(nv) == 1 and nv[0].path == ("nodes", 0, "nvlink", 0)
    assert "only 1 GPU(s)" in nv[0].message


def test_driver_floor_uses_the_recorded_driver():
    _, ctx = loaded(spec(ONE))
    assert ctx.gpus(0)[0].entry.min_driver_branch <= 580  # the recorded 580.159.04 is new enough
    problems = gpu_problems(H200, dict(expected_of(spec(ONE)), min_driver_branch=590))
    assert [p["check"] for p in problems] == ["driver"]
    assert "580.159.04 is older than branch 590" in problems[0]["message"]


def test_no_gpu_facts_where_the_spec_expects_gpus_is_verify_driver():
    reason = "NVML library not found (libnvidia-ml.so.1): no NVIDIA driver installed on this host"
    diags = located(spec(ONE), {"unavailable": reason})
    assert [d.rule for d in diags] == ["verify-driver[g1]"]
    assert diags[0].message == f"g1: spec puts 1 GPU here, but the probe got no GPU facts: {reason}"


def test_lab_profile_and_gpu_less_nodes_get_no_gpu_checks():
    assert located(spec(TWO, profile="lab"), {"unavailable": "no driver"}) == []
    text = spec(ONE).replace("    gpus:\n" + ONE, "    gpus: []\n")
    assert located(text, {"unavailable": "no driver"}) == []


def test_unreachable_host_is_one_diagnostic():
    diags = located(spec(TWO), {"unreachable": "ssh: connect to host 10.0.0.5 port 22: No route to host"})
    assert [d.rule for d in diags] == ["verify-host[g1]"]
    assert diags[0].path == ("nodes", 0, "connection")
    assert "No route to host" in diags[0].message


def test_drift_diagnostics_of_live_outcomes_use_the_rendered_expectations():
    from provisioner.verify import drift_diagnostics

    load, ctx = loaded(spec("      - {id: gpu0, model: h200, slot: SLOT1, power_limit_w: 500}\n"))
    diags = drift_diagnostics(ctx, {"g1": {"facts": H200}, "not-a-node": {"facts": H200}})
    assert [d.rule for d in diags] == ["verify-power-cap[g1]"]
