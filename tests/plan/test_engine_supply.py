"""Engine supply (issue 12, build item 1): which llama.cpp build or image each service gets.

The CUDA architectures come from the catalog's compute_capability, one build per rig and
backend, the same key on every node of an RPC deployment; container mode on one node without
RPC takes the official image. No CUDA compile runs here (no cuBLAS, no GPU): these tests hold the
plan's decisions; bench/gpu_llamacpp_build.sh runs the build on a GPU machine.
"""

from __future__ import annotations

import textwrap

import pytest

from provisioner.check import check_file
from provisioner.lab import llamacpp as lab_build
from provisioner.plan import build_plan, engines
from provisioner.plan.images import catalog

MIXED = """\
version: 1
name: mixed
nodes:
  - name: box
    os: ubuntu-24.04
    gpus: [{id: gpu0, model: rtx-3090}, {id: gpu1, model: rtx-4090}]
serve:
  - name: m
    model: llama-3.1-8b
    format: Q4_K_M
    stack: llamacpp
    placement: [{node: box}]
"""


def check_text(tmp_path, text, name="rig.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return check_file(str(p))


def plan_text(tmp_path, text):
    res = check_text(tmp_path, text)
    assert res.errors == 0, [d.message for d in res.diagnostics]
    return build_plan(res.context)


def llamacpp_services(plan):
    return [s for d in plan.deployments for s in d.services if s.stack in ("llamacpp", "llamacpp-rpc")]


def test_mixed_3090_4090_builds_sm86_and_sm89(tmp_path):
    (svc,) = llamacpp_services(plan_text(tmp_path, MIXED))
    e = svc.engine
    assert e["kind"] == "build" and e["backend"] == "cuda" and e["build_host"] == "box"
    assert e["cuda_archs"] == ["86-real", "89-real"]
    assert "-DCMAKE_CUDA_ARCHITECTURES=86-real;89-real" in e["cmake_args"]
    assert "sm_86+sm_89" in e["label"] and "built on box" in e["label"]


def test_blackwell_takes_the_architecture_specific_target():
    # ggml-cuda/CMakeLists.txt replaces 12X by 12Xa itself; rigctl names it so the key says what is built
    assert engines.cuda_arch("12.0") == "120a-real"
    assert engines.cuda_arch("8.9") == "89-real"
    assert engines.cuda_arch("6.1") == "61-real"
    with pytest.raises(engines.EngineError):
        engines.cuda_arch("sm86")


def test_cuda_cmake_arguments():
    args = engines.cmake_args("cuda", ["86-real", "89-real"])
    for want in ("-DGGML_CUDA=ON", "-DGGML_RPC=ON", "-DGGML_STATIC=ON", "-DBUILD_SHARED_LIBS=OFF",
                 "-DGGML_NATIVE=OFF", "-DGGML_CUDA_NCCL=OFF", "-DLLAMA_CURL=OFF",
                 "-DCMAKE_CUDA_COMPILER=/usr/local/cuda-12.9/bin/nvcc", "-DCMAKE_CUDA_ARCHITECTURES=86-real;89-real"):
        assert want in args, want
    assert args[-1].startswith("-DCMAKE_CUDA_ARCHITECTURES=")
    assert not any("GGML_CUDA" in a for a in engines.cmake_args("cpu"))
    with pytest.raises(engines.EngineError):
        engines.cmake_args("cuda", [])  # a CUDA build for no architecture would be ggml's fat default


def test_the_cpu_build_has_the_lab_builds_source_and_flags():
    # one pinned source for both: the lab compiles the same sdist with the same flags
    assert engines.LLAMA_CPP_PYTHON_VERSION == lab_build.LLAMA_CPP_PYTHON_VERSION
    assert engines.cmake_args("cpu") == list(lab_build.CMAKE_FLAGS)


def test_cache_key_names_version_backend_architectures_and_flags(monkeypatch):
    k = engines.build_key("cuda", ["86-real", "89-real"])
    assert k.startswith("llama.cpp-0.3.36-cuda-sm86-sm89-")
    assert k == engines.build_key("cuda", ["86-real", "89-real"])  # stable: the controller cache hits
    assert k != engines.build_key("cuda", ["86-real"])
    assert engines.build_key("cpu").startswith("llama.cpp-0.3.36-cpu-")
    monkeypatch.setattr(engines, "CUDA_ARGS", engines.CUDA_ARGS + ("-DGGML_CUDA_FA_ALL_QUANTS=ON",))
    assert engines.build_key("cuda", ["86-real", "89-real"]) != k  # another flag: another build
    cpu = engines.build_key("cpu")
    with_fa = engines.build_key("cuda", ["86-real", "89-real"])
    monkeypatch.setattr(engines, "CUDA_TOOLKIT", "13-0")
    assert engines.build_key("cuda", ["86-real", "89-real"]) != with_fa  # another toolkit: another build
    assert engines.build_key("cpu") == cpu  # the CPU build does not depend on it


def test_rpc_rig_runs_one_build_on_every_node(root):
    res = check_file(str(root / "examples" / "multinode-llamacpp-rpc.yaml"))
    assert res.errors == 0
    svcs = llamacpp_services(build_plan(res.context))
    assert {s.role for s in svcs} == {"server", "rpc-worker"}
    keys = {s.engine["key"] for s in svcs}
    hosts = {s.engine["build_host"] for s in svcs}
    assert len(keys) == 1 and len(hosts) == 1
    assert hosts == {res.context.rig.nodes[0].name}  # the first node in spec order builds


def test_gpu_and_cpu_nodes_of_one_rig_get_their_own_build(root):
    res = check_file(str(root / "examples" / "lab-cpu-rpc.yaml"))
    assert res.errors == 0
    svcs = llamacpp_services(build_plan(res.context))
    assert {s.engine["backend"] for s in svcs} == {"cpu"}
    assert {s.engine["cuda_archs"] == [] for s in svcs} == {True}


def test_apple_gpu_has_no_cuda_build(tmp_path):
    text = MIXED.replace("model: rtx-4090", "model: apple-m2-ultra")
    res = check_text(tmp_path, text)
    with pytest.raises(engines.EngineError, match="NVIDIA"):
        engines.node_cuda_archs(res.context, res.context.rig.nodes[0])


def test_unknown_architecture_is_refused_with_a_located_finding(tmp_path):
    text = """\
    version: 1
    name: modded
    gpu_models:
      - {id: odd-card, name: Odd card, vendor: nvidia, architecture: turing, memory_gib: 22, bandwidth_gbs: 616}
    nodes:
      - name: box
        gpus: [{id: gpu0, model: odd-card}]
    serve:
      - name: m
        model: llama-3.1-8b
        format: Q4_K_M
        stack: llamacpp
        placement: [{node: box}]
    """
    res = check_text(tmp_path, text)
    (d,) = [d for d in res.diagnostics if d.rule == "llamacpp-build[cuda-arch]"]
    assert d.severity.value == "error" and d.location.line == 7
    assert "compute_capability" in d.message


def test_one_node_container_mode_uses_the_official_cuda_image(tmp_path):
    plan = plan_text(tmp_path, MIXED.replace("name: mixed\n", "name: mixed\ndeploy_mode: container\n"))
    (svc,) = llamacpp_services(plan)
    assert svc.deploy_mode == "container"
    assert svc.engine == {"kind": "image", "image": catalog()["llamacpp"]["image"],
                          "label": "image " + catalog()["llamacpp"]["image"]}
    assert svc.engine["image"].startswith("ghcr.io/ggml-org/llama.cpp:server-cuda-b")


def test_plan_names_the_build_of_the_one_node_nvidia_example(rigctl, root):
    code, out, _ = rigctl("plan", str(root / "examples" / "dual-3090-nvlink.yaml"))
    assert code == 0
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("engine:")]
    assert lines == ["engine: rigctl build of llama.cpp 0c1e57098 (vendored by llama-cpp-python 0.3.36), "
                     "CUDA sm_86 static cudart/cuBLAS (CUDA 12.9), GGML_RPC, built on ws1"]


