"""Identifiers that become names elsewhere are refused at validate, at their position, with
what the field expects (issue 10, Build 1): the bad value never reaches a rendered file."""

from __future__ import annotations

import json

import pytest

SPEC = """version: 1
name: box
fabric: {speed_gbps: 10, subnet: 10.0.0.0/24}
nodes:
  - name: n1
    connection: {address: ADDRESS, ssh_user: USER}
    board:
      slots: [{name: SLOT, position: 1}]
    gpus:
      - {id: GPUID, model: rtx-4090, slot: SLOT, uuid: UUID}
    nics: [{name: NIC, speed_gbps: 10}]
    storage: [{type: nvme, capacity_gb: 2000, mount: MOUNT, models_dir: true}]
serve:
  - name: chat
    model: llama-3.1-8b
    format: Q4_K_M
    stack: llamacpp
    model_file: MODELFILE
    placement: [{node: NODE}]
    bind: BIND
    auth: AUTH
    extra_args: [ARG]
"""

GOOD = {
    "ADDRESS": "192.168.1.10", "USER": "rig", "SLOT": "PCIEX16_1", "GPUID": "gpu0",
    "UUID": "GPU-c6a85c0a-a1c1-70a0-a698-5bb82c0332c4",  # tests/fixtures/probe (a real H200)
    "NIC": "enp5s0", "MOUNT": "/models", "MODELFILE": "models/llama-8b.gguf", "NODE": "n1", "BIND": "127.0.0.1",
    "AUTH": "{env: RIG_API_KEY}", "ARG": "--mlock",
}
LINE = {"ADDRESS": 6, "USER": 6, "SLOT": 8, "GPUID": 10, "UUID": 10, "NIC": 11, "MOUNT": 12, "MODELFILE": 18,
        "NODE": 19, "BIND": 20, "AUTH": 21, "ARG": 22}


def spec(**over) -> str:
    text = SPEC
    for k, v in {**GOOD, **over}.items():
        text = text.replace(k, v)
    return text


def check(tmp_path, rigctl, text):
    p = tmp_path / "rig.yaml"
    p.write_text(text)
    rc, out, err = rigctl("validate", p, "--format", "json")
    assert "Traceback" not in out + err
    return rc, [d for d in json.loads(out)["diagnostics"] if d["rule"].startswith("schema")]


def test_the_good_values_validate(tmp_path, rigctl):
    rc, schema = check(tmp_path, rigctl, spec())
    assert not schema, schema


JINJA = "\"{{ lookup('pipe', 'touch pwned') }}\""

BAD = [
    # (placeholder, bad YAML value, words the message must carry)
    ("ADDRESS", '"127.0.0.1{{ lookup(\'pipe\', \'touch pwned\') }}"', "IPv4 or IPv6 address or a DNS name"),
    ("ADDRESS", '"host name"', "IPv4 or IPv6 address or a DNS name"),
    ("ADDRESS", "192.168.1.600", "not a valid IPv4 address"),
    ("ADDRESS", '"-oProxyCommand=id"', "IPv4 or IPv6 address or a DNS name"),
    ("ADDRESS", "-oProxyCommand", "not a host name"),
    ("USER", JINJA, "POSIX user name"),
    ("USER", '"root; id"', "POSIX user name"),
    ("GPUID", '"x\\" accept\\ntcp dport 1 accept comment \\""', "starting with a letter or digit, at most 63"),
    ("GPUID", '"gpu${HOME}"', "letters, digits, '_', '.' and '-'"),
    ("UUID", '"GPU-${X}"', "as `nvidia-smi -L` prints it"),
    ("UUID", "c6a85c0a-a1c1-70a0-a698-5bb82c0332c4", "as `nvidia-smi -L` prints it"),
    ("SLOT", '"PCIE\\"1"', "a board label"),
    ("NIC", "enp5s0f1np1xyzab", "IFNAMSIZ"),
    ("NIC", '"eth0 accept"', "IFNAMSIZ"),
    ("MOUNT", "models", "an absolute path"),
    ("MOUNT", '"/models\\nExecStartPre=/bin/id"', "an absolute path"),
    ("MODELFILE", '"m.gguf\\nFROM evil"', "without control characters or line breaks"),
    ("NODE", '"n1\\""', "lowercase letters, digits and dashes"),
    ("BIND", '"0.0.0.0 "', "IPv4 or IPv6 address or a DNS name"),
    ("BIND", '"[::1]"', "IPv4 or IPv6 address or a DNS name"),
    ("AUTH", '{env: "KEY; id"}', "an environment variable name"),
    ("AUTH", '{vault: "{{ x }}"}', "an Ansible variable name"),
    ("AUTH", "{file: secrets/key}", "an absolute path"),
    ("ARG", '"--mlock\\n--host"', "without control characters or line breaks"),
    ("ARG", '"a\\u0000b"', "without control characters"),
]


