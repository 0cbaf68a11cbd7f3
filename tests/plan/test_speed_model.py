"""The speed model per memory kind, format, MoE layout, prompt path and RPC topology.

Each test pins a published fact the model must reproduce (the rows are in
bench/data/measurements.yaml with their sources), not the fitted numbers:

* decode on HBM reaches a smaller share of peak than on GDDR6X: an A100 PCIe
  (1935 GB/s) decodes Llama 3 8B Q4_K_M at 140.6 tok/s, an RTX 3090 (936 GB/s) at
  115.4 (XiongjieDai, llama-bench tg512), a ratio of 1.22, not the 2.07 of their
  bandwidths;
* quantized prefill runs llama.cpp's MMQ path, not the tensor-core peak: an H100
  PCIe (756 dense FP16 TFLOPS) processes the same 512-token prompt at 8,125 tok/s,
  an RTX 4090 (165 TFLOPS at FP32 accumulate) at 7,139, a ratio of 1.14, not 4.6;
* llama.cpp pipelines micro-batches over a layer split: 4x RTX 4090 run a
  4096-token F16 prompt at 15,144 tok/s, one 4090 at 6,531;
* a GPU a user defines in a catalog file gets a prompt estimate from its own
  `fp16_tflops`;
* MoE experts kept in system RAM (--n-cpu-moe) are read at host memory bandwidth;
* a llama.cpp RPC client drives every remote device's graph split on every token.
"""

from __future__ import annotations

import math

import yaml

from provisioner import sizing
from provisioner.plan import speed
from provisioner.rules.context import Context
from provisioner.spec import catalog as catalog_mod
from provisioner.spec.models import Rig


def context(gpus, model="llama-3-8b", fmt="Q4_K_M", stack="llamacpp", extra_args=None, cat=None, **dep):
    rig = {"version": 1, "name": "t",
           "nodes": [{"name": "n0", "os": "ubuntu-22.04", "memory_gib": 256,
                      "gpus": [{"id": f"gpu{i}", "model": g} for i, g in enumerate(gpus)]}],
           "serve": [{"name": "m", "model": model, "format": fmt, "stack": stack, "context_tokens": 2048,
                      "placement": [{"node": "n0"}], "extra_args": extra_args or [], **dep}]}
    return Context(Rig.model_validate(rig), cat or catalog_mod.builtin())


def decode_mid(ctx) -> float:
    dep = ctx.rig.serve[0]
    s = speed.estimate(ctx, dep, sizing.fit(ctx, dep), context_tokens=256)
    return math.sqrt(s.decode_tps_low * s.decode_tps_high)


def prompt_mid(ctx, tokens=None) -> float | None:
    dep = ctx.rig.serve[0]
    fit = sizing.fit(ctx, dep)
    lo, hi = speed.prompt_range(ctx, dep, fit, tokens) if tokens else speed.prompt_range(ctx, dep, fit)
    return math.sqrt(lo * hi) if lo and hi else None


def test_hbm_decode_reaches_a_smaller_share_of_peak_than_gddr6x():
    a100, rtx = context(["a100-80gb-pcie"]), context(["rtx-3090"])
    ratio = decode_mid(a100) / decode_mid(rtx)
    assert 1.0 < ratio < 1.5, ratio  # published 1.22; bandwidths alone give 2.07
    dev_a, dev_r = sizing.fit(a100, a100.rig.serve[0]).devices[0], sizing.fit(rtx, rtx.rig.serve[0]).devices[0]
    assert speed.memory_class(a100, dev_a) == "hbm" and speed.memory_class(rtx, dev_r) == "gddr"
    assert speed.decode_efficiency(a100, a100.rig.serve[0], dev_a) < speed.decode_efficiency(rtx, rtx.rig.serve[0], dev_r)


def test_quantized_prefill_is_capped_below_the_datacenter_tensor_peak():
    ratio = prompt_mid(context(["h100-pcie"])) / prompt_mid(context(["rtx-4090"]))
    assert ratio < 1.6, ratio  # published 8125 / 7139 = 1.14; the datasheet TFLOPS give 4.6


def test_layer_split_pipelines_a_long_f16_prompt():
    one = prompt_mid(context(["rtx-4090"], fmt="gguf-f16"), 4096)
    four = prompt_mid(context(["rtx-4090"] * 4, fmt="gguf-f16"), 4096)
    assert four > 1.5 * one, (one, four)  # published 15,144 vs 6,531 tok/s
    # a 512-token prompt is one micro-batch: nothing to overlap, the stages add up
    assert prompt_mid(context(["rtx-4090"] * 4, fmt="gguf-f16"), 512) <= prompt_mid(context(["rtx-4090"], fmt="gguf-f16"), 512)


def test_a_user_catalog_gpu_gets_a_prompt_estimate_from_its_fp16_tflops(tmp_path):
    entry = {"id": "my-card", "name": "My Card 24GB", "vendor": "nvidia", "architecture": "ada",
             "form_factor": "pcie", "memory_gib": 24, "bandwidth_gbs": 1000, "memory_type": "gddr6x",
             "fp16_tflops": 160, "source": "https://example.org/my-card", "confidence": "low"}
    path = tmp_path / "cat.yaml"
    path.write_text(yaml.safe_dump({"gpus": [entry]}))
    cat = catalog_mod.builtin().extended([path])
    mine = prompt_mid(context(["my-card"], cat=cat))
    assert mine is not None
    twice = dict(entry, id="my-card-2x", fp16_tflops=10)
    path.write_text(yaml.safe_dump({"gpus": [twice]}))
    slow = prompt_mid(context(["my-card-2x"], cat=catalog_mod.builtin().extended([path])))
    assert slow < mine  # the card's own figure is what the estimate reads


