"""The rig spec: what a user writes in rig.yaml.

Strict pydantic v2 models (unknown keys are errors), every field described,
units in field names. Catalog references (GPU, CPU, model, format ids) are plain
strings here; `provisioner.spec.resolve` ties them to catalog entries so that an
unknown id is reported at its position with a "did you mean".
"""

from __future__ import annotations

import ipaddress
import re
from enum import Enum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

SPEC_VERSION = 1

# ---------------------------------------------------------------- identifier patterns
#
# Values that become names elsewhere (inventory hostnames, unit and container names,
# interface names in firewall rules, device ids in compose files) are refused here, at
# their position in the spec, rather than escaped later. PATTERN_HELP says in words what
# each pattern expects; the loader puts that text into the "does not match" message.
# Patterns stay in the subset that pydantic (Rust regex), Python `re` and JSON Schema
# (ECMA-262) read alike: no look-around, \xHH and \uHHHH escapes only.

# C0 and C1 controls, DEL, line/paragraph separators, bidi overrides (they make text read
# differently from what it is) and the non-characters U+FFFE/U+FFFF.
_CONTROL = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufffe\uffff"

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
GPU_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# `nvidia-smi -L`: "GPU-<uuid>", and for MIG devices "MIG-<uuid>" (R470+) or the older
# "MIG-GPU-<uuid>/<gi>/<ci>" (https://docs.nvidia.com/datacenter/tesla/mig-user-guide/)
GPU_UUID_PATTERN = r"^(GPU-[0-9a-fA-F-]{8,64}|MIG-[0-9a-fA-F-]{8,64}|MIG-GPU-[0-9a-fA-F-]{8,64}/[0-9]{1,3}/[0-9]{1,3})$"
# Linux IFNAMSIZ is 16 bytes with the NUL (https://man7.org/linux/man-pages/man7/netdevice.7.html)
NIC_NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,15}$"
SLOT_NAME_PATTERN = r"^[A-Za-z0-9_.:/#()+][A-Za-z0-9 _.:/#()+-]{0,63}$"
# POSIX portable user names (https://pubs.opengroup.org/onlinepubs/9699919799/basedefs/V1_chap03.html#tag_03_437),
# at most 32 characters as useradd allows, optional trailing $ (Samba machine accounts)
SSH_USER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}[$]?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
VAULT_VAR_PATTERN = r"^[_A-Za-z][_A-Za-z0-9]{0,127}$"  # spelled unlike ENV_NAME_PATTERN: PATTERN_HELP keys
HOST_PATTERN = r"^[A-Za-z0-9_.:%-]{1,253}$"
ABS_PATH_PATTERN = "^/[^" + _CONTROL + "]*$"  # the length: _path_lengths (a bounded repeat costs ~3.5 ms to compile)
TEXT_PATTERN = "^[^" + _CONTROL + "]*$"
MULTILINE_TEXT_PATTERN = "^[^" + _CONTROL.replace(r"\x00-\x1f", r"\x00-\x08\x0b-\x1f") + "]*$"
MULTIADDR_PATTERN = r"^/[A-Za-z0-9._~:/%+=-]{1,1023}$"
# the grammar of distribution/reference (https://github.com/distribution/reference/blob/main/regexp.go)
_OCI_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_OCI_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?/)?"
IMAGE_PATTERN = (f"^{_OCI_DOMAIN}{_OCI_COMPONENT}(?:/{_OCI_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
                 r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$")
REGISTRY_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?(?:/[a-z0-9._-]+)*/?$"
ARCH_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# Hugging Face repository ids (namespace/name, https://huggingface.co/docs/hub/repositories) and
# git commit ids; a file inside a repository is a relative path whose parts start with a letter,
# digit or '_' (so no '..', no leading '/', no hidden files)
HF_REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$"
COMMIT_PATTERN = r"^[0-9a-f]{40}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
REPO_FILE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,254}(/[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,254}){0,15}$"
URL_PATTERN = r"^https?://[A-Za-z0-9._~:/?#@!$&()*+,;=%-]{1,4096}$"

