"""ansible-runner's options as one typed object (runner's own kwargs are the contract)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RunnerOptions:
    """Everything rigctl passes to ``ansible_runner.run`` for one playbook run."""

    private_data_dir: Path  # runner's data dir: artifacts/ and env/ land here (kept per run)
    project_dir: Path  # the rendered project (ansible.cfg, site.yml, roles/, inventory/)
    inventory: Path
    playbook: str = "site.yml"
    limit: str | None = None
    check: bool = False
    diff: bool = False
    verbosity: int = 0
    ident: str = "apply"
    timeout_s: int | None = None
    envvars: dict[str, str] = field(default_factory=dict)
    extravars: dict = field(default_factory=dict)  # -e values (no secrets: runner keeps them in env/)

    def cmdline(self) -> str | None:
        flags = [f for f, on in (("--check", self.check), ("--diff", self.diff)) if on]
        return " ".join(flags) or None

    def environment(self) -> dict[str, str]:
        # runner execs ansible-playbook from PATH: the interpreter running rigctl must win
        path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
        env = {"PATH": path, "ANSIBLE_CONFIG": str(self.project_dir / "ansible.cfg"),
               "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
               # runner turns host key checking off unless told; keep Ansible's default
               # (the lab inventory opts out explicitly)
               "ANSIBLE_HOST_KEY_CHECKING": os.environ.get("ANSIBLE_HOST_KEY_CHECKING", "True")}
        env.update(self.envvars)
        return env

    def to_kwargs(self) -> dict:
        kw = {
            "private_data_dir": str(self.private_data_dir),
            "project_dir": str(self.project_dir),
            "inventory": str(self.inventory),
            "playbook": self.playbook,
            "ident": self.ident,
            "envvars": self.environment(),
            "quiet": True,
            "verbosity": self.verbosity or None,
            "suppress_env_files": True,
            # runner would point the fact cache into this run's artifacts; ansible.cfg's
            # cache (shared across runs) is what makes the next no-op apply fast
            "fact_cache_type": "ansible.cfg",  # env/ would otherwise get the environment (and secrets' names) on disk
        }
        if self.limit:
            kw["limit"] = self.limit
        if self.extravars:
            kw["extravars"] = dict(self.extravars)
        if self.cmdline():
            kw["cmdline"] = self.cmdline()
        if self.timeout_s:
            kw["timeout"] = self.timeout_s
        return {k: v for k, v in kw.items() if v is not None}
