"""Mutated specs never crash the loader or the rules (hypothesis)."""

from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner.check import check_file

BASE = yaml.safe_load("""
version: 1
name: fuzz
fabric: {speed_gbps: 10, subnet: 10.0.0.0/24}
nodes:
  - name: n1
    cpu: {model: ryzen-9-7950x}
    memory_gib: 128
    psu: {watts: 1600, rating: gold, atx3: true}
    circuit: {volts: 120, amps: 15}
    board:
      slots:
        - {name: S1, position: 1, electrical_lanes: 8}
        - {name: S2, position: 5, electrical_lanes: 8}
    gpus:
      - {id: gpu0, model: rtx-3090, slot: S1, power_limit_w: 280}
      - {id: gpu1, model: rtx-3090, slot: S2}
    nvlink: [{gpus: [gpu0, gpu1], bridge_slots: 4}]
    storage: [{type: nvme, capacity_gb: 2000, mount: /models, models_dir: true}]
  - name: n2
    gpus: [{id: gpu0, model: rtx-4090}]
serve:
  - name: a
    model: llama-3.1-70b
    format: Q4_K_M
    context_tokens: 16384
    stack: llamacpp-rpc
    placement: [{node: n1}, {node: n2}]
  - name: b
    model: llama-3.1-8b
    format: fp16
    stack: vllm
    tensor_parallel: 2
    placement: [{node: n1}]
""")

values = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10**7), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.lists(st.integers(0, 5), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.sampled_from(["rtx-3090", "h100-sxm", "q8_0", "exl2", "vllm", "ollama", "exo", "petals", "tabbyapi", "0.0.0.0", "n2", "gpu1"]),
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


ALL_PATHS = [p for p in _paths(BASE) if p]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(st.sampled_from(ALL_PATHS), values, st.sampled_from(["set", "delete"])), min_size=1, max_size=4))
def test_mutated_specs_never_crash(tmp_path, mutations):
    spec = copy.deepcopy(BASE)
    for path, value, op in mutations:
        node = spec
        try:
            for part in path[:-1]:
                node = node[part]
            if op == "delete":
                del node[path[-1]]
            else:
                node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    f = tmp_path / "fuzz.yaml"
    f.write_text(yaml.safe_dump(spec))
    res = check_file(str(f))
    assert not [d for d in res.diagnostics if d.rule == "internal-error"], [d.message for d in res.diagnostics]
    for d in res.diagnostics:
        assert d.location is not None and d.location.line >= 1