def test_plan_json_carries_the_build(rigctl, root, tmp_path):
    import json

    code, out, _ = rigctl("plan", str(root / "examples" / "dual-3090-nvlink.yaml"), "-f", "json")
    assert code == 0
    (svc,) = json.loads(out)["deployments"][0]["services"]
    assert svc["engine"]["key"] == engines.build_key("cuda", ["86-real"])


def test_plan_page_names_the_build(rigctl, root, tmp_path):
    out = tmp_path / "plan.html"
    code, _, err = rigctl("plan", str(root / "examples" / "dual-3090-nvlink.yaml"), "-f", "html", "-o", str(out))
    assert code == 0, err
    assert "<p>engine: rigctl build of llama.cpp 0c1e57098" in out.read_text()


def test_plan_with_an_inventory_that_overrides_the_build_says_so(rigctl, root, tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    h2: {rigctl_artifacts_dir: /srv/mine-h2}\n  vars:\n    rigctl_artifacts_dir: /srv/mine\n")
    code, out, err = rigctl("plan", str(root / "examples" / "lab-cpu-rpc.yaml"), "-i", str(inv))
    assert code == 0, err
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("engine:")]
    key = engines.build_key("cpu")
    assert lines == [  # h1's llama-server takes the all-hosts value, h2's rpc-server its own
        f"engine: your binaries from the inventory's rigctl_artifacts_dir (/srv/mine), not rigctl's build "
        f"(nothing is built); installed on the host as {key}",
        f"engine: your binaries from the inventory's rigctl_artifacts_dir (/srv/mine-h2), not rigctl's build "
        f"(nothing is built); installed on the host as {key}"]
    code, out, _ = rigctl("plan", str(root / "examples" / "lab-cpu-rpc.yaml"))  # no inventory: rigctl's build
    assert "engine: rigctl build of llama.cpp" in out


def test_the_state_hash_ignores_the_engine_label():
    from provisioner.plan.model import Service
    from provisioner.plan.state import service_hash

    svc = Service(name="rigctl-x", deployment="x", node="h1", stack="llamacpp", role="server",
                  argv=["llama-server"], port=8080, bind="127.0.0.1")
    svc.engine = {"kind": "build", "key": "k1", "label": "rigctl build ..., built on h1"}
    before = service_hash(svc)
    svc.engine = {**svc.engine, "label": "rigctl build ..., built on h2", "override": "/srv/mine"}
    assert service_hash(svc) == before  # the build host moved, the binaries did not
    svc.engine = {**svc.engine, "key": "k2"}
    assert service_hash(svc) != before
