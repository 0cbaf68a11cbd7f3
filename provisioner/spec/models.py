"""The rig spec: what a user writes in rig.yaml.

Strict pydantic v2 models (unknown keys are errors), every field described,
units in field names. Catalog references (GPU, CPU, model, format ids) are plain
strings here; `provisioner.spec.resolve` ties them to catalog entries so that an
unknown id is reported at its position with a "did you mean".
"""

from __future__ import annotations

import ipaddress
from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SPEC_VERSION = 1

Name = Annotated[
    str,
    Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", description="lowercase letters, digits and dashes"),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    address: str = Field(description="IP address or DNS name rigctl connects to over SSH")
    ssh_user: str = Field("root", description="SSH user (become is used for root tasks)")
    ssh_port: int = Field(22, ge=1, le=65535, description="SSH port")


class Cpu(Strict):
    model: str | None = Field(None, description="CPU catalog id, e.g. ryzen-9-7950x (see `rigctl catalog cpus`)")
    pcie_lanes: int | None = Field(None, ge=0, le=256, description="CPU PCIe lanes for slots and M.2 (overrides the catalog)")
    pcie_gen: int | None = Field(None, ge=1, le=6, description="CPU PCIe generation (overrides the catalog)")
    power_w: int | None = Field(None, ge=1, le=2000, description="sustained CPU power (PL2/PPT) in watts (overrides the catalog)")

    @model_validator(mode="after")
    def _model_or_numbers(self):
        if self.model is None and (self.pcie_lanes is None or self.power_w is None):
            raise ValueError("give a catalog `model`, or both `pcie_lanes` and `power_w`")
        return self


class PcieSlot(Strict):
    name: str = Field(description="slot label as printed on the board, e.g. PCIEX16_1")
    position: int = Field(ge=1, le=20, description="expansion-slot position counted from the CPU (1 = topmost)")
    physical_lanes: Literal[1, 4, 8, 16] = Field(16, description="physical slot size (x16 slot = 16)")
    electrical_lanes: Literal[1, 2, 4, 8, 16] = Field(16, description="lanes actually wired to the slot")
    pcie_gen: int = Field(4, ge=1, le=6, description="PCIe generation of the slot")
    source: Literal["cpu", "chipset"] = Field("cpu", description="whether the lanes come from the CPU or the chipset")
    shared_with_m2: list[str] = Field(default_factory=list, description="M.2 slots that share lanes with this slot")
    lanes_when_shared: Literal[0, 1, 2, 4, 8] = Field(8, description="electrical lanes left when a shared M.2 slot is used (0 = slot disabled)")


class M2Slot(Strict):
    name: str = Field(description="M.2 slot label, e.g. M2_1")
    lanes: Literal[1, 2, 4] = Field(4, description="PCIe lanes of the M.2 slot")
    pcie_gen: int = Field(4, ge=1, le=6, description="PCIe generation of the M.2 slot")
    source: Literal["cpu", "chipset"] = Field("cpu", description="CPU or chipset lanes")


class Board(Strict):
    model: str | None = Field(None, description="board model, informational")
    slots: list[PcieSlot] = Field(default_factory=list, description="PCIe expansion slots")
    m2_slots: list[M2Slot] = Field(default_factory=list, description="M.2 slots")


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
    id: str = Field(description="name of this GPU inside the node, e.g. gpu0")
    model: str = Field(description="GPU catalog id, e.g. rtx-3090 (see `rigctl catalog gpus`)")
    slot: str | None = Field(None, description="board slot name the card sits in")
    power_limit_w: int | None = Field(None, ge=50, le=1500, description="power cap to apply with nvidia-smi -pl, in watts")
    uuid: str | None = Field(None, description="GPU UUID from `nvidia-smi -L` (pins the card for CUDA_VISIBLE_DEVICES)")
    display: bool = Field(False, description="a monitor/desktop runs on this GPU (costs 0.3-1 GiB)")


class NvlinkBridge(Strict):
    gpus: list[str] = Field(min_length=2, description="GPU ids joined by the bridge")
    bridge_slots: int | None = Field(None, ge=1, le=6, description="bridge spacing in slots (e.g. 3 or 4); not needed for SXM")


class Storage(Strict):
    name: str | None = Field(None, description="device name, informational")
    type: Literal["nvme", "sata-ssd", "hdd", "network", "unified"] = Field(description="storage technology")
    capacity_gb: float = Field(gt=0, description="capacity in GB (decimal, as sold)")
    mount: str = Field("/", description="mount point")
    m2_slot: str | None = Field(None, description="M.2 slot the drive sits in (for lane sharing)")
    models_dir: bool = Field(False, description="model files are stored here")


class Nic(Strict):
    name: str = Field(description="interface name on the host, e.g. enp5s0")
    speed_gbps: float = Field(gt=0, description="link speed in Gbit/s")
    address: str | None = Field(None, description="address on the rig fabric, if different from the SSH address")


class Node(Strict):
    name: Name = Field(description="node name, used as the inventory hostname")
    connection: Connection | None = Field(None, description="how to reach the node (inventories may override)")
    os: Literal["debian-12", "ubuntu-22.04", "ubuntu-24.04", "macos"] = Field("debian-12", description="operating system")
    cpu: Cpu | None = Field(None, description="CPU (catalog model or lanes and power)")
    memory_gib: float | None = Field(None, gt=0, description="system RAM in GiB")
    board: Board | None = Field(None, description="motherboard slots and lanes")
    psu: Psu | None = Field(None, description="power supply")
    circuit: Circuit | None = Field(None, description="wall circuit feeding this node")
    platform_power_w: int = Field(75, ge=0, le=2000, description="board, drives, fans and RAM power in watts")
    gpus: list[Gpu] = Field(default_factory=list, description="GPUs in this node")
    nvlink: list[NvlinkBridge] = Field(default_factory=list, description="NVLink bridges between GPUs")
    storage: list[Storage] = Field(default_factory=list, description="disks")
    nics: list[Nic] = Field(default_factory=list, description="network interfaces")

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
    speed_gbps: float = Field(gt=0, description="per-node link speed in Gbit/s")
    subnet: str = Field(description="rig subnet in CIDR form; cluster ports are opened only to it")
    latency_us: float | None = Field(None, gt=0, description="measured round-trip latency in microseconds, if known")

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

    env: str | None = Field(None, description="name of an environment variable on the controller")
    file: str | None = Field(None, description="path of a file holding the secret on the target host")
    vault: str | None = Field(None, description="ansible-vault variable name holding the secret")

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

    name: str = Field(description="display name")
    architecture: str = Field("llama", description="GGUF architecture name")
    params_b: float = Field(gt=0, description="total parameters in billions")
    active_params_b: float | None = Field(None, gt=0, description="active parameters per token (MoE), billions")
    layers: int = Field(gt=0, description="transformer blocks")
    attention_heads: int = Field(gt=0, description="query heads")
    kv_heads: int = Field(gt=0, description="key/value heads (GQA); equal to attention_heads without GQA")
    head_dim: int = Field(gt=0, description="dimension per head")
    hidden_size: int | None = Field(None, gt=0, description="model width")
    vocab_size: int = Field(32000, gt=0, description="vocabulary size")
    max_context: int = Field(gt=0, description="trained context length in tokens")
    experts: int | None = Field(None, gt=0, description="number of experts (MoE)")


class Placement(Strict):
    node: str = Field(description="node name")
    gpus: list[str] | None = Field(None, description="GPU ids on that node; omitted = all, [] = CPU only")


class Swarm(Strict):
    private: bool = Field(True, description="use a private swarm (public swarms leak prompts)")
    initial_peers: list[str] = Field(default_factory=list, description="multiaddrs of the private swarm's bootstrap peers")


class Deployment(Strict):
    name: Name = Field(description="deployment name, used for services and containers")
    model: str | ModelArch = Field(description="model catalog id/alias, or an inline architecture")
    format: str = Field(description="weights format / quantization id, e.g. Q4_K_M, exl2, awq, fp16")
    bits_per_weight: float | None = Field(None, gt=1, le=32, description="bits per weight (required for exl2/exl3)")
    model_file: str | None = Field(None, description="path on the controller to the GGUF file or safetensors dir")
    context_tokens: int | None = Field(None, ge=256, le=10_485_760, description="context length per sequence")
    parallel_sequences: int = Field(1, ge=1, le=1024, description="concurrent sequences (llama.cpp -np, vLLM max_num_seqs)")
    kv_cache_type: Literal["f16", "bf16", "q8_0", "q4_0", "fp8", "auto"] = Field("auto", description="KV cache element type")
    stack: Stack = Field(description="inference stack")
    placement: list[Placement] = Field(min_length=1, description="where the model runs")
    tensor_split: list[float] | None = Field(None, description="llama.cpp --tensor-split proportions, one per GPU")
    gpu_split_gb: list[float] | None = Field(None, description="TabbyAPI gpu_split in GB per GPU")
    tensor_parallel: int | None = Field(None, ge=1, le=64, description="vLLM/TabbyAPI tensor-parallel size")
    pipeline_parallel: int | None = Field(None, ge=1, le=64, description="vLLM pipeline-parallel size")
    gpu_memory_utilization: float = Field(0.9, gt=0.05, le=1.0, description="vLLM fraction of each GPU's memory")
    flash_attention: bool | None = Field(None, description="enable flash attention (needed for quantized V cache)")
    port: int | None = Field(None, ge=1, le=65535, description="HTTP port (stack default when omitted)")
    bind: str = Field("127.0.0.1", description="address the endpoint listens on")
    auth: SecretRef | None = Field(None, description="API key reference (env, file or vault)")
    swarm: Swarm | None = Field(None, description="Petals swarm settings")
    extra_args: list[str] = Field(default_factory=list, description="extra engine arguments, appended verbatim")
    image: str | None = Field(None, description="container image for this deployment (overrides the pinned image of its stack)")


class Images(Strict):
    source: Literal["registry", "offline"] = Field("registry", description="pull from a registry, or ship images from the controller")
    registry: str | None = Field(None, description="registry/mirror prefix for pulls")
    archive_dir: str = Field(".rigctl/images", description="offline: controller directory with `docker save` archives "
                             "(<repo>_<tag>.tar, relative to the spec); apply loads them on the hosts")


class Rig(Strict):
    version: Literal[1] = Field(description="spec format version; this rigctl reads version 1")
    name: Name = Field(description="rig name")
    description: str | None = Field(None, description="free text")
    catalog: list[str] = Field(default_factory=list, description="extra catalog files (YAML), relative to the spec")
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