_HELP = [  # (pattern, what it expects in words); each pattern string must be unique
    (NAME_PATTERN, "lowercase letters, digits and dashes, starting and ending with a letter or digit, at most 63"),
    (GPU_ID_PATTERN, "letters, digits, '_', '.' and '-', starting with a letter or digit, at most 63 (e.g. gpu0)"),
    (GPU_UUID_PATTERN, "a UUID as `nvidia-smi -L` prints it: GPU-<hex and dashes>, MIG-<hex and dashes> "
                       "or MIG-GPU-<hex and dashes>/<gi>/<ci>"),
    (NIC_NAME_PATTERN, "a Linux interface name: 1-15 letters, digits, '_', '.', ':' or '-' (IFNAMSIZ)"),
    (SLOT_NAME_PATTERN, "a board label: letters, digits, spaces and _ . : / # ( ) + -, at most 64 "
                        "(no quotes, no line breaks)"),
    (SSH_USER_PATTERN, "a POSIX user name: a letter or '_', then letters, digits, '_', '.' or '-', at most 32"),
    (ENV_NAME_PATTERN, "an environment variable name: a letter or '_', then letters, digits or '_', at most 128"),
    (VAULT_VAR_PATTERN, "an Ansible variable name: a letter or '_', then letters, digits or '_', at most 128"),
    (HOST_PATTERN, "an IPv4 or IPv6 address or a DNS name (letters, digits, '-', '.'), no spaces, brackets or quotes"),
    (ABS_PATH_PATTERN, "an absolute path (starting with /) without control characters or line breaks"),
    (TEXT_PATTERN, "text without control characters or line breaks"),
    (MULTILINE_TEXT_PATTERN, "text without control characters (line breaks and tabs are allowed)"),
    (MULTIADDR_PATTERN, "a multiaddr such as /ip4/10.0.0.1/tcp/31337/p2p/Qm..., no spaces or quotes"),
    (IMAGE_PATTERN, "an OCI image reference: [registry[:port]/]name[:tag][@sha256:digest], lowercase name"),
    (REGISTRY_PATTERN, "a registry host with optional :port and /path, e.g. mirror.example.com:5000/hub"),
    (ARCH_PATTERN, "a GGUF architecture name: letters, digits, '_', '.' and '-', at most 64"),
    (HF_REPO_PATTERN, "a Hugging Face repository id: namespace/name (letters, digits, '_', '.' and '-')"),
    (COMMIT_PATTERN, "a full 40-character git commit id in lowercase hex (a branch or tag moves; pin the commit)"),
    (SHA256_PATTERN, "a sha256 digest: 64 lowercase hex characters (`sha256sum FILE`)"),
    (REPO_FILE_PATTERN, "a file path inside the repository, e.g. model-Q4_K_M.gguf or sub/dir/file.safetensors "
                        "(parts start with a letter, digit or '_'; no '..')"),
    (URL_PATTERN, "an http:// or https:// URL without spaces, quotes or control characters"),
]
PATTERN_HELP = dict(_HELP)
assert len(PATTERN_HELP) == len(_HELP), "two fields' patterns are spelled alike; PATTERN_HELP would mix them up"

# NAME_MAX and PATH_MAX of Linux (https://man7.org/linux/man-pages/man3/pathconf.3.html):
# a longer name fails every open() with ENAMETOOLONG
NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4095


def _path_lengths(v: str) -> str:
    if len(v.encode("utf-8", "surrogatepass")) > PATH_MAX_BYTES:
        raise ValueError(f"path is longer than {PATH_MAX_BYTES} bytes (Linux PATH_MAX); no file can have this name")
    for part in v.split("/"):
        n = len(part.encode("utf-8", "surrogatepass"))
        if n > NAME_MAX_BYTES:
            raise ValueError(f"path component '{part[:40]}...' is {n} bytes; Linux allows at most {NAME_MAX_BYTES} "
                             "bytes per file or directory name (NAME_MAX)")
    return v


_HOSTNAME = re.compile(r"^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                       r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?\Z")


def _host(v: str) -> str:
    """An IP literal (IPv6 with an optional %zone) or an RFC 1123 host name."""
    try:
        ipaddress.ip_address(v)
        return v
    except ValueError:
        pass
    if ":" in v or "%" in v:
        raise ValueError(f"'{v}' is not a valid IPv6 address (write it without brackets, e.g. fe80::1%eth0)")
    if re.fullmatch(r"[0-9.]+", v):
        raise ValueError(f"'{v}' is not a valid IPv4 address")
    if not _HOSTNAME.match(v):
        raise ValueError(f"'{v}' is not a host name: dot-separated labels of 1-63 letters, digits and dashes "
                         "(not starting or ending with a dash)")
    return v


