"""Plans for the guide's builds and the multi-node examples: placement, exact flags, speed.

Speed ranges are checked against published measurements where one exists for
the same hardware and model (XiongjieDai/GPU-Benchmarks-on-LLM-Inference,
Llama 3 70B Q4_K_M, tg512): the measurement must fall inside the planned range.
"""

from __future__ import annotations

import pytest
import yaml

from provisioner.check import check_file
from provisioner.plan import build_plan, tabbyapi


def plan_of(root, name):
    res = check_file(str(root / "examples" / f"{name}.yaml"))
    assert res.errors == 0, [d.message for d in res.diagnostics]
    return build_plan(res.context)


def flag(argv, name):
    return argv[argv.index(name) + 1]


def services(plan, role=None):
    return [s for d in plan.deployments for s in d.services if role is None or s.role == role]


# ------------------------------------------------------------------ the four guide builds


def test_dual_3090_nvlink_layer_split(root):
    dp = plan_of(root, "dual-3090-nvlink").deployments[0]
    assert [d.layers for d in dp.fit.devices] == [41, 39]
    assert dp.fit.max_context_tokens == 20316
    (srv,) = dp.services
    assert srv.argv[:2] == ["llama-server", "--model"]
    assert flag(srv.argv, "--ctx-size") == "16384"
    assert flag(srv.argv, "--split-mode") == "layer"
    assert flag(srv.argv, "--tensor-split") == "41,39"
    assert srv.env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "0,1"}
    # published: 2x RTX 3090, Llama 3 70B Q4_K_M, 16.57 tok/s (tg512)
    assert dp.speed.decode_tps_low <= 16.57 <= dp.speed.decode_tps_high
    assert "RTX 3090 (936 GB/s)" in dp.speed.bottleneck
    assert "layer split runs the 2 GPUs in sequence" in dp.speed.bottleneck


def test_dual_4090(root):
    dp = plan_of(root, "dual-4090").deployments[0]
    assert [d.layers for d in dp.fit.devices] == [41, 39]
    assert all(d.free_gib > 0 for d in dp.fit.devices)
    # published: 2x RTX 4090, Llama 3 70B Q4_K_M, 19.22 tok/s (tg512)
    assert dp.speed.decode_tps_low <= 19.22 <= dp.speed.decode_tps_high
    # layer split: two 4090s are not faster than one 4090's bandwidth allows
    assert dp.speed.decode_tps_high < 1008e9 / (39.6 * 2**30)


def test_5090_4090_user_split(root):
    dp = plan_of(root, "5090-4090-split").deployments[0]
    assert dp.fit.user_split
    assert [d.layers for d in dp.fit.devices] == [46, 34]  # 57:43 of 80 layers
    (srv,) = dp.services
    assert flag(srv.argv, "--tensor-split") == "46,34"
    assert flag(srv.argv, "--ctx-size") == "32768"
    assert dp.fit.max_context_tokens == 43979
    # the 5090's half streams faster: faster than 2x 4090, slower than a 5090 alone would be
    four = plan_of(root, "dual-4090").deployments[0].speed
    assert dp.speed.decode_tps_low > four.decode_tps_low
    assert "RTX 5090 (1792 GB/s) and NVIDIA GeForce RTX 4090 (1008 GB/s)" in dp.speed.bottleneck


def test_dual_a100_vllm_tensor_parallel(root):
    dp = plan_of(root, "dual-a100-80gb").deployments[0]
    assert dp.fit.mode == "tensor" and dp.fit.tensor_parallel == 2
    (srv,) = dp.services
    argv = srv.argv
    assert argv[:3] == ["vllm", "serve", "/var/lib/rigctl/models/Llama-3.3-70B-Instruct-AWQ-INT4"]
    assert flag(argv, "--tensor-parallel-size") == "2"
    assert flag(argv, "--pipeline-parallel-size") == "1"
    assert flag(argv, "--gpu-memory-utilization") == "0.9"
    assert flag(argv, "--max-model-len") == "32768"
    assert flag(argv, "--kv-cache-dtype") == "auto"
    assert flag(argv, "--max-num-seqs") == "8"
    assert flag(argv, "--host") == "10.0.0.10" and flag(argv, "--port") == "8000"
    assert "--api-key" not in argv  # the key comes from the environment, by reference
    assert srv.secret_env == {"VLLM_API_KEY": {"env": "RIG_VLLM_API_KEY"}}
    assert srv.ipc_host
    # TP aggregates both A100s' bandwidth: faster than one A100 could ever stream the 40.6 GB
    assert dp.speed.decode_tps_high > 1935e9 / 40.6e9
    assert "tensor parallel over 2 GPUs" in dp.speed.bottleneck