def test_experts_in_system_ram_are_read_at_host_bandwidth():
    on_gpu = context(["rtx-3090", "rtx-3090"], model="mixtral-8x7b")
    offloaded = context(["rtx-3090", "rtx-3090"], model="mixtral-8x7b", extra_args=["--n-cpu-moe", "16"])
    assert decode_mid(offloaded) < 0.6 * decode_mid(on_gpu)
    dep = offloaded.rig.serve[0]
    fit = sizing.fit(offloaded, dep)
    assert speed.cpu_moe_layers(offloaded, dep) == 16
    terms = speed.decode_terms(offloaded, dep, fit, 256)
    ram = [t for t in terms if t.label == "experts in system RAM"]
    assert ram, [t.label for t in terms]
    # 16 of 32 layers' routed experts: about half the active expert bytes of a token
    per_layer = speed.routed_expert_bytes_per_layer(offloaded, dep, fit)
    active = sum(d.weights_gib for d in fit.devices) * 2**30 * 12.9 / 46.7
    assert 0.35 * active < 16 * per_layer < 0.5 * active
    # --cpu-moe: every layer's experts
    every = context(["rtx-3090"], model="mixtral-8x7b", extra_args=["--cpu-moe"])
    assert speed.cpu_moe_layers(every, every.rig.serve[0]) == 32
    # a dense model has no experts to keep in RAM
    dense = context(["rtx-3090"], extra_args=["--n-cpu-moe", "16"])
    assert speed.cpu_moe_layers(dense, dense.rig.serve[0]) == 0


def test_moe_decode_reads_the_routed_experts_not_every_expert():
    ctx = context(["rtx-3090", "rtx-3090"], model="mixtral-8x7b")
    dep = ctx.rig.serve[0]
    fit = sizing.fit(ctx, dep)
    streamed = sum(t.slow_s for t in speed.decode_terms(ctx, dep, fit, 256) if t.kind == "stream")
    all_experts = sum(d.weights_gib for d in fit.devices) * 2**30 / (936e9 * 0.3)
    assert streamed < 0.5 * all_experts


def rpc_context(head_gpus, fabric_gbps=1):
    worker = lambda name, host: {"name": name, "os": "ubuntu-22.04", "memory_gib": 64,  # noqa: E731
                                 "connection": {"address": f"192.168.1.{host}", "ssh_user": "rig"},
                                 "gpus": [{"id": "gpu0", "model": "rtx-3090"}]}
    head = {"name": "head", "os": "ubuntu-22.04", "memory_gib": 64,
            "connection": {"address": "192.168.1.10", "ssh_user": "rig"},
            "gpus": [{"id": f"gpu{i}", "model": g} for i, g in enumerate(head_gpus)]}
    placement = [{"node": "head"} if head_gpus else {"node": "head", "gpus": []}, {"node": "w1"}, {"node": "w2"}]
    rig = {"version": 1, "name": "rpc",
           "fabric": {"kind": "ethernet", "speed_gbps": fabric_gbps, "subnet": "10.0.0.0/24"},
           "nodes": [head, worker("w1", 11), worker("w2", 12)],
           "serve": [{"name": "m", "model": "llama-3-70b", "format": "Q4_K_M", "stack": "llamacpp-rpc",
                      "context_tokens": 2048, "placement": placement}]}
    return Context(Rig.model_validate(rig), catalog_mod.builtin())


def test_rpc_client_round_trips_to_every_server_split_on_every_token():
    ctx = rpc_context([])
    dep = ctx.rig.serve[0]
    fit = sizing.fit(ctx, dep)
    assert {d.node for d in fit.devices} == {"w1", "w2"}
    net = [t for t in speed.decode_terms(ctx, dep, fit, 256) if t.kind == "network"]
    assert len(net) == 2  # one split per remote device
    per_token = sum(t.fast_s for t in net)
    assert per_token > 5e-3, per_token  # 80 layers' graphs and round trips over 1 GbE: several ms
    # 10 GbE carries the graphs ten times faster
    fast = rpc_context([], fabric_gbps=10)
    fit10 = sizing.fit(fast, fast.rig.serve[0])
    per_token_10 = sum(t.fast_s for t in speed.decode_terms(fast, fast.rig.serve[0], fit10, 256) if t.kind == "network")
    assert per_token_10 < per_token / 3
    # a split on the client's own GPU needs no network
    local = rpc_context(["rtx-3090"])
    fitl = sizing.fit(local, local.rig.serve[0])
    net_local = [t for t in speed.decode_terms(local, local.rig.serve[0], fitl, 256) if t.kind == "network"]
    assert len(net_local) == 2 and len(fitl.devices) == 3


def test_efficiencies_come_from_the_fitted_data_file_with_its_provenance(root):
    doc = yaml.safe_load((root / "provisioner" / "plan" / "data" / "efficiency.yaml").read_text())
    prov = doc["provenance"]
    assert prov["command"] == ".venv/bin/python bench/fit.py --write"
    ids = {r["id"] for r in yaml.safe_load((root / "bench" / "data" / "measurements.yaml").read_text())["rows"]}
    assert prov["decode_rows"] and set(prov["decode_rows"]) <= ids
    assert prov["prefill_rows"] and set(prov["prefill_rows"]) <= ids
    assert speed.efficiency()["decode"]["cells"] == doc["decode"]["cells"]
