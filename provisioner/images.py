"""Container images on the controller, for rigs with ``images.source: offline``.

Offline hosts reach no registry: every image a container service needs must be a
``docker save`` archive in ``images.archive_dir`` (named by ``plan.images.archive_name``),
which the roles copy to each host that lacks that image id and ``docker load`` there.
``preflight`` runs before apply touches any host: an image that is neither archived
nor in this machine's Docker engine is an error naming it. ``export_images`` saves
the ones found only in the engine into the archive directory.
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .diagnostics import Diagnostic, Severity
from .plan.model import Plan

RULE = "image-offline"


@dataclass(frozen=True)
class ArchiveInfo:
    tags: tuple[str, ...]
    image_ids: tuple[str, ...]  # sha256:<config digest>, what `docker image inspect` calls Id


def read_archive(path: str | os.PathLike) -> ArchiveInfo:
    """Tags and image ids in a `docker save` archive (legacy or OCI layout). Raises OSError/ValueError."""
    with tarfile.open(path) as tar:
        member = tar.extractfile("manifest.json")
        if member is None:
            raise ValueError(f"{path}: no manifest.json (not a docker save archive)")
        manifest = json.load(member)
    tags, ids = [], []
    for entry in manifest:
        tags += entry.get("RepoTags") or []
        config = Path(entry["Config"]).name  # <hex>.json (legacy) or blobs/sha256/<hex>
        ids.append("sha256:" + config.removesuffix(".json"))
    return ArchiveInfo(tuple(tags), tuple(ids))


def offline_images(plan: Plan, base_dir: str | os.PathLike = ".") -> dict[str, tuple[Path, str]]:
    """image -> (archive path, first deployment using it), for the container services of an offline rig."""
    out: dict[str, tuple[Path, str]] = {}
    for svc in (s for d in plan.deployments for s in d.services):
        if svc.deploy_mode == "container" and svc.image and svc.image_archive:
            out.setdefault(svc.image, (Path(base_dir) / svc.image_archive, svc.deployment))
    return out


def _spec_path(rig, deployment: str) -> tuple:
    """Where the spec chose the image: serve[i].image, else the deployment's stack."""
    for i, dep in enumerate(rig.serve):
        if dep.name == deployment:
            return ("serve", i, "image" if dep.image else "stack")
    return ("images",)


def _tag(image: str) -> str:
    """The tag `docker save` records: the reference without its digest."""
    return image.split("@", 1)[0]


def _local_engine():
    """This machine's Docker engine (DOCKER_HOST or the default socket), or None."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
        return client
    except Exception:  # no engine here is normal on a controller
        return None


def preflight(plan: Plan, rig, base_dir: str | os.PathLike = ".", engine=None) -> list[Diagnostic]:
    """Check that every image of an offline rig is available to ship; errors name the image.

    ``base_dir`` is the spec's directory (archive_dir is relative to it). Diagnostics carry
    spec paths (``serve[i].image``); ``CheckResult.load.locate`` turns them into file:line.
    """
    if rig.images.source != "offline":
        return []
    out: list[Diagnostic] = []
    needed = offline_images(plan, base_dir)
    engine = engine if engine is not None else (_local_engine() if needed else None)
    for image, (archive, deployment) in sorted(needed.items()):
        where = _spec_path(rig, deployment)
        try:
            if _tag(image) in read_archive(archive).tags:
                continue
            found = f"{archive} holds other images"
        except FileNotFoundError:
            found = f"no archive {archive}"
        except (OSError, ValueError, KeyError, tarfile.TarError) as exc:
            found = f"{archive} is not a docker save archive ({exc})"
        if engine is not None and _engine_has(engine, image):
            out.append(Diagnostic(f"{RULE}[export]", Severity.info,
                                  f"image {image}: {found}; apply saves it from this machine's Docker engine",
                                  path=where, data={"image": image, "archive": str(archive)}))
            continue
        out.append(Diagnostic(
            f"{RULE}[missing]", Severity.error,
            f"image {image} is needed (images.source: offline) but {found} and no local Docker engine has it",
            path=where,
            hint=f"build or pull it on a machine with a registry, then `docker save {_tag(image)} -o {archive}`",
            data={"image": image, "archive": str(archive)}))
    return out


def _engine_has(engine, image: str) -> bool:
    try:
        engine.images.get(image)
        return True
    except Exception:  # docker.errors.ImageNotFound, or the engine went away
        return False


def export_images(plan: Plan, rig, base_dir: str | os.PathLike = ".", engine=None) -> list[Path]:
    """Save images found only in the local engine into their archives; returns the archives written."""
    written = []
    for d in preflight(plan, rig, base_dir, engine):
        if d.rule != f"{RULE}[export]":
            continue
        engine = engine or _local_engine()
        archive = Path(d.data["archive"])
        archive.parent.mkdir(parents=True, exist_ok=True)
        partial = archive.with_name(archive.name + ".part")
        with open(partial, "wb") as f:
            f.writelines(engine.images.get(d.data["image"]).save(named=_tag(d.data["image"])))
        os.replace(partial, archive)
        written.append(archive)
    return written
