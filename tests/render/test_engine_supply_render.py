"""Engine supply in the rendered project: rigctl's llama.cpp build, no user artifacts directory.

Before issue 12 item 1 every rendered project carried ``rigctl_artifacts_dir: ''`` and the
llama.cpp roles copied the binaries from it; now the inventory names the build (its controller
cache key), the build host is in group llamacpp_build with the build it makes, and the roles
copy from the cache unless an inventory sets rigctl_artifacts_dir as an explicit override.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from provisioner.plan import engines
from provisioner.render import render_project
from provisioner.render.prepare import prepare
from tests.consumers import load_ansible_yaml

ROOT = Path(__file__).resolve().parents[2]


def files_of(spec: str, inventory: str | None = None) -> dict[str, str]:
    prep = prepare(str(ROOT / "examples" / spec), str(ROOT / inventory) if inventory else None)
    assert prep.plan is not None, [d.message for d in prep.errors]
    return {f.path: f.content for f in render_project(prep.ctx, prep.plan, prep.overrides)}


def test_one_node_nvidia_render_has_no_artifacts_dir_and_names_the_build():
    files = files_of("dual-3090-nvlink.yaml")
    rendered = {p: c for p, c in files.items() if p.startswith(("inventory/", "files/"))}
    assert not [p for p, c in rendered.items() if "rigctl_artifacts_dir" in c or "artifacts" in c]
    host = load_ansible_yaml(files["inventory/host_vars/ws1.yml"])
    (svc,) = host["rigctl_services"]
    key = engines.build_key("cuda", ["86-real"])
    assert svc["engine"]["key"] == key and svc["binary_src"] == "llama-server"
    (build,) = host["rigctl_llamacpp_builds"]
    assert build["key"] == key and build["backend"] == "cuda" and build["build_host"] == "ws1"
    assert "-DCMAKE_CUDA_ARCHITECTURES=86-real" in build["cmake_args"]
    inv = yaml.safe_load(files["inventory/hosts.yml"].replace("!unsafe", ""))
    assert list(inv["all"]["children"]["llamacpp_build"]["hosts"]) == ["ws1"]


def test_rpc_rig_builds_on_one_node_and_both_copy_the_same_key():
    files = files_of("multinode-llamacpp-rpc.yaml")
    inv = yaml.safe_load(files["inventory/hosts.yml"].replace("!unsafe", ""))
    builders = list(inv["all"]["children"]["llamacpp_build"]["hosts"])
    assert len(builders) == 1
    keys, builds = set(), 0
    for path, text in files.items():
        if path.startswith("inventory/host_vars/"):
            hv = load_ansible_yaml(text)
            keys |= {s["engine"]["key"] for s in hv["rigctl_services"]}
            builds += len(hv["rigctl_llamacpp_builds"])
    assert len(keys) == 1 and builds == 1


def test_roles_copy_from_the_build_cache_unless_the_inventory_overrides():
    files = files_of("dual-3090-nvlink.yaml")
    for role in ("llamacpp_server", "llamacpp_rpc"):
        tasks = files[f"roles/{role}/tasks/main.yml"]
        assert '"{{ rigctl_artifacts_dir }}/' not in tasks  # the copy no longer reads the user directory
        assert f"{role}_binary_dir" in tasks
        binary_dir = yaml.safe_load(files[f"roles/{role}/vars/main.yml"])[f"{role}_binary_dir"]
        assert "rigctl_engine_cache_dir ~ '/' ~" in binary_dir and "engine.key" in binary_dir
    site = yaml.safe_load(files["site.yml"])
    order = [p["hosts"] for p in site]
    assert order.index("llamacpp_build") < order.index("llamacpp_rpc") < order.index("llamacpp_server")


def test_the_lab_inventory_still_overrides_with_its_cpu_build():
    files = files_of("lab-cpu-rpc.yaml", "inventories/lab")
    all_vars = yaml.safe_load(files["inventory/group_vars/all.yml"].replace("!unsafe", ""))
    assert "llama.cpp-0.3.36/bin" in all_vars["rigctl_artifacts_dir"]  # the override, from inventories/lab


def _run_build_role(tmp_path, builds, extra_vars: dict, *, facts: bool = False, skip_tags: str = "",
                    ok: bool = True) -> str:
    """The rendered llamacpp_build role, run for real by ansible-playbook on this machine
    (connection local, no become); returns its output."""
    import json
    import os
    import subprocess
    import sys

    from provisioner.render import write

    prep = prepare(str(ROOT / "examples" / "dual-3090-nvlink.yaml"), None)
    project = tmp_path / "project"
    write(render_project(prep.ctx, prep.plan, prep.overrides), project, rig="dual-3090-nvlink")
    (project / "build.yml").write_text(
        f"- name: Build llama.cpp\n  hosts: all\n  gather_facts: {str(facts).lower()}\n  gather_subset: [min]\n"
        "  roles: [llamacpp_build]\n")
    variables = {"rigctl_llamacpp_builds": builds, "ansible_python_interpreter": sys.executable, **extra_vars}
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    env = {**os.environ, "ANSIBLE_CONFIG": str(project / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    r = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                        "-e", f"@{tmp_path / 'vars.json'}", "build.yml",
                        *(["--skip-tags", skip_tags] if skip_tags else [])],
                       cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert (r.returncode == 0) == ok, r.stdout[-3000:] + r.stderr[-2000:]
    return r.stdout


def test_build_role_finds_a_cached_build_and_builds_nothing(tmp_path):
    files = files_of("dual-3090-nvlink.yaml")
    builds = load_ansible_yaml(files["inventory/host_vars/ws1.yml"])["rigctl_llamacpp_builds"]
    cache = tmp_path / "engines"
    (cache / builds[0]["key"] / "bin").mkdir(parents=True)
    (cache / builds[0]["key"] / "stamp").write_text("seeded by the test\n")
    out = _run_build_role(tmp_path, builds, {"rigctl_engine_cache_dir": str(cache)})
    assert f"no change: {builds[0]['label']} is in the controller cache" in out
    assert "Install the compiler and cmake" not in out  # build.yml was not included
    # the stamp gone (a miss) but the inventory's own binaries set: still nothing is built
    (cache / builds[0]["key"] / "stamp").unlink()
    out = _run_build_role(tmp_path, builds, {"rigctl_engine_cache_dir": str(cache),
                                             "rigctl_artifacts_dir": str(tmp_path / "mine")})
    assert "no build: rigctl_artifacts_dir" in out and "Install the compiler and cmake" not in out


# A labelled stand-in for the llama.cpp source: a tiny CMake project with the two targets the
# role builds (the real compile takes ~40 min on this machine's 2 cores, and CUDA needs nvcc).
# -DSTANDIN_CUDART=ON links llama-server against a library named libcudart.so.12, the dynamic
# runtime a driver-only host lacks, which the role's readelf check must refuse.
STANDIN_CMAKE = """\
cmake_minimum_required(VERSION 3.14)
project(llamacpp_standin C)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
option(STANDIN_CUDART "link a stand-in libcudart" OFF)
add_executable(llama-server main.c)
add_executable(ggml-rpc-server main.c)
if (STANDIN_CUDART)
  add_library(cudart SHARED rt.c)
  set_target_properties(cudart PROPERTIES SOVERSION 12)
  target_link_libraries(llama-server PRIVATE cudart)
  target_compile_definitions(llama-server PRIVATE STANDIN_CUDART)
