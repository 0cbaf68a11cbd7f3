"""Engine options the memory and speed model plan with (issue 13, classes 7 and 10).

Each test fails on the planner that saw these options only as opaque extra_args (or not at
all): a K-only quantized cache, --no-kv-offload, --split-mode row, sliding-window attention,
MLA's different K and V head sizes, TabbyAPI's gpu_split as GB caps filled in order.
"""

from __future__ import annotations

import json

import yaml

from provisioner import sizing
from provisioner.check import check_file
from provisioner.plan import build_plan, speed

RIG = {
    "version": 1, "name": "opts",
    "nodes": [{"name": "box", "memory_gib": 128,
               "gpus": [{"id": "gpu0", "model": "rtx-3090"}, {"id": "gpu1", "model": "rtx-3090"}]}],
}


def check(tmp_path, **dep):
    d = {"name": "m", "model": "llama-3.1-8b", "format": "q4_k_m", "stack": "llamacpp",
         "placement": [{"node": "box"}], **dep}
    spec = tmp_path / "rig.yaml"
    spec.write_text(yaml.safe_dump({**RIG, "serve": [d]}))
    return check_file(str(spec))


def fit_of(tmp_path, **dep):
    r = check(tmp_path, **dep)
    return r.context, r.context.rig.serve[0], sizing.fit(r.context, r.context.rig.serve[0])


def argv_of(tmp_path, **dep):
    r = check(tmp_path, **dep)
    plan = build_plan(r.context)
    return next(s.argv for d in plan.deployments for s in d.services if s.role == "server")


def gpu_kv(f) -> float:
    return sum(d.kv_gib for d in f.devices)


def test_k_only_quantized_cache_is_sized_and_rendered_alone(tmp_path):
    _, _, full = fit_of(tmp_path, context_tokens=32768)
    _, _, k_only = fit_of(tmp_path, context_tokens=32768, kv_cache_type_k="q8_0")
    # K at q8_0 (34/32 bytes), V at f16 (2 bytes): (34/32 + 2) / 4 of the f16 cache
    assert abs(gpu_kv(k_only) / gpu_kv(full) - (34 / 32 + 2) / 4) < 1e-6
    argv = argv_of(tmp_path, context_tokens=32768, kv_cache_type_k="q8_0")
    assert argv[argv.index("--cache-type-k") + 1] == "q8_0"
    assert "--cache-type-v" not in argv and "--flash-attn" not in argv  # only a quantized V needs it


def test_no_kv_offload_moves_the_cache_to_system_ram(tmp_path):
    _, _, on_gpu = fit_of(tmp_path, context_tokens=65536)
    ctx, dep, off = fit_of(tmp_path, context_tokens=65536, kv_offload=False)
    assert gpu_kv(off) == 0 and abs(off.host_kv_gib - gpu_kv(on_gpu)) < 1e-9
    assert off.max_context_tokens > on_gpu.max_context_tokens
    # the node's 128 GB of RAM bound it: 32 layers x 8 heads x 128 x 2 x 2 bytes = 128 KiB a token
    assert off.max_context_tokens == int((128 - 12.8) / (off.host_kv_gib / 65536))
    assert "--no-kv-offload" in argv_of(tmp_path, context_tokens=65536, kv_offload=False)
    # the CPU reads the cache: decode is slower than with the cache on the GPUs
    assert speed.estimate(ctx, dep, off).decode_tps_high < speed.estimate(*fit_of(tmp_path, context_tokens=65536)).decode_tps_high


def test_flag_in_extra_args_is_planned_not_duplicated(tmp_path):
    _, _, f = fit_of(tmp_path, context_tokens=65536, extra_args=["-nkvo", "--split-mode", "row"])
    assert f.host_kv_gib > 0 and gpu_kv(f) == 0 and f.mode == "row"
    argv = argv_of(tmp_path, context_tokens=65536, extra_args=["-nkvo", "--split-mode", "row"])
    assert argv.count("--split-mode") == 1 and argv[argv.index("--split-mode") + 1] == "row"
    assert "--no-kv-offload" not in argv and "-nkvo" in argv


