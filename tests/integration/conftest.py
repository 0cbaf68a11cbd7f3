"""Fixtures for tests against the real lab (systemd-nspawn Debian hosts on this machine).

``lab``: session fixture; skips with the reason where the lab cannot run (not root,
no systemd-nspawn possible). Otherwise ``down``, ``up 2``, yield, ``down``.
Set RIGCTL_LAB_REUSE=1 to use a lab that is already up (``rigctl lab up 2``) and
leave it up afterwards (faster edit-test loops).

``llamacpp_bin``: the cached llama.cpp build (built on first use: minutes).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

# ansible-runner execs ansible-playbook from PATH: make this venv's tools win
_VENV_BIN = os.path.dirname(sys.executable)
if _VENV_BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _VENV_BIN + os.pathsep + os.environ.get("PATH", "")

N_HOSTS = 2


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.lab)


@contextlib.contextmanager
def _lab_session(docker: bool = False, which=contextlib.nullcontext):
    """Bring a lab up for the session (or reuse one with RIGCTL_LAB_REUSE=1) and take it
    down afterwards; yields lab.sh's status. Skips where the machine cannot run a lab.
    ``which()`` selects the lab (LAB_NET/LAB_DIR) only around up and down, so the tests
    in between keep the default lab's environment."""
    from provisioner import lab as labmod

    ok, why = labmod.can_run_lab()
    if not ok:
        pytest.skip(f"lab unavailable: {why}")
    reuse = os.environ.get("RIGCTL_LAB_REUSE") == "1"
    with which():
        st = labmod.status()
        if not (reuse and st["up"] and (st.get("docker") or not docker) and len(st["hosts"]) >= N_HOSTS):
            reuse = False
            try:
                labmod.down()
                st = labmod.up(N_HOSTS, docker=docker)
            except labmod.LabError as exc:
                if getattr(exc, "returncode", None) == 3:  # lab.sh: machine cannot run it
                    pytest.skip(str(exc))
                pytest.fail(f"{'docker ' if docker else ''}lab did not come up: {exc}", pytrace=False)
    try:
        yield st
    finally:
        if not reuse:
            with which():
                labmod.down()


@pytest.fixture(scope="session")
def lab():
    hosts = [f"h{i}" for i in range(1, N_HOSTS + 1)]
    with _lab_session() as st:
        yield {
            "inventory": st["inventory"],
            "ssh_config": st["ssh_config"],
            "hosts": hosts,
            "addresses": {h: st["hosts"][h]["address"] for h in hosts},
            "lab_dir": st["lab_dir"],
            "proxy": st["proxy"],
        }


# llamacpp_bin (the cached llama.cpp build) lives in tests/conftest.py: the contract tests use it too


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    from provisioner.testmodels import write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


class LabShell:
    """ssh/scp to lab hosts through the lab's ssh_config (connection sharing on)."""

    def __init__(self, ssh_config: str):
        self.ssh_config = ssh_config

    def run(self, host: str, command: str, check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run(["ssh", "-F", self.ssh_config, host, command], text=True,
                           input=input, stdin=None if input is not None else subprocess.DEVNULL,
                           capture_output=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"ssh {host} {command!r} -> rc {r.returncode}\n"
                                 f"stdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-2000:]}")
        return r

    def out(self, host: str, command: str, **kw) -> str:
        return self.run(host, command, **kw).stdout.strip()

    def put(self, host: str, sources: list[str | os.PathLike], dest: str, timeout: float = 300) -> None:
        self.run(host, f"mkdir -p {shlex.quote(dest)}")
        r = subprocess.run(["scp", "-q", "-F", self.ssh_config, *map(str, sources), f"{host}:{dest}/"],
                           capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise AssertionError(f"scp to {host}:{dest} failed: {r.stderr}")


@pytest.fixture(scope="session")
def lab_shell(lab) -> LabShell:
    return LabShell(lab["ssh_config"])


LAB_MODEL = Path("/var/tmp/rigctl-lab-cache/models/tiny-llama.gguf")  # model_file of examples/lab-cpu-rpc.yaml


@pytest.fixture(scope="session")
def lab_rig_env(lab, llamacpp_bin) -> str:
    """What `rigctl apply examples/lab-cpu-rpc.yaml` needs on the controller: the lab dir,
    the llama.cpp binaries, an API key in the environment and the tiny model file.
    Returns the API key."""
    import os
    import secrets

    from provisioner.testmodels import write_tiny_gguf

    os.environ["LAB_DIR"] = lab["lab_dir"]
    os.environ["RIGCTL_ARTIFACTS_DIR"] = str(llamacpp_bin)
    os.environ.setdefault("RIGCTL_LAB_API_KEY", secrets.token_hex(16))
    if not LAB_MODEL.is_file():
        LAB_MODEL.parent.mkdir(parents=True, exist_ok=True)
        write_tiny_gguf(LAB_MODEL)
    return os.environ["RIGCTL_LAB_API_KEY"]


# ---------------------------------------------------------------- docker lab
# A second lab, beside `lab`, whose hosts run Docker with compose v2 (lab.sh up N --docker).
# Its own net and dir, so both can be up in one session. RIGCTL_LAB_REUSE=1 reuses it too.
DOCKER_LAB_NET = os.environ.get("RIGCTL_DOCKER_LAB_NET", "10.215.0")
DOCKER_LAB_DIR = os.environ.get("RIGCTL_DOCKER_LAB_DIR", "/tmp/rigctl-lab-docker")


@pytest.fixture(scope="session")
def docker_lab():
    from provisioner import lab as labmod

    hosts = [f"h{i}" for i in range(1, N_HOSTS + 1)]
    with _lab_session(docker=True, which=lambda: labmod.using(DOCKER_LAB_NET, DOCKER_LAB_DIR)) as st:
        yield {
            "net": DOCKER_LAB_NET,
            "lab_dir": st["lab_dir"],
            "ssh_config": st["ssh_config"],
            "key": str(Path(st["lab_dir"]) / "id_ed25519"),
            "hosts": hosts,
            "addresses": {h: st["hosts"][h]["address"] for h in hosts},
        }


@pytest.fixture(scope="session")
def docker_lab_shell(docker_lab) -> LabShell:
    return LabShell(docker_lab["ssh_config"])


@pytest.fixture(scope="session")
def lab_image(llamacpp_bin) -> Path:
    """`docker save` archive of the lab's llama.cpp CPU image (built once, no registry)."""
    from provisioner.lab.image import LabImageError, ensure_lab_image

    try:
        return ensure_lab_image()
    except LabImageError as exc:
        pytest.skip(f"cannot build the lab image here: {exc}")
