"""Rendered files and the write that owns its output directory.

``write`` puts a rendered project into ``-o DIR`` so that it can never destroy a user's
files and never leaves a half-written tree:

- it writes only into a directory that does not exist yet, an empty one, or one that
  holds its marker (``.rigctl-render``, JSON: rig, rigctl version, sha256 of every file it
  wrote) for the same rig; anything else is refused with ``OutputDirError``;
- the whole new tree is built in a sibling staging directory and swapped in at the end
  (``renameat2(RENAME_EXCHANGE)`` where Linux has it: the path is never missing), so an
  interruption leaves the old tree or the new one, never a mix; the report (created /
  changed / unchanged) is computed against the old tree before the swap;
- files in DIR that rigctl did not write are kept (hard-linked into the new tree) and
  reported; ``prune`` deletes only files the marker lists whose content is still what
  rigctl wrote; symlinks are never followed: one where rigctl would write is refused,
  one over rigctl's earlier files is kept with a warning;
- a lock beside DIR (``.<name>.rigctl-lock``: DIR itself is renamed by the swap)
  makes a second concurrent render fail fast with ``OutputLocked``.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

MARKER = ".rigctl-render"
MARKER_FORMAT = 1
STATE_DIR = ".rigctl"  # apply's state (plan/state.py) may live in a render dir: rigctl's, kept as is
_MARKER_MAX_BYTES = 64 << 20  # a 10,000-node fleet lists ~20,000 files (~2 MB)


@dataclass(frozen=True)
class RenderedFile:
    path: str  # relative to the output directory, '/'-separated
    content: str
    mode: int = 0o644


class OutputDirError(Exception):
    """The output directory cannot be written without risking files rigctl does not own."""


class OutputLocked(Exception):
    """Another rigctl render is writing the same output directory."""


@dataclass
class WriteResult:
    files: list[tuple[str, str]]  # (path, 'created'|'changed'|'unchanged') per rendered file
    stale: list[str] = field(default_factory=list)    # rigctl's earlier files not rendered now, kept
    deleted: list[str] = field(default_factory=list)  # the same, deleted by prune
    edited: list[str] = field(default_factory=list)   # stale but edited or replaced since: prune keeps them
    foreign: list[str] = field(default_factory=list)  # not written by rigctl, kept ('dir/' for a whole dir)
    warnings: list[str] = field(default_factory=list)


def write(files: list[RenderedFile], out_dir: str | os.PathLike, *, rig: str, prune: bool = False) -> WriteResult:
    """Write the rendered project into out_dir (see the module docstring); report per file."""
    if not str(out_dir).strip():
        raise OutputDirError("the output directory is empty: pass -o DIR")
    out = Path(os.path.realpath(out_dir))  # a symlink named by -o itself is the user's choice
    if out.parent == out:
        raise OutputDirError(f"{out}: cannot render into the root directory")
    want = {f.path: f for f in files}
    for p in want:
        parts = p.split("/")
        if p.startswith("/") or any(s in ("", ".", "..") for s in parts) or p == MARKER:
            raise ValueError(f"rendered path {p!r} is not a plain relative path")  # a bug, not user input
    out.parent.mkdir(parents=True, exist_ok=True)
    with _Lock(out.parent / f".{out.name}.rigctl-lock", out):
        staging, backup = out.parent / f".{out.name}.rigctl-new", out.parent / f".{out.name}.rigctl-old"
        _recover(out, staging, backup)
        old = _Tree.scan(out)
        marker = _read_marker(out, old, rig)
        res, carry, link_same = _plan(want, old, marker, prune)
        _build(staging, out, want, old, carry, link_same, res, rig, marker)
        _swap(staging, out, backup, exists=old is not None, warnings=res.warnings)
    return res


# --- reading the old tree -------------------------------------------------------------------

class _Tree:
    """What is under DIR, by relative path, without following any symlink."""

    def __init__(self):
        self.kind: dict[str, str] = {}  # 'file' | 'dir' | 'link' | 'other'
        self.st: dict[str, os.stat_result] = {}
        self.top = Path()

    @classmethod
    def scan(cls, top: Path) -> "_Tree | None":
        try:
            st = os.lstat(top)
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            raise OutputDirError(f"{top} exists and is not a directory")
        tree, stack = cls(), [""]
        tree.top = top
        while stack:
            rel = stack.pop()
            with os.scandir(f"{top}/{rel}" if rel else top) as it:
                for e in it:
                    p = f"{rel}/{e.name}" if rel else e.name
                    s = e.stat(follow_symlinks=False)
                    tree.st[p] = s
                    if stat.S_ISLNK(s.st_mode):
                        tree.kind[p] = "link"
                    elif stat.S_ISDIR(s.st_mode):
                        tree.kind[p] = "dir"
                        stack.append(p)
                    else:
                        tree.kind[p] = "file" if stat.S_ISREG(s.st_mode) else "other"
        return tree

    def top_level(self) -> list[str]:
        return sorted(p for p in self.kind if "/" not in p)

    def read(self, rel: str) -> bytes:
        fd = os.open(f"{self.top}/{rel}", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            return fh.read()


def _read_marker(out: Path, old: _Tree | None, rig: str) -> dict[str, str]:
    """rigctl's earlier files (path -> sha256) from the marker; refuse a directory that is not ours."""
    if old is None or not old.kind:
        return {}
    kind = old.kind.get(MARKER)
    if kind is None:
        if set(old.top_level()) <= {STATE_DIR}:  # only apply's recorded state: rigctl's directory
            return {}
        shown = ", ".join(old.top_level()[:4]) + (", ..." if len(old.top_level()) > 4 else "")
        raise OutputDirError(f"{out} is not empty and was not rendered by rigctl (no {MARKER} marker; it holds "
                             f"{shown}): render into a new or empty directory, or move those files away")
    if kind != "file" or old.st[MARKER].st_size > _MARKER_MAX_BYTES:
        raise OutputDirError(f"{out / MARKER} is not a rigctl marker (not a regular file of sane size): "
                             "remove it only if the directory is rigctl's, else render elsewhere")
    try:
        doc = json.loads(old.read(MARKER).decode("utf-8"))
        files, owner = doc["files"], doc["rig"]
        if not (isinstance(files, dict) and isinstance(owner, str)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())):
            raise TypeError("unexpected field types")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise OutputDirError(f"{out / MARKER}: unreadable rigctl marker ({exc}): if the directory is rigctl's, "
                             "delete it and render again") from None
    if owner != rig:
        raise OutputDirError(f"{out} holds the rendered project of rig {owner!r}, not {rig!r}: render rig {rig!r} "
                             "into another directory")
    return {k: v for k, v in files.items() if k != MARKER and ".." not in k.split("/") and not k.startswith("/")}


