"""Applied state vs a fresh plan, and `rigctl plan`'s exit codes and outputs."""

from __future__ import annotations

import json

import pytest

from provisioner.check import check_file
from provisioner.plan import build_plan
from provisioner.plan.state import StateError, diff_state, load_state, plan_state


def state_of(root, name, edit=None, tmp_path=None):
    path = root / "examples" / f"{name}.yaml"
    if edit:
        text = edit(path.read_text())
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
    return plan_state(build_plan(check_file(str(path)).context))


def test_no_state_means_everything_is_created(root):
    changes = diff_state(None, state_of(root, "multinode-vllm"))
    assert changes == {
        "gpu-a": ["+ create rigctl-llama70 (vllm server, port 8000)",
                  "+ create rigctl-llama70-ray-head (vllm ray-head, port 6379)"],
        "gpu-b": ["+ create rigctl-llama70-ray-worker (vllm ray-worker)"],
    }


def test_same_plan_has_no_changes(root):
    assert diff_state(state_of(root, "dual-3090-nvlink"), state_of(root, "dual-3090-nvlink")) == {}


def test_changed_flag_is_named(root, tmp_path):
    old = state_of(root, "dual-3090-nvlink")
    new = state_of(root, "dual-3090-nvlink", lambda t: t.replace("context_tokens: 16384", "context_tokens: 8192"),
                   tmp_path)
    assert diff_state(old, new) == {"ws1": ["~ update rigctl-llama70: --ctx-size 16384 -> 8192"]}


def test_removed_node_service(root):
    old = state_of(root, "multinode-llamacpp-rpc")
    new = json.loads(json.dumps(old))
    del new["hosts"]["ws2"]
    assert diff_state(old, new) == {"ws2": ["- remove rigctl-llama70-rpc (llamacpp-rpc rpc-worker)"]}


def test_stack_version_change(root):
    old = state_of(root, "dual-3090-nvlink")
    new = json.loads(json.dumps(old))
    old["hosts"]["ws1"]["stacks"]["llamacpp"] = "b4000"
    new["hosts"]["ws1"]["stacks"]["llamacpp"] = "b4100"
    assert diff_state(old, new) == {"ws1": ["~ llamacpp version b4000 -> b4100"]}


def test_state_holds_no_secrets(root):
    svc = state_of(root, "dual-a100-80gb")["hosts"]["srv1"]["services"]["rigctl-llama70"]
    assert "VLLM_API_KEY" not in svc["env"] and "--api-key" not in svc["argv"]


def test_load_state(tmp_path):
    assert load_state(tmp_path / "missing.json") is None
    bad = tmp_path / "state.json"
    bad.write_text("{not json")
    with pytest.raises(StateError):
        load_state(bad)
    bad.write_text(json.dumps({"schema_version": 99, "hosts": {}}))
    with pytest.raises(StateError, match="newer rigctl"):
        load_state(bad)


# ------------------------------------------------------------------ the command


def test_plan_text_and_detailed_exitcode(rigctl, root, tmp_path):
    spec = root / "examples" / "dual-3090-nvlink.yaml"
    state = tmp_path / "state.json"
    code, out, _ = rigctl("plan", spec, "--state", state)
    assert code == 0
    assert "ws1/gpu0" in out and "41" in out and "--tensor-split 41,39" in out
    assert "decode" in out and "bottleneck: memory bandwidth" in out
    assert "+ create rigctl-llama70" in out
    code, _, _ = rigctl("plan", spec, "--state", state, "--detailed-exitcode")
    assert code == 2  # nothing applied yet: everything is a change
    state.write_text(json.dumps(state_of(root, "dual-3090-nvlink")))  # what apply records
    code, out, _ = rigctl("plan", spec, "--state", state, "--detailed-exitcode")
    assert code == 0 and "none: the hosts already run this plan" in out


def test_plan_json(rigctl, root, tmp_path):
    code, out, _ = rigctl("plan", root / "examples" / "multinode-vllm.yaml", "--format", "json",
                          "--state", tmp_path / "none.json")
    assert code == 0
    doc = json.loads(out)
    assert doc["schema_version"] == 1 and doc["has_changes"] is True
    (dep,) = doc["deployments"]
    assert dep["fit"]["tensor_parallel"] == 2 and dep["fit"]["pipeline_parallel"] == 2
    assert [d["layers"] for d in dep["fit"]["devices"]] == [40, 40, 40, 40]
    assert {s["role"] for s in dep["services"]} == {"ray-head", "ray-worker", "server"}
    assert dep["speed"]["decode_tps_low"] < dep["speed"]["decode_tps_high"]


def test_plan_refuses_invalid_spec(rigctl, root, tmp_path):
    text = (root / "examples" / "dual-3090-nvlink.yaml").read_text().replace("context_tokens: 16384",
                                                                              "context_tokens: 131072")
    spec = tmp_path / "rig.yaml"
    spec.write_text(text)
    code, out, _ = rigctl("plan", spec)
    assert code == 1
    assert "memory-fit[context]" in out and "rig.yaml:" in out  # the same located diagnostics as validate
    code, _, _ = rigctl("plan", spec, "--detailed-exitcode")
    assert code == 1


def test_plan_unreadable_spec(rigctl, tmp_path):
    code, _, err = rigctl("plan", tmp_path / "nope.yaml")
    assert code == 2 and "cannot read file" in err
    code, _, _ = rigctl("plan", tmp_path / "nope.yaml", "--detailed-exitcode")
    assert code == 1  # 2 would mean "changes"


def test_plan_reads_model_file(rigctl, tmp_path):
    from provisioner.testmodels import write_tiny_gguf

    write_tiny_gguf(tmp_path / "tiny.gguf", n_layers=2)
    (tmp_path / "rig.yaml").write_text("""
version: 1
name: tiny
nodes: [{name: n1, gpus: [{id: gpu0, model: rtx-3090}]}]
serve:
  - name: tiny
    model: {name: Tiny, params_b: 0.001, layers: 2, attention_heads: 4, kv_heads: 4, head_dim: 16,
            hidden_size: 64, vocab_size: 260, max_context: 2048}
    format: Q4_K_M
    model_file: tiny.gguf
    stack: llamacpp
    placement: [{node: n1}]
""")
    code, out, _ = rigctl("plan", tmp_path / "rig.yaml", "--format", "json", "--state", tmp_path / "s.json")
    assert code == 0
    dep = json.loads(out)["deployments"][0]
    assert dep["model_file"]["block_count"] == 2
    assert dep["fit"]["weights_gib"] == round(dep["model_file"]["weights_bytes"] / 2**30, 3)


def test_a_new_image_or_engine_build_is_an_update(root=None):
    """The image (serve[].image) and the llama.cpp build a service runs from restart it when they change."""
    import copy

    from provisioner.plan.model import Service
    from provisioner.plan.state import service_hash

    base = Service(deployment="d", node="n", role="server", stack="vllm", name="rigctl-d", argv=["vllm", "serve"],
                   image="docker.io/vllm/vllm-openai:v0.30.0", volumes={"hf-cache": "/root/.cache/huggingface"})
    other = copy.deepcopy(base)
    other.image = "docker.io/vllm/vllm-openai:v0.31.0"
    assert service_hash(base) != service_hash(other)
    built = copy.deepcopy(base)
    built.engine = {"kind": "build", "key": "abc"}
    assert service_hash(built) != service_hash(base)
