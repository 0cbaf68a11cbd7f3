"""The rigctl_linear strategy: Mitogen's linear where it can run, Ansible's linear otherwise."""

from __future__ import annotations

import importlib.util
import sys

import ansible.release
import pytest

from provisioner.resources import package_dir

PLUGIN = package_dir("playbooks") / "plugins" / "strategy" / "rigctl_linear.py"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, PLUGIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules.pop(name, None)
    return mod


def test_runs_linear_through_mitogen_when_installed():
    import ansible_mitogen.strategy
    from ansible.plugins.strategy.linear import StrategyModule as Linear

    mod = _load("rigctl_linear_a")
    assert issubclass(mod.StrategyModule, ansible_mitogen.strategy.StrategyMixin)
    assert issubclass(mod.StrategyModule, Linear)


@pytest.mark.parametrize("version", ["2.14.0", "2.21.0"])
def test_unchecked_ansible_core_falls_back_to_plain_linear_and_says_so(monkeypatch, capsys, version):
    from ansible.plugins.strategy.linear import StrategyModule as Linear

    monkeypatch.setattr(ansible.release, "__version__", version)
    mod = _load(f"rigctl_linear_{version.replace('.', '_')}")
    assert mod.StrategyModule is Linear
    assert f"ansible-core {version} is outside the checked" in capsys.readouterr().err


def test_rendered_config_selects_it(tmp_path):
    from provisioner.render.templating import render_template

    cfg = render_template("ansible.cfg.j2", rig="r", forks=10)
    assert "strategy_plugins = plugins/strategy" in cfg and "strategy = rigctl_linear" in cfg
