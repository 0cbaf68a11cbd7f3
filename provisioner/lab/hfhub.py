"""A bundle of huggingface_hub for lab hosts, which reach no PyPI.

``ensure_hf_hub_bundle()`` runs the controller's pip once: ``pip install --target`` for the
hosts' Python (Debian bookworm: CPython 3.11, x86_64 manylinux wheels only), then packs the
directory as a tarball under ``$LAB_CACHE/wheels``. The base role unpacks it on a host when
``rigctl_hf_hub_bundle`` points at it (playbooks/roles/base/tasks/model_source.yml); a host
with PyPI access gets the same version from PyPI instead. The version must be the role's
``rigctl_hf_hub_version``.
"""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import yaml

ROLE_DEFAULTS = Path(__file__).resolve().parents[2] / "playbooks" / "roles" / "base" / "defaults" / "main.yml"
HOST_PYTHON = "3.11"  # python3 of Debian bookworm, the lab's suite


class HfHubBundleError(RuntimeError):
    """pip could not make the bundle (no registry, no wheel for the hosts' platform)."""


def hub_version() -> str:
    """The huggingface_hub version the base role installs (its defaults are the one place)."""
    return str(yaml.safe_load(ROLE_DEFAULTS.read_text())["rigctl_hf_hub_version"])


def ensure_hf_hub_bundle(cache: Path | None = None) -> Path:
    cache = Path(cache or os.environ.get("LAB_CACHE", "/var/tmp/rigctl-lab-cache")) / "wheels"
    cache.mkdir(parents=True, exist_ok=True)
    version = hub_version()
    machine = platform.machine() or "x86_64"
    out = cache / f"huggingface_hub-{version}-cp{HOST_PYTHON.replace('.', '')}-{machine}.tar.gz"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.is_file():
            return out
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            target = Path(tmp) / "target"
            cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                   "--target", str(target), "--only-binary=:all:", "--implementation", "cp",
                   "--python-version", HOST_PYTHON, "--platform", f"manylinux2014_{machine}",
                   "--platform", f"manylinux_2_17_{machine}", "--platform", f"manylinux_2_28_{machine}",
                   f"huggingface_hub=={version}"]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                raise HfHubBundleError(f"pip install --target huggingface_hub=={version} failed: "
                                       f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
            shutil.rmtree(target / "bin", ignore_errors=True)  # console scripts name this machine's python
            part = out.with_suffix(".part")
            with tarfile.open(part, "w:gz") as tar:
                for p in sorted(target.iterdir()):
                    tar.add(p, arcname=p.name)
            part.rename(out)
    return out


if __name__ == "__main__":
    print(ensure_hf_hub_bundle())
