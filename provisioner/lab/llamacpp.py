"""Cached CPU build of llama.cpp's ``llama-server`` and ``rpc-server`` for the lab.

The source comes from the llama-cpp-python sdist on PyPI (it vendors llama.cpp), so
the only network access needed is the package registry. The binaries are built
with ``GGML_RPC=ON`` and static ggml/llama libraries, so they only need the
Debian base libraries (libstdc++, libgomp1) that the lab hosts also have.

``ensure_llamacpp()`` builds once (several minutes on 2 cores) and then returns the
cached bin dir immediately.  ``python -m provisioner.lab.llamacpp`` does the same
from the command line and prints the bin dir.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from ..plan.engines import COMMON_ARGS

#: llama-cpp-python release whose vendored llama.cpp is built.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"

#: Names of the binaries in the returned bin dir, whatever upstream calls them.
BINARIES = ("llama-server", "rpc-server")

# the flags every rigctl llama.cpp build shares (one list, with the CUDA build's in plan/engines.py)
CMAKE_FLAGS = COMMON_ARGS

# upstream target name -> our name; the first target that exists wins
_TARGETS = {
    "llama-server": ("llama-server", "server"),
    "rpc-server": ("ggml-rpc-server", "rpc-server"),
}


class LlamaCppBuildError(RuntimeError):
    """The llama.cpp sources could not be fetched or built."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("LAB_CACHE", "/var/tmp/rigctl-lab-cache"))


def _stamp_text(version: str) -> str:
    h = hashlib.sha256("\n".join((version,) + CMAKE_FLAGS).encode()).hexdigest()[:16]
    return f"llama-cpp-python {version} flags {h}\n"


def _log(msg: str) -> None:
    print(f"[llamacpp] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], log, **kw) -> None:
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, **kw)
    if r.returncode != 0:
        raise LlamaCppBuildError(
            f"command failed (rc={r.returncode}): {' '.join(cmd)}; see {log.name}"
        )


def _download_sdist(version: str, dest: Path, log) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    want = f"llama_cpp_python-{version}.tar.gz"
    if (dest / want).is_file():
        return dest / want
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".dl-"))
    try:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
              "--disable-pip-version-check",
              f"llama-cpp-python=={version}", "-d", str(tmp)], log)
        got = list(tmp.glob("llama_cpp_python-*.tar.gz"))
        if not got:
            raise LlamaCppBuildError(f"pip download gave no sdist in {tmp}")
        os.replace(got[0], dest / want)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest / want


def _extract_llama_cpp(sdist: Path, dest: Path) -> Path:
    """Extract only vendor/llama.cpp of the sdist into dest; returns the source dir."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(sdist) as tf:
        members = [m for m in tf.getmembers() if "/vendor/llama.cpp/" in m.name + "/"]
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(dest, members=members, **kw)
    src = next(dest.glob("*/vendor/llama.cpp"), None)
    if src is None or not (src / "CMakeLists.txt").is_file():
        raise LlamaCppBuildError(f"no vendor/llama.cpp in {sdist}")
    return src


def _available_targets(build: Path) -> set[str]:
    r = subprocess.run(["cmake", "--build", str(build), "--target", "help"],
                       capture_output=True, text=True)
    names = set()
    for line in r.stdout.splitlines():
        line = line.strip()
        if line.startswith("... "):
            names.add(line[4:].split()[0])
        elif ":" in line:
            names.add(line.split(":")[0].strip())
    return names


def ensure_llamacpp(cache_dir: str | os.PathLike | None = None,
                    version: str = LLAMA_CPP_PYTHON_VERSION,
                    jobs: int | None = None) -> Path:
    """Return a dir holding ``llama-server`` and ``rpc-server``; build them if needed."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    root = cache / f"llama.cpp-{version}"
    bindir = root / "bin"
    stamp = root / "stamp"
    want = _stamp_text(version)

    def ready() -> bool:
        return (stamp.is_file() and stamp.read_text() == want
                and all(os.access(bindir / b, os.X_OK) for b in BINARIES))

    if ready():
        return bindir
    for tool in ("cmake", "c++", "make"):
        if shutil.which(tool) is None:
            raise LlamaCppBuildError(f"{tool} not found; install cmake and build-essential")

    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now
        if ready():
            return bindir
        t0 = time.monotonic()
        logpath = root / "build.log"
        with open(logpath, "w") as log:
            _log(f"building llama.cpp from llama-cpp-python {version} (log: {logpath})")
            sdist = _download_sdist(version, cache / "downloads", log)
            src = _extract_llama_cpp(sdist, root / "src")
            build = root / "build"
            shutil.rmtree(build, ignore_errors=True)
            _run(["cmake", "-S", str(src), "-B", str(build), *CMAKE_FLAGS], log)
            have = _available_targets(build)
            chosen = {}
            for ours, candidates in _TARGETS.items():
                t = next((c for c in candidates if c in have), None)
                if t is None:
                    raise LlamaCppBuildError(f"no cmake target for {ours} (tried {candidates})")
                chosen[ours] = t
            n = jobs or os.cpu_count() or 2
            _run(["cmake", "--build", str(build), "--config", "Release", "-j", str(n),
                  "--target", *chosen.values()], log)
            tmpbin = root / "bin.tmp"
            shutil.rmtree(tmpbin, ignore_errors=True)
            tmpbin.mkdir()
            for ours, t in chosen.items():
                found = next((p for p in build.rglob(t) if p.is_file() and os.access(p, os.X_OK)), None)
                if found is None:
                    raise LlamaCppBuildError(f"built {t} but cannot find it under {build}")
                shutil.copy2(found, tmpbin / ours)
            subprocess.run(["strip", *(str(tmpbin / b) for b in BINARIES)], check=False)
            shutil.rmtree(bindir, ignore_errors=True)
            os.replace(tmpbin, bindir)
            (root / "targets").write_text("".join(f"{k} <- {v}\n" for k, v in chosen.items()))
            stamp.write_text(want)
            shutil.rmtree(build, ignore_errors=True)
            shutil.rmtree(root / "src", ignore_errors=True)
            _log(f"built in {time.monotonic() - t0:.0f} s -> {bindir}")
    return bindir


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        print(ensure_llamacpp(argv[0] if argv else None))
    except LlamaCppBuildError as e:
        print(f"llamacpp: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