# --- deciding -------------------------------------------------------------------------------

def _prefixes(path: str):
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _plan(want: dict[str, RenderedFile], old: _Tree | None, marker: dict[str, str], prune: bool):
    """The report, the old entries to carry into the new tree, and the unchanged files to link."""
    res = WriteResult(files=[])
    carry: list[str] = []
    link_same: set[str] = set()
    kind = old.kind if old else {}
    want_dirs = {d for p in want for d in _prefixes(p)}
    for p in sorted(want):
        for d in [*_prefixes(p), p]:
            k = kind.get(d)
            if k == "link":
                raise OutputDirError(f"{d} in the output directory is a symlink (to {os.readlink(old.top / d)}); "
                                     f"rigctl writes {p} there and never writes through a symlink: replace it "
                                     "with a real directory or file (or remove it) and render again")
            if d != p and k in ("file", "other") and d not in marker:
                raise OutputDirError(f"{d} in the output directory is not rigctl's and is in the way of {p}: "
                                     "move it away and render again")
        if kind.get(p) == "dir":
            raise OutputDirError(f"{p} in the output directory is a directory where rigctl writes a file: "
                                 "move it away and render again")
    for p in sorted(want):
        if kind.get(p) == "file" and _same(old, p, want[p]):
            res.files.append((p, "unchanged"))
            link_same.add(p)
        else:
            res.files.append((p, "changed" if p in kind else "created"))
    if old is None:
        return res, carry, link_same
    top = old.top
    marker_dirs = {d for p in marker for d in _prefixes(p)}
    warned = set()
    for p in sorted(marker):  # rigctl's earlier files hidden behind a symlinked directory: not followed
        if p not in kind and p not in want:
            link = next((d for d in _prefixes(p) if kind.get(d) == "link"), None)
            if link and link not in warned:
                warned.add(link)
                res.warnings.append(f"{link} is a symlink (to {os.readlink(top / link)}): not followed; "
                                    "rigctl's earlier files beneath it are left alone")
    in_the_way = {d for p in want for d in _prefixes(p) if kind.get(d) in ("file", "other")}
    nonempty = {p.rpartition("/")[0] for p in kind}
    for p in sorted(kind):
        k = kind[p]
        if p == MARKER or p in want or p in in_the_way:
            continue
        if k == "dir":
            if p not in want_dirs and p not in marker_dirs and p not in nonempty:
                carry.append(p)  # an empty directory the user made
            continue
        if p in marker:
            if prune and k == "file" and _sha(old.read(p)) == marker[p]:
                res.deleted.append(p)
                continue
            (res.edited if prune else res.stale).append(p)
        else:
            res.foreign.append(p)
        carry.append(p)
    res.foreign = _collapse(res.foreign, want_dirs | marker_dirs)
    return res, carry, link_same


