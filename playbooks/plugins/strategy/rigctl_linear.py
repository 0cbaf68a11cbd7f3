# rigctl's strategy: Ansible's `linear`, executed by Mitogen for Ansible when it is
# installed (rigctl depends on it) and plain `linear` when it is not.
#
# Why: a no-op apply is mostly per-task cost. With stock Ansible every module run forks a
# worker, opens an SSH session and starts a fresh Python on the host that recompiles
# module_utils from the AnsiballZ zip; Mitogen keeps one Python per host for the whole run
# and caches what it imported. On the 2-host lab that halves a no-op apply
# (bench/apply.py). Task order and results are linear's.
#
# Opt out without editing this tree: ANSIBLE_STRATEGY=linear rigctl apply ... (or
# ansible-playbook). Mitogen checks host keys itself: an inventory that disables checking
# must say so with `ansible_host_key_checking: false` (ssh_common_args alone is not enough).
from __future__ import annotations

from ansible.release import __version__ as _core_version
from ansible.utils.display import Display

# ansible-core releases to run under Mitogen: rigctl's floor up to the newest Mitogen
# 0.3.54 supports (rigctl's lab tests run 2.19). Newer ones run plain linear until
# checked, because Mitogen patches ansible-core internals.
_CHECKED = ((2, 15), (2, 20))

try:
    _core = tuple(int(p) for p in _core_version.split(".")[:2])
    if not _CHECKED[0] <= _core <= _CHECKED[1]:
        raise ImportError(f"ansible-core {_core_version} is outside the checked "
                          f"{_CHECKED[0][0]}.{_CHECKED[0][1]}-{_CHECKED[1][0]}.{_CHECKED[1][1]}")
    import ansible_mitogen.loaders
    import ansible_mitogen.strategy
except Exception as exc:  # not installed, or not for this ansible-core: stay correct, say so
    from ansible.plugins.strategy.linear import StrategyModule  # noqa: F401

    Display().warning(f"rigctl_linear: Mitogen for Ansible not used ({exc}); running plain linear")
else:
    _Linear = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)

    class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _Linear):
        """linear, with tasks run through Mitogen's persistent per-host interpreters."""
