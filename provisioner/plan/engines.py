"""Which llama.cpp engine each service gets: rigctl's own build, an image, or the macOS release.

Native llama.cpp on Linux runs a build rigctl makes itself (playbooks/roles/llamacpp_build):
one pinned source, the llama.cpp that llama-cpp-python 0.3.36 vendors (commit 0c1e57098bba,
its CHANGELOG.md; the same sdist the lab's CPU build compiles, provisioner/lab/llamacpp.py),
always with ``GGML_RPC=ON``. A rig gets at most two builds:

- ``cuda`` for the Linux nodes with NVIDIA GPUs: ``GGML_CUDA=ON`` for exactly the CUDA
  architectures of those GPUs (the catalog's ``compute_capability``, as SASS: ``86-real``), and
  ``GGML_STATIC=ON``, which in this llama.cpp links ``CUDA::cudart_static``,
  ``CUDA::cublas_static`` and ``CUDA::cublasLt_static`` (ggml/src/ggml-cuda/CMakeLists.txt), so
  the binaries need only the driver's ``libcuda.so.1``: a driver-only host runs them. The role
  checks that with ``readelf -d`` after the build and refuses a binary that still needs
  libcudart or libcublas. (GGML_STATIC also adds ``-static`` to the link options of
  ggml/src, ggml/src/CMakeLists.txt; with ``BUILD_SHARED_LIBS=OFF`` those targets are static
  archives, which are not linked, and the executables live in tools/, outside that directory,
  so the binaries stay dynamically linked against glibc and the driver's libcuda.so.1. This
  reading of the CMake files is unconfirmed until bench/gpu_llamacpp_build.sh runs on a GPU
  machine. The same combination, GGML_STATIC=ON + BUILD_SHARED_LIBS=OFF + GGML_CUDA=ON on
  Linux, is what https://github.com/ggml-org/llama.cpp/issues/15620 builds; its fix, PR #15622,
  the cublasLt_static link, is in this source. Static cuBLAS makes each binary several hundred
  MB, https://github.com/ggml-org/llama.cpp/issues/8452.)
- ``cpu`` for Linux nodes without NVIDIA GPUs (the lab, CPU-only RPC workers): the lab's flags.

Each build is made once, on the first node in spec order that needs it, fetched into the
controller's cache under ``key`` (version, backend, architectures and a hash of the flags) and
copied from there to every node that runs it, so an RPC client and its workers run the same
build. Pure: no filesystem, no network.
"""

from __future__ import annotations

import hashlib

from .model import Plan, Service

#: llama-cpp-python release whose vendored llama.cpp rigctl builds (the lab build's pin too).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
#: the llama.cpp commit that sdist vendors (its CHANGELOG.md, 0.3.36: "update llama.cpp to 0c1e57098")
LLAMA_CPP_COMMIT = "0c1e57098bba"
#: CUDA toolkit the build node installs from NVIDIA's CUDA apt repository (package suffix).
#: 12.9 still compiles every architecture in the catalog (6.1 up to 12.0; CUDA 13 dropped
#: offline compilation below 7.5) and, with SASS only, runs on any R525+ driver (CUDA minor
#: version compatibility; rigctl installs R580 by default).
CUDA_TOOLKIT = "12-9"

LLAMACPP_STACKS = frozenset({"llamacpp", "llamacpp-rpc"})

#: flags of every build, the lab's CPU build included (provisioner/lab/llamacpp.py uses this list)
COMMON_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_RPC=ON",
    "-DGGML_NATIVE=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # would download the web UI from Hugging Face
)
#: added for the CUDA build (ggml/CMakeLists.txt options; ggml/src/ggml-cuda/CMakeLists.txt)
CUDA_ARGS = (
    "-DGGML_CUDA=ON",
    "-DGGML_STATIC=ON",        # cudart_static + cublas_static + cublasLt_static: driver-only hosts
    "-DGGML_CUDA_NCCL=OFF",    # libnccl would be one more shared library the hosts lack
)
#: cmake targets -> the binary names the roles install (tools/rpc: ggml-rpc-server)
TARGETS = {"llama-server": "llama-server", "rpc-server": "ggml-rpc-server"}