def _collapse(foreign: list[str], ours: set[str]) -> list[str]:
    """Report a directory holding only foreign files once, as 'dir/'; apply's state dir not at all."""
    shown = set()
    for p in foreign:
        d = next((d for d in _prefixes(p) if d not in ours), None)
        shown.add(d + "/" if d else p)
    return sorted(s for s in shown if s != STATE_DIR + "/")


def _same(old: _Tree, rel: str, f: RenderedFile) -> bool:
    st, data = old.st[rel], f.content.encode("utf-8")
    return st.st_size == len(data) and stat.S_IMODE(st.st_mode) == f.mode and old.read(rel) == data


# --- building and swapping ------------------------------------------------------------------

def _write_file(path: str | Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        os.fchmod(fh.fileno(), mode)


def _build(staging: Path, out: Path, want, old, carry, link_same, res: WriteResult, rig: str, marker) -> None:
    from .. import __version__

    os.mkdir(staging)
    try:
        if old is not None:
            os.chmod(staging, stat.S_IMODE(os.lstat(out).st_mode))
        made, new, cur = {""}, f"{staging}/", f"{out}/"  # plain strings: pathlib costs more than the I/O here

        def parent(rel: str) -> str:
            if rel.rpartition("/")[0] not in made:
                for d in _prefixes(rel):
                    if d not in made:
                        os.mkdir(new + d)
                        made.add(d)
            return new + rel

        written = {}
        for p in sorted(want):
            data = want[p].content.encode("utf-8")
            written[p] = _sha(data)
            dst = parent(p)
            if p in link_same:  # unchanged: same inode, mtime kept
                try:
                    os.link(cur + p, dst, follow_symlinks=False)
                    continue
                except OSError:
                    pass
            _write_file(dst, data, want[p].mode)
        for p in carry:
            src, dst = cur + p, parent(p)
            kind = old.kind[p]
            if kind == "dir":
                os.mkdir(dst)
                made.add(p)
            elif kind == "link":
                os.symlink(os.readlink(src), dst)
            else:
                try:  # a hard link keeps the user's file without copying it, and survives an interruption
                    os.link(src, dst, follow_symlinks=False)
                except OSError:
                    if kind != "file":
                        res.warnings.append(f"{p}: cannot keep this special file (not a regular file)")
                        continue
                    shutil.copy2(src, dst, follow_symlinks=False)
            if p in marker and p not in res.edited:
                written[p] = marker[p]  # a stale file stays rigctl's: a later --prune may delete it
        if old is not None:  # directories keep the modes they had (a user's 0700, say)
            for d in sorted(made | set(carry), reverse=True):
                if d and old.kind.get(d) == "dir" and os.path.isdir(staging / d):
                    os.chmod(staging / d, stat.S_IMODE(old.st[d].st_mode))
        doc = {"format": MARKER_FORMAT, "rig": rig, "rigctl": __version__, "files": dict(sorted(written.items()))}
        _write_file(staging / MARKER, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), 0o644)
    except BaseException:
        _remove_tree(staging)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap(staging: Path, out: Path, backup: Path, *, exists: bool, warnings: list[str]) -> None:
    try:
        if not exists:
            os.rename(staging, out)
            return
        if _exchange(staging, out):
            old = staging
        else:  # two renames; a crash between them is repaired by the next render (_recover)
            os.rename(out, backup)
            try:
                os.rename(staging, out)
            except BaseException:
                os.rename(backup, out)
                raise
            old = backup
    except BaseException:
        _remove_tree(staging)
        raise
    if not _remove_tree(old):
        warnings.append(f"could not remove the previous tree {old}; the next render removes it")


def _remove_tree(path: Path) -> bool:
    """Remove a staging or previous tree; shutil.rmtree does not follow symlinks on Linux."""
    try:
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def _recover(out: Path, staging: Path, backup: Path) -> None:
    """Undo what an interrupted render left beside DIR (under the lock, so no render is running)."""
    if os.path.lexists(backup):
        if not os.path.lexists(out) and os.path.isdir(backup) and not os.path.islink(backup):
            os.rename(backup, out)  # interrupted between the two renames: the old tree comes back
        else:
            _remove_tree(backup)
    if os.path.lexists(staging):
        _remove_tree(staging)


class _Lock:
    def __init__(self, path: Path, out: Path):
        self.path, self.out, self.fd = path, out, None

    def __enter__(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise OutputLocked(f"another process holds the lock on {self.out} ({holder}; lock {self.path}): "
                               "another rigctl render is writing it; try again when it is done") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc):
        os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
