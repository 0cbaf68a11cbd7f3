"""Install the Ansible collections rigctl's roles use into this venv's site-packages.

They come from the `ansible` community package's wheel on PyPI (pinned below, matched to
ansible-core 2.19), extracted one collection at a time: ansible-core finds
`site-packages/ansible_collections/` on its own. Does nothing when they are present.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

ANSIBLE_WHEEL = "ansible==12.3.0"  # community.docker 4.8.5
COLLECTIONS = ("community/docker",)


def main() -> int:
    site = Path(sysconfig.get_paths()["purelib"])
    missing = [c for c in COLLECTIONS if not (site / "ansible_collections" / c / "MANIFEST.json").is_file()]
    if not missing:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", ANSIBLE_WHEEL, "-d", tmp],
                       check=True)
        (wheel,) = Path(tmp).glob("ansible-*.whl")
        with zipfile.ZipFile(wheel) as z:
            for c in missing:
                prefix = f"ansible_collections/{c}/"
                z.extractall(site, [n for n in z.namelist() if n.startswith(prefix)])
                print(f"installed {c.replace('/', '.')} from {wheel.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
