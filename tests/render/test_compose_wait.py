"""The wait for each container outlasts its healthcheck.

The base role used to wait 900 s while vLLM's healthcheck allows 1800 s of start-up: a large
checkpoint still loading failed the apply although compose would have seen it healthy later.
The role now starts the project without compose's --wait and watches each container itself
(wait_container.yml), for as long as that container's healthcheck allows.
"""

from __future__ import annotations

import jinja2
import yaml

from provisioner.check import check_file
from provisioner.plan import build_plan
from provisioner.render.services import service_vars


def _wait_s(root, service: dict, default: int = 900) -> int:
    """Seconds the watch of wait_container.yml gives one service: retries x delay."""
    compose = yaml.safe_load((root / "playbooks/roles/base/tasks/compose_project.yml").read_text())
    ups = [t["community.docker.docker_compose_v2"] for t in compose if "community.docker.docker_compose_v2" in t]
    assert ups and not any(u.get("wait") for u in ups)  # compose's own --wait is not used
    watch = yaml.safe_load((root / "playbooks/roles/base/tasks/wait_container.yml").read_text())[0]
    retries = jinja2.Environment().from_string(watch["retries"]).render(
        rigctl_wait_container=service, rigctl_compose_wait_s=default)
    return int(retries) * int(watch["delay"])


def test_wait_covers_vllm_start_period(root):
    res = check_file(str(root / "examples" / "multinode-vllm.yaml"))
    plan = build_plan(res.context)
    svcs = [service_vars(s, plan, None) for d in plan.deployments for s in d.services]
    server = next(s for s in svcs if s["role"] == "server")
    # start_period 1800 s, then 3 retries of interval 10 s + timeout 5 s
    assert server["health_wait_s"] == 1800 + 3 * (10 + 5)
    assert _wait_s(root, server) >= server["health_wait_s"] > 900
    # a fast service keeps the role's default
    assert _wait_s(root, {"health_wait_s": 45}) >= 900