class EngineError(ValueError):
    """A GPU rigctl cannot build llama.cpp for; the rule llamacpp-build refuses it first."""


def cuda_arch(compute_capability: str) -> str:
    """CMAKE_CUDA_ARCHITECTURES entry for a compute capability: '8.6' -> '86-real'.

    Blackwell (12.x) takes the architecture-specific '120a' that ggml itself substitutes for 120
    (ggml-cuda/CMakeLists.txt: its FP4 tensor core instructions are not forward compatible)."""
    major, _, minor = compute_capability.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        raise EngineError(f"compute capability {compute_capability!r} is not MAJOR.MINOR")
    arch = f"{int(major)}{int(minor)}"
    return f"{arch}a-real" if int(major) == 12 else f"{arch}-real"


def _arch_sort(arch: str) -> int:
    return int(arch.split("-")[0].rstrip("a"))


def node_cuda_archs(ctx, node) -> list[str]:
    """The CUDA architectures of a node's NVIDIA GPUs; EngineError for one the catalog gives none."""
    out = set()
    for g in node.gpus:
        entry = ctx.gpu_entry(g, node)
        if entry is None:
            raise EngineError(f"node {node.name}: GPU {g.id} ({g.model}) is not in the catalog")
        if entry.vendor != "nvidia":
            raise EngineError(f"node {node.name}: GPU {g.id} is {entry.name} ({entry.vendor}); "
                              "rigctl builds llama.cpp for NVIDIA (CUDA) and CPU only")
        if not entry.compute_capability:
            raise EngineError(f"node {node.name}: GPU {g.id} ({entry.name}) has no compute_capability")
        out.add(cuda_arch(entry.compute_capability))
    return sorted(out, key=_arch_sort)