def test_vllm_takes_largest_context_when_not_given(root, tmp_path):
    text = (root / "examples" / "dual-a100-80gb.yaml").read_text().replace("    context_tokens: 32768\n", "")
    spec = tmp_path / "rig.yaml"
    spec.write_text(text)
    plan = build_plan(check_file(str(spec)).context)
    srv = services(plan, "server")[0]
    assert flag(srv.argv, "--max-model-len") == "131072"  # memory allows more; the model's own limit


# ------------------------------------------------------------------ multi-node


def test_llamacpp_rpc_two_nodes(root):
    plan = plan_of(root, "multinode-llamacpp-rpc")
    dp = plan.deployments[0]
    assert [d.layers for d in dp.fit.devices] == [21, 20, 20, 19]
    head, worker = dp.services
    assert flag(head.argv, "--rpc") == "10.0.0.12:50052"
    assert flag(head.argv, "--tensor-split") == "21,20,20,19"
    assert worker.argv == ["rpc-server", "--host", "10.0.0.12", "--port", "50052"]
    assert worker.port_scope == "subnet"
    assert dp.speed.decode_tps_high < plan_of(root, "dual-3090-nvlink").deployments[0].speed.decode_tps_high


def test_vllm_ray_cluster_tp_within_pp_across(root):
    plan = plan_of(root, "multinode-vllm")
    dp = plan.deployments[0]
    assert (dp.fit.tensor_parallel, dp.fit.pipeline_parallel) == (2, 2)
    assert [d.layers for d in dp.fit.devices] == [40, 40, 40, 40]
    (ray_head,) = services(plan, "ray-head")
    (ray_worker,) = services(plan, "ray-worker")
    (srv,) = services(plan, "server")
    assert ray_head.node == "gpu-a" and ray_worker.node == "gpu-b" and srv.node == "gpu-a"
    assert ray_head.argv[:5] == ["ray", "start", "--head", "--port", "6379"]
    assert ray_head.port == 6379 and 8265 in [p.port for p in ray_head.extra_ports]
    assert ray_worker.argv[:4] == ["ray", "start", "--address", "10.0.1.11:6379"]
    assert ray_worker.argv[-1] == "--block"
    for s in (ray_head, ray_worker, srv):
        assert s.env["NCCL_SOCKET_IFNAME"] == "enp65s0f0" == s.env["GLOO_SOCKET_IFNAME"]
        assert s.ipc_host
    assert ray_worker.env["VLLM_HOST_IP"] == "10.0.1.12"
    assert ray_head.port_scope == ray_worker.port_scope == "subnet"
    assert flag(srv.argv, "--distributed-executor-backend") == "ray"
    assert flag(srv.argv, "--pipeline-parallel-size") == "2"
    assert "2 pipeline stages run in sequence" in dp.speed.bottleneck
    assert 5 < dp.speed.decode_tps_low < dp.speed.decode_tps_high < 15


def test_exo_one_service_per_node_with_layers(root):
    plan = plan_of(root, "exo")
    a, b = services(plan)
    assert (a.node, b.node) == ("studio1", "studio2")
    assert "exo decides the layer split itself; the fit expects studio1 0-62, studio2 63-125" in plan.deployments[0].notes
    assert a.port == 52415 and "--no-api" in b.argv
    assert [(p.port, p.proto) for p in a.extra_ports] == [(52414, "tcp")]
    assert flag(b.argv, "--bootstrap-peers") == "/ip4/10.0.2.1/tcp/52414"
    assert "CUDA_VISIBLE_DEVICES" not in a.env  # macOS


def test_petals_dht_and_block_ranges(root):
    plan = plan_of(root, "petals")
    (dht,) = services(plan, "petals-dht")
    assert dht.node == "pet1" and dht.port == 31337
    assert flag(dht.argv, "--host_maddrs") == "/ip4/0.0.0.0/tcp/31337"
    servers = services(plan, "petals-server")
    assert [flag(s.argv, "--block_indices") for s in servers] == ["0:21", "21:41", "41:61", "61:80"]
    assert [s.port for s in servers] == [31330, 31331, 31330, 31331]
    assert all(flag(s.argv, "--initial_peers").startswith("/ip4/10.0.3.11/tcp/31337/p2p/") for s in servers)
    assert all(flag(s.argv, "--quant_type") == "int8" for s in servers)


# ------------------------------------------------------------------ single-node stacks


