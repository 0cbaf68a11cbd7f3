"""rigctl's rendered GPU expectations against facts the Ansible module gathered on a real H200.

The fixture comes from `bench/gpu_ansible_check.sh` on a lent H200 (see
tests/fixtures/ansible-gpu/README.md). A spec describing that machine must produce
expectations the real card meets; a wrong spec must produce the named problems.
"""

from __future__ import annotations

import json
from pathlib import Path


from provisioner.probe import compare
from provisioner.render import render_project
from provisioner.render.prepare import prepare
from tests.consumers import load_ansible_yaml



FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ansible-gpu" / "h200-driver580.159.04-2026-11-28-module-result.json"

SPEC = """version: 1
name: h200-box
nodes:
  - name: gpu1
    connection: {{address: 127.0.0.1}}
    board:
      slots: [{{name: PCIE1, position: 1, electrical_lanes: 16, pcie_gen: 5}}]
    gpus:
      - {{id: gpu0, model: {model}, slot: PCIE1{cap}}}
"""


def facts() -> dict:
    return json.loads(FIXTURE.read_text())["ansible_facts"]["rigctl_gpu_facts"]


def expected_for(tmp_path, model: str, cap: str = "") -> dict:
    import yaml

    spec = tmp_path / "rig.yaml"
    spec.write_text(SPEC.format(model=model, cap=cap))
    prep = prepare(str(spec))
    assert prep.plan is not None, [d.message for d in prep.errors]
    files = {f.path: f.content for f in render_project(prep.ctx, prep.plan, prep.overrides)}
    return load_ansible_yaml(files["inventory/host_vars/gpu1.yml"])["rigctl_gpu_expected"]


def test_spec_of_the_real_machine_passes(tmp_path):
    exp = expected_for(tmp_path, "h200-sxm", ", power_limit_w: 700")
    assert exp["gpu_count"] == 1 and exp["gpus"][0]["pcie_width_min"] == 16
    assert compare(facts(), exp) == []


def test_wrong_card_and_cap_are_named(tmp_path):
    exp = expected_for(tmp_path, "h100-sxm", ", power_limit_w: 500")
    checks = sorted(p["check"] for p in compare(facts(), exp))
    assert checks == ["model", "power_limit"], checks