endif()
"""
STANDIN_MAIN = """\
#ifdef STANDIN_CUDART
int standin_rt(void);  /* a real use, so the linker keeps the library (--as-needed) */
int main(void) { return standin_rt() - 1; }
#else
int main(void) { return 0; }
#endif
"""


def _standin_sdist(cache: Path, version: str) -> None:
    import io
    import tarfile

    (cache / "downloads").mkdir(parents=True)
    with tarfile.open(cache / "downloads" / f"llama_cpp_python-{version}.tar.gz", "w:gz") as tf:
        for name, text in (("CMakeLists.txt", STANDIN_CMAKE), ("main.c", STANDIN_MAIN),
                           ("rt.c", "int standin_rt(void) { return 1; }\n")):
            data = text.encode()
            info = tarfile.TarInfo(f"llama_cpp_python-{version}/vendor/llama.cpp/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


needs_root_and_cmake = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("cmake") is None
                                          or shutil.which("readelf") is None,
                                          reason="the build role writes root-owned files and runs cmake and readelf")


@needs_root_and_cmake
def test_build_role_builds_checks_linkage_fetches_and_stamps(tmp_path):
    """build.yml for real on this machine (connection local; apt skipped by tag, the toolchain is
    here): unpack the controller's sdist, cmake with the plan's arguments, readelf, fetch, stamp."""
    files = files_of("lab-cpu-rpc.yaml")
    (build,) = load_ansible_yaml(files["inventory/host_vars/h1.yml"])["rigctl_llamacpp_builds"]
    assert build["backend"] == "cpu"
    cache, work = tmp_path / "engines", tmp_path / "build"
    _standin_sdist(cache, build["version"])
    variables = {"rigctl_engine_cache_dir": str(cache), "rigctl_llamacpp_build_dir": str(work),
                 "rigctl_llamacpp_build_jobs": 2}
    out = _run_build_role(tmp_path, [build], variables, facts=True, skip_tags="packages")
    bindir = cache / build["key"] / "bin"
    assert sorted(p.name for p in bindir.iterdir()) == ["llama-server", "rpc-server"]
    assert all(os.access(p, os.X_OK) for p in bindir.iterdir())
    stamp = (cache / build["key"] / "stamp").read_text()
    assert build["label"] in stamp and "cmake -DCMAKE_BUILD_TYPE=Release -DGGML_RPC=ON" in stamp
    assert "llama-server: libc.so.6" in stamp
    assert not (work / build["key"]).exists()  # the build tree is removed
    # the second run finds it in the cache
    out = _run_build_role(tmp_path, [build], variables, facts=True, skip_tags="packages")
    assert "is in the controller cache" in out and "Compile llama-server" not in out

    # a binary that still needs the dynamic CUDA runtime is refused, and nothing is cached
    bad = {**build, "key": build["key"] + "-cudart", "cmake_args": [*build["cmake_args"], "-DSTANDIN_CUDART=ON"]}
    out = _run_build_role(tmp_path, [bad], variables, facts=True, skip_tags="packages", ok=False)
    assert "still needs CUDA runtime libraries" in out and "libcudart.so.12" in out
    assert not (cache / bad["key"] / "stamp").exists()


@pytest.mark.parametrize("role, spec, host", [("llamacpp_server", "dual-3090-nvlink.yaml", "ws1"),
                                              ("llamacpp_rpc", "multinode-llamacpp-rpc.yaml", "ws2")])
def test_roles_resolve_the_binary_directory_of_the_build(tmp_path, role, spec, host):
    """The roles' binary directory as Ansible itself templates it from the rendered host_vars."""
    import json
    import subprocess
    import sys

    files = files_of(spec)
    host_vars = load_ansible_yaml(files[f"inventory/host_vars/{host}.yml"])
    (tmp_path / "vars.yml").write_text(files[f"roles/{role}/vars/main.yml"])
    (tmp_path / "defaults.yml").write_text(files[f"roles/{role}/defaults/main.yml"])
    (tmp_path / "hv.json").write_text(json.dumps({"rigctl_services": host_vars["rigctl_services"]}))
    (tmp_path / "p.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.include_vars: defaults.yml\n"
        "    - ansible.builtin.include_vars: vars.yml\n"
        f"    - ansible.builtin.debug: {{msg: 'DIR={{{{ {role}_binary_dir }}}}'}}\n")
    bin_ = str(Path(sys.executable).parent / "ansible-playbook")
    key = host_vars["rigctl_services"][0]["engine"]["key"]
    env = {**os.environ, "RIGCTL_ENGINE_CACHE": "/srv/engines", "ANSIBLE_NOCOLOR": "1"}
    for override, want in (([], f"DIR=/srv/engines/{key}/bin"),
                           (["-e", "rigctl_artifacts_dir=/opt/mine"], "DIR=/opt/mine")):
        args = [bin_, "-i", "localhost,", "-c", "local", "-e", f"@{tmp_path / 'hv.json'}", *override,
                str(tmp_path / "p.yml")]
        r = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-1000:]
        assert want in r.stdout, r.stdout[-1500:]
