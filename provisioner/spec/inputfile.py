"""Read a user-named input file (spec, catalog, inventory) safely and boundedly.

A path on a command line or in a spec can name anything: /dev/zero (endless), a FIFO
(open blocks until a writer appears), a directory, a file still being appended to.
Only regular files are read, the type is checked before opening and again on the open
descriptor (the path may be swapped in between), the open is non-blocking so a FIFO
swapped in cannot hang us, and the read stops at ``limit + 1`` bytes actually read:
``st_size`` is only a hint (it is 0 for /proc files and stale for growing ones).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# A 10,000-node x 8-GPU fleet in block style is about 12-15 MB; the cap leaves room for
# comments and longer names while still refusing a wrong file (a model, a disk image) fast.
MAX_INPUT_BYTES = 64 * 1024 * 1024


class InputFileError(Exception):
    """The file cannot be read as input; ``message`` is one line for the user."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _check_mode(mode: int, what: str) -> None:
    if stat.S_ISDIR(mode):
        raise InputFileError(f"is a directory, not a file (give the {what} file itself)")
    if not stat.S_ISREG(mode):
        raise InputFileError(f"is {_kind(mode)}, not a regular file; rigctl reads {what} files only from regular "
                             "files (save it to a file first)")


def _too_large(size: int | None, limit: int, what: str) -> InputFileError:
    shown = f"{size / 1e6:.1f} MB" if size else f"more than {limit / 1e6:.0f} MB"
    return InputFileError(f"file is {shown}; {what} files are limited to {limit / 2**20:.0f} MiB "
                          f"({limit / 1e6:.0f} MB) (is this the right file?)")


def read_bounded(path: str | Path, *, limit: int = MAX_INPUT_BYTES, what: str = "rig spec") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; InputFileError otherwise."""
    try:
        st = os.stat(path)
        _check_mode(st.st_mode, what)
        if st.st_size > limit:
            raise _too_large(st.st_size, limit, what)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
    except InputFileError:
        raise
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise InputFileError(f"cannot read file: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        _check_mode(os.fstat(fd).st_mode, what)  # the path may have been replaced since stat
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except InputFileError:
        raise
    except OSError as exc:
        raise InputFileError(f"cannot read file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise _too_large(None, limit, what)
    return data