Name = Annotated[str, Field(pattern=NAME_PATTERN, description="lowercase letters, digits and dashes")]
GpuId = Annotated[str, Field(pattern=GPU_ID_PATTERN)]
SlotName = Annotated[str, Field(pattern=SLOT_NAME_PATTERN)]
Host = Annotated[str, Field(pattern=HOST_PATTERN), AfterValidator(_host)]
AbsPath = Annotated[str, Field(pattern=ABS_PATH_PATTERN), AfterValidator(_path_lengths)]
FilePath = Annotated[str, Field(min_length=1, pattern=TEXT_PATTERN), AfterValidator(_path_lengths)]
# catalog ids and other short text that reaches file contents and messages
Ident = Annotated[str, Field(min_length=1, max_length=256, pattern=TEXT_PATTERN)]
Arg = Annotated[str, Field(max_length=4096, pattern=TEXT_PATTERN)]


class Strict(BaseModel):
    # NaN and infinity are never a measurement; they turned into crashes in the rules
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, defer_build=True)


class Stack(str, Enum):
    llamacpp = "llamacpp"
    llamacpp_rpc = "llamacpp-rpc"
    ollama = "ollama"
    vllm = "vllm"
    tabbyapi = "tabbyapi"
    exo = "exo"
    petals = "petals"


# ---------------------------------------------------------------- hardware


class Connection(Strict):
    address: Host = Field(description="IP address or DNS name rigctl connects to over SSH")
    ssh_user: str = Field("root", pattern=SSH_USER_PATTERN, description="SSH user (become is used for root tasks)")
    ssh_port: int = Field(22, ge=1, le=65535, description="SSH port")


class Cpu(Strict):
    model: Ident | None = Field(None, description="CPU catalog id, e.g. ryzen-9-7950x (see `rigctl catalog cpus`)")
    pcie_lanes: int | None = Field(None, ge=0, le=256, description="CPU PCIe lanes for slots and M.2 (overrides the catalog)")
    pcie_gen: int | None = Field(None, ge=1, le=6, description="CPU PCIe generation (overrides the catalog)")
    power_w: int | None = Field(None, ge=1, le=2000, description="sustained CPU power (PL2/PPT) in watts (overrides the catalog)")

    @model_validator(mode="after")
    def _model_or_numbers(self):
        if self.model is None and (self.pcie_lanes is None or self.power_w is None):
            raise ValueError("give a catalog `model`, or both `pcie_lanes` and `power_w`")
        return self


class PcieSlot(Strict):
    name: SlotName = Field(description="slot label as printed on the board, e.g. PCIEX16_1")
    position: int = Field(ge=1, le=20, description="expansion-slot position counted from the CPU (1 = topmost)")
    physical_lanes: Literal[1, 4, 8, 16] = Field(16, description="physical slot size (x16 slot = 16)")
    electrical_lanes: Literal[1, 2, 4, 8, 16] = Field(16, description="lanes actually wired to the slot")
    pcie_gen: int = Field(4, ge=1, le=6, description="PCIe generation of the slot")
    source: Literal["cpu", "chipset"] = Field("cpu", description="whether the lanes come from the CPU or the chipset")
    shared_with_m2: list[SlotName] = Field(default_factory=list, max_length=16, description="M.2 slots that share lanes with this slot")
    lanes_when_shared: Literal[0, 1, 2, 4, 8] = Field(8, description="electrical lanes left when a shared M.2 slot is used (0 = slot disabled)")


class M2Slot(Strict):
    name: SlotName = Field(description="M.2 slot label, e.g. M2_1")
    lanes: Literal[1, 2, 4] = Field(4, description="PCIe lanes of the M.2 slot")
    pcie_gen: int = Field(4, ge=1, le=6, description="PCIe generation of the M.2 slot")
    source: Literal["cpu", "chipset"] = Field("cpu", description="CPU or chipset lanes")


class Board(Strict):
    model: Ident | None = Field(None, description="board model, informational")
    slots: list[PcieSlot] = Field(default_factory=list, max_length=32, description="PCIe expansion slots")
    m2_slots: list[M2Slot] = Field(default_factory=list, max_length=32, description="M.2 slots")


