"""A llama.cpp CPU container image for the lab, built with no registry at all.

The base is the lab's own Debian rootfs (``lab.sh base``), ``docker import``ed; a
Dockerfile ``FROM`` it copies the cached llama.cpp CPU build (``ensure_llamacpp``) to
``/app``, where the official images keep their binaries. A private dockerd on this
machine does the work (``--bridge=none --iptables=false``: it touches no network
setting here) and stops afterwards; the result is a ``docker save`` archive in
``$LAB_CACHE/images``, which ``images.source: offline`` rigs load on their hosts.

``ensure_lab_image()`` builds once and then returns the cached archive at once;
``python -m provisioner.lab.image`` does the same and prints the archive's path.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from ..plan.images import archive_name
from .llamacpp import (
    BINARIES,
    LLAMA_CPP_PYTHON_VERSION,
    default_cache_dir,
    ensure_llamacpp,
)

IMAGE = f"rigctl/llama.cpp-cpu:{LLAMA_CPP_PYTHON_VERSION}-lab"
BASE_REPO = "rigctl/lab-base"
# not needed in a container: package lists and caches, docs, python (only Ansible uses it)
ROOTFS_EXCLUDES = ("./var/lib/apt/lists/*", "./var/cache/apt/*", "./usr/share/doc/*", "./usr/share/man/*",
                   "./usr/lib/python3*", "./usr/share/python3*", "./.lab-ready")
DOCKERFILE = f"""\
FROM {BASE_REPO}:{{tag}}
COPY {" ".join(BINARIES)} /app/
ENV PATH=/app:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LLAMA_ARG_HOST=0.0.0.0
WORKDIR /app
ENTRYPOINT ["/app/llama-server"]
"""
DOCKERD_WAIT_S = 30


class LabImageError(RuntimeError):
    """The lab image could not be built (one-line reason)."""


def archive_path(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / "images" / archive_name(IMAGE)


def _log(msg: str) -> None:
    print(f"[lab-image {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_lab_image(cache_dir: str | os.PathLike | None = None, log=_log) -> Path:
    """Path of the image's `docker save` archive; builds it on first use (about a minute)."""
    from ..images import read_archive

    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    out = archive_path(cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now
        if out.is_file() and IMAGE in read_archive(out).tags:
            return out
        t0 = time.monotonic()
        bin_dir = ensure_llamacpp(cache)
        rootfs = _lab_rootfs(cache)
        with tempfile.TemporaryDirectory(prefix="rigctl-image-", dir=cache) as tmp:
            with dockerd(Path(tmp), log) as client:
                tag = f"{LLAMA_CPP_PYTHON_VERSION}-{int(rootfs.stat().st_mtime)}"
                log(f"docker import of the lab rootfs as {BASE_REPO}:{tag}")
                base_tar = Path(tmp) / "rootfs.tar"
                subprocess.run(["tar", "-C", str(rootfs), *(f"--exclude={x}" for x in ROOTFS_EXCLUDES),
                                "-cf", str(base_tar), "."], check=True)
                client.api.import_image_from_file(str(base_tar), repository=BASE_REPO, tag=tag)
                base_tar.unlink()
                context = Path(tmp) / "context"
                context.mkdir()
                for name in BINARIES:
                    shutil.copy2(bin_dir / name, context / name)
                (context / "Dockerfile").write_text(DOCKERFILE.format(tag=tag))
                log(f"docker build {IMAGE}")
                image, _ = client.images.build(path=str(context), tag=IMAGE, rm=True, pull=False)
                partial = out.with_suffix(".tar.part")
                with open(partial, "wb") as f:
                    f.writelines(image.save(named=IMAGE))
                os.replace(partial, out)
        log(f"{IMAGE} saved to {out} ({out.stat().st_size / 2**20:.0f} MiB) in {time.monotonic() - t0:.0f} s")
        return out


def _lab_rootfs(cache: Path) -> Path:
    rootfs = cache / "rootfs"
    if not (rootfs / "usr" / "sbin" / "sshd").exists():
        from . import lab_script

        subprocess.run(["bash", str(lab_script()), "base"], check=True,
                       env=dict(os.environ, LAB_CACHE=str(cache)))
    return rootfs


def _ensure_dockerd() -> str:
    """dockerd on this machine: Debian's docker.io, installed without starting its service."""
    found = shutil.which("dockerd")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise LabImageError("dockerd is not installed (apt-get install docker.io, as root)")
    prc = Path("/usr/sbin/policy-rc.d")
    ours = not prc.exists()
    if ours:  # the package's init script must not start a dockerd with its default networking
        prc.write_text("#!/bin/sh\nexit 101\n")
        prc.chmod(0o755)
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker.io"]
        r = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if r.returncode != 0:  # an old package list: update once and try again
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
            r = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise LabImageError(f"apt-get install docker.io failed: {r.stderr.strip()[-300:]}")
    finally:
        if ours:
            prc.unlink()
    return shutil.which("dockerd") or "/usr/sbin/dockerd"


@contextmanager
def dockerd(workdir: Path, log=_log):
    """A private dockerd for the build, its Docker SDK client, stopped (and its data removed) after."""
    import docker

    binary = _ensure_dockerd()
    run = Path(tempfile.mkdtemp(prefix="rigctl-dockerd-", dir="/run" if os.access("/run", os.W_OK) else None))
    (workdir / "daemon.json").write_text("{}\n")  # not the machine's /etc/docker/daemon.json
    sock = run / "docker.sock"
    argv = [binary, "--config-file", str(workdir / "daemon.json"), "--data-root", str(workdir / "data"),
            "--exec-root", str(run / "exec"), "--pidfile", str(run / "dockerd.pid"), "-H", f"unix://{sock}",
            "--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false"]
    logf = open(workdir / "dockerd.log", "w")
    proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    client = None
    try:
        deadline = time.monotonic() + DOCKERD_WAIT_S
        while True:
            if proc.poll() is not None:
                raise LabImageError(f"dockerd exited ({proc.returncode}): "
                                    f"{(workdir / 'dockerd.log').read_text()[-400:].strip()}")
            if sock.exists():
                try:
                    client = docker.DockerClient(base_url=f"unix://{sock}", timeout=600)
                    client.ping()
                    break
                except Exception:  # not listening yet
                    client = None
            if time.monotonic() > deadline:
                raise LabImageError(f"dockerd did not answer on {sock} within {DOCKERD_WAIT_S} s")
            time.sleep(0.2)
        log(f"private dockerd {client.version().get('Version')} on {sock}")
        yield client
    finally:
        if client is not None:
            client.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logf.close()
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(workdir / "data", ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    try:
        print(ensure_lab_image())
    except (LabImageError, subprocess.CalledProcessError) as exc:
        print(f"lab image: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
