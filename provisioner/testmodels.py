"""Tiny, deterministic GGUF models for tests (random weights, real llama.cpp format).

``write_tiny_gguf(path)`` writes a llama-architecture model with a byte-level
SentencePiece-style vocabulary (``<unk>``, ``<s>``, ``</s>``, 256 byte tokens and
``▁``), all tensors a llama model needs, in F32. The same arguments always give the
same bytes. ``llama-server -m`` loads it and answers ``/v1/chat/completions``
(with gibberish, as the weights are random).

    python -m provisioner.testmodels OUT.gguf [--layers N] [--dim D] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

# token ids of the byte-level vocabulary
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
BYTE_OFFSET = 3  # <0x00> is token 3, <0xFF> is token 258
SPACE_ID = BYTE_OFFSET + 256  # "▁", the SentencePiece word marker

# a plain ChatML template, so that chat requests need no built-in fallback
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _vocab():
    import gguf

    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581"]
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-1.0]
    T = gguf.TokenType
    types = [T.UNKNOWN, T.CONTROL, T.CONTROL] + [T.BYTE] * 256 + [T.NORMAL]
    return tokens, scores, [int(t) for t in types]


def write_tiny_gguf(
    path: str | os.PathLike,
    n_layers: int = 2,
    dim: int = 64,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    ffn_dim: int | None = None,
    context_length: int = 2048,
    seed: int = 0,
    name: str = "rigctl-tiny",
) -> Path:
    """Write a tiny llama GGUF to ``path`` and return the path.

    ``dim`` must be divisible by ``n_heads``; ``n_kv_heads`` (default ``n_heads``)
    must divide ``n_heads``. ``ffn_dim`` defaults to ``2 * dim``.
    """
    import gguf

    n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
    ffn_dim = 2 * dim if ffn_dim is None else ffn_dim
    if n_layers < 1 or dim < 1 or n_heads < 1:
        raise ValueError("n_layers, dim and n_heads must be positive")
    if dim % n_heads or n_heads % n_kv_heads:
        raise ValueError("dim must be divisible by n_heads, and n_heads by n_kv_heads")
    head_dim = dim // n_heads
    if head_dim % 2:
        raise ValueError("dim / n_heads must be even (RoPE)")
    tokens, scores, types = _vocab()
    n_vocab = len(tokens)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float | None = None) -> np.ndarray:
        s = scale if scale is not None else 1.0 / np.sqrt(shape[-1])
        return (rng.standard_normal(shape) * s).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    try:
        writer.add_name(name)
        writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
        writer.add_context_length(context_length)
        writer.add_embedding_length(dim)
        writer.add_block_count(n_layers)
        writer.add_feed_forward_length(ffn_dim)
        writer.add_head_count(n_heads)
        writer.add_head_count_kv(n_kv_heads)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(10000.0)
        writer.add_vocab_size(n_vocab)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_bos_token_id(BOS_ID)
        writer.add_eos_token_id(EOS_ID)
        writer.add_unk_token_id(UNK_ID)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_chat_template(CHAT_TEMPLATE)

        # numpy shape (rows, cols) becomes ggml ne = (cols, rows)
        writer.add_tensor("token_embd.weight", w(n_vocab, dim, scale=0.5))
        for i in range(n_layers):
            p = f"blk.{i}."
            writer.add_tensor(p + "attn_norm.weight", ones(dim))
            writer.add_tensor(p + "attn_q.weight", w(dim, dim))
            writer.add_tensor(p + "attn_k.weight", w(n_kv_heads * head_dim, dim))
            writer.add_tensor(p + "attn_v.weight", w(n_kv_heads * head_dim, dim))
            writer.add_tensor(p + "attn_output.weight", w(dim, dim))
            writer.add_tensor(p + "ffn_norm.weight", ones(dim))
            writer.add_tensor(p + "ffn_gate.weight", w(ffn_dim, dim))
            writer.add_tensor(p + "ffn_up.weight", w(ffn_dim, dim))
            writer.add_tensor(p + "ffn_down.weight", w(dim, ffn_dim))
        writer.add_tensor("output_norm.weight", ones(dim))
        writer.add_tensor("output.weight", w(n_vocab, dim))

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m provisioner.testmodels",
                                 description="Write a tiny random llama GGUF model.")
    ap.add_argument("out", help="output .gguf path")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        p = write_tiny_gguf(a.out, n_layers=a.layers, dim=a.dim, n_heads=a.heads, seed=a.seed)
    except (ValueError, OSError) as e:
        print(f"testmodels: {e}", file=sys.stderr)
        return 2
    print(f"{p} ({p.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
