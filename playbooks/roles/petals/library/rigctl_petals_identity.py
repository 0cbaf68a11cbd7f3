#!/usr/bin/python
# -*- coding: utf-8 -*-
# MIT License (see the rigctl repository)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: rigctl_petals_identity
short_description: Check that a Petals DHT's identity key gives the peer id its servers bootstrap from
version_added: "1.0.0"
description:
  - Reads the libp2p identity key a Petals DHT is started with (C(--identity_path)) and derives its
    peer id the way hivemind does (C(PeerID.from_identity) in
    C(hivemind/p2p/p2p_daemon_bindings/datastructures.py) at commit 213bff98, which Petals 22afba6 pins;
    the libp2p peer-ids specification).
  - The file is a serialized libp2p C(PrivateKey) protobuf. RSA keys (what hivemind writes, a PKCS#1 DER
    key) and Ed25519 keys are read.
  - Fails when the file is missing (the DHT would write a new key with a new peer id), unreadable, or
    when its peer id is not among O(listed).
  - Only reads. Pure Python standard library: no cryptography package on the host.
options:
  path:
    description: The identity key file on the host.
    type: path
    required: true
  listed:
    description:
      - The peer ids (base58) the servers' C(--initial_peers) name for this DHT. Empty skips the comparison.
    type: list
    elements: str
    default: []
  hint:
    description: Text appended to the message when the file is missing (how to make a key).
    type: str
    default: ""
author:
  - rigctl contributors
"""

EXAMPLES = r"""
- name: Check the DHT key
  rigctl_petals_identity:
    path: /var/lib/rigctl/petals/llama70/bootstrap.id
    listed: [QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N]
"""

RETURN = r"""
peer_id:
  description: The key's peer id (base58), empty when the file is missing.
  type: str
  returned: always
"""

import hashlib
import os

from ansible.module_utils.basic import AnsibleModule

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_RSA_OID = bytes.fromhex("06092a864886f70d010101")  # 1.2.840.113549.1.1.1 rsaEncryption


def _varint(data, i):
    value = shift = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7


def _enc_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def parse_key(data):
    """(key type, key bytes) of a serialized libp2p PrivateKey {1: KeyType, 2: bytes}."""
    i, kind, key = 0, None, None
    while i < len(data):
        tag, i = _varint(data, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _varint(data, i)
            if field == 1:
                kind = value
        elif wire == 2:
            n, i = _varint(data, i)
            if i + n > len(data):
                raise ValueError("truncated field")
            if field == 2:
                key = data[i:i + n]
            i += n
        else:
            raise ValueError("unexpected protobuf wire type %d" % wire)
    if kind is None or key is None:
        raise ValueError("not a libp2p PrivateKey protobuf")
    return kind, key


def _der(data, i, tag):
    """(content, next index) of the DER element with `tag` at i."""
    if i >= len(data) or data[i] != tag:
        raise ValueError("DER: expected tag 0x%02x" % tag)
    n = data[i + 1]
    i += 2
    if n & 0x80:
        width = n & 0x7F
        n = int.from_bytes(data[i:i + width], "big")
        i += width
    if i + n > len(data):
        raise ValueError("DER: truncated")
    return data[i:i + n], i + n


def _enc_der(tag, content):
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    width = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | width]) + n.to_bytes(width, "big") + content


def rsa_spki(pkcs1):
    """SubjectPublicKeyInfo DER of a PKCS#1 RSAPrivateKey DER (version, n, e, ...)."""
    body, _ = _der(pkcs1, 0, 0x30)
    _, i = _der(body, 0, 0x02)  # version
    n, i = _der(body, i, 0x02)
    e, _ = _der(body, i, 0x02)
    public = _enc_der(0x30, _enc_der(0x02, n) + _enc_der(0x02, e))
    algorithm = _enc_der(0x30, _RSA_OID + b"\x05\x00")
    return _enc_der(0x30, algorithm + _enc_der(0x03, b"\x00" + public))


def public_key_proto(kind, key):
    if kind == 0:  # RSA: PKIX DER
        data = rsa_spki(key)
    elif kind == 1:  # Ed25519: 64 bytes, private seed then public key
        if len(key) not in (64, 96):
            raise ValueError("Ed25519 key of %d bytes" % len(key))
        data = key[32:64]
    else:
        raise ValueError("key type %d (only RSA and Ed25519 are read)" % kind)
    return b"\x08" + _enc_varint(kind) + b"\x12" + _enc_varint(len(data)) + data


def b58encode(raw):
    n = int.from_bytes(raw, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\x00"))) + out


def peer_id_of_public(proto):
    """libp2p peer id: identity multihash up to 42 bytes, else sha2-256."""
    if len(proto) <= 42:
        return b58encode(b"\x00" + _enc_varint(len(proto)) + proto)
    return b58encode(b"\x12\x20" + hashlib.sha256(proto).digest())


def peer_id(identity):
    return peer_id_of_public(public_key_proto(*parse_key(identity)))


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "listed": {"type": "list", "elements": "str", "default": []},
            "hint": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    path = module.params["path"]
    listed = module.params["listed"]
    if not os.path.isfile(path):
        module.fail_json(msg=("no identity key at %s. The servers bootstrap from the /p2p/ peer id listed in "
                              "swarm.initial_peers, and the DHT would write a new key with another peer id. %s"
                              % (path, module.params["hint"])).strip(), peer_id="")
    try:
        with open(path, "rb") as f:
            pid = peer_id(f.read())
    except (OSError, ValueError) as exc:
        module.fail_json(msg="%s is not a libp2p identity key: %s" % (path, exc), peer_id="")
    if listed and pid not in listed:
        module.fail_json(msg=("the key at %s has peer id %s, but the servers bootstrap from %s: put the key of "
                              "that peer id there, or list /p2p/%s in swarm.initial_peers"
                              % (path, pid, ", ".join(sorted(set(listed))), pid)), peer_id=pid)
    module.exit_json(changed=False, peer_id=pid)


if __name__ == "__main__":
    main()