class Psu(Strict):
    watts: int = Field(ge=100, le=5000, description="rated continuous DC output in watts")
    rating: Literal["none", "white", "bronze", "silver", "gold", "platinum", "titanium"] = Field(
        "gold", description="80 PLUS rating (sets efficiency for wall-draw math)"
    )
    atx3: bool = Field(False, description="ATX 3.x unit with native 12V-2x6/12VHPWR (tested for 200 % power excursions)")
    connectors_12v_2x6: int = Field(0, ge=0, le=8, description="native 12V-2x6 / 12VHPWR connectors (600 W each)")
    count: int = Field(1, ge=1, le=4, description="number of identical PSUs sharing the load")


class Circuit(Strict):
    volts: int = Field(ge=100, le=480, description="wall circuit voltage")
    amps: int = Field(ge=5, le=100, description="breaker rating in amps")
    continuous_fraction: float = Field(0.8, gt=0, le=1, description="usable fraction for continuous (>3 h) load; 0.8 per NEC")


class Gpu(Strict):
    id: GpuId = Field(description="name of this GPU inside the node, e.g. gpu0")
    model: Ident = Field(description="GPU catalog id, e.g. rtx-3090 (see `rigctl catalog gpus`)")
    slot: SlotName | None = Field(None, description="board slot name the card sits in")
    power_limit_w: int | None = Field(None, ge=50, le=1500, description="power cap to apply with nvidia-smi -pl, in watts")
    uuid: str | None = Field(None, pattern=GPU_UUID_PATTERN, description="GPU UUID from `nvidia-smi -L` (pins the card for CUDA_VISIBLE_DEVICES)")
    display: bool = Field(False, description="a monitor/desktop runs on this GPU (costs 0.3-1 GiB)")


class NvlinkBridge(Strict):
    gpus: list[GpuId] = Field(min_length=2, max_length=16, description="GPU ids joined by the bridge")
    bridge_slots: int | None = Field(None, ge=1, le=6, description="bridge spacing in slots (e.g. 3 or 4); not needed for SXM")


class InlineGpu(Strict):
    """A GPU that is not in the catalog, defined in the spec; nodes name it by `id` in `gpus[].model`."""

    # the same bounds as a catalog entry (provisioner/spec/catalog.py GpuEntry)
    id: Ident = Field(description="id the nodes' gpus[].model refer to; replaces a catalog entry with the same id")
    name: Ident = Field(description="display name, e.g. NVIDIA GeForce RTX 2080 Ti 22GB (modded)")
    vendor: Literal["nvidia", "apple", "amd", "intel"] = Field(description="GPU vendor")
    architecture: str = Field(pattern=ARCH_PATTERN, description="architecture, e.g. turing, ampere, ada, rdna3")
    form_factor: Literal["pcie", "sxm", "soc", "oam"] = Field("pcie", description="board form factor")
    memory_gib: float = Field(gt=0, le=1_048_576, description="memory in GiB (a \"24 GB\" card = 24)")
    usable_memory_fraction: float = Field(1.0, gt=0, le=1, description="share of memory models may use (Apple: see node memory_gib)")
    reserved_mib: int = Field(500, ge=0, le=1_048_576, description="MiB not free before the first allocation (ECC, CUDA context)")
    bandwidth_gbs: float = Field(gt=0, le=1_000_000, description="peak memory bandwidth in GB/s")
    memory_type: Literal["gddr5", "gddr5x", "gddr6", "gddr6x", "gddr7", "hbm2", "hbm2e", "hbm3", "hbm3e",
                         "lpddr4x", "lpddr5", "lpddr5x", "ddr4", "ddr5"] | None = Field(None, description="memory technology")
    board_power_w: int | None = Field(None, ge=1, le=5000, description="board power (TGP/TBP) in watts")
    transient_peak_w: int | None = Field(None, ge=1, le=15000, description="measured millisecond power peak in watts")
    slot_width: int | None = Field(None, ge=1, le=6, description="slot positions the card occupies")
    pcie_gen: int | None = Field(None, ge=1, le=6, description="PCIe generation of the card")
    pcie_lanes: int | None = Field(None, ge=1, le=32, description="PCIe lanes of the card")
    power_connector: str | None = Field(None, max_length=64, pattern=TEXT_PATTERN, description="e.g. 2x 8-pin, 12V-2x6")
    compute_capability: str | None = Field(None, pattern=r"^[0-9]{1,2}\.[0-9]{1,2}$", description="CUDA compute capability, e.g. 7.5")
    fp16_tflops: float | None = Field(None, gt=0, le=100_000, description="dense FP16 tensor TFLOPS")
    source: str = Field("defined in the rig spec", max_length=4096, pattern=TEXT_PATTERN,
                        description="where the numbers come from")


