"""Empty strings reach Ansible as empty strings.

ansible-core 2.19 loads `!unsafe ''` as None, so a spec without a fabric rendered
`rigctl_rig_subnet: !unsafe ''`, and the firewall role's template failed on every
single-node rig ("argument of type 'NoneType' is not iterable")."""

from __future__ import annotations

from pathlib import Path

import yaml

from provisioner.escape import ansible_unsafe
from provisioner.render import render_project
from provisioner.render.prepare import prepare
from provisioner.render import _yaml

ROOT = Path(__file__).resolve().parents[2]


def load_ansible_yaml(text: str):
    """Ansible's own loader (tests/consumers' stand-in reads `!unsafe ''` as '', Ansible does not)."""
    from ansible.parsing.yaml.loader import AnsibleLoader

    return yaml.load(text, Loader=AnsibleLoader)  # noqa: S506 - Ansible's SafeLoader subclass


def test_empty_string_round_trips_through_ansibles_loader():
    data = ansible_unsafe({"empty": "", "word": "{{ lookup('pipe', 'id') }}", "list": ["", "x"]})
    got = load_ansible_yaml(_yaml(data, "r"))
    assert got["empty"] == "" and got["list"] == ["", "x"]
    assert got["word"] == "{{ lookup('pipe', 'id') }}"


def test_a_rig_without_a_fabric_renders_an_empty_subnet_not_none():
    prep = prepare(str(ROOT / "examples" / "dual-3090-nvlink.yaml"))
    assert prep.plan is not None and prep.ctx.rig.fabric is None
    files = {f.path: f.content for f in render_project(prep.ctx, prep.plan, prep.overrides)}
    group = load_ansible_yaml(files["inventory/group_vars/all.yml"])
    assert group["rigctl_rig_subnet"] == ""
    for path, text in files.items():  # no string of any vars file turns into None
        if path.startswith("inventory/") and path.endswith(".yml"):
            plain = yaml.load(text.replace("!unsafe ", ""), Loader=yaml.SafeLoader)  # noqa: S506
            assert _nones(load_ansible_yaml(text)) == _nones(plain), path


def _nones(obj, at="") -> set[str]:
    if isinstance(obj, dict):
        return set().union(*(_nones(v, f"{at}.{k}") for k, v in obj.items())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(_nones(v, f"{at}[{i}]") for i, v in enumerate(obj))) if obj else set()
    return {at} if obj is None else set()
