"""The petals role's state task run for real (ansible-playbook, connection local) on the services
the plan renders for examples/petals.yaml (paths moved under tmp): the identity key's directory
is created before start, a DHT whose key is missing is refused instead of minting a new peer id,
and a key whose peer id is not the one the servers list is refused. Keys are RSA keys written as
hivemind writes them (crypto_pb2.PrivateKey{RSA, PKCS#1 DER}, hivemind/p2p/p2p_daemon.py
generate_identity at 213bff98). Petals itself cannot run here (that hivemind is not on PyPI)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .test_petals_contract import CASES, one

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the role creates root-owned directories")


def dht_under(tmp_path: Path) -> tuple[dict, Path]:
    svc = one("petals-dht").to_dict()
    (host_dir,) = svc["state_mounts"]
    moved = str(tmp_path / "state" / "llama70")
    svc["state_mounts"] = {moved: moved}
    svc["argv"] = [a.replace(host_dir, moved) for a in svc["argv"]]
    return svc, Path(moved)


def hivemind_key(path: Path) -> bytes:
    """An RSA identity as hivemind writes it: PrivateKey protobuf {1: RSA (0), 2: PKCS#1 DER}."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.private_bytes(ser.Encoding.DER, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption())
    n, size = len(der), b""
    while True:  # protobuf varint
        size += bytes([(n & 0x7F) | (0x80 if n >> 7 else 0)])
        n >>= 7
        if not n:
            break
    data = b"\x08\x00\x12" + size + der
    path.write_bytes(data)
    return key.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)


def peer_id_of_spki(spki: bytes) -> str:
    """libp2p peer id of an RSA key: base58(sha2-256 multihash of PublicKey{0, SPKI}), the spec's way."""
    import hashlib
    proto = b"\x08\x00\x12" + bytes([0x80 | (len(spki) & 0x7F), len(spki) >> 7]) + spki
    raw = b"\x12\x20" + hashlib.sha256(proto).digest()
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    n, out = int.from_bytes(raw, "big"), ""
    while n:
        n, r = divmod(n, 58)
        out = alphabet[r] + out
    return out


def run(tmp_path: Path, services: list[dict], peer: str | None = None) -> subprocess.CompletedProcess:
    """The role's state.yml on localhost; the inventory holds the servers (rigctl_services) too,
    with their --initial_peers naming `peer` as the DHT's peer id when given."""
    servers = [s.to_dict() for _, s in CASES if s.role == "petals-server"]
    if peer:
        for s in servers:
            s["argv"] = [a.rsplit("/p2p/", 1)[0] + "/p2p/" + peer if "/p2p/" in a else a for a in s["argv"]]
    inventory = {"all": {"hosts": {"localhost": {"ansible_connection": "local", "rigctl_services": servers}}}}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    play = [{"hosts": "localhost", "gather_facts": False,
             "tasks": [{"ansible.builtin.include_role": {"name": "petals", "tasks_from": "state"},
                        "vars": {"petals_services": services}}]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    env = {"ANSIBLE_NOCOLOR": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "ANSIBLE_ROLES_PATH": str(ROOT / "playbooks/roles")}
    return subprocess.run([sys.executable, str(ROOT / ".venv/bin/ansible-playbook"), "-i",
                           str(tmp_path / "inventory.yml"), str(tmp_path / "play.yml")],
                          capture_output=True, text=True, timeout=120, env=env)


def test_missing_key_is_refused_after_its_directory_is_made(tmp_path):
    svc, state = dht_under(tmp_path)
    r = run(tmp_path, [svc])
    assert r.returncode != 0
    assert f"no identity key at {state}/bootstrap.id" in r.stdout, r.stdout
    assert "python -m petals.cli.run_dht --identity_path" in r.stdout
    assert state.is_dir() and stat.S_IMODE(state.stat().st_mode) == 0o700


def test_key_of_the_listed_peer_id_passes_and_rerun_changes_nothing(tmp_path):
    svc, state = dht_under(tmp_path)
    state.mkdir(parents=True)
    peer = peer_id_of_spki(hivemind_key(state / "bootstrap.id"))
    first = run(tmp_path, [svc], peer=peer)
    assert first.returncode == 0, first.stdout + first.stderr
    second = run(tmp_path, [svc], peer=peer)
    assert second.returncode == 0 and "changed=0" in second.stdout, second.stdout


def test_key_of_another_peer_id_is_refused(tmp_path):
    svc, state = dht_under(tmp_path)
    state.mkdir(parents=True)
    peer = peer_id_of_spki(hivemind_key(state / "bootstrap.id"))
    r = run(tmp_path, [svc])  # the example lists QmYyQSo1..., not this key's peer id
    assert r.returncode != 0
    assert (f"the key at {state}/bootstrap.id has peer id {peer}, but the servers bootstrap from "
            "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N") in r.stdout, r.stdout


def test_peer_id_matches_a_published_libp2p_vector():
    """js-ipfs's test identity (PublicKey protobuf, base64) and its ID, as go-ipfs printed them."""
    import base64
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "rigctl_petals_identity", ROOT / "playbooks/roles/petals/library/rigctl_petals_identity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    public = base64.b64decode(
        "CAASpgIwggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQC2SKo/HMFZeBml1AF3XijzrxrfQXdJzjePBZAbdxqKR1Mc6juRHXij6HXYPjl"
        "Ak01BhF1S3Ll4Lwi0cAHhggf457sMg55UWyeGKeUv0ucgvCpBwlR5cQ020i0MgzjPWOLWq1rtvSbNcAi2ZEVn6+Q2EcHo3wUvWRtLeKz+DZSZfw2P"
        "EDC+DGPJPl7f8g7zl56YymmmzH9liZLNrzg/qidokUv5u1pdGrcpLuPNeTODk0cqKB+OUbuKj9GShYECCEjaybJDl9276oalL9ghBtSeEv20kuga"
        "tTvYy590wFlJkkvyl+nPxIH0EEYMKK9XRWlu9XYnoSfboiwcv8M3SlsjAgMBAAE=")
    assert mod.peer_id_of_public(public) == "QmQ2zigjQikYnyYUSXZydNXrDRhBut2mubwJBaLXobMt3A"