class Storage(Strict):
    name: Ident | None = Field(None, description="device name, informational")
    type: Literal["nvme", "sata-ssd", "hdd", "network", "unified"] = Field(description="storage technology")
    capacity_gb: float = Field(gt=0, le=1e9, description="capacity in GB (decimal, as sold); at most 1e9 (an exabyte)")
    mount: AbsPath = Field("/", description="mount point")
    m2_slot: SlotName | None = Field(None, description="M.2 slot the drive sits in (for lane sharing)")
    models_dir: bool = Field(False, description="model files are stored here")


class Nic(Strict):
    name: str = Field(pattern=NIC_NAME_PATTERN, description="interface name on the host, e.g. enp5s0")
    speed_gbps: float = Field(gt=0, le=10_000, description="link speed in Gbit/s; at most 10,000 (today's fastest links are 800)")
    address: Host | None = Field(None, description="address on the rig fabric, if different from the SSH address")


class Node(Strict):
    name: Name = Field(description="node name, used as the inventory hostname")
    connection: Connection | None = Field(None, description="how to reach the node (inventories may override)")
    os: Literal["debian-12", "ubuntu-22.04", "ubuntu-24.04", "macos"] = Field("debian-12", description="operating system")
    cpu: Cpu | None = Field(None, description="CPU (catalog model or lanes and power)")
    memory_gib: float | None = Field(None, gt=0, le=1_048_576,
                                     description="system RAM in GiB; at most 1,048,576 (1 PiB, beyond any one machine)")
    board: Board | None = Field(None, description="motherboard slots and lanes")
    psu: Psu | None = Field(None, description="power supply")
    circuit: Circuit | None = Field(None, description="wall circuit feeding this node")
    platform_power_w: int = Field(75, ge=0, le=2000, description="board, drives, fans and RAM power in watts")
    # per-node lists are checked pairwise by some rules; the bounds are far above real machines
    gpus: list[Gpu] = Field(default_factory=list, max_length=64,
                            description="GPUs in this node; at most 64 (the largest servers hold 16)")
    nvlink: list[NvlinkBridge] = Field(default_factory=list, max_length=64, description="NVLink bridges between GPUs")
    storage: list[Storage] = Field(default_factory=list, max_length=256, description="disks")
    nics: list[Nic] = Field(default_factory=list, max_length=64, description="network interfaces")

    @field_validator("gpus")
    @classmethod
    def _unique_gpu_ids(cls, gpus: list[Gpu]):
        seen: set[str] = set()
        for g in gpus:
            if g.id in seen:
                raise ValueError(f"GPU id '{g.id}' is used twice in this node")
            seen.add(g.id)
        return gpus


class Fabric(Strict):
    kind: Literal["ethernet", "infiniband", "roce", "thunderbolt"] = Field("ethernet", description="link technology between nodes")
    speed_gbps: float = Field(gt=0, le=10_000, description="per-node link speed in Gbit/s; at most 10,000")
    subnet: str = Field(description="rig subnet in CIDR form; cluster ports are opened only to it")
    latency_us: float | None = Field(None, gt=0, le=10_000_000,
                                     description="measured round-trip latency in microseconds, if known; at most 10 s")

    @field_validator("subnet")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise ValueError(f"'{v}' is not a subnet in CIDR form, e.g. 10.0.0.0/24") from None


# ---------------------------------------------------------------- what to serve


