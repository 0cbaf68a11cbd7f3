"""Exact weights from real model files: tiny GGUF and safetensors files written here."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from provisioner import sizing
from provisioner.check import check_file
from provisioner.plan.modelfile import (
    ModelFileError,
    model_file_facts,
    read_gguf,
    read_safetensors,
)
from provisioner.testmodels import write_tiny_gguf


def write_safetensors(path, tensors: dict[str, np.ndarray], metadata: dict | None = None):
    """The format by hand: 8-byte little-endian header length, JSON header, raw data."""
    names = {np.dtype("float16"): "F16", np.dtype("float32"): "F32", np.dtype("int8"): "I8"}
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        raw = arr.tobytes()
        header[name] = {"dtype": names[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_read_gguf_tiny_model(tmp_path):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", n_layers=3, dim=64, n_heads=4, n_kv_heads=2)
    f = read_gguf(path)
    vocab = 260
    per_layer = 2 * 64 + 64 * 64 * 2 + 2 * (32 * 64) + 3 * (128 * 64)  # norms, q+o, k+v, ffn
    assert f["architecture"] == "llama"
    assert (f["block_count"], f["embedding_length"], f["head_count"], f["head_count_kv"]) == (3, 64, 4, 2)
    assert f["head_dim"] == 16 and f["vocab_size"] == vocab and f["context_length"] == 2048
    assert f["params"] == 2 * vocab * 64 + 64 + 3 * per_layer
    assert f["weights_bytes"] == 4 * f["params"]  # all F32
    assert f["file_bytes"] > f["weights_bytes"]  # header and vocabulary on top


def test_read_gguf_rejects_non_gguf(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelFileError):
        read_gguf(bad)


def test_read_safetensors_directory_with_config(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    write_safetensors(d / "model-00001-of-00002.safetensors",
                      {"a": np.zeros((4, 8), np.float16), "b": np.zeros(10, np.float32)}, {"format": "pt"})
    write_safetensors(d / "model-00002-of-00002.safetensors", {"c": np.zeros((3, 3), np.int8)})
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "hidden_size": 64, "vocab_size": 100, "max_position_embeddings": 4096}))
    f = read_safetensors(d)
    assert f["weights_bytes"] == 4 * 8 * 2 + 10 * 4 + 9
    assert f["params"] == 32 + 10 + 9 and f["files"] == 2
    assert (f["architecture"], f["block_count"], f["head_count_kv"], f["head_dim"]) == ("LlamaForCausalLM", 2, 2, 16)


def test_read_safetensors_rejects_garbage(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(ModelFileError):
        read_safetensors(bad)


SPEC = """
version: 1
name: tiny
nodes:
  - name: n1
    gpus: [{id: gpu0, model: rtx-3090}]
serve:
  - name: tiny
    model: {name: Tiny, params_b: 0.001, layers: 3, attention_heads: 4, kv_heads: 2, head_dim: 16,
            hidden_size: 64, vocab_size: 260, max_context: 2048}
    format: Q4_K_M
    model_file: models/tiny.gguf
    context_tokens: 2048
    stack: llamacpp
    placement: [{node: n1}]
  - name: gone
    model: llama-3.1-8b
    format: Q4_K_M
    model_file: models/missing.gguf
    stack: llamacpp
    placement: [{node: n1}]
"""


def test_model_file_facts_feed_sizing(tmp_path):
    write_tiny_gguf(tmp_path / "models" / "tiny.gguf", n_layers=3, n_kv_heads=2)
    spec = tmp_path / "rig.yaml"
    spec.write_text(SPEC)
    ctx = check_file(str(spec)).context
    facts = model_file_facts(ctx, tmp_path)
    assert "not found" in facts["gone"]["note"] and "weights_bytes" not in facts["gone"]
    assert facts["tiny"]["block_count"] == 3 and facts["tiny"]["notes"] == []
    ctx.model_files = {k: v for k, v in facts.items() if v.get("weights_bytes")}
    dep = ctx.rig.serve[0]
    assert sizing.weights_gib(ctx, dep) == facts["tiny"]["weights_bytes"] / 2**30  # exact, not params x bpw


def test_model_file_facts_reuse_cache_when_unchanged(tmp_path):
    write_tiny_gguf(tmp_path / "models" / "tiny.gguf", n_layers=3, n_kv_heads=2)
    spec = tmp_path / "rig.yaml"
    spec.write_text(SPEC)
    ctx = check_file(str(spec)).context
    first = model_file_facts(ctx, tmp_path)
    cached = {"tiny": {**first["tiny"], "weights_bytes": 12345}}  # marker: came from the cache
    assert model_file_facts(ctx, tmp_path, cache=cached)["tiny"]["weights_bytes"] == 12345
    write_tiny_gguf(tmp_path / "models" / "tiny.gguf", n_layers=4, n_kv_heads=2)  # file changed
    again = model_file_facts(ctx, tmp_path, cache=cached)["tiny"]
    assert again["block_count"] == 4
    assert again["notes"] == ["the file has block count 4, the catalog entry Tiny says 3"]
