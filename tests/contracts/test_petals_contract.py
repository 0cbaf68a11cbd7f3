"""Every rendered Petals service (DHT and servers) of every example, held against the engine
contract (provisioner/contracts/petals.yaml: facts read from Petals 22afba6 and its pinned
hivemind 213bff98). Petals itself cannot run here: its hivemind commit is not on PyPI."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from provisioner import contracts
from provisioner.check import check_file
from provisioner.plan import build_plan
from provisioner.render import render_project
from provisioner.render.prepare import prepare

ROOT = Path(__file__).resolve().parents[2]


def services_of(spec: Path):
    res = check_file(str(spec))
    if res.errors:
        return []
    return [s for d in build_plan(res.context).deployments for s in d.services if s.stack == "petals"]


CASES = [(p.name, s) for p in sorted((ROOT / "examples").rglob("*.yaml")) for s in services_of(p)]


def one(role: str):
    return copy.deepcopy(next(s for _, s in CASES if s.role == role))


def test_examples_cover_dht_and_servers():
    assert {s.role for _, s in CASES} == {"petals-dht", "petals-server"}


@pytest.mark.parametrize("svc", [s for _, s in CASES], ids=[f"{n}:{s.node}:{s.name}" for n, s in CASES])
def test_service_matches_engine_contract(svc):
    assert contracts.check(svc) == []


def _set_flag(svc, name, value):
    i = svc.argv.index(name)
    svc.argv[i + 1] = value


def _drop_state_mounts(svc):
    svc.state_mounts = {}


def _cache_outside_volume(svc):
    svc.env["PETALS_CACHE"] = "/var/lib/rigctl/petals/cache"  # what rigctl rendered before


@pytest.mark.parametrize("role,mutate,expect", [
    ("petals-server", lambda s: s.argv.append("--num_block"), "flag --num_block is not accepted"),
    ("petals-server", lambda s: s.argv.extend(["--num_blocks", "4"]), "--num_blocks and --block_indices exclude"),
    ("petals-server", lambda s: s.argv.extend(["--host_maddrs", "/ip4/0.0.0.0/tcp/31330"]),
     "--port and --host_maddrs exclude"),
    ("petals-server", lambda s: _set_flag(s, "--quant_type", "int4"), "flag --quant_type 'int4' is not one of"),
    ("petals-server", lambda s: s.argv.extend(["--torch_dtype", "bf16"]), "flag --torch_dtype 'bf16'"),
    ("petals-server", lambda s: _set_flag(s, "--block_indices", "0-21"), "flag --block_indices '0-21' does not match"),
    ("petals-server", lambda s: _set_flag(s, "--port", "31339"), "--port 31339: the plan opens no tcp port 31339"),
    ("petals-server", lambda s: s.argv.remove("--port"), "--port is not given"),
    ("petals-server", lambda s: _set_flag(s, "--announce_maddrs", "/ip4/10.0.3.11/tcp/31339"),
     "flag --announce_maddrs '/ip4/10.0.3.11/tcp/31339' does not listen on the service's port"),
    ("petals-server", lambda s: _set_flag(s, "--initial_peers", "/ip4/10.0.3.11/tcp/31337"), "flag --initial_peers"),
    ("petals-server", lambda s: _set_flag(s, "--initial_peers", "${PETALS_INITIAL_PEERS}"), "flag --initial_peers"),
    ("petals-server", lambda s: s.argv.insert(4, "meta-llama/Llama-3.1-8B"), "flag meta-llama/Llama-3.1-8B"),
    ("petals-server", lambda s: s.env.update(PETALS_CACHE_DIR="/cache"), "environment variable PETALS_CACHE_DIR"),
    ("petals-server", _cache_outside_volume, "PETALS_CACHE='/var/lib/rigctl/petals/cache' is in no volume"),
    ("petals-server", lambda s: s.argv.__setitem__(2, "petals.cli.run_servers"), "is not `-m` and one of"),
    ("petals-dht", lambda s: s.argv.extend(["--port", "31337"]), "flag --port is not accepted"),
    ("petals-dht", lambda s: _set_flag(s, "--host_maddrs", "/ip4/0.0.0.0/tcp/0"), "--host_maddrs 0: the plan opens no"),
    ("petals-dht", lambda s: setattr(s, "port", 31338), "port 31338/tcp is not a port the engine listens on"),
    ("petals-dht", lambda s: s.argv.__setitem__(0, "hivemind-dht"), "is not the engine's entry point"),
    ("petals-dht", _drop_state_mounts, "flag --identity_path '/var/lib/rigctl/petals/llama70/bootstrap.id': its "
                                       "directory is no read-write host mount"),
])
def test_wrong_fact_fails_the_check(role, mutate, expect):
    svc = one(role)
    assert contracts.check(svc) == []
    mutate(svc)
    problems = contracts.check(svc)
    assert any(expect in p for p in problems), problems


def test_contract_cites_sources():
    c = contracts.load("petals")
    assert c["version"] == "22afba627a7eb4fcfe9418c49472c6a51334b8ac"
    assert c["dependencies"]["hivemind"]["version"] == "213bff98a62accb91f254e2afdccbf1d69ebdea9"
    for module in c["modules"].values():
        assert module["source"] and all(f.get("source") for f in module["flags"].values())
    assert all(v.get("source") for v in c["env"].values())
    assert c["health_routes"] == {}  # libp2p only: no HTTP route to probe


# ------------------------------------------------------------------ the fixes, on the rendered compose files


def compose_services() -> dict[str, dict]:
    """node -> {service name: compose service} of the petals example."""
    prep = prepare(str(ROOT / "examples" / "petals.yaml"))
    assert prep.plan is not None
    out: dict[str, dict] = {}
    for f in render_project(prep.ctx, prep.plan, prep.overrides):
        if f.path.endswith("/compose.yml") and "rigctl-petals" in f.content:
            node = next(part for part in Path(f.path).parts if part in ("pet1", "pet2"))
            out[node] = yaml.safe_load(f.content)["services"]
    return out


def test_dht_identity_directory_is_mounted_read_write():
    dht = one("petals-dht")
    identity = dht.argv[dht.argv.index("--identity_path") + 1]
    assert identity == "/var/lib/rigctl/petals/llama70/bootstrap.id"
    assert dht.state_mounts == {"/var/lib/rigctl/petals/llama70": "/var/lib/rigctl/petals/llama70"}
    volumes = compose_services()["pet1"]["rigctl-llama70-dht"]["volumes"]
    assert "/var/lib/rigctl/petals/llama70:/var/lib/rigctl/petals/llama70" in volumes  # no :ro


def test_server_cache_is_the_cache_volume():
    for node, services in compose_services().items():
        for name, svc in services.items():
            if name.endswith("-dht"):
                continue
            assert svc["environment"]["PETALS_CACHE"] == "/cache", (node, name)
            assert "petals-cache:/cache" in svc["volumes"], (node, name)


def test_servers_on_the_dht_host_start_after_it():
    services = compose_services()
    for name in ("rigctl-llama70-gpu0", "rigctl-llama70-gpu1"):
        assert services["pet1"][name]["depends_on"] == {"rigctl-llama70-dht": {"condition": "service_healthy"}}
        assert "depends_on" not in services["pet2"][name]  # the DHT is on another host: the container retries
    assert "depends_on" not in services["pet1"]["rigctl-llama70-dht"]


def test_an_hf_source_pins_the_servers_to_its_commit():
    """A serve[].source.hf on Petals: the servers load that repository at the pinned commit
    (run_server's --revision), the flag is in the contract, and extra_args cannot move it."""
    import tempfile

    rev = "0123456789abcdef0123456789abcdef01234567"
    text = (ROOT / "examples" / "petals.yaml").read_text().replace(
        "source: {token: {env: HF_TOKEN}}",
        f"source: {{hf: {{repo: meta-llama/Llama-3.1-70B-Instruct, revision: {rev}}}, token: {{env: HF_TOKEN}}}}")
    with tempfile.TemporaryDirectory() as d:
        spec = Path(d) / "petals-hf.yaml"
        spec.write_text(text)
        servers = [s for s in services_of(spec) if s.role == "petals-server"]
        assert servers
        for s in servers:
            assert s.argv[3] == "meta-llama/Llama-3.1-70B-Instruct"
            assert s.argv[s.argv.index("--revision") + 1] == rev
            assert contracts.check(s) == []
        spec.write_text(text.replace("    source: {hf:", "    extra_args: [--revision=main]\n    source: {hf:"))
        res = check_file(str(spec))
        assert any(d.rule == "extra-args-conflict" and "source.hf.revision" in d.message for d in res.diagnostics)