class SecretRef(Strict):
    """A reference to a secret; the secret itself never appears in the spec."""

    env: str | None = Field(None, pattern=ENV_NAME_PATTERN, description="name of an environment variable on the controller")
    file: AbsPath | None = Field(None, description="absolute path of a file holding the secret on the target host")
    vault: str | None = Field(None, pattern=VAULT_VAR_PATTERN, description="ansible-vault variable name holding the secret")

    @model_validator(mode="before")
    @classmethod
    def _no_inline(cls, data):
        if isinstance(data, str):
            raise ValueError("inline secrets are not allowed: write `auth: {env: NAME}`, `{file: PATH}` or `{vault: VAR}`")
        if isinstance(data, dict):
            for bad in ("value", "key", "token", "password", "api_key", "secret"):
                if bad in data:
                    raise ValueError(
                        f"inline secret under '{bad}' is not allowed: reference it with env, file or vault instead"
                    )
        return data

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [k for k in ("env", "file", "vault") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of env, file or vault")
        return self


class ModelArch(Strict):
    """Inline model architecture, for models not in the catalog."""

    # The upper bounds keep the per-layer placement and per-divisor checks finite; each is
    # an order of magnitude above the largest published model.
    name: Ident = Field(description="display name")
    architecture: str = Field("llama", pattern=ARCH_PATTERN, description="GGUF architecture name")
    params_b: float = Field(gt=0, le=10_000, description="total parameters in billions; at most 10,000 "
                            "(the largest published models have about 1,000)")
    active_params_b: float | None = Field(None, gt=0, le=10_000,
                                          description="active parameters per token (MoE), billions; at most 10,000")
    layers: int = Field(gt=0, le=4096, description="transformer blocks; at most 4096 "
                        "(no published model has more than ~200 blocks)")
    attention_heads: int = Field(gt=0, le=4096, description="query heads; at most 4096 "
                                 "(published models have at most 128)")
    kv_heads: int = Field(gt=0, le=4096, description="key/value heads (GQA); equal to attention_heads without GQA; "
                          "at most 4096")
    head_dim: int = Field(gt=0, le=65_536, description="dimension per head; at most 65,536 (published: 64-512)")
    hidden_size: int | None = Field(None, gt=0, le=1_048_576, description="model width; at most 1,048,576 "
                                    "(published: up to ~30,000)")
    vocab_size: int = Field(32000, gt=0, le=16_777_216, description="vocabulary size; at most 16,777,216 "
                            "(published: up to ~260,000)")
    max_context: int = Field(gt=0, le=1_073_741_824, description="trained context length in tokens; at most 2^30 "
                             "(published: up to 10M)")
    experts: int | None = Field(None, gt=0, le=65_536, description="number of experts (MoE); at most 65,536 "
                                "(published: up to 384)")
    head_dim_k: int | None = Field(None, gt=0, le=65_536, description="key size per KV head when it differs from "
                                   "head_dim (GGUF attention.key_length; MLA: DeepSeek's 576 in llama.cpp)")
    head_dim_v: int | None = Field(None, gt=0, le=65_536, description="value size per KV head when it differs from "
                                   "head_dim (GGUF attention.value_length; MLA: DeepSeek's 512 in llama.cpp)")
    sliding_window: int | None = Field(None, gt=0, le=1_073_741_824, description="sliding-window attention: tokens a "
                                       "windowed layer attends to (Gemma 2: 4096, Gemma 3: 1024)")
    sliding_window_pattern: int | None = Field(None, ge=1, le=4096, description="every Nth layer attends globally, the "
                                               "others use the window (Gemma 2: 2, Gemma 3: 6; 1 = every layer windowed)")


class Placement(Strict):
    node: str = Field(pattern=NAME_PATTERN, description="node name")
    gpus: list[GpuId] | None = Field(None, max_length=64, description="GPU ids on that node; omitted = all, [] = CPU only")


class Swarm(Strict):
    private: bool = Field(True, description="use a private swarm (public swarms leak prompts)")
    initial_peers: list[Annotated[str, Field(pattern=MULTIADDR_PATTERN)]] = Field(default_factory=list, max_length=256, description="multiaddrs of the private swarm's bootstrap peers")


class HfSource(Strict):
    """Files of one Hugging Face repository at a pinned commit."""

    repo: str = Field(pattern=HF_REPO_PATTERN, description="repository id, e.g. bartowski/Meta-Llama-3.1-8B-Instruct-GGUF")
    revision: str = Field(pattern=COMMIT_PATTERN, description="the commit to take (40 hex characters; "
                          "the Files tab's history shows it): a branch name would change under a running rig")
    files: list[Annotated[str, Field(pattern=REPO_FILE_PATTERN)]] | None = Field(
        None, min_length=1, max_length=4096,
        description="the files to take (all shards of a split GGUF); omitted: every file of the revision")


class ModelSource(Strict):
    """Where a deployment's weights come from when they are not copied from the controller."""

    hf: HfSource | None = Field(None, description="a Hugging Face repository, downloaded on the host")
    url: str | None = Field(None, pattern=URL_PATTERN, max_length=4096,
                            description="an http(s) URL of one model file, downloaded on the host (needs sha256)")
    sha256: str | None = Field(None, pattern=SHA256_PATTERN, description="sha256 of the file at url")
    path: AbsPath | None = Field(None, description="a model file or directory already on the host (e.g. a mounted share)")
    size_bytes: int | None = Field(None, ge=1, le=1 << 50, description="total bytes of the weights files (the sizes the "
                                   "repository's Files tab lists): sizes dynamic and mixed quantizations (\"UD\", most "
                                   "MoE GGUFs) as they are, not with the format's flat bits per weight")
    token: SecretRef | None = Field(None, description="Hugging Face access token (env, file or vault reference), "
                                    "for gated or private repositories; alone (no hf, url or path): the token "
                                    "vLLM or Petals use to download the model's repository themselves")

    @property
    def local(self) -> bool:
        """The weights are on the host before the start (downloaded by rigctl, or already there)."""
        return self.hf is not None or self.url is not None or self.path is not None

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("hf", "url", "path") if getattr(self, k) is not None]
        if len(given) > 1 or (not given and self.token is None):
            raise ValueError("give exactly one of hf, url or path (or only a token, for an engine that "
                             "downloads the model itself)")
        if self.url is not None:
            from urllib.parse import urlsplit

            parts = urlsplit(self.url)
            if parts.username or parts.password:
                raise ValueError("the url carries credentials (user:password@): they would reach logs; "
                                 "serve the file without them")
            name = parts.path.rsplit("/", 1)[-1]
            if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,254}", name):
                raise ValueError(f"the url path must end in a file name (letters, digits, '_', '.', '+', '=', '-'), "
                                 f"not '{name}': rigctl stores the file under that name")
            if self.sha256 is None:
                raise ValueError("a url source needs its sha256 (`sha256sum FILE`): the download is verified with it")
        elif self.sha256 is not None:
            raise ValueError("sha256 belongs to a url source (Hugging Face publishes its own checksums)")
        if self.size_bytes is not None and not given:
            raise ValueError("size_bytes is the size of the files rigctl takes: give it with hf, url or path")
        if self.token is not None and (self.url is not None or self.path is not None):
            raise ValueError("token is the Hugging Face access token: give it with an hf source, or alone")
        return self