@pytest.mark.parametrize("key, value, words", BAD, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(BAD)])
def test_bad_identifier_is_refused_at_its_line_saying_what_is_expected(tmp_path, rigctl, key, value, words):
    rc, schema = check(tmp_path, rigctl, spec(**{key: value}))
    assert rc == 1
    hits = [d for d in schema if d["line"] == LINE[key]]
    assert hits, schema
    assert any(words in d["message"] for d in hits), [d["message"] for d in hits]
    if key != "NODE":  # the generic node-name text is right only for names
        assert not any("lowercase letters, digits and dashes" in d["message"] for d in hits)


@pytest.mark.parametrize("key, value", [
    ("ADDRESS", "fe80::1%eth0"), ("ADDRESS", "gpu-box.lan"), ("ADDRESS", "2001:db8::10"),
    ("UUID", "MIG-c6a85c0a-a1c1-70a0-a698-5bb82c0332c4"), ("UUID", "MIG-GPU-c6a85c0a-a1c1-70a0-a698-5bb82c0332c4/1/0"),
    ("USER", "svc_ml.ops"), ("BIND", "0.0.0.0"), ("BIND", "::"), ("BIND", "localhost"), ("NIC", "eth0.100"),
    ("SLOT", "PCIE 1 (x16)"), ("AUTH", "{file: /etc/rigctl/key}"), ("ARG", '"--override-kv=a=int:1"'),
])
def test_real_world_values_still_validate(tmp_path, rigctl, key, value):
    rc, schema = check(tmp_path, rigctl, spec(**{key: value}))
    assert not schema, schema


@pytest.mark.parametrize("field, value, words", [
    ("image", '"ghcr.io/ggml-org/llama.cpp:server cuda"', "an OCI image reference"),
    ("image", '"Ghcr.io/A:b"', "an OCI image reference"),
    ("swarm", '{initial_peers: ["/ip4/10.0.0.1/tcp/31337 /p2p/x"]}', "a multiaddr"),
])
def test_deployment_references_have_patterns(tmp_path, rigctl, field, value, words):
    rc, schema = check(tmp_path, rigctl, spec() + f"    {field}: {value}\n")
    assert rc == 1 and any(words in d["message"] and d["line"] == 23 for d in schema), schema


def test_valid_image_references_validate(tmp_path, rigctl):
    for image in ("ghcr.io/ggml-org/llama.cpp:server-cuda", "localhost:5000/team/llama", "vllm/vllm-openai:v0.6.3",
                  "nvcr.io/nvidia/tritonserver@sha256:" + "a" * 64):
        rc, schema = check(tmp_path, rigctl, spec() + f"    image: {image}\n")
        assert not schema, (image, schema)


def test_description_takes_lines_but_no_control_characters(tmp_path, rigctl):
    rc, schema = check(tmp_path, rigctl, spec().replace("name: box\n", "name: box\ndescription: |\n  two\n  lines\n"))
    assert not schema
    rc, schema = check(tmp_path, rigctl, spec().replace("name: box\n", 'name: box\ndescription: "bell\\a"\n'))
    assert rc == 1 and schema[0]["line"] == 3 and "without control characters" in schema[0]["message"]


def test_nvlink_gpus_and_placement_gpus_use_the_gpu_id_pattern(tmp_path, rigctl):
    text = spec().replace("    nics:", "    nvlink: [{gpus: [gpu0, \"gpu1'\"]}]\n    nics:").replace(
        "placement: [{node: n1}]", "placement: [{node: n1, gpus: [\"gpu0 \"]}]")
    rc, schema = check(tmp_path, rigctl, text)
    paths = {tuple(d["path"]) for d in schema}
    assert ("nodes", 0, "nvlink", 0, "gpus", 1) in paths and ("serve", 0, "placement", 0, "gpus", 0) in paths, schema
