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


# ---------------------------------------------------------------- Hugging Face format
# A checkpoint directory as `transformers`/vLLM load it: config.json, generation_config.json,
# model.safetensors (F32, written here: 8-byte header length, JSON header, raw data), and a
# byte-level BPE tokenizer (tokenizer.json: 256 byte symbols, no merges) with the ChatML
# template above. Token ids: the specials first, then the 256 bytes.
HF_SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]


def _byte_symbols() -> list[str]:
    """The byte-level alphabet of GPT-2 style tokenizers: printable Latin-1 bytes stand for
    themselves, every other byte maps to the next unused code point from U+0100."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, extra = [], 0
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(0x100 + extra))
            extra += 1
    return out


def _safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    import json

    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for data in blobs:
            f.write(data)


def write_tiny_hf(
    directory: str | os.PathLike,
    n_layers: int = 2,
    dim: int = 256,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    ffn_dim: int = 512,
    context_length: int = 2048,
    seed: int = 0,
) -> Path:
    """Write a tiny random Llama checkpoint directory (Hugging Face layout); return it.
    The same arguments always give the same bytes."""
    import json

    if dim % n_heads or n_heads % n_kv_heads:
        raise ValueError("dim must be divisible by n_heads, and n_heads by n_kv_heads")
    head_dim = dim // n_heads
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    symbols = _byte_symbols()
    n_vocab = len(HF_SPECIALS) + len(symbols)

    def w(*shape: int, scale: float | None = None) -> np.ndarray:
        s = scale if scale is not None else 1.0 / np.sqrt(shape[-1])
        return (rng.standard_normal(shape) * s).astype(np.float32)

    tensors = {"model.embed_tokens.weight": w(n_vocab, dim, scale=0.5)}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        tensors.update({
            p + "input_layernorm.weight": np.ones(dim, np.float32),
            p + "self_attn.q_proj.weight": w(dim, dim),
            p + "self_attn.k_proj.weight": w(n_kv_heads * head_dim, dim),
            p + "self_attn.v_proj.weight": w(n_kv_heads * head_dim, dim),
            p + "self_attn.o_proj.weight": w(dim, dim),
            p + "post_attention_layernorm.weight": np.ones(dim, np.float32),
            p + "mlp.gate_proj.weight": w(ffn_dim, dim),
            p + "mlp.up_proj.weight": w(ffn_dim, dim),
            p + "mlp.down_proj.weight": w(dim, ffn_dim),
        })
    tensors["model.norm.weight"] = np.ones(dim, np.float32)
    tensors["lm_head.weight"] = w(n_vocab, dim)
    _safetensors(tmp / "model.safetensors", tensors)

    bos, eos = HF_SPECIALS.index("<s>"), HF_SPECIALS.index("<|im_end|>")
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": dim,
        "intermediate_size": ffn_dim, "num_hidden_layers": n_layers, "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads, "head_dim": head_dim, "vocab_size": n_vocab,
        "max_position_embeddings": context_length, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "float32",
        "bos_token_id": bos, "eos_token_id": eos,
    }
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, t in enumerate(HF_SPECIALS)],
        "normalizer": None, "pre_tokenizer": byte_level, "post_processor": None, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "vocab": {**{t: i for i, t in enumerate(HF_SPECIALS)},
                            **{s: len(HF_SPECIALS) + i for i, s in enumerate(symbols)}},
                  "merges": []},
    }
    tok_config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "<|im_end|>",
                  "unk_token": "<unk>", "pad_token": "<unk>", "model_max_length": context_length,
                  "chat_template": CHAT_TEMPLATE}
    for name, obj in (("config.json", config), ("generation_config.json", {"bos_token_id": bos, "eos_token_id": eos}),
                      ("tokenizer.json", tokenizer), ("tokenizer_config.json", tok_config)):
        (tmp / name).write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if directory.exists():
        import shutil

        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory


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
