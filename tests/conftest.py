import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# ansible-runner and subprocess calls exec tools (ansible-playbook, rigctl) from PATH
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def rigctl():
    """Run the real CLI in-process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    from provisioner.cli import main

    def run(*args: str):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code
        return code, out.getvalue(), err.getvalue()

    return run


@pytest.fixture(scope="session")
def llamacpp_bin() -> Path:
    from provisioner.lab.llamacpp import LlamaCppBuildError, ensure_llamacpp

    try:
        return ensure_llamacpp()
    except LlamaCppBuildError as exc:
        if "not found" in str(exc):  # no compiler/cmake on this machine
            pytest.skip(f"cannot build llama.cpp here: {exc}")
        raise
