"""Every rendered exo service of every example, held against exo's contract
(provisioner/contracts/exo.yaml: facts read from exo v1.0.71's source), and the checks that make
a renamed flag, a removed variable, a random port or a wrong placement body fail."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from provisioner import contracts
from provisioner.check import check_file
from provisioner.plan import build_plan
from provisioner.plan import exo as exo_plan
from provisioner.plan.images import catalog
from provisioner.plan.model import Port

ROOT = Path(__file__).resolve().parents[2]


def services_of(spec: Path):
    res = check_file(str(spec))
    if res.errors:
        return []
    return [s for d in build_plan(res.context).deployments for s in d.services if s.stack == "exo"]


CASES = [(p.name, s) for p in sorted((ROOT / "examples").rglob("*.yaml")) for s in services_of(p)]


def test_examples_have_exo_services():
    assert len(CASES) >= 2


@pytest.mark.parametrize("svc", [s for _, s in CASES], ids=[f"{n}:{s.name}@{s.node}" for n, s in CASES])
def test_service_matches_engine_contract(svc):
    assert contracts.check(svc) == []


def one_node_spec(tmp_path: Path) -> Path:
    text = (ROOT / "examples" / "exo.yaml").read_text()
    text = text.replace("      - {node: studio2}\n", "").replace("llama-3.1-405b", "llama-3.3-70b")
    spec = tmp_path / "rig.yaml"
    spec.write_text(text)
    return spec


def test_single_node_has_no_peers_and_a_loopback_libp2p_port(tmp_path):
    (svc,) = services_of(one_node_spec(tmp_path))
    assert "--bootstrap-peers" not in svc.argv
    assert svc.extra_ports == [Port(52414, "tcp", scope="loopback")]
    body = json.loads(svc.files["/etc/rigctl/exo/llama405/place_instance.json"])
    assert body == {"model_id": "mlx-community/Llama-3.3-70B-Instruct-4bit", "sharding": "Pipeline",
                    "instance_meta": "MlxRing", "min_nodes": 1}
    assert contracts.check(svc) == []


def test_two_nodes_pin_the_libp2p_port_and_dial_each_other():
    a, b = (s for _, s in CASES if _ == "exo.yaml")
    for svc, other in ((a, "10.0.2.2"), (b, "10.0.2.1")):
        i = svc.argv.index("--libp2p-port")
        assert svc.argv[i + 1] == "52414"
        assert svc.argv[svc.argv.index("--bootstrap-peers") + 1] == f"/ip4/{other}/tcp/52414"
        assert [(p.port, p.proto, p.scope) for p in svc.extra_ports] == [(52414, "tcp", "subnet")]
        assert svc.env["EXO_LIBP2P_NAMESPACE"] == "rigctl-exo-macs-llama405"
    # only the API node places the model, over both nodes
    assert json.loads(next(iter(a.files.values())))["min_nodes"] == 2 and b.files == {}


def test_model_without_exo_id_gets_no_placement_and_a_note(tmp_path):
    spec = one_node_spec(tmp_path)
    spec.write_text(spec.read_text().replace("llama-3.3-70b", "qwen2.5-72b"))
    res = check_file(str(spec))
    (dp,) = build_plan(res.context).deployments
    assert dp.services[0].files == {}
    assert any("no exo model id for qwen2.5-72b" in n for n in dp.notes)


def first():
    return copy.deepcopy(CASES[0][1])


@pytest.mark.parametrize("mutate,expect", [
    # a renamed flag (zenoh-era exo calls the peer port --zenoh-port)
    (lambda s: s.argv.__setitem__(s.argv.index("--libp2p-port"), "--zenoh-port"), "flag --zenoh-port"),
    # the random libp2p port: without --libp2p-port exo listens wherever the OS says
    (lambda s: s.argv.__delitem__(slice(s.argv.index("--libp2p-port"), s.argv.index("--libp2p-port") + 2)),
     "--libp2p-port is not given"),
    # the flag and the firewall disagree
    (lambda s: s.argv.__setitem__(s.argv.index("--libp2p-port") + 1, "52416"), "--libp2p-port 52416"),
    (lambda s: s.argv.__setitem__(s.argv.index("--api-port") + 1, "8080"), "--api-port 8080"),
    # zenoh-era discovery port, which v1.0.71 does not open
    (lambda s: s.extra_ports.append(Port(52413, "udp")), "port 52413/udp"),
    # the MLX ring range is exo's random pick: rigctl must not filter it
    (lambda s: s.extra_ports.append(Port(49152, last=65535)), "port 49152-65535/tcp"),
    (lambda s: s.env.update(EXO_ZENOH_NAMESPACE="x"), "environment variable EXO_ZENOH_NAMESPACE"),
    (lambda s: s.env.update(RIGCTL_EXPECTED_LAYERS="0-62"), "environment variable RIGCTL_EXPECTED_LAYERS"),
    (lambda s: s.argv.__setitem__(0, "uv"), "argv[0] ['uv']"),
    (lambda s: s.argv.__setitem__(s.argv.index("--bootstrap-peers") + 1, "10.0.2.2:52414"), "does not match"),
    (lambda s: setattr(s, "health_path", "/healthz"), "health route /healthz"),
    (lambda s: body(s, sharding="Layer"), "sharding 'Layer'"),
    (lambda s: body(s, instance_meta="Jaccl"), "instance_meta 'Jaccl'"),
    (lambda s: body(s, min_nodes=0), "min_nodes 0"),
    (lambda s: body(s, model="x"), "key model is not read"),
    (lambda s: body(s, model_id="llama-3.1-405b"), "model_id 'llama-3.1-405b'"),
])
def test_wrong_fact_fails_the_check(mutate, expect):
    svc = first()
    assert contracts.check(svc) == []
    mutate(svc)
    problems = contracts.check(svc)
    assert any(expect in p for p in problems), problems


def body(svc, **change):
    (path, text), = svc.files.items()
    svc.files[path] = json.dumps({**json.loads(text), **change})


def test_every_mapped_model_id_is_one_exo_accepts():
    c = contracts.load("exo")
    known = set(c["model_ids"]["builtin"]["ids"]) | set(c["model_ids"]["fetched"])
    ids = [i for fmts in exo_plan.model_ids().values() for i in fmts.values()]
    assert ids and all(i in known for i in ids), sorted(set(ids) - known)


def test_contract_cites_sources_and_the_image_builds_the_pinned_version():
    c = contracts.load("exo")
    assert c["version"] == "v1.0.71" and re.fullmatch(r"[0-9a-f]{40}", c["commit"])
    assert c["source_repo"] == "https://github.com/exo-explore/exo"
    for section in ("flags", "env", "ports", "health_routes", "api_routes"):
        assert all(v.get("source") for v in c[section].values()), section
    # the image rigctl names is built from the same tag: a newer exo (zenoh) refuses
    # EXO_LIBP2P_NAMESPACE and --bootstrap-peers with a ValueError at start
    assert catalog()["exo"]["image"].endswith(":" + c["version"])
