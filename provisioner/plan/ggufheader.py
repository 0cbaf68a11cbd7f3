"""A GGUF header reader: metadata and tensor table, nothing else, no numpy.

The planner needs a dozen numbers from a GGUF file (layers, heads, context, vocabulary
size, exact tensor bytes). The `gguf` package reads them too, but it imports numpy and
maps every metadata array (a 128k-token vocabulary, its merges) into numpy objects: a
tenth of a second before the first byte on a tiny model, more on a real one. Here the
header is walked once with struct: scalars are kept, string arrays are skipped by length
(only their element count is kept), numeric arrays are kept when short (per-layer head
counts) and skipped otherwise.

Layout (GGUF v2 and v3; v1 is older than any file llama.cpp still loads):
  magic "GGUF", u32 version, u64 tensor count, u64 metadata count,
  metadata: (string key, u32 type, value)*, tensors: (string name, u32 n_dims,
  u64 dims[n_dims], u32 ggml type, u64 offset)*; strings are u64 length + UTF-8 bytes.
Byte order follows the file: a version that only reads right big-endian marks a
big-endian file (llama.cpp's gguf writer can produce both).
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

# ggml type id -> (elements per block, bytes per block). From ggml's type traits
# (ggml/src/ggml.c, `type_traits[]`: blck_size and type_size), the table the GGUF
# format's tensor sizes are defined by; tests/plan/test_ggufheader.py checks it against
# gguf-py's GGML_QUANT_SIZES, maintained beside ggml in the llama.cpp repository.
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 40),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
    40: (64, 36),  # NVFP4
    41: (128, 18),  # Q1_0
}

# metadata value type -> struct code (8 string, 9 array are handled apart)
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
KEEP_ARRAY_MAX = 4096  # numeric arrays up to this many elements keep their values
DEFAULT_ALIGNMENT = 32  # general.alignment when the file does not set it


class GGUFError(ValueError):
    """Not a GGUF file, or a header that ends or points outside the file."""


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # from the start of the data section

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class GGUFHeader:
    version: int
    byte_order: str  # "<" or ">"
    fields: dict[str, object] = field(default_factory=dict)  # scalars, short numeric arrays, strings
    array_lengths: dict[str, int] = field(default_factory=dict)  # every array's element count
    tensors: list[Tensor] = field(default_factory=list)
    data_start: int = 0
    file_size: int = 0

    def tensor_bytes(self) -> list[int]:
        """Bytes of each tensor: exact from the type table; for a type the table does not
        know yet, the distance to the next tensor's offset (which includes alignment padding)."""
        ends = sorted({t.offset for t in self.tensors} | {self.file_size - self.data_start})
        out = []
        for t in self.tensors:
            size = GGML_TYPE_SIZES.get(t.ggml_type)
            if size is not None:
                block, nbytes = size
                out.append(t.n_elements // block * nbytes)
            else:
                out.append(next(e for e in ends if e > t.offset) - t.offset)
        return out


class _Cursor:
    def __init__(self, buf, order: str):
        self.buf, self.pos, self.order = buf, 0, order

    def take(self, code: str):
        fmt = self.order + code
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise GGUFError(f"header ends early (at byte {self.pos})")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.take("Q")
        if self.pos + n > len(self.buf):
            raise GGUFError(f"string of {n} bytes runs past the end of the file (at byte {self.pos})")
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        return bytes(raw).decode("utf-8", errors="replace")

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.buf):
            raise GGUFError(f"value of {n} bytes runs past the end of the file (at byte {self.pos})")
        self.pos += n


def _value(cur: _Cursor, vtype: int, key: str, hdr: GGUFHeader):
    if vtype in _SCALAR:
        return cur.take(_SCALAR[vtype])
    if vtype == _STRING:
        return cur.string()
    if vtype != _ARRAY:
        raise GGUFError(f"metadata {key!r} has unknown value type {vtype}")
    etype, count = cur.take("I"), cur.take("Q")
    hdr.array_lengths[key] = count
    if etype in _SCALAR:
        size = struct.calcsize(_SCALAR[etype])
        if count <= KEEP_ARRAY_MAX:
            fmt = f"{cur.order}{count}{_SCALAR[etype]}"
            if cur.pos + size * count > len(cur.buf):
                raise GGUFError(f"array {key!r} runs past the end of the file")
            values = list(struct.unpack_from(fmt, cur.buf, cur.pos))
            cur.pos += size * count
            return values
        cur.skip(size * count)
        return None
    if etype == _STRING:
        for _ in range(count):  # only the lengths are read: vocabularies are large
            cur.skip(cur.take("Q"))
        return None
    raise GGUFError(f"array {key!r} has element type {etype}; nested arrays are not read")


def read_header(path: str | Path) -> GGUFHeader:
    """The metadata and tensor table of one GGUF file. Raises GGUFError, OSError."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        if size < 24:
            raise GGUFError(f"{size} bytes is too short for a GGUF header")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _parse(memoryview(mm), size)


def _parse(buf, size: int) -> GGUFHeader:
    try:
        if bytes(buf[:4]) != b"GGUF":
            raise GGUFError(f"magic is {bytes(buf[:4])!r}, not b'GGUF'")
        (le,) = struct.unpack_from("<I", buf, 4)
        order = "<" if le < 0x10000 else ">"
        cur = _Cursor(buf, order)
        cur.pos = 4
        hdr = GGUFHeader(version=cur.take("I"), byte_order=order, file_size=size)
        if hdr.version not in (2, 3):
            raise GGUFError(f"GGUF version {hdr.version} (this reader knows 2 and 3)")
        n_tensors, n_kv = cur.take("Q"), cur.take("Q")
        if n_tensors > size or n_kv > size:  # each needs at least a byte: a corrupt count
            raise GGUFError(f"implausible counts ({n_tensors} tensors, {n_kv} metadata keys)")
        for _ in range(n_kv):
            key = cur.string()
            hdr.fields[key] = _value(cur, cur.take("I"), key, hdr)
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.take("I")
            if n_dims > 8:
                raise GGUFError(f"tensor {name!r} claims {n_dims} dimensions")
            shape = tuple(cur.take("Q") for _ in range(n_dims))
            hdr.tensors.append(Tensor(name, shape, cur.take("I"), cur.take("Q")))
        align = hdr.fields.get("general.alignment") or DEFAULT_ALIGNMENT
        if not isinstance(align, int) or align <= 0:
            raise GGUFError(f"general.alignment is {align!r}")
        hdr.data_start = -(-cur.pos // align) * align
        return hdr
    finally:
        buf.release()
