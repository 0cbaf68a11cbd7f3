"""Helpers shared by the per-stack planners."""

from __future__ import annotations

import posixpath

from ..spec.models import Deployment, Node

MODELS_DIR = "/var/lib/rigctl/models"
SECRETS_DIR = "/etc/rigctl/secrets"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


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
    if dep.model_file:
        return posixpath.join(MODELS_DIR, posixpath.basename(dep.model_file.rstrip("/")))
    return posixpath.join(MODELS_DIR, f"{dep.name}{ext}")


def secret_file(dep: Deployment) -> str:
    return posixpath.join(SECRETS_DIR, f"{dep.name}.key")


def port_scope(bind: str) -> str:
    return "loopback" if bind in LOOPBACK else "any"


def fmt_num(x: float) -> str:
    """Compact number for flags: 3 -> '3', 0.375 -> '0.375'."""
    return f"{x:.3f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))
