"""The numpy-free GGUF header reader against gguf-py (llama.cpp's own reader and writer)."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner.plan.ggufheader import GGML_TYPE_SIZES, GGUFError, read_header
from provisioner.plan.modelfile import ModelFileError, read_gguf
from provisioner.testmodels import write_tiny_gguf

Q = gguf.GGMLQuantizationType


def test_type_table_matches_gguf_py():
    theirs = {t.value: tuple(v) for t, v in gguf.constants.GGML_QUANT_SIZES.items()}
    assert GGML_TYPE_SIZES == theirs


def _quantised_file(path, endianess=gguf.GGUFEndian.LITTLE):
    """Tensors of several ggml types (raw block bytes), a string array, a per-layer array."""
    w = gguf.GGUFWriter(str(path), "llama", endianess=endianess)
    w.add_block_count(3)
    w.add_embedding_length(512)
    w.add_head_count(8)
    w.add_head_count_kv([2, 4, 2])
    w.add_context_length(4096)
    w.add_name("mixed")
    w.add_token_list([f"t{i}" for i in range(5000)])  # longer than any kept array
    w.add_array("test.floats", [0.5, 1.5])
    rng = np.random.default_rng(0)
    for name, qtype, shape in [("a", Q.Q4_K, (4, 512)), ("b", Q.Q8_0, (3, 64)), ("c", Q.Q6_K, (256,)),
                               ("d", Q.IQ4_XS, (2, 256)), ("e", Q.MXFP4, (32,))]:
        block, nbytes = gguf.constants.GGML_QUANT_SIZES[qtype]
        rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        raw = rng.integers(0, 255, size=(rows, shape[-1] // block * nbytes), dtype=np.uint8)
        w.add_tensor(name, raw, raw_dtype=qtype)  # byte shape in, element shape recorded
    w.add_tensor("f", rng.standard_normal((7, 5)).astype(np.float32))
    w.add_tensor("g", rng.standard_normal((3, 8)).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("endian", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_header_agrees_with_gguf_reader(tmp_path, endian):
    path = _quantised_file(tmp_path / "m.gguf", endian)
    ours = read_header(path)
    theirs = gguf.GGUFReader(str(path))
    assert ours.byte_order == ("<" if endian == gguf.GGUFEndian.LITTLE else ">")
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    assert ours.tensor_bytes() == [int(t.n_bytes) for t in theirs.tensors]
    assert [t.n_elements for t in ours.tensors] == [int(t.n_elements) for t in theirs.tensors]
    assert ours.data_start == theirs.data_offset
    assert ours.fields["llama.attention.head_count_kv"] == [2, 4, 2]
    assert ours.fields["general.name"] == "mixed"
    assert ours.fields["tokenizer.ggml.tokens"] is None and ours.array_lengths["tokenizer.ggml.tokens"] == 5000


def test_read_gguf_facts_agree_with_gguf_reader(tmp_path):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", n_layers=3, dim=64, n_heads=4, n_kv_heads=2)
    facts = read_gguf(path)
    r = gguf.GGUFReader(str(path))
    assert facts["weights_bytes"] == sum(int(t.n_bytes) for t in r.tensors)
    assert facts["params"] == sum(int(t.n_elements) for t in r.tensors)
    assert (facts["block_count"], facts["head_count"], facts["head_count_kv"]) == (3, 4, 2)
    assert facts["vocab_size"] == len(r.fields["tokenizer.ggml.tokens"].data)
    assert facts["head_dim"] == 16


def test_unknown_tensor_type_is_sized_by_offsets(tmp_path):
    path = _quantised_file(tmp_path / "m.gguf")
    hdr = read_header(path)
    known = hdr.tensor_bytes()
    for t in hdr.tensors:
        t.ggml_type = 999  # a type newer than the table
    by_offset = hdr.tensor_bytes()
    # offsets include alignment padding (32 bytes): never less, never more than one pad
    assert all(0 <= b - k < 32 for k, b in zip(known, by_offset))


def test_not_gguf_and_old_versions_are_refused(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGML" + bytes(40))
    with pytest.raises(GGUFError, match="magic"):
        read_header(bad)
    v1 = tmp_path / "v1.gguf"
    v1.write_bytes(b"GGUF" + (1).to_bytes(4, "little") + bytes(40))
    with pytest.raises(GGUFError, match="version 1"):
        read_header(v1)
    with pytest.raises(ModelFileError, match="not a readable GGUF"):
        read_gguf(bad)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_truncated_or_corrupted_headers_fail_cleanly(tmp_path_factory, data):
    """Any cut or flipped byte gives GGUFError or a consistent header, never another exception."""
    base = tmp_path_factory.getbasetemp() / "fuzz-source.gguf"
    if not base.exists():
        write_tiny_gguf(base, n_layers=1, dim=16, n_heads=2)
    raw = bytearray(base.read_bytes())
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=3))
    for pos, val in flips:
        if pos < len(raw):
            raw[pos] = val
    f = tmp_path_factory.mktemp("fuzz") / "m.gguf"
    f.write_bytes(bytes(raw[:cut]))
    try:
        hdr = read_header(f)
    except GGUFError:
        return
    assert all(n >= 0 for n in hdr.tensor_bytes())
