"""Helpers shared by the per-stack planners."""

from __future__ import annotations

import posixpath

from ..spec.models import Deployment, Node

MODELS_DIR = "/var/lib/rigctl/models"
SECRETS_DIR = "/etc/rigctl/secrets"


def node_address(node: Node, addresses: dict[str, str] | None = None) -> str:
    """Address other rig nodes use to reach ``node``: inventory override, fabric NIC, then SSH address."""
    if addresses and node.name in addresses:
        return addresses[node.name]
    for nic in node.nics:
        if nic.address:
            return nic.address
    if node.connection:
        return node.connection.address
    return node.name


def model_path(dep: Deployment, ext: str = ".gguf") -> str:
    """Where the engine finds the weights on the host: ``ext`` ".gguf" asks for one file
    (llama.cpp), "" for a checkpoint directory (vLLM, TabbyAPI)."""
    if dep.source is not None and dep.source.local:
        from .sources import source_model_path

        return source_model_path(dep, ext)
    if dep.model_file:
        return posixpath.join(MODELS_DIR, posixpath.basename(dep.model_file.rstrip("/")))
    return posixpath.join(MODELS_DIR, f"{dep.name}{ext}")


def secret_file(dep: Deployment) -> str:
    return posixpath.join(SECRETS_DIR, f"{dep.name}.key")


def fmt_num(x: float) -> str:
    """Compact number for flags: 3 -> '3', 0.375 -> '0.375'."""
    return f"{x:.3f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def gpu_env(placed) -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES for NVIDIA GPUs: by UUID when every placed GPU has one, else by index.
    Empty for no GPUs or non-NVIDIA devices (Apple Metal, ROCm), where the variable means nothing.

    CUDA_DEVICE_ORDER=PCI_BUS_ID always: the indices are nvidia-smi's (PCI bus order), while the
    CUDA runtime numbers devices fastest first unless told otherwise, so on a mixed rig index 0
    can be another card (https://docs.nvidia.com/cuda/cuda-c-programming-guide/index.html#env-vars)."""
    if not placed or any(pg.entry is None or pg.entry.vendor != "nvidia" for pg in placed):
        return {}
    if all(pg.gpu.uuid for pg in placed):
        return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(pg.gpu.uuid for pg in placed)}
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": ",".join(str(pg.gpu_index) for pg in placed)}
