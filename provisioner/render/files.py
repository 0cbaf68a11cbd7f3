"""Rendered files and their atomic, reporting write."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RenderedFile:
    path: str  # relative to the output directory, '/'-separated
    content: str
    mode: int = 0o644


def write(files: list[RenderedFile], out_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """Write files under out_dir atomically; report (path, 'created'|'unchanged'|'changed') each."""
    out = Path(out_dir)
    report = []
    for f in files:
        target = out / f.path
        data = f.content.encode("utf-8")
        if target.is_file() and not target.is_symlink():
            if target.read_bytes() == data and (target.stat().st_mode & 0o777) == f.mode:
                report.append((f.path, "unchanged"))
                continue
            status = "changed"
        else:
            status = "created"
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".rigctl-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, f.mode)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
        report.append((f.path, status))
    return report


def stale(files: list[RenderedFile], out_dir: str | os.PathLike, managed: tuple[str, ...]) -> list[str]:
    """Files under the managed subdirectories of out_dir that this render no longer produces."""
    out = Path(out_dir)
    want = {f.path for f in files}
    found = []
    for sub in managed:
        base = out / sub
        if base.is_dir():
            found += [p.relative_to(out).as_posix() for p in base.rglob("*") if p.is_file()]
    return sorted(p for p in found if p not in want)