def test_ollama_env(root):
    (srv,) = services(plan_of(root, "ollama"))
    assert srv.argv == ["ollama", "serve"]
    assert srv.env["CUDA_VISIBLE_DEVICES"] == ("GPU-5d0f2a40-4c0e-3b1a-9a57-1c4e0d6c2b11,"
                                               "GPU-8b7e9f12-77aa-4c3d-8e0f-2f6a1b9c4d22")
    assert srv.env["OLLAMA_SCHED_SPREAD"] == "1"
    assert srv.env["OLLAMA_CONTEXT_LENGTH"] == "32768"
    assert srv.env["OLLAMA_NUM_PARALLEL"] == "1"
    assert srv.env["OLLAMA_KEEP_ALIVE"] == "-1"
    assert srv.env["OLLAMA_HOST"] == "127.0.0.1:11434"
    assert srv.env["OLLAMA_KV_CACHE_TYPE"] == "q8_0" and srv.env["OLLAMA_FLASH_ATTENTION"] == "1"
    (modelfile,) = srv.files.values()
    assert "PARAMETER num_ctx 32768" in modelfile


def test_tabbyapi_config(root):
    plan = plan_of(root, "tabbyapi")
    (srv,) = services(plan)
    path = "/etc/rigctl/tabbyapi/llama70/config.yml"
    assert srv.argv[-2:] == ["--config", path]
    cfg = yaml.safe_load(srv.files[path])
    assert cfg["network"] == {"host": "127.0.0.1", "port": 5000, "disable_auth": False, "api_servers": ["OAI"]}
    m = cfg["model"]
    assert m["model_name"] == "Llama-3.3-70B-Instruct-exl2-4.0bpw"
    assert (m["gpu_split_auto"], m["gpu_split"], m["tensor_parallel"]) == (False, [20, 24], False)
    assert (m["cache_mode"], m["max_seq_len"], m["cache_size"]) == ("Q4", 32768, 32768)
    assert m["backend"] == "exllamav2"


def test_tabbyapi_pins_plan_split_without_user_split(root, tmp_path):
    text = (root / "examples" / "tabbyapi.yaml").read_text().replace("    gpu_split_gb: [20, 24]\n", "")
    spec = tmp_path / "rig.yaml"
    spec.write_text(text)
    ctx = check_file(str(spec)).context
    dp = build_plan(ctx).deployments[0]
    cfg = tabbyapi.config(ctx, ctx.rig.serve[0], dp.fit, 5000)["model"]
    assert cfg["gpu_split_auto"] is False
    # gpu_split is a cap in GB per GPU filled in order (config_sample.yml: "an array of VRAM sizes to
    # split between GPUs, in GB"): filling the caps layer by layer gives the plan's own layer counts
    from provisioner.sizing import _gb_cap_counts
    layers = [d.layers for d in dp.fit.devices]
    w_layer = dp.fit.devices[0].weights_gib / layers[0]
    assert _gb_cap_counts(cfg["gpu_split"], w_layer, 0.0, sum(layers)) == layers
    assert cfg["gpu_split"][0] < (dp.fit.devices[0].weights_gib + w_layer) * 2**30 / 1e9


@pytest.mark.parametrize("name", ["dual-3090-nvlink", "dual-4090", "5090-4090-split", "dual-a100-80gb",
                                  "multinode-llamacpp-rpc", "multinode-vllm", "ollama", "tabbyapi", "exo",
                                  "petals", "mac-studio"])
def test_every_example_plans_with_speed(root, name):
    for dp in plan_of(root, name).deployments:
        assert dp.services
        assert dp.fit.fits
        assert 0 < dp.speed.decode_tps_low < dp.speed.decode_tps_high < 2 * dp.speed.decode_tps_low
        assert dp.speed.bottleneck


# ------------------------------------------------------------------ advise


def test_advise_ranks_fitting_configurations(rigctl):
    import json

    code, out, _ = rigctl("advise", "--model", "llama-3.1-70b", "--formats", "q4_k_m,q8_0",
                          "--gpus", "2x rtx-3090,1x rtx-5090", "--price", "rtx-3090=700", "--price", "rtx-5090=2000",
                          "--context", "16384", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    rows = doc["configurations"]
    assert rows and all(r["max_context_tokens"] >= 16384 for r in rows)
    assert {"gpus": "2x rtx-3090", "format": "q4_k_m", "cost_usd": 1400.0}.items() <= next(
        r for r in rows if r["gpus"] == "2x rtx-3090").items()
    assert not any(r["gpus"] == "1x rtx-3090" for r in rows)  # 40 GiB of weights on 24 GB: does not fit
    speeds = [r["decode_tps"] for r in rows]
    assert speeds[0] == max(speeds)


def test_advise_unknown_model_is_a_usage_error(rigctl):
    code, _, err = rigctl("advise", "--model", "llama-3.1-70c")
    assert code == 2 and "did you mean" in err