class Deployment(Strict):
    name: Name = Field(description="deployment name, used for services and containers")
    model: Ident | ModelArch = Field(description="model catalog id/alias, or an inline architecture")
    format: Ident = Field(description="weights format / quantization id, e.g. Q4_K_M, exl2, awq, fp16")
    bits_per_weight: float | None = Field(None, gt=1, le=32, description="bits per weight (required for exl2/exl3)")
    model_file: FilePath | None = Field(None, description="path on the controller to the GGUF file or safetensors dir")
    source: ModelSource | None = Field(None, description="where the weights come from when not from model_file: "
                                       "a Hugging Face repository, a URL with its sha256, or a path on the host")
    context_tokens: int | None = Field(None, ge=256, le=10_485_760, description="context length per sequence")
    parallel_sequences: int = Field(1, ge=1, le=1024, description="concurrent sequences (llama.cpp -np, vLLM max_num_seqs)")
    kv_cache_type: Literal["f16", "bf16", "q8_0", "q4_0", "fp8", "auto"] = Field("auto", description="KV cache element type")
    stack: Stack = Field(description="inference stack")
    placement: list[Placement] = Field(min_length=1, description="where the model runs")
    tensor_split: list[Annotated[float, Field(ge=0, le=1_000_000)]] | None = Field(
        None, max_length=1024, description="llama.cpp --tensor-split proportions, one per GPU (each 0 to 1,000,000)")
    gpu_split_gb: list[Annotated[float, Field(ge=0, le=100_000)]] | None = Field(
        None, max_length=1024, description="TabbyAPI gpu_split in GB per GPU (each 0 to 100,000)")
    tensor_parallel: int | None = Field(None, ge=1, le=64, description="vLLM/TabbyAPI tensor-parallel size")
    pipeline_parallel: int | None = Field(None, ge=1, le=64, description="vLLM pipeline-parallel size")
    gpu_memory_utilization: float = Field(0.9, gt=0.05, le=1.0, description="vLLM fraction of each GPU's memory")
    kv_cache_type_k: Literal["f16", "bf16", "q8_0", "q4_0"] | None = Field(
        None, description="llama.cpp: K cache type when it differs from kv_cache_type (--cache-type-k), e.g. a "
        "K-only q8_0 cache with an f16 V cache")
    kv_cache_type_v: Literal["f16", "bf16", "q8_0", "q4_0"] | None = Field(
        None, description="llama.cpp: V cache type when it differs from kv_cache_type (--cache-type-v; a quantized "
        "V cache needs flash attention)")
    kv_offload: bool | None = Field(None, description="llama.cpp: false keeps the KV cache in system RAM "
                                    "(--no-kv-offload): GPUs hold only weights, attention runs on the CPU")
    split_mode: Literal["layer", "row"] | None = Field(
        None, description="llama.cpp across a node's GPUs: layer (whole layers per GPU, the default) or row "
        "(every matrix split by rows over the GPUs, --split-mode row)")
    flash_attention: bool | None = Field(None, description="enable flash attention (needed for quantized V cache)")
    port: int | None = Field(None, ge=1, le=65535, description="HTTP port (stack default when omitted)")
    bind: Host = Field("127.0.0.1", description="address the endpoint listens on (an IP address, localhost or a host name)")
    auth: SecretRef | None = Field(None, description="API key reference (env, file or vault)")
    swarm: Swarm | None = Field(None, description="Petals swarm settings")
    extra_args: list[Arg] = Field(default_factory=list, max_length=256,
                                  description="extra engine arguments, appended verbatim")
    image: str | None = Field(None, pattern=IMAGE_PATTERN, max_length=1024, description="container image for this deployment (overrides the pinned image of its stack)")

    @model_validator(mode="after")
    def _one_model_origin(self):
        if self.model_file is not None and self.source is not None and self.source.local:
            raise ValueError("give model_file (a controller file rigctl copies) or source, not both")
        if self.source is not None and self.source.local and self.stack in (Stack.ollama, Stack.exo):
            raise ValueError(f"{self.stack.value} fetches its models itself (its own library / the Hub): "
                             "source.hf, url and path are not wired to it yet; use model_file or drop source")
        llama = (Stack.llamacpp, Stack.llamacpp_rpc)
        for key in ("kv_cache_type_k", "kv_cache_type_v", "kv_offload", "split_mode"):
            if getattr(self, key) is not None and self.stack not in llama:
                raise ValueError(f"{key} is a llama.cpp option (llamacpp, llamacpp-rpc); {self.stack.value} "
                                 "has no such setting: drop it")
        if self.source is not None and not self.source.local and self.stack not in (Stack.vllm, Stack.petals):
            raise ValueError(f"a source with only a token is for engines that download the model themselves "
                             f"(vllm, petals); {self.stack.value} needs the weights on the host: add source.hf "
                             "with the repo, a pinned revision and the files")
        return self


