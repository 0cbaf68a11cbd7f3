"""Every rendered ollama and tabbyapi service of every example, held against the engine
contract data (provisioner/contracts/<stack>.yaml, facts read from the pinned engine source)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from provisioner import contracts
from provisioner.check import check_file
from provisioner.plan import build_plan

ROOT = Path(__file__).resolve().parents[2]
STACKS = ("ollama", "tabbyapi")


def services_of(spec: Path):
    res = check_file(str(spec))
    if res.errors:
        return []
    return [s for d in build_plan(res.context).deployments for s in d.services if s.stack in STACKS]


CASES = [(p.name, s) for p in sorted((ROOT / "examples").rglob("*.yaml")) for s in services_of(p)]


def test_examples_cover_both_stacks():
    assert {s.stack for _, s in CASES} == set(STACKS)


@pytest.mark.parametrize("svc", [s for _, s in CASES], ids=[f"{n}:{s.name}" for n, s in CASES])
def test_service_matches_engine_contract(svc):
    assert contracts.check(svc) == []


def tabby_with_key(tmp_path):
    text = (ROOT / "examples" / "tabbyapi.yaml").read_text().replace(
        "    bind: 127.0.0.1\n", "    bind: 127.0.0.1\n    auth: {env: TABBY_KEY}\n")
    spec = tmp_path / "rig.yaml"
    spec.write_text(text)
    (svc,) = services_of(spec)
    return svc


def test_tabbyapi_key_reaches_api_tokens_yml(tmp_path):
    svc = tabby_with_key(tmp_path)
    assert "TABBY_API_KEY" not in svc.secret_env and "TABBY_API_KEY" not in svc.env
    assert svc.secret_mounts == {"/etc/rigctl/secrets/rigctl-llama70-api_tokens.yml": "/app/api_tokens.yml"}
    assert contracts.check(svc) == []
    svc.secret_mounts = {}
    assert any("api_tokens.yml" in p for p in contracts.check(svc))


def test_tabbyapi_compose_mounts_tokens_in_workdir(tmp_path):
    from provisioner.render.compose import service_values
    from provisioner.render.services import secret_files
    svc = tabby_with_key(tmp_path)
    svc.image = "rigctl/tabbyapi:3cf468c"
    vals = service_values("r", svc, secret_files(svc), False, [svc])
    assert "/etc/rigctl/secrets/rigctl-llama70-api_tokens.yml:/app/api_tokens.yml:ro" in vals["volumes"]


def one(stack):
    return copy.deepcopy(next(s for _, s in CASES if s.stack == stack))


@pytest.mark.parametrize("stack,mutate,expect", [
    ("tabbyapi", lambda s: s.argv.append("--max-seq-len"), "flag --max-seq-len"),
    ("tabbyapi", lambda s: s.env.update(TABBY_API_KEY="x"), "environment variable TABBY_API_KEY"),
    ("tabbyapi", lambda s: s.files.update({k: v.replace("cache_mode:", "kv_cache_mode:")
                                           for k, v in s.files.items()}), "config key model.kv_cache_mode"),
    ("tabbyapi", lambda s: s.files.update({k: v.replace("disable_auth: false", "disable_auth: true")
                                           for k, v in s.files.items()}), "disable_auth must be false"),
    ("tabbyapi", lambda s: setattr(s, "health_path", "/healthz"), "health route /healthz"),
    ("ollama", lambda s: s.env.update(OLLAMA_NUM_GPU="2"), "environment variable OLLAMA_NUM_GPU"),
    ("ollama", lambda s: s.argv.append("--port"), "flag --port"),
    ("ollama", lambda s: setattr(s, "port", 11435), "OLLAMA_HOST"),
    ("ollama", lambda s: s.files.update({k: v + "PARAMETER ctx_size 4\n" for k, v in s.files.items()}),
     "ctx_size"),
])
def test_wrong_fact_fails_the_check(stack, mutate, expect):
    svc = one(stack)
    assert contracts.check(svc) == []
    mutate(svc)
    problems = contracts.check(svc)
    assert any(expect in p for p in problems), problems


def test_contract_files_cite_sources():
    for stack in STACKS:
        c = contracts.load(stack)
        assert c["version"] and c["source_repo"].startswith("https://github.com/")
        for section in ("env", "flags", "health_routes"):
            assert all(v.get("source") for v in (c.get(section) or {}).values()), (stack, section)
