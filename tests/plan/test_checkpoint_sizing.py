"""Weights and per-rank memory from the checkpoint and the engine (issue 13, classes 6 and 8).

Each test fails on the model that sized FP8 with one flat figure, divided vLLM's profiling
peak by the tensor-parallel size, ignored the vLLM image's version, and sized a dynamic GGUF
with its format's flat bits per weight even when the spec says how large the download is.
"""

from __future__ import annotations

import yaml

from provisioner import sizing
from provisioner.check import check_file

RIG = {"version": 1, "name": "ckpt",
       "nodes": [{"name": "box", "memory_gib": 128, "storage": [{"type": "nvme", "capacity_gb": 4000, "mount": "/",
                                                                  "models_dir": True}],
                  "gpus": [{"id": f"gpu{i}", "model": "rtx-4090"} for i in range(4)]}]}
GEMMA_LIKE = {"name": "big-vocab", "params_b": 4.3, "layers": 34, "attention_heads": 8, "kv_heads": 4,
              "head_dim": 256, "hidden_size": 2560, "vocab_size": 262144, "max_context": 131072}


def ctx_dep(tmp_path, **dep):
    d = {"name": "m", "model": "llama-3.1-8b", "format": "fp8", "stack": "vllm", "placement": [{"node": "box"}], **dep}
    spec = tmp_path / "rig.yaml"
    spec.write_text(yaml.safe_dump({**RIG, "serve": [d]}))
    r = check_file(str(spec))
    if r.context is None:
        return r, None, None
    return r, r.context, r.context.rig.serve[0]


def test_fp8_bits_follow_the_checkpoint_layout(tmp_path):
    # linear layers at 8 bits, embeddings and lm_head at BF16, weighed by each model's own share
    _, ctx, dep = ctx_dep(tmp_path)
    assert abs(sizing.bits_per_weight(ctx, dep) - 9.05) < 0.02  # Llama 3.1 8B: (6.98 x 8 + 1.05 x 16) / 8.03
    _, ctx, dep = ctx_dep(tmp_path, model="llama-3.1-70b")
    assert abs(sizing.bits_per_weight(ctx, dep) - 8.24) < 0.02
    _, ctx, dep = ctx_dep(tmp_path, model=GEMMA_LIKE)
    # a 262k vocabulary is 31 % of a 4.3 B model: far above the flat small-model 9.05
    assert sizing.bits_per_weight(ctx, dep) > 10.4


def test_vllm_per_rank_overhead_does_not_shrink_with_tensor_parallel(tmp_path):
    fixed = sizing.VLLM_BASE_OVERHEAD_GIB + sizing.CUDA_CONTEXT_GIB
    peaks = {}
    for tp in (2, 4):
        _, ctx, dep = ctx_dep(tmp_path, model="llama-3.1-70b", tensor_parallel=tp, context_tokens=8192,
                              placement=[{"node": "box", "gpus": [f"gpu{i}" for i in range(tp)]}])
        peaks[tp] = sizing.fit(ctx, dep).devices[0].overhead_gib - fixed
    # the hidden states are whole on every rank: doubling the ranks does not halve the peak
    assert peaks[4] > 0.6 * peaks[2]
    assert peaks[4] >= sizing.VLLM_BATCHED_TOKENS * 8192 * 16 / sizing.GIB


def test_old_vllm_image_keeps_room_for_cuda_graphs(tmp_path):
    _, ctx, dep = ctx_dep(tmp_path, model="llama-3.1-8b", format="fp16", context_tokens=8192,
                          placement=[{"node": "box", "gpus": ["gpu0"]}], gpu_memory_utilization=0.98)
    pinned = sizing.fit(ctx, dep)
    _, ctx, dep = ctx_dep(tmp_path, model="llama-3.1-8b", format="fp16", context_tokens=8192,
                          placement=[{"node": "box", "gpus": ["gpu0"]}], gpu_memory_utilization=0.98,
                          image="vllm/vllm-openai:v0.10.2")
    old = sizing.fit(ctx, dep)
    assert sizing.vllm_image_version(dep) == (0, 10)
    assert old.max_context_tokens < pinned.max_context_tokens
    assert any("CUDA graphs outside" in n for n in old.notes)


def test_source_size_sizes_a_dynamic_quantization(tmp_path):
    src = {"hf": {"repo": "unsloth/Llama-3.1-8B-Instruct-GGUF", "revision": "a" * 40,
                  "files": ["Llama-3.1-8B-Instruct-UD-Q4_K_XL.gguf"]}, "size_bytes": 4_994_000_000}
    r, ctx, dep = ctx_dep(tmp_path, format="q4_k_m", stack="llamacpp", source=src)
    assert r.errors == 0, [d.message for d in r.diagnostics]
    assert abs(sizing.weights_gib(ctx, dep) - 4_994_000_000 / 2**30) < 1e-9
    f = sizing.fit(ctx, dep)
    assert abs(sum(d.weights_gib for d in f.devices) - 4_994_000_000 / 2**30) < 0.6  # embeddings stay in RAM


def test_size_without_a_source_file_is_refused(tmp_path):
    r, _, _ = ctx_dep(tmp_path, format="q4_k_m", stack="vllm", source={"token": {"env": "HF_TOKEN"}, "size_bytes": 5})
    assert any("give it with hf, url or path" in d.message for d in r.diagnostics)