class Images(Strict):
    source: Literal["registry", "offline"] = Field("registry", description="pull from a registry, or ship images from the controller")
    registry: str | None = Field(None, pattern=REGISTRY_PATTERN, max_length=512,
                                 description="registry/mirror prefix for pulls")
    archive_dir: FilePath = Field(".rigctl/images", description="offline: controller directory with `docker save` archives "
                             "(<repo>_<tag>.tar, relative to the spec); apply loads them on the hosts")


class Rig(Strict):
    version: Literal[1] = Field(description="spec format version; this rigctl reads version 1")
    name: Name = Field(description="rig name")
    description: str | None = Field(None, pattern=MULTILINE_TEXT_PATTERN, max_length=65_536, description="free text")
    catalog: list[FilePath] = Field(default_factory=list, max_length=256, description="extra catalog files (YAML), relative to the spec")
    gpu_models: list[InlineGpu] = Field(default_factory=list, max_length=256,
                                        description="GPUs not in the catalog, defined inline; nodes name them by id")
    profile: Literal["production", "lab"] = Field("production", description="lab = GPU-less test hosts; GPU roles are skipped visibly")
    fabric: Fabric | None = Field(None, description="network between nodes (required with more than one node)")
    nodes: list[Node] = Field(min_length=1, description="machines in the rig")
    serve: list[Deployment] = Field(default_factory=list, description="models to serve")
    images: Images = Field(default_factory=Images, description="where container images come from")
    deploy_mode: Literal["auto", "container"] = Field(
        "auto", description="auto: llama.cpp as native units, the other stacks in containers; container: every service in a container")

    @field_validator("nodes")
    @classmethod
    def _unique_nodes(cls, nodes: list[Node]):
        seen: set[str] = set()
        for n in nodes:
            if n.name in seen:
                raise ValueError(f"node name '{n.name}' is used twice")
            seen.add(n.name)
        return nodes

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)