def cmake_args(backend: str, archs: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The cmake configure arguments of a build (after -S SRC -B BUILD)."""
    if backend == "cpu":
        return list(COMMON_ARGS)
    if backend != "cuda" or not archs:
        raise EngineError(f"no build for backend {backend!r} with architectures {list(archs)}")
    toolkit = f"/usr/local/cuda-{CUDA_TOOLKIT.replace('-', '.')}"  # where NVIDIA's cuda-* packages install
    return [*COMMON_ARGS, *CUDA_ARGS, f"-DCUDAToolkit_ROOT={toolkit}", f"-DCMAKE_CUDA_COMPILER={toolkit}/bin/nvcc",
            "-DCMAKE_CUDA_ARCHITECTURES=" + ";".join(archs)]


def build_key(backend: str, archs: list[str] | tuple[str, ...] = ()) -> str:
    """Controller cache directory of a build: version, backend, architectures, flags hash.
    Any change to the source pin, the toolkit or a flag gives another key (a new build)."""
    args = cmake_args(backend, archs)
    toolkit = CUDA_TOOLKIT if backend == "cuda" else ""
    digest = hashlib.sha256("\n".join([LLAMA_CPP_PYTHON_VERSION, LLAMA_CPP_COMMIT, toolkit, *args]).encode())
    sm = "".join(f"-sm{_arch_sort(a)}" for a in archs) if backend == "cuda" else ""
    return f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}-{backend}{sm}-{digest.hexdigest()[:12]}"


def build_label(backend: str, archs: list[str] | tuple[str, ...], build_host: str) -> str:
    sms = "+".join("sm_" + a.split("-")[0] for a in archs)
    what = f"CUDA {sms} static cudart/cuBLAS (CUDA {CUDA_TOOLKIT.replace('-', '.')})" if backend == "cuda" else "CPU"
    return (f"rigctl build of llama.cpp {LLAMA_CPP_COMMIT[:9]} (vendored by llama-cpp-python "
            f"{LLAMA_CPP_PYTHON_VERSION}), {what}, GGML_RPC, built on {build_host}")


def _linux_llamacpp_nodes(ctx, plan: Plan) -> list:
    """Linux nodes that run a native llama.cpp service, in spec order."""
    used = {s.node for d in plan.deployments for s in d.services
            if s.stack in LLAMACPP_STACKS and s.deploy_mode == "native"}
    return [n for n in ctx.rig.nodes if n.name in used and n.os != "macos"]


def builds(ctx, plan: Plan) -> dict[str, dict]:
    """node name -> the build its native llama.cpp services run (the same dict for every node
    of a build). Raises EngineError for a GPU rigctl cannot build for."""
    nodes = _linux_llamacpp_nodes(ctx, plan)
    cuda_nodes = [n for n in nodes if n.gpus]
    archs = sorted({a for n in cuda_nodes for a in node_cuda_archs(ctx, n)}, key=_arch_sort)
    out: dict[str, dict] = {}
    for backend, members in (("cuda", cuda_nodes), ("cpu", [n for n in nodes if not n.gpus])):
        if not members:
            continue
        a = archs if backend == "cuda" else []
        build = {
            "kind": "build", "backend": backend, "key": build_key(backend, a),
            "version": LLAMA_CPP_PYTHON_VERSION, "commit": LLAMA_CPP_COMMIT,
            "cuda_archs": list(a), "cuda_toolkit": CUDA_TOOLKIT if backend == "cuda" else None,
            "cmake_args": cmake_args(backend, a), "targets": dict(TARGETS),
            "build_host": members[0].name, "nodes": [n.name for n in members],
            "label": build_label(backend, a, members[0].name),
        }
        out.update({n.name: build for n in members})
    return out


def assign(ctx, plan: Plan) -> None:
    """Set ``engine`` on every llama.cpp service of the plan (after images.assign)."""
    node_build = builds(ctx, plan)
    macos = {n.name for n in ctx.rig.nodes if n.os == "macos"}
    for svc in (s for d in plan.deployments for s in d.services if s.stack in LLAMACPP_STACKS):
        svc.engine = engine_of(svc, node_build, macos)


def engine_of(svc: Service, node_build: dict[str, dict], macos: set[str]) -> dict:
    if svc.deploy_mode == "container":
        return {"kind": "image", "image": svc.image, "label": f"image {svc.image}"}
    if svc.node in macos:
        # base/llamacpp_macos.yml: the pinned release archive (rigctl_llamacpp_build)
        return {"kind": "release", "label": "llama.cpp release archive for macOS arm64 (Metal), "
                                            "pinned by rigctl_llamacpp_build (base role)"}
    return {k: v for k, v in node_build[svc.node].items() if k != "nodes"}


def mark_override(plan: Plan, artifacts: dict[str, str]) -> None:
    """Where an inventory sets ``rigctl_artifacts_dir`` for a node (node -> its value, as
    written: it may be a Jinja expression that Ansible evaluates at apply), that node's native
    llama.cpp services run the binaries from there and the build role builds nothing: say so.
    The build key stays (the binaries are installed under it on the host)."""
    for svc in (s for d in plan.deployments for s in d.services if s.stack in LLAMACPP_STACKS):
        where = artifacts.get(svc.node)
        if where and svc.engine and svc.engine.get("kind") == "build":
            svc.engine = {**svc.engine, "override": where,
                          "label": f"your binaries from the inventory's rigctl_artifacts_dir ({where}), not rigctl's "
                                   f"build (nothing is built); installed on the host as {svc.engine['key']}"}


def artifact_overrides(rig, overrides) -> dict[str, str]:
    """node -> the inventory's rigctl_artifacts_dir for it (host vars over `all` vars)."""
    out = {}
    for n in rig.nodes:
        v = overrides.hosts.get(n.name, {}).get("rigctl_artifacts_dir", overrides.vars.get("rigctl_artifacts_dir"))
        if v:
            out[n.name] = str(v)
    return out


def describe(svc: Service) -> str | None:
    """One line for `rigctl plan`: which build or image the service runs."""
    return svc.engine["label"] if svc.engine else None
