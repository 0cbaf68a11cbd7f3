"""Hardware, model and format catalogs: data files shipped with the package.

Every entry carries a ``source`` note. Users extend or override entries with
their own files (same schema, same ids win) listed under ``catalog:`` in the
rig spec or passed with ``--catalog``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import zlib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import inputfile, yamlload


MemoryType = Literal["gddr5", "gddr5x", "gddr6", "gddr6x", "gddr7", "hbm2", "hbm2e", "hbm3", "hbm3e",
                     "lpddr4x", "lpddr5", "lpddr5x", "ddr4", "ddr5"]


class Entry(BaseModel):
    # validators are built on first use: the shipped catalogs are checked by the test
    # suite and loaded with model_construct, which keeps `rigctl validate` starting fast
    # user catalogs are input like the spec: no NaN or infinity (they crash the rules)
    model_config = ConfigDict(extra="forbid", defer_build=True, allow_inf_nan=False)
    id: str
    name: str
    aliases: list[str] = Field(default_factory=list)
    source: str
    confidence: Literal["high", "medium", "low"] = "medium"


class NvlinkInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    present: bool = False
    generation: int | None = None
    bandwidth_gbs: float | None = None
    max_way: int | None = None
    bridge_spacings_slots: list[int] = Field(default_factory=list)
    p2p_over_pcie: bool = True


class GpuEntry(Entry):
    nvml_names: list[str] = Field(default_factory=list)
    vendor: Literal["nvidia", "apple", "amd", "intel"]
    architecture: str
    form_factor: Literal["pcie", "sxm", "soc", "oam"]
    memory_gib: float = Field(gt=0, le=1_048_576)
    usable_memory_fraction: float = 1.0
    reserved_mib: int = 0
    bandwidth_gbs: float = Field(gt=0, le=1_000_000)  # divides in the speed estimate
    # the kind of memory behind bandwidth_gbs: kernels reach a different share of peak on
    # GDDR, HBM and unified LPDDR memory (the speed model reads it)
    memory_type: MemoryType | None = None
    board_power_w: int | None = None
    transient_peak_w: int | None = None
    transient_note: str | None = None
    slot_width: int | None = None
    pcie_gen: int | None = None
    pcie_lanes: int | None = None
    power_connector: str | None = None
    nvlink: NvlinkInfo = Field(default_factory=NvlinkInfo)
    compute_capability: str | None = None
    min_driver_branch: int | None = None
    min_cuda: str | None = None
    open_kernel_modules_required: bool = False
    fp16_tflops: float | None = None

    # Apple: the RAM sizes the chip is sold with (memory_gib is the largest); a node's
    # memory_gib picks one, see apple_gpu_fraction
    memory_options_gib: list[float] = Field(default_factory=list)

    @property
    def usable_gib(self) -> float:
        """Memory a model may use: nominal minus driver reservation, times the usable fraction."""
        return self.memory_gib * self.usable_memory_fraction - self.reserved_mib / 1024


def apple_gpu_fraction(ram_gib: float) -> float:
    """Share of a Mac's RAM that Metal lets the GPU wire by default (recommendedMaxWorkingSetSize).

    About 2/3 up to 36 GB machines, about 3/4 above: a 32 GB M1 Max reports
    recommendedMaxWorkingSetSize = 21845.34 MB, 2/3 of 32 GiB
    (https://github.com/ggml-org/llama.cpp/pull/2011), 64 GB M1/M2 Max machines stop at about
    47-48 GB (https://github.com/ggml-org/llama.cpp/issues/1870). `sudo sysctl
    iogpu.wired_limit_mb=N` raises the limit until reboot.
    """
    return 2 / 3 if ram_gib <= 36 else 0.75


def for_node_memory(entry: "GpuEntry", ram_gib: float) -> "GpuEntry":
    """An Apple entry sized to the machine's RAM instead of the chip's largest configuration."""
    return entry.model_copy(update={"memory_gib": float(ram_gib), "usable_memory_fraction": apple_gpu_fraction(ram_gib)})


class ModelEntry(Entry):
    # the same bounds as an inline spec model (spec.models.ModelArch), which say why:
    # they keep the per-layer and per-divisor work finite
    architecture: str
    params_b: float = Field(gt=0, le=10_000)
    active_params_b: float | None = Field(None, gt=0, le=10_000)
    layers: int = Field(gt=0, le=4096)
    attention_heads: int = Field(gt=0, le=4096)
    kv_heads: int = Field(gt=0, le=4096)
    head_dim: int = Field(gt=0, le=65_536)
    hidden_size: int | None = Field(None, gt=0, le=1_048_576)
    vocab_size: int = Field(gt=0, le=16_777_216)
    max_context: int = Field(gt=0, le=1_073_741_824)
    experts: int | None = Field(None, gt=0, le=65_536)
    # attention layout the KV cache follows (spec.models.ModelArch says what each means)
    head_dim_k: int | None = Field(None, gt=0, le=65_536)
    head_dim_v: int | None = Field(None, gt=0, le=65_536)
    sliding_window: int | None = Field(None, gt=0, le=1_073_741_824)
    sliding_window_pattern: int | None = Field(None, ge=1, le=4096)
    # the Hugging Face repositories among the aliases answer 401 until the user accepts the
    # licence and sends a token (https://huggingface.co/docs/hub/models-gated); gated_source says
    # where that is stated for this model
    gated: bool = False
    gated_source: str | None = None

    @property
    def active_b(self) -> float:
        return self.active_params_b or self.params_b


class FormatEntry(Entry):
    family: str
    bits_per_weight: float | None = None
    bits_per_weight_small_models: float | None = None
    # token embeddings and output head stored at this precision instead of the format's own
    # (the "_L"/"_XL" GGUF mixes keep them at Q8_0); sizing weighs them by the model's shape
    embed_output_bits: float | None = None
    stacks: list[str]
    note: str | None = None
    confidence: Literal["high", "medium", "low"] = "high"


class CpuEntry(Entry):
    pcie_lanes: int | None = None
    pcie_gen: int | None = None
    power_w: int | None = None


KINDS: dict[str, type[Entry]] = {"gpus": GpuEntry, "models": ModelEntry, "formats": FormatEntry, "cpus": CpuEntry}


def _norm(s: str) -> str:
    return re.sub(r"[\s_]+", "-", s.strip().lower())


class CatalogError(Exception):
    def __init__(self, message: str, file: str, line: int = 1):
        super().__init__(message)
        self.message, self.file, self.line = message, file, line


class Table:
    """Entries of one kind, looked up by id or alias, case- and separator-insensitive."""

    def __init__(self, kind: str, entries: list[Entry]):
        self.kind = kind
        self.entries: dict[str, Entry] = {}
        self._index: dict[str, str] = {}
        for e in entries:
            self.add(e)

    def add(self, e: Entry) -> None:
        self.entries[e.id] = e
        for key in [e.id, e.name, *e.aliases]:
            self._index[_norm(key)] = e.id

    def get(self, key: str):
        eid = self._index.get(_norm(key))
        return self.entries.get(eid) if eid else None

    def suggest(self, key: str) -> list[str]:
        close = difflib.get_close_matches(_norm(key), list(self._index), n=3, cutoff=0.6)
        ids: list[str] = []
        for c in close:
            if self._index[c] not in ids:
                ids.append(self._index[c])
        return ids

    def __iter__(self):
        return iter(self.entries.values())

    def __len__(self):
        return len(self.entries)


Q8_0_BITS = 8.5  # 34 bytes per 32 weights (https://github.com/ggml-org/llama.cpp/blob/master/ggml/src/ggml-common.h)
_MIX = re.compile(r"^(?P<ud>ud-)?(?P<base>.+?)-(?P<mix>xl|l)$")


class FormatTable(Table):
    """Formats, plus the GGUF mixes named after a base type with an "_L"/"_XL" suffix.

    bartowski's `Q2_K_L`, `Q3_K_XL`, `Q4_K_L`, `Q5_K_L`, `Q6_K_L` are the base quantization
    with the embedding and output tensors at Q8_0 ("Uses Q8_0 for embed and output weights",
    https://huggingface.co/bartowski/Meta-Llama-3.1-8B-Instruct-GGUF); Unsloth's `UD-…_XL`
    files are dynamic per-tensor mixes of the same size class
    (https://docs.unsloth.ai/basics/unsloth-dynamic-2.0-ggufs), sized the same way at low
    confidence. A listed id (Q3_K_L is a k-quant of its own) always wins.
    """

    def get(self, key: str):
        hit = super().get(key)
        if hit is not None or not isinstance(key, str):
            return hit
        mixes = self.__dict__.setdefault("_mixes", {})  # built on demand, never listed as entries
        if _norm(key) not in mixes:
            mixes[_norm(key)] = self._mix(key)
        return mixes[_norm(key)]

    def _mix(self, key: str):
        m = _MIX.match(_norm(key))
        if m is None:
            return None
        base_id = m.group("base")
        candidates = ([base_id + "-l", base_id + "-m", base_id] if m.group("mix") == "xl"
                      else [base_id + "-m", base_id])
        found = [Table.get(self, c) for c in candidates]
        base = next((e for e in found if e is not None and e.family == "gguf"), None)
        if base is None:
            return None
        ud = bool(m.group("ud"))
        entry = FormatEntry.model_construct(
            id=_norm(key).replace("-", "_"), name=key.strip().upper().replace("-", "_").replace("UD_", "UD-"), aliases=[],
            family="gguf", bits_per_weight=base.bits_per_weight,
            bits_per_weight_small_models=base.bits_per_weight_small_models, stacks=list(base.stacks),
            embed_output_bits=Q8_0_BITS,
            note=(f"{base.name} with token embeddings and output at Q8_0"
                  + ("; a dynamic per-tensor mix: only the real file size is exact" if ud else "")),
            source=(f"derived from {base.id}: embeddings and output at Q8_0 "
                    "(https://huggingface.co/bartowski/Meta-Llama-3.1-8B-Instruct-GGUF"
                    + ("; https://docs.unsloth.ai/basics/unsloth-dynamic-2.0-ggufs" if ud else "") + ")"),
            confidence="low" if ud else "medium")
        return entry


TABLES: dict[str, type[Table]] = {"formats": FormatTable}


def _table(kind: str, entries: list[Entry]) -> Table:
    return TABLES.get(kind, Table)(kind, entries)


class Catalog:
    def __init__(self, tables: dict[str, Table]):
        self.gpus: Table = tables["gpus"]
        self.models: Table = tables["models"]
        self.formats: Table = tables["formats"]
        self.cpus: Table = tables["cpus"]

    def extended(self, files: list[Path]) -> "Catalog":
        """A copy with user files layered on top (same id replaces)."""
        tables = {k: _table(k, list(getattr(self, k))) for k in KINDS}
        for f in files:
            for kind, entries in _read_user_file(f).items():
                for e in entries:
                    tables[kind].add(e)
        return Catalog(tables)


def _parse(kind: str, items, file: str, line_of=None) -> list[Entry]:
    """Validated entries; ``line_of(path)`` gives the line of a path into the file's data."""
    line_of = line_of or (lambda path: 1)
    if not isinstance(items, list):
        raise CatalogError(f"'{kind}' must be a list of entries", file, line_of((kind,)))
    out = []
    for i, item in enumerate(items):
        try:
            out.append(KINDS[kind].model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            ident = item.get("id", f"#{i}") if isinstance(item, dict) else f"#{i}"
            raise CatalogError(f"{kind} entry {ident}: {loc}: {first['msg']}", file,
                               line_of((kind, i, *first["loc"]))) from None
    return out


def _read_user_file(path: Path) -> dict[str, list[Entry]]:
    # A user catalog is input like the spec, read the same way: a regular file of bounded
    # size, YAML with duplicate keys, alias bombs, control characters and deep nesting
    # refused at their line (PyYAML's loader recursed into a RecursionError).
    name = str(path)
    try:
        data, positions = yamlload.load(yamlload.decode(inputfile.read_bounded(path, what="catalog")))
    except inputfile.InputFileError as exc:
        raise CatalogError(f"cannot read catalog file: {exc.message}", name) from None
    except yamlload.YamlError as exc:
        raise CatalogError(exc.message, name, exc.line) from None
    if not isinstance(data, dict) or not set(data) <= set(KINDS):
        raise CatalogError(f"a catalog file is a mapping with any of: {', '.join(KINDS)}", name)
    return {k: _parse(k, v, name, lambda p: positions.locate(data, p)[0]) for k, v in data.items()}


def _construct(kind: str, item: dict) -> Entry:
    """Trusted shipped data: build without validation (tests validate these files)."""
    cls = KINDS[kind]
    if kind == "gpus" and isinstance(item.get("nvlink"), dict):
        item = {**item, "nvlink": NvlinkInfo.model_construct(**item["nvlink"])}
    return cls.model_construct(**item)


CACHE_FORMAT = 1  # bump when the cached document's layout changes


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rigctl"


def _shipped_items(base) -> dict[str, list]:
    """The shipped YAML files parsed, through a JSON copy in the user cache dir.

    Parsing the YAML is most of what loading the catalogs costs at every start (about 50 ms
    of CPU for the four files); the same data as JSON loads in about 2 ms. The copy is keyed
    by each file's size and modification time, so an edited catalog is parsed again. JSON
    holds data only: nothing read from the cache can run code. A cache that cannot be
    read or written (read-only home, another user's file) is ignored.
    """
    paths = {kind: Path(str(base / f"{kind}.yaml")) for kind in KINDS}
    try:
        stats = [(k, p.stat()) for k, p in paths.items()]
        key = repr([CACHE_FORMAT, str(base)] + [(k, s.st_size, s.st_mtime_ns) for k, s in stats])
        cached = _cache_dir() / f"catalog-{zlib.crc32(key.encode()):08x}.json"
        doc = json.loads(cached.read_text(encoding="utf-8"))
        if doc.get("key") == key:  # the full key inside: a crc32 collision only costs a parse
            return doc["items"]
    except (OSError, ValueError, AttributeError):
        pass
    items = {kind: _load_yaml(p.read_text(encoding="utf-8")) for kind, p in paths.items()}
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "items": items}), encoding="utf-8")
        os.replace(tmp, cached)
    except (OSError, NameError, TypeError, ValueError):
        pass  # no cache this time (NameError: the key could not be made)
    return items


def _load_yaml(text: str):
    """PyYAML with rigctl's safe loader, imported only when a catalog file must be parsed (the
    JSON copy serves every other start)."""
    import yaml

    from ..yamlio import SafeLoader

    return yaml.load(text, Loader=SafeLoader)


@lru_cache(maxsize=2)
def builtin(validate: bool = False) -> Catalog:
    """The catalogs shipped in provisioner/spec/data (``validate=True`` checks every entry)."""
    base = resources.files("provisioner.spec") / "data"
    if validate:  # straight from the YAML, as the tests check it
        shipped = {kind: _load_yaml((base / f"{kind}.yaml").read_text(encoding="utf-8")) for kind in KINDS}
    else:
        shipped = _shipped_items(base)
    tables = {}
    for kind in KINDS:
        items = shipped[kind]
        entries = _parse(kind, items, f"{kind}.yaml") if validate else [_construct(kind, i) for i in items]
        tables[kind] = _table(kind, entries)
    return Catalog(tables)
