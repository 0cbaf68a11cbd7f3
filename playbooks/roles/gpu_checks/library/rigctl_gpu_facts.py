#!/usr/bin/python
# -*- coding: utf-8 -*-
# MIT License (see the rigctl repository)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rigctl_gpu_facts
short_description: Collect NVIDIA GPU facts through NVML and check them against a rig spec
version_added: "1.0.0"
description:
  - Reads GPU facts on the target through NVML with the nvidia-ml-py bindings (C(pynvml)).
    The facts are the GPU count, name, UUID, PCI bus id, memory, PCIe generation and width,
    power limits, NVLink links, compute capability, persistence mode and peer-to-peer status.
  - Uses the same probe code as C(rigctl probe) and C(rigctl verify). The module_util
    C(rigctl_probe) is a symlink to C(provisioner/probe/core.py).
  - Compares the facts with O(expected) and reports each mismatch as a readable problem.
  - Fails with RV(unavailable=true) when the target has no NVIDIA driver, no NVML library,
    no C(pynvml) or no GPU.
  - Only reads. It changes nothing on the host.
options:
  expected:
    description:
      - Expectations from the rig spec. Every key is optional.
      - C(gpu_count) is the number of GPUs.
      - C(gpus) is a list by NVML index. Each item may set C(name_contains) (a string or list,
        case-insensitive), C(nvml_names) (exact names), C(memory_gib_min),
        C(pcie_width_min) (checked against the current width), C(pcie_gen_min)
        (checked against the maximum generation, because the current one drops at idle)
        and C(power_limit_w) (within 1 W).
      - C(nvlink_pairs) is a list of C([i, j]) GPU index pairs that must be joined by NVLink.
    type: dict
    default: {}
  fail_on_mismatch:
    description:
      - Fail the task when any problem is found.
      - When false, the problems are only returned.
    type: bool
    default: true
requirements:
  - An NVIDIA driver on the target (C(libnvidia-ml.so.1)).
  - nvidia-ml-py (import name C(pynvml)) for the Python that Ansible uses on the target.
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author:
  - rigctl contributors
"""

EXAMPLES = r"""
- name: Check the GPUs of an inference node
  rigctl_gpu_facts:
    expected:
      gpu_count: 2
      gpus:
        - name_contains: "RTX 3090"
          memory_gib_min: 23
          pcie_width_min: 16
          pcie_gen_min: 4
        - name_contains: "RTX 3090"
          memory_gib_min: 23
          pcie_width_min: 8
      nvlink_pairs: [[0, 1]]

- name: Only collect, never fail on a mismatch
  rigctl_gpu_facts:
    fail_on_mismatch: false
  register: gpu

- name: Show the GPU names
  ansible.builtin.debug:
    msg: "{{ rigctl_gpu_facts.gpus | map(attribute='name') | list }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: success
  type: dict
  contains:
    rigctl_gpu_facts:
      description:
        - The output of the probe's collect() function.
        - It holds schema_version, hostname, collected_at, driver_version,
          cuda_driver_version, nvml_version, gpu_count, gpus, p2p, pci_slots and errors.
        - C(errors) lists the NVML queries that this GPU or driver did not answer.
      type: dict
      sample:
        driver_version: "580.159.04"
        cuda_driver_version: "13.0"
        gpu_count: 1
        gpus:
          - index: 0
            name: NVIDIA H200
            memory_total_mib: 143771
            pcie: {gen_current: 5, gen_max: 5, width_current: 16, width_max: 16}
            power: {limit_w: 700, default_limit_w: 700, min_limit_w: 200, max_limit_w: 700, enforced_limit_w: 700}
            nvlink: []
            compute_capability: "9.0"
        p2p: []
        errors: []
problems:
  description: The mismatches between the facts and O(expected).
  returned: always
  type: list
  elements: dict
  sample:
    - check: pcie_width
      gpu: 1
      expected: 16
      actual: 4
      message: "GPU 1 PCIe link runs at x4, spec expects x16 (reseat the card or check the slot's lane sharing)"
unavailable:
  description: True when NVML, the driver, pynvml or every GPU is missing. The task then fails.
  returned: always
  type: bool
  sample: false
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.rigctl_probe import ProbeUnavailable, collect, compare


def main():
    module = AnsibleModule(
        argument_spec=dict(
            expected=dict(type="dict", default={}),
            fail_on_mismatch=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    try:
        facts = collect()
    except ProbeUnavailable as exc:
        module.fail_json(msg="rigctl_gpu_facts: %s" % exc.reason,
                         unavailable=True, problems=[])

    problems = compare(facts, module.params["expected"] or {})
    result = dict(
        changed=False,
        unavailable=False,
        problems=problems,
        ansible_facts=dict(rigctl_gpu_facts=facts),
    )
    if problems and module.params["fail_on_mismatch"]:
        # The facts are left out here to keep the failure readable; run with
        # fail_on_mismatch=false to get them alongside the problems.
        module.fail_json(
            msg="rigctl_gpu_facts: %d problem(s): %s" % (
                len(problems), "; ".join(p["message"] for p in problems)),
            unavailable=False, problems=problems)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