def test_flag_that_contradicts_its_field_is_a_finding(tmp_path):
    r = check(tmp_path, split_mode="layer", extra_args=["-sm", "row"])
    hits = [d for d in r.diagnostics if d.rule == "extra-args-conflict[field]"]
    assert len(hits) == 1 and "split_mode" in hits[0].message and hits[0].path[-1] == 0
    r = check(tmp_path, split_mode="row", extra_args=["--split-mode=row"])
    assert not [d for d in r.diagnostics if d.rule.startswith("extra-args-conflict")]


def test_row_split_is_rendered_and_timed_as_parallel_reads(tmp_path):
    ctx, dep, layer = fit_of(tmp_path, model="llama-3.1-70b", context_tokens=4096, format="iq3_xxs")
    _, _, row = fit_of(tmp_path, model="llama-3.1-70b", context_tokens=4096, format="iq3_xxs", split_mode="row")
    assert row.mode == "row" and layer.mode == "layer"
    argv = argv_of(tmp_path, model="llama-3.1-70b", context_tokens=4096, format="iq3_xxs", split_mode="row")
    assert argv[argv.index("--split-mode") + 1] == "row" and "--tensor-split" in argv
    terms = speed.decode_terms(ctx, dep, row, 512)
    assert any(t.label.startswith("row split") for t in terms)
    streams = [t for t in terms if t.kind == "stream"]
    assert len(streams) == 1  # both GPUs read their rows at once: one stream term, not one per GPU


def test_sliding_window_layers_keep_only_their_window(tmp_path):
    gemma = {"name": "Gemma-like", "params_b": 27.0, "layers": 62, "attention_heads": 32, "kv_heads": 16,
             "head_dim": 128, "hidden_size": 5376, "vocab_size": 262144, "max_context": 131072}
    _, _, plain = fit_of(tmp_path, model=gemma, context_tokens=32768)
    _, _, swa = fit_of(tmp_path, model={**gemma, "sliding_window": 1024, "sliding_window_pattern": 6},
                       context_tokens=32768)
    # 10 of 62 layers global (il % 6 == 5), 52 keep 1024 + 512 cells
    want = (10 * 32768 + 52 * (1024 + 512)) / (62 * 32768)
    assert abs(gpu_kv(swa) / gpu_kv(plain) - want) < 1e-6
    assert swa.max_context_tokens > 3 * plain.max_context_tokens
    _, _, full = fit_of(tmp_path, model={**gemma, "sliding_window": 1024, "sliding_window_pattern": 6},
                        context_tokens=32768, extra_args=["--swa-full"])
    assert abs(gpu_kv(full) - gpu_kv(plain)) < 1e-9


def test_mla_k_and_v_head_sizes(tmp_path):
    arch = {"name": "MLA-like", "params_b": 16.0, "layers": 27, "attention_heads": 16, "kv_heads": 1,
            "head_dim": 192, "head_dim_k": 576, "head_dim_v": 512, "vocab_size": 102400, "max_context": 163840}
    _, _, f = fit_of(tmp_path, model=arch, context_tokens=8192)
    assert f.kv_bytes_per_token == 27 * 1 * (576 + 512) * 2


def test_llama_options_refused_on_other_stacks(tmp_path):
    r = check(tmp_path, stack="vllm", format="fp16", split_mode="row")
    assert r.errors and any("split_mode is a llama.cpp option" in d.message for d in r.diagnostics)


# ------------------------------------------------------------------ TabbyAPI gpu_split


def tabby(tmp_path, split):
    return fit_of(tmp_path, model="llama-3.3-70b", format="exl2", bits_per_weight=4.0, stack="tabbyapi",
                  context_tokens=8192, kv_cache_type="q4_0", gpu_split_gb=split)


def test_tabbyapi_gpu_split_is_gb_caps_filled_in_order(tmp_path):
    _, _, f = tabby(tmp_path, [10, 30])
    per_layer_gb = f.devices[0].weights_gib / f.devices[0].layers * 2**30 / 1e9
    # the first card takes what 10 GB hold, the rest goes on to the second: not 1:3 proportions
    assert f.devices[0].weights_gib * 2**30 / 1e9 <= 10 < (f.devices[0].weights_gib * 2**30 / 1e9 + per_layer_gb)
    assert f.devices[0].layers + f.devices[1].layers == 80


