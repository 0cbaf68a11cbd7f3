"""Where the static Ansible content (playbooks/) and render templates (templates/) live.

In a checkout they sit next to the package (``../playbooks``); an installed package
carries them as package data through the ``provisioner/playbooks`` and
``provisioner/templates`` symlinks, which setuptools resolves into real files.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent
KNOWN = ("playbooks", "templates")


def package_dir(name: str) -> Path:
    """Path of a shipped resource directory (``playbooks`` or ``templates``)."""
    if name not in KNOWN:
        raise ValueError(f"unknown resource directory {name!r}; known: {', '.join(KNOWN)}")
    for candidate in (_PKG / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"rigctl's {name}/ directory is missing from {_PKG} (broken install?)")
