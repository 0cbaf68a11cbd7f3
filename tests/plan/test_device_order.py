"""GPU indices mean nvidia-smi's order on every NVIDIA service: CUDA_DEVICE_ORDER=PCI_BUS_ID.

The CUDA runtime numbers devices fastest first unless CUDA_DEVICE_ORDER says otherwise, while
the plan's indices (and nvidia-smi's) follow the PCI bus: on a 5090 beside a 4090 the split
would land on the wrong card (issue #12, device order)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.render.prepare import prepare

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("spec", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_nvidia_gpu_service_orders_devices_by_pci_bus(spec):
    prep = prepare(str(spec))
    if prep.plan is None:
        pytest.skip("example does not plan (it demonstrates an error)")
    for dp in prep.plan.deployments:
        for svc in dp.services:
            if "CUDA_VISIBLE_DEVICES" in svc.env:
                assert svc.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID", (spec.name, svc.name)
            else:
                assert "CUDA_DEVICE_ORDER" not in svc.env, (spec.name, svc.name)


def test_the_mixed_rig_example_sets_it():
    prep = prepare(str(ROOT / "examples" / "5090-4090-split.yaml"))
    envs = [s.env for d in prep.plan.deployments for s in d.services]
    assert envs and all(e.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID" for e in envs)
