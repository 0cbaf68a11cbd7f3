"""Exact numbers from real model files: GGUF headers and safetensors headers.

The memory model estimates weights as params x bits-per-weight; when a
deployment names its `model_file` and the file exists on the controller, the
planner reads it instead: the sum of tensor sizes is exact (rules.md §1.1,
"prefer the actual file size"). Only headers are read (GGUF is memory-mapped,
safetensors gives its tensor table in a JSON header), so a 40 GB file costs
milliseconds. This module is the planner's one door to the filesystem; the CLI
calls it and hands the facts to the Context.
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F4": 0.5,
}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit
_SPLIT = re.compile(r"^(?P<stem>.*)-(?P<i>\d{5})-of-(?P<n>\d{5})\.gguf$")


class ModelFileError(Exception):
    """A model file exists but cannot be read as what it claims to be."""


def _regular(f: Path) -> Path:
    """Refuse what is not a regular file before opening it: a FIFO would block the open,
    a device (/dev/zero) would be read or mapped without end."""
    import stat

    try:
        mode = f.stat().st_mode
    except OSError as exc:
        raise ModelFileError(f"{f}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise ModelFileError(f"{f}: not a regular file; a model file must be a plain file")
    return f


# ------------------------------------------------------------------ GGUF


def read_gguf(path: str | Path) -> dict:
    """Architecture numbers and exact tensor bytes from a GGUF file (all shards of a split file)."""
    from .ggufheader import GGUFError, read_header

    path = Path(path)
    shards = _gguf_shards(path)
    weights = params = 0
    head = None
    for shard in shards:
        try:
            h = read_header(_regular(shard))
        except GGUFError as exc:
            raise ModelFileError(f"{shard}: not a readable GGUF file ({exc})") from None
        weights += sum(h.tensor_bytes())
        params += sum(t.n_elements for t in h.tensors)
        head = head or h
    fields = head.fields
    arch = fields.get("general.architecture") or "llama"

    def key(k):
        return fields.get(f"{arch}.{k}")

    heads = key("attention.head_count")
    embed = key("embedding_length")
    facts = {
        "format": "gguf",
        "path": str(path),
        "architecture": arch,
        "name": fields.get("general.name"),
        "block_count": key("block_count"),
        "context_length": key("context_length"),
        "embedding_length": embed,
        "head_count": heads,
        "head_count_kv": key("attention.head_count_kv") or heads,
        "head_dim": key("attention.key_length") or (embed // heads if embed and heads else None),
        "vocab_size": key("vocab_size") or head.array_lengths.get("tokenizer.ggml.tokens"),
        "expert_count": key("expert_count"),
        "expert_used_count": key("expert_used_count"),
        "file_type": fields.get("general.file_type"),
        "weights_bytes": weights,
        "params": params,
        "file_bytes": sum(p.stat().st_size for p in shards),
        "shards": len(shards),
    }
    if isinstance(facts["head_count_kv"], list):  # per-layer lists in some architectures
        facts["head_count_kv"] = max(facts["head_count_kv"])
    if isinstance(heads, list):
        facts["head_count"] = max(heads)
        facts["head_dim"] = key("attention.key_length") or (embed // max(heads) if embed and max(heads) else None)
    return facts


def _gguf_shards(path: Path) -> list[Path]:
    m = _SPLIT.match(path.name)
    if not m:
        return [path]
    n = int(m["n"])
    shards = [path.with_name(f"{m['stem']}-{i:05d}-of-{n:05d}.gguf") for i in range(1, n + 1)]
    missing = [s.name for s in shards if not s.exists()]
    if missing:
        raise ModelFileError(f"{path}: split GGUF is missing {', '.join(missing)}")
    return shards


# ------------------------------------------------------------------ safetensors


def read_safetensors(path: str | Path) -> dict:
    """Exact tensor bytes from the JSON headers of *.safetensors, plus config.json when present."""
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files:
        raise ModelFileError(f"{path}: no *.safetensors files")
    weights = 0
    params = 0
    dtypes: dict[str, int] = {}
    for f in files:
        for name, info in _safetensors_header(_regular(f)).items():
            if name == "__metadata__":
                continue
            n = math.prod(info.get("shape") or [1])
            size = SAFETENSORS_DTYPE_BYTES.get(info.get("dtype"))
            nbytes = int(n * size) if size is not None else _offset_bytes(info)
            weights += nbytes
            params += n
            dtypes[info.get("dtype", "?")] = dtypes.get(info.get("dtype", "?"), 0) + nbytes
    facts = {"format": "safetensors", "path": str(path), "files": len(files), "weights_bytes": weights,
             "params": params, "dtype": max(dtypes, key=dtypes.get) if dtypes else None,
             "file_bytes": sum(f.stat().st_size for f in files)}
    config = (path if path.is_dir() else path.parent) / "config.json"
    if config.is_file():
        facts.update(_config_facts(config))
    return facts


def _safetensors_header(f: Path) -> dict:
    with f.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ModelFileError(f"{f}: too short for a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER_BYTES:
            raise ModelFileError(f"{f}: header length {n} is not plausible; not a safetensors file")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"{f}: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{f}: header is not a JSON object")
    return header


def _offset_bytes(info: dict) -> int:
    start, end = info.get("data_offsets", [0, 0])
    return int(end) - int(start)


def _config_facts(config: Path) -> dict:
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    cfg = cfg.get("text_config", cfg) if isinstance(cfg.get("text_config"), dict) else cfg
    heads = cfg.get("num_attention_heads")
    hidden = cfg.get("hidden_size")
    quant = cfg.get("quantization_config") or {}
    return {
        "architecture": (cfg.get("architectures") or [cfg.get("model_type")])[0],
        "block_count": cfg.get("num_hidden_layers"),
        "context_length": cfg.get("max_position_embeddings"),
        "embedding_length": hidden,
        "head_count": heads,
        "head_count_kv": cfg.get("num_key_value_heads") or heads,
        "head_dim": cfg.get("head_dim") or (hidden // heads if hidden and heads else None),
        "vocab_size": cfg.get("vocab_size"),
        "expert_count": cfg.get("num_local_experts") or cfg.get("num_experts"),
        "quantization": quant.get("quant_method"),
    }


# ------------------------------------------------------------------ per deployment


def read_model_file(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir() or p.suffix == ".safetensors":
        return read_safetensors(p)
    return read_gguf(p)


def fingerprint(path: Path) -> dict:
    """Size and newest mtime of a model file or safetensors directory (cheap: stat only)."""
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else _gguf_shards(path)
    stats = [f.stat() for f in files]
    return {"file_bytes": sum(s.st_size for s in stats), "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}


def model_file_facts(ctx, spec_dir: str | Path, cache: dict[str, dict] | None = None) -> dict[str, dict]:
    """deployment name -> facts, for deployments whose model_file exists on this machine.

    A missing or unreadable file gives {"note": ...} (the catalog estimate is used);
    architecture numbers that disagree with the catalog are noted too. Facts in
    ``cache`` (e.g. from the applied state) are reused when path, size and mtime match.
    """
    out: dict[str, dict] = {}
    for dep in ctx.rig.serve:
        if not dep.model_file:
            continue
        p = Path(dep.model_file).expanduser()
        if not p.is_absolute():
            p = Path(spec_dir) / p
        try:
            exists = p.exists()
        except OSError as exc:  # ENAMETOOLONG: the spec's directory plus model_file exceeds PATH_MAX
            out[dep.name] = {"note": f"model_file cannot be looked up ({exc.strerror}); "
                                     "weights are estimated from the catalog (params x bits per weight)"}
            continue
        if not exists:
            out[dep.name] = {"note": f"model_file {dep.model_file} not found on this machine; "
                                     "weights are estimated from the catalog (params x bits per weight)"}
            continue
        if not (p.is_file() or p.is_dir()):
            # a FIFO or a device: reading it would block or never end, and apply would copy it
            out[dep.name] = {"note": f"model_file {dep.model_file} is not a regular file",
                             "refuse": f"{dep.name}: model_file {dep.model_file} is not a regular file or a "
                                       "directory (a FIFO, device or socket): name the model file itself"}
            continue
        try:
            fp = fingerprint(p)
            cached = (cache or {}).get(dep.name) or {}
            if cached.get("path") == str(p) and all(cached.get(k) == v for k, v in fp.items()):
                out[dep.name] = dict(cached)
                continue
            facts = read_model_file(p)
            facts.update(fp)
        except (ModelFileError, OSError) as exc:
            out[dep.name] = {"note": f"model_file {dep.model_file} could not be read ({exc}); "
                                     "using the catalog estimate"}
            continue
        facts["notes"] = _disagreements(ctx.model(dep), facts)
        out[dep.name] = facts
    return out


def _disagreements(model, facts: dict) -> list[str]:
    if model is None:
        return []
    pairs = [("block_count", "layers"), ("head_count_kv", "kv_heads"), ("head_count", "attention_heads")]
    notes = []
    for fk, mk in pairs:
        got, want = facts.get(fk), getattr(model, mk, None)
        if got and want and int(got) != int(want):
            notes.append(f"the file has {fk.replace('_', ' ')} {got}, the catalog entry {model.name} says {want}")
    return notes


def spec_model_facts(ctx, spec: str, cache: dict | None = None) -> dict[str, dict]:
    """Facts of the deployments' model files, paths relative to the spec file; ``cache`` is a
    previous result (the applied state's) reused where size and mtime still match."""
    if not any(d.model_file for d in ctx.rig.serve):
        return {}
    return model_file_facts(ctx, Path(spec).resolve().parent, cache=cache)


def usable_facts(facts: dict[str, dict]) -> dict[str, dict]:
    """The deployments whose file was read, and those whose model_file must be refused (a
    missing file carries just a note: the catalog estimate stands in)."""
    return {k: v for k, v in facts.items() if v.get("weights_bytes") or v.get("refuse")}
