"""compose `up --wait` outlasts the slowest healthcheck of the project it brings up.

The base role used to wait 900 s while vLLM's healthcheck allows 1800 s of start-up: a large
checkpoint still loading failed the apply although compose would have seen it healthy later.
"""

from __future__ import annotations

import jinja2
import yaml

from provisioner.check import check_file
from provisioner.plan import build_plan
from provisioner.render.services import service_vars


def _wait_expr(root) -> str:
    tasks = yaml.safe_load((root / "playbooks/roles/base/tasks/compose_project.yml").read_text())
    facts = tasks[0]["ansible.builtin.set_fact"]
    ups = [t["community.docker.docker_compose_v2"] for t in tasks if "community.docker.docker_compose_v2" in t]
    assert ups and all(u["wait_timeout"] == "{{ rigctl_compose_wait_eff | int }}" for u in ups)
    return facts["rigctl_compose_wait_eff"]


def test_wait_covers_vllm_start_period(root):
    res = check_file(str(root / "examples" / "multinode-vllm.yaml"))
    plan = build_plan(res.context)
    svcs = [service_vars(s, plan, None) for d in plan.deployments for s in d.services]
    server = next(s for s in svcs if s["role"] == "server")
    # start_period 1800 s, then 3 retries of interval 10 s + timeout 5 s
    assert server["health_wait_s"] == 1800 + 3 * (10 + 5)
    env = jinja2.Environment()
    wait = int(env.from_string(_wait_expr(root)).render(
        rigctl_compose_wait_s=900, rigctl_compose_services=[s for s in svcs if s["compose_project"] ==
                                                           server["compose_project"]]))
    assert wait >= server["health_wait_s"] > 900
    # a project of fast services keeps the role's default
    assert int(env.from_string(_wait_expr(root)).render(
        rigctl_compose_wait_s=900, rigctl_compose_services=[{"health_wait_s": 45}, {}])) == 900