def test_tabbyapi_split_that_overfills_a_card_fails(tmp_path):
    # a 25 GB cap on a 24 GB card for a 35 GB model: read as proportions (25:15) the card held 22 GB
    # and it passed; filled in order it takes 25 GB of weights plus its cache
    r = check(tmp_path, model="llama-3.3-70b", format="exl2", bits_per_weight=4.0, stack="tabbyapi",
              context_tokens=8192, kv_cache_type="q4_0", gpu_split_gb=[25, 15])
    hits = [d for d in r.diagnostics if d.rule.startswith("memory-fit")]
    assert hits and "gpu0" in json.dumps([h.message for h in hits])


# ------------------------------------------------------------------ vLLM pipeline stages


def test_vllm_default_partition_is_vllms_own():
    # get_pp_indices: equal shares, the remainder to the stages before the last
    assert sizing.vllm_default_partition(80, 3) == [27, 27, 26]
    assert sizing.vllm_default_partition(32, 3) == [11, 11, 10]
    assert sizing.vllm_default_partition(62, 4) == [15, 16, 16, 15]


def unequal_vllm(tmp_path, **extra):
    rig = {**RIG, "nodes": [{"name": "box", "memory_gib": 128, "gpus": [
        {"id": "gpu0", "model": "rtx-4090"}, {"id": "gpu1", "model": "rtx-3060-12gb"}]}]}
    d = {"name": "m", "model": "llama-3.1-8b", "format": "fp16", "stack": "vllm", "tensor_parallel": 1,
         "pipeline_parallel": 2, "context_tokens": 8192, "placement": [{"node": "box"}], **extra}
    spec = tmp_path / "rig.yaml"
    spec.write_text(yaml.safe_dump({**rig, "serve": [d]}))
    r = check_file(str(spec))
    return r, sizing.fit(r.context, r.context.rig.serve[0])


def test_vllm_pipeline_over_unequal_gpus_deals_layers_by_room(tmp_path):
    r, f = unequal_vllm(tmp_path)
    big, small = f.devices
    # 16 GB of FP16 weights: split 16/16 layers the 12 GB card cannot hold its half plus the lm_head;
    # dealt by room the 24 GB card takes more layers and both fit
    assert big.layers > small.layers and big.layers + small.layers == 32
    assert big.weights_gib > small.weights_gib and f.fits
    assert f.pp_layers == [big.layers, small.layers] and f.pp_partition_env
    plan = build_plan(r.context)
    (srv,) = [s for d in plan.deployments for s in d.services if s.role == "server"]
    assert srv.env["VLLM_PP_LAYER_PARTITION"] == f"{big.layers},{small.layers}"


def test_vllm_pipeline_stages_hold_embeddings_and_head(tmp_path):
    rig_equal = {**RIG}
    d = {"name": "m", "model": "llama-3.1-8b", "format": "fp16", "stack": "vllm", "tensor_parallel": 1,
         "pipeline_parallel": 2, "context_tokens": 8192, "placement": [{"node": "box"}]}
    spec = tmp_path / "rig.yaml"
    spec.write_text(yaml.safe_dump({**rig_equal, "serve": [d]}))
    r = check_file(str(spec))
    f = sizing.fit(r.context, r.context.rig.serve[0])
    assert [d.layers for d in f.devices] == [16, 16] and not f.pp_partition_env
    assert abs(sum(d.weights_gib for d in f.devices) - f.weights_gib) < 1e-6


def test_host_kv_cache_larger_than_ram_is_a_finding(tmp_path):
    r = check(tmp_path, context_tokens=131072, parallel_sequences=8, kv_offload=False)
    hits = [d for d in r.diagnostics if d.rule == "memory-fit[host-kv]"]
    assert hits and "128" not in hits[0].path and hits[0].path[-1] == "kv_offload"


def test_catalog_gemma_3_carries_its_sliding_window(tmp_path):
    _, _, f = fit_of(tmp_path, model="gemma-3-4b", context_tokens=131072)
    # 5 of 34 layers (il % 6 == 5) keep 131072 cells, 29 keep 1024 + 512
    per_cell = 4 * 256 * 2 * 2 / 2**30
    assert abs(gpu_kv(f) - per_cell * (5 * 131072 + 29 * 1536)) < 1e-6
