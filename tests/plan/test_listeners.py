"""What an endpoint listens on is decided once, in the plan, and the firewall follows it.

Each test reads a spec the way a user writes it, plans it, and looks at what the hosts would
get: the engine's argv and environment, the planned bind and scope, and the firewall rules
render hands the firewall role (filled into the real nftables template at the end).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

from provisioner import exposure
from provisioner.check import check_file
from provisioner.plan import build_plan
from provisioner.render.services import firewall_rules
from provisioner.rules import security

ROOT = Path(__file__).resolve().parents[2]
BOX = """\
version: 1
name: t
{fabric}nodes:
  - name: box
    gpus: [{{id: gpu0, model: rtx-3090}}]
    nics: [{{name: enp1s0, speed_gbps: 10, address: 10.0.0.5}}]
serve:
  - name: ep
    model: {model}
    format: {format}
    stack: {stack}
    placement: [{{node: box}}]
"""
MODELS = {"llamacpp": ("llama-3.1-8b", "q4_k_m"), "vllm": ("qwen2.5-7b", "awq"),
          "ollama": ("llama-3.1-8b", "q4_k_m"), "tabbyapi": ("qwen2.5-7b", "exl3\n    bits_per_weight: 6.0")}


def checked(tmp_path, text: str):
    p = tmp_path / "rig.yaml"
    p.write_text(text)
    return check_file(str(p))


def planned(tmp_path, text: str):
    res = checked(tmp_path, text)
    assert res.context is not None, [d.message for d in res.diagnostics]
    return res, build_plan(res.context)


def one(stack: str, fabric: str = "", **fields) -> str:
    model, fmt = MODELS[stack]
    text = BOX.format(fabric=fabric, model=model, format=fmt, stack=stack)
    return text + "".join(f"    {k}: {v}\n" for k, v in fields.items())


def services(plan, role=None):
    return [s for d in plan.deployments for s in d.services if role is None or s.role == role]


def rules_on(plan, node):
    return firewall_rules(plan.services_on(node))


def flag(argv, name):
    return argv[argv.index(name) + 1]


# ------------------------------------------------------------------ loopback means exactly loopback


@pytest.mark.parametrize("bind, loopback", [
    ("127.0.0.1", True), ("::1", True), ("localhost", True),
    ("127.0.0.2", False), ("[::1]", False), ("127.0.0.1 ", False), ("::ffff:127.0.0.1", False),
    ("unix:/run/llama.sock", False), ("/run/llama.sock", False), ("0.0.0.0", False), ("10.0.0.5", False),
])
def test_only_exact_loopback_spellings_count(bind, loopback):
    assert exposure.is_loopback(bind) is loopback
    assert security.is_loopback is exposure.is_loopback  # the rule and the plan share one test


@pytest.mark.parametrize("stack", ["llamacpp", "vllm", "tabbyapi", "ollama"])
def test_a_127_0_0_2_bind_is_neither_loopback_scoped_nor_open_to_any_source(tmp_path, stack):
    res, plan = planned(tmp_path, one(stack, bind="127.0.0.2"))
    (srv,) = services(plan, "server")
    assert srv.bind == "127.0.0.2" and srv.port_scope != "loopback"
    if stack == "tabbyapi":  # TabbyAPI always checks a key (it generates one): open, with a warning
        assert srv.port_scope == "any"
        assert any(d.rule == "endpoint-auth[generated-key]" for d in res.diagnostics)
    else:  # no key: the firewall admits only the rig subnet, and validate says why
        assert srv.port_scope == "subnet"
        assert rules_on(plan, "box") == [{"port": srv.port, "proto": "tcp", "scope": "subnet", "service": srv.name}]
        assert any(d.base_rule == "endpoint-auth" and d.severity.value == "error" for d in res.diagnostics)


def test_scope_follows_bind_and_key(tmp_path):
    cases = {("127.0.0.1", None): "loopback", ("::1", None): "loopback",
             ("0.0.0.0", None): "subnet", ("10.0.0.5", None): "subnet",
             ("0.0.0.0", "{env: K}"): "any", ("10.0.0.5", "{env: K}"): "any"}
    for (bind, auth), scope in cases.items():
        fields = {"bind": f'"{bind}"'} | ({"auth": auth} if auth else {})
        _, plan = planned(tmp_path, one("llamacpp", **fields))
        (srv,) = services(plan)
        assert (srv.port_scope, flag(srv.argv, "--host")) == (scope, bind), (bind, auth)


def test_ollama_ipv6_loopback_host_is_bracketed(tmp_path):
    _, plan = planned(tmp_path, one("ollama", bind='"::1"'))
    (srv,) = services(plan)
    assert srv.env["OLLAMA_HOST"] == "[::1]:11434" and srv.port_scope == "loopback"


# ------------------------------------------------------------------ extra_args cannot move the listener


def test_extra_args_overriding_host_and_port_are_refused_where_they_are(tmp_path):
    text = one("llamacpp", bind="127.0.0.1", extra_args='[--host, 0.0.0.0, "--port=9999", --alias, x]')
    res = checked(tmp_path, text)
    found = {(d.rule, d.path, d.location.line) for d in res.diagnostics if d.rule == "extra-args-conflict"}
    assert found == {("extra-args-conflict", ("serve", 0, "extra_args", 0), 14),
                     ("extra-args-conflict", ("serve", 0, "extra_args", 2), 14)}
    assert res.errors >= 2  # apply and render refuse a spec with errors


def test_vllm_api_key_and_listener_flags_in_extra_args_are_refused(tmp_path):
    text = one("vllm", extra_args='[--uds, /run/v.sock, --api_key, "${K}", --max-model-len=999999]')
    res = checked(tmp_path, text)
    at = sorted(d.path[-1] for d in res.diagnostics if d.rule == "extra-args-conflict")
    assert at == [0, 2, 4]


# ------------------------------------------------------------------ exo: bind through the firewall, pinned libp2p port


EXO = """\
version: 1
name: exo
fabric: {{kind: thunderbolt, speed_gbps: 40, subnet: 10.0.2.0/24}}
nodes:
{nodes}serve:
  - name: mlx
    model: llama-3.1-8b
    format: mlx-4bit
    stack: exo
    bind: "{bind}"
    placement: [{placement}]
