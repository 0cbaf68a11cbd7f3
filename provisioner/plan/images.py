"""Native or container, and which image: per service, from the rig and data/images.yaml.

llama.cpp runs as a native unit unless the rig says ``deploy_mode: container``; the
other stacks only exist as containers (playbooks/README.md says why). On a macOS node
llama.cpp and exo run natively (launchd): Docker on macOS runs a Linux VM that cannot reach
Metal, so a container there would run on CPU, and the rule macos-native refuses
``deploy_mode: container`` and the container-only stacks on macOS nodes.
"""

from __future__ import annotations

import posixpath
import re
from functools import lru_cache
from importlib import resources

from ..yamlio import safe_load
from .model import Service

NATIVE_STACKS = frozenset({"llamacpp", "llamacpp-rpc"})
MACOS_NATIVE_STACKS = frozenset({"llamacpp", "llamacpp-rpc", "exo"})


@lru_cache(maxsize=1)
def catalog() -> dict:
    """stack -> {image, bin_dir?, health, interval_s, start_period_s, volumes}."""
    text = (resources.files("provisioner.plan") / "data" / "images.yaml").read_text(encoding="utf-8")
    return safe_load(text)


def with_registry(image: str, registry: str | None) -> str:
    """A mirror replaces the image's own registry host (docker.io, ghcr.io, ...)."""
    if not registry:
        return image
    first, _, rest = image.partition("/")
    has_host = ("." in first or ":" in first or first == "localhost") and rest
    return registry.rstrip("/") + "/" + (rest if has_host else image)


def archive_name(image: str) -> str:
    """File name of an image's `docker save` archive: ghcr.io/a/b:t@sha256:.. -> ghcr.io_a_b_t.tar"""
    ref = image.split("@", 1)[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", ref) + ".tar"


def assign(rig, dep, services: list[Service]) -> None:
    """Set deploy_mode, image, volumes and (offline) image_archive on a deployment's services."""
    macos = {n.name for n in rig.nodes if n.os == "macos"}
    for svc in services:
        native = MACOS_NATIVE_STACKS if svc.node in macos else NATIVE_STACKS
        if svc.stack in native and rig.deploy_mode != "container":
            continue
        entry = catalog().get(svc.stack, {})
        svc.deploy_mode = "container"
        svc.image = dep.image or with_registry(entry.get("image") or f"rigctl/{svc.stack}:local", rig.images.registry)
        svc.volumes = {**(entry.get("volumes") or {}), **svc.volumes}  # the plan's own (Ray session) win
        if rig.images.source == "offline":
            # a loaded archive has no registry digest: hosts know the image by its tag (and id)
            svc.image = svc.image.split("@", 1)[0]
            svc.image_archive = posixpath.join(rig.images.archive_dir, archive_name(svc.image))