"""
MAC = """\
  - name: {name}
    os: macos
    gpus: [{{id: gpu0, model: apple-m2-ultra}}]
    nics: [{{name: bridge0, speed_gbps: 40, address: {addr}}}]
"""


def exo_spec(n_nodes: int, bind: str) -> str:
    names = [f"m{i}" for i in range(n_nodes)]
    nodes = "".join(MAC.format(name=n, addr=f"10.0.2.{i + 1}") for i, n in enumerate(names))
    return EXO.format(nodes=nodes, bind=bind, placement=", ".join(f"{{node: {n}}}" for n in names))


def test_exo_listens_everywhere_and_the_firewall_keeps_a_loopback_api_on_lo(tmp_path):
    _, plan = planned(tmp_path, exo_spec(2, "127.0.0.1"))
    head, other = services(plan)
    assert head.bind == "0.0.0.0"  # what exo really does: it has no listen-address option
    assert not any("host" in a for a in head.argv)
    assert rules_on(plan, "m0") == [  # exo v1.0.71: libp2p on --libp2p-port, no UDP discovery port
        {"port": 52414, "proto": "tcp", "scope": "subnet", "service": "rigctl-mlx"},
        {"port": 52415, "proto": "tcp", "scope": "loopback", "service": "rigctl-mlx"},
    ]
    assert other.port is None and [r["port"] for r in rules_on(plan, "m1")] == [52414]


def test_single_node_exo_keeps_its_peer_ports_to_loopback(tmp_path):
    _, plan = planned(tmp_path, exo_spec(1, "127.0.0.1"))
    assert {r["scope"] for r in rules_on(plan, "m0")} == {"loopback"}


def test_exo_on_a_lan_address_is_never_open_to_any_source(tmp_path):
    res, plan = planned(tmp_path, exo_spec(1, "10.0.2.1"))
    api = [r for r in rules_on(plan, "m0") if r["port"] == 52415]
    assert api == [{"port": 52415, "proto": "tcp", "scope": "subnet", "service": "rigctl-mlx"}]
    assert any(d.rule == "endpoint-auth[exo]" and "0.0.0.0" in d.message for d in res.diagnostics)


# ------------------------------------------------------------------ Ray: every listener pinned and subnet-only


def test_every_ray_listener_is_pinned_and_restricted_to_the_rig_subnet(root):
    res = check_file(str(root / "examples" / "multinode-vllm.yaml"))
    plan = build_plan(res.context)
    (head,) = services(plan, "ray-head")
    (worker,) = services(plan, "ray-worker")
    for svc, expect_flags in ((head, {"--port", "--dashboard-port", "--ray-client-server-port"}), (worker, set())):
        pinned = {a: int(svc.argv[k + 1]) for k, a in enumerate(svc.argv) if re.fullmatch(r"--[a-z-]*port", a)}
        assert expect_flags | {"--node-manager-port", "--object-manager-port", "--runtime-env-agent-port",
                               "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port",
                               "--metrics-export-port", "--min-worker-port", "--max-worker-port"} == set(pinned)
        rules = {str(r["port"]): r for r in rules_on(plan, svc.node) if r["service"] == svc.name}
        assert rules.pop(f"{pinned.pop('--min-worker-port')}-{pinned.pop('--max-worker-port')}")["scope"] == "subnet"
        assert {str(p) for p in pinned.values()} == set(rules)
        assert {r["scope"] for r in rules.values()} == {"subnet"} and {r["proto"] for r in rules.values()} == {"tcp"}
        assert all(p < 32768 for p in pinned.values())  # out of Linux's ephemeral range


def test_rendered_ruleset_filters_the_ray_worker_range_and_the_exo_peer_port(root, tmp_path):
    res = check_file(str(root / "examples" / "multinode-vllm.yaml"))
    plan = build_plan(res.context)
    ruleset = nft_ruleset(rules_on(plan, "gpu-b"), res.context.rig.fabric.subnet)
    assert "ip saddr 10.0.1.0/24 tcp dport 10002-19999 counter accept" in ruleset
    assert re.search(r"^\s*tcp dport 10002-19999 counter drop", ruleset, re.M)
    _, exo_plan = planned(tmp_path, exo_spec(2, "127.0.0.1"))
    exo_rules = nft_ruleset(rules_on(exo_plan, "m0"), "10.0.2.0/24")
    assert "ip saddr 10.0.2.0/24 tcp dport 52414 counter accept" in exo_rules
    assert not re.search(r"dport 52413", exo_rules)
    assert re.search(r"^\s*tcp dport 52415 counter drop comment \"rigctl-mlx: loopback only\"", exo_rules, re.M)
    nft = shutil.which("nft")
    if nft:
        for text in (ruleset, exo_rules):
            (tmp_path / "r.nft").write_text(text)
            out = subprocess.run([nft, "-c", "-f", str(tmp_path / "r.nft")], capture_output=True, text=True)
            if "Operation not permitted" in out.stderr:
                break  # nft -c needs CAP_NET_ADMIN here; the text checks above still hold
            assert out.returncode == 0, out.stderr


def nft_ruleset(rules: list[dict], subnet: str) -> str:
    """The firewall role's template filled as Ansible fills it."""
    role = ROOT / "playbooks" / "roles" / "firewall"
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    values = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    values |= {"rigctl_firewall_rules": rules, "rigctl_rig_subnet": subnet, "rigctl_firewall_ssh_port": 22,
               "ansible_managed": "Ansible managed"}
    return env.from_string((role / "templates" / "rigctl.nft.j2").read_text()).render(**values)


# ------------------------------------------------------------------ auth on stacks without keys


def test_auth_on_ollama_is_reported_at_auth_and_not_planned(tmp_path):
    res, plan = planned(tmp_path, one("ollama", auth="{env: KEY}"))
    (srv,) = services(plan)
    assert srv.secret_env == {}  # nothing would carry the key
    (d,) = [d for d in res.diagnostics if d.rule == "endpoint-auth[auth-ignored]"]
    assert d.path == ("serve", 0, "auth") and d.location.line == 13
    assert d.message.startswith("ep: auth is ignored: Ollama has no API key support")
