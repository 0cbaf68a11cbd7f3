"""serve[].source: the spec refuses what cannot be fetched safely, the plan says where the
weights land and what the host fetches, HF_TOKEN reaches the engines as a secret (never a
value), apply refuses an unset token variable before any host, and a download reports progress."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.execute.events import Progress
from provisioner.plan import build_plan
from provisioner.render import render_project
from provisioner.rules.context import Context
from provisioner.spec.catalog import builtin
from provisioner.spec.loader import load_text

ROOT = Path(__file__).resolve().parents[2]
REV = "0123456789abcdef0123456789abcdef01234567"
SHA = "ab" * 32
TINY = ("{name: tiny, architecture: llama, params_b: 0.0001, layers: 2, attention_heads: 4, kv_heads: 4, "
        "head_dim: 16, hidden_size: 64, vocab_size: 260, max_context: 2048}")


def spec(source: str, stack: str = "llamacpp", model: str = TINY, fmt: str = "gguf-f16", extra: str = "") -> str:
    return f"""version: 1
name: src
nodes:
  - name: box
    connection: {{address: 10.0.0.5}}
    gpus: [{{id: gpu0, model: rtx-4090}}]
    storage: [{{type: nvme, capacity_gb: 2000, models_dir: true}}]
serve:
  - name: dep
    model: {model}
    format: {fmt}
    stack: {stack}
    source: {source}
    placement: [{{node: box}}]
{extra}"""


def load(text: str):
    res = load_text(text, "rig.yaml")
    return res


def errors(text: str) -> list[str]:
    res = load(text)
    assert res.rig is None, "the spec loaded"
    return [f"{d.location.line}: {d.message}" for d in res.diagnostics]


def plan_of(text: str):
    res = load(text)
    assert res.rig is not None, [d.message for d in res.diagnostics]
    ctx = Context(res.rig, builtin(), file="rig.yaml")
    return ctx, build_plan(ctx)


@pytest.mark.parametrize("source, needle", [
    ("{url: 'https://example.com/m.gguf'}", "needs its sha256"),
    (f"{{url: 'https://example.com/m.gguf', sha256: {SHA.upper()}}}", "sha256 digest: 64 lowercase hex"),
    (f"{{url: 'https://user:pw@example.com/m.gguf', sha256: {SHA}}}", "carries credentials"),
    (f"{{url: 'https://example.com/models/', sha256: {SHA}}}", "must end in a file name"),
    (f"{{url: 'ftp://example.com/m.gguf', sha256: {SHA}}}", "http:// or https:// URL"),
    ("{hf: {repo: a/b, revision: main}}", "40-character git commit"),
    (f"{{hf: {{repo: a/b, revision: {REV}, files: ['../../etc/passwd']}}}}", "no '..'"),
    (f"{{hf: {{repo: a/b, revision: {REV}, files: [/etc/passwd]}}}}", "no '..'"),
    (f"{{hf: {{repo: 'a b/c', revision: {REV}}}}}", "Hugging Face repository id"),
    (f"{{hf: {{repo: a/b, revision: {REV}}}, token: hf_abcdef}}", "inline secrets are not allowed"),
    (f"{{path: /models/m.gguf, token: {{env: T}}}}", "give it with an hf source"),
    (f"{{path: /models/m.gguf, url: 'https://e.com/m.gguf', sha256: {SHA}}}", "exactly one of hf, url or path"),
    (f"{{path: /models/m.gguf, sha256: {SHA}}}", "sha256 belongs to a url source"),
    ("{token: {env: HF_TOKEN}}", "llamacpp needs the weights on the host"),
])
def test_bad_sources_are_refused_at_their_position(source, needle):
    errs = errors(spec(source))
    assert any(needle in e for e in errs), errs
    assert all(e.startswith(("13:", "9:")) for e in errs), errs  # the source line (or its deployment)


@pytest.mark.parametrize("stack", ["ollama", "exo"])
def test_stacks_that_fetch_by_themselves_refuse_a_host_download(stack):
    errs = errors(spec(f"{{url: 'https://example.com/m.gguf', sha256: {SHA}}}", stack=stack))
    assert any("not wired to it yet" in e for e in errs), errs


def test_model_file_and_a_source_are_one_too_many():
    errs = errors(spec("{path: /models/m.gguf}", extra="    model_file: m.gguf\n"))
    assert any("model_file" in e and "not both" in e for e in errs), errs


def test_url_source_lands_in_the_deployment_directory_and_is_fetched_before_the_start():
    _, plan = plan_of(spec(f"{{url: 'https://example.com/a/tiny-Q4.gguf?x=1', sha256: {SHA}}}"))
    svc = plan.deployments[0].services[0]
    assert svc.model_path == "/var/lib/rigctl/models/dep/tiny-Q4.gguf"
    assert svc.argv[svc.argv.index("--model") + 1] == svc.model_path
    assert svc.model_fetch == {"kind": "url", "url": "https://example.com/a/tiny-Q4.gguf?x=1", "sha256": SHA,
                               "dest": svc.model_path}
    assert svc.model_source is None and "HF_TOKEN" not in svc.secret_env


def test_hf_source_picks_the_first_shard_for_llamacpp_and_the_token_is_a_secret_reference():
    files = "[m-00002-of-00002.gguf, m-00001-of-00002.gguf, README.md]"
    _, plan = plan_of(spec(f"{{hf: {{repo: org/m-GGUF, revision: {REV}, files: {files}}}, token: {{env: MY_HF}}}}"))
    svc = plan.deployments[0].services[0]
    assert svc.model_path == "/var/lib/rigctl/models/dep/m-00001-of-00002.gguf"
    assert svc.model_fetch["kind"] == "hf" and svc.model_fetch["dest"] == "/var/lib/rigctl/models/dep"
    assert svc.model_fetch["revision"] == REV and svc.model_fetch["token"] is True
    assert svc.secret_env == {"HF_TOKEN": {"env": "MY_HF"}}


def test_vllm_serves_the_downloaded_checkpoint_directory_with_the_token():
    _, plan = plan_of(spec(f"{{hf: {{repo: meta-llama/Llama-3.1-8B-Instruct, revision: {REV}}}, token: {{vault: hf}}}}",
                           stack="vllm", model="llama-3.1-8b", fmt="bf16"))
    svc = plan.deployments[0].services[-1]
    assert svc.argv[:3] == ["vllm", "serve", "/var/lib/rigctl/models/dep"]
    assert svc.model_fetch["files"] is None  # the whole revision
    assert svc.secret_env["HF_TOKEN"] == {"vault": "hf"}


def test_a_token_alone_lets_vllm_download_the_repository_itself():
    _, plan = plan_of(spec("{token: {env: HF_TOKEN}}", stack="vllm", model="llama-3.1-8b", fmt="bf16"))
    svc = plan.deployments[0].services[-1]
    assert svc.argv[2] == "meta-llama/Llama-3.1-8B" and svc.model_fetch is None
    assert svc.secret_env["HF_TOKEN"] == {"env": "HF_TOKEN"}


def test_petals_takes_the_repo_id_and_the_token_and_the_host_fetches_nothing():
    text = spec(f"{{hf: {{repo: meta-llama/Llama-3.1-8B-Instruct, revision: {REV}}}, token: {{env: HF_TOKEN}}}}",
                stack="petals", model="llama-3.1-8b", fmt="bf16",
                extra="    swarm: {private: true, initial_peers: [/ip4/10.0.0.5/tcp/31337/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N]}\n")
    _, plan = plan_of(text)
    servers = [s for s in plan.deployments[0].services if s.role == "petals-server"]
    assert servers and all(s.argv[3] == "meta-llama/Llama-3.1-8B-Instruct" for s in servers)
    assert all(s.model_fetch is None and s.secret_env == {"HF_TOKEN": {"env": "HF_TOKEN"}} for s in servers)


def test_tabbyapi_reads_the_downloaded_directory():
    _, plan = plan_of(spec(f"{{hf: {{repo: org/m-exl2, revision: {REV}}}, token: {{file: /root/hf}}}}",
                           stack="tabbyapi", model="llama-3.1-8b", fmt="exl2", extra="    bits_per_weight: 4.0\n"))
    svc = plan.deployments[0].services[0]
    assert svc.model_path == "/var/lib/rigctl/models/dep" and svc.model_fetch["kind"] == "hf"
    assert svc.secret_env["HF_TOKEN"] == {"file": "/root/hf"}


def test_a_path_on_the_host_is_used_as_it_is_and_not_counted_on_the_models_disk(tmp_path):
    from provisioner.rules.engine import run

    text = spec("{path: /mnt/share/llama-70b-Q4_K_M.gguf}", model="llama-3.1-70b", fmt="Q4_K_M")
    small = text.replace("capacity_gb: 2000", "capacity_gb: 10")
    ctx, plan = plan_of(small)
    svc = plan.deployments[0].services[0]
    assert svc.model_path == "/mnt/share/llama-70b-Q4_K_M.gguf"
    assert svc.model_fetch == {"kind": "path", "path": "/mnt/share/llama-70b-Q4_K_M.gguf"}
    assert not [d for d in run(ctx) if d.rule.startswith("storage-fit")]
    # the same model downloaded from a URL must fit the 10 GB models disk: it does not
    url = small.replace("{path: /mnt/share/llama-70b-Q4_K_M.gguf}", f"{{url: 'https://e.com/l.gguf', sha256: {SHA}}}")
    ctx, _ = plan_of(url)
    assert [d.rule for d in run(ctx) if d.rule.startswith("storage-fit")] == ["storage-fit[capacity]"]


def test_rendered_project_holds_the_token_reference_never_a_value(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_HF", "hf_secret_value_that_must_not_leak")
    text = spec(f"{{hf: {{repo: org/m-GGUF, revision: {REV}, files: [m.gguf]}}, token: {{env: MY_HF}}}}")
    path = tmp_path / "rig.yaml"
    path.write_text(text)
    res = load_text(text, str(path))
    ctx = Context(res.rig, builtin(), file=str(path))
    files = render_project(ctx, build_plan(ctx))
    blob = "\n".join(f.content for f in files)
    assert "hf_secret_value_that_must_not_leak" not in blob
    unit = next(f.content for f in files if f.path.endswith("rigctl-dep.service"))
    assert "EnvironmentFile=/etc/rigctl/secrets/rigctl-dep-hf_token.env" in unit and "HF_TOKEN" not in unit
    host_vars = next(f.content for f in files if f.path == "inventory/host_vars/box.yml")
    assert "model_fetch:" in host_vars and "env: !unsafe 'MY_HF'" in host_vars


def test_apply_refuses_an_unset_token_variable_before_any_host(tmp_path):
    text = spec(f"{{hf: {{repo: org/m-GGUF, revision: {REV}, files: [m.gguf]}}, token: {{env: RIGCTL_TEST_HF_UNSET}}}}")
    path = tmp_path / "rig.yaml"
    path.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "RIGCTL_TEST_HF_UNSET"}
    r = subprocess.run([sys.executable, "-m", "provisioner", "apply", str(path), "--yes"], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stdout + r.stderr
    assert re.search(rf"{re.escape(str(path))}:13:\d+: error secret-env-unset: deployment dep: its Hugging Face "
                     r"token comes from environment variable RIGCTL_TEST_HF_UNSET", r.stderr), r.stderr
    assert not (tmp_path / ".rigctl" / "runs").exists()


def test_a_download_between_tries_is_shown_as_progress():
    p = Progress()
    upd = p.handle({"event": "runner_retry", "event_data": {
        "host": "h1", "task": "Fetch the model of rigctl-dep",
        "res": {"done": False, "msg": "deployment dep on h1: 1.20 GB of 4.00 GB (30%) of m.gguf", "attempts": 2}}})
    assert upd is not None and upd.status == "note" and "1.20 GB of 4.00 GB (30%)" in upd.task
    # other retry loops (a health check waiting) stay quiet
    assert p.handle({"event": "runner_retry", "event_data": {
        "host": "h1", "task": "Wait", "res": {"msg": "Status code was -1", "attempts": 3}}}) is None


def test_the_catalog_marks_every_meta_llama_entry_gated_with_a_source():
    cat = builtin()
    for entry in cat.models:
        repos = [a for a in entry.aliases if "/" in a]
        if any(r.startswith("meta-llama/") for r in repos):
            assert entry.gated, entry.id
        if entry.gated:
            assert entry.gated_source and "https://huggingface.co/docs/hub/models-gated" in entry.gated_source, entry.id


def test_plan_says_where_each_model_comes_from(tmp_path):
    text = (spec(f"{{url: 'https://example.com/a/m.gguf', sha256: {SHA}}}")
            .replace("serve:\n", f"serve:\n  - name: fromhub\n    model: {TINY}\n    format: gguf-f16\n"
                                 f"    stack: llamacpp\n    port: 8081\n    source: {{hf: {{repo: org/m-GGUF, revision: {REV}, "
                                 "files: [m.gguf]}, token: {env: HF_TOKEN}}\n    placement: [{node: box}]\n"))
    path = tmp_path / "rig.yaml"
    path.write_text(text)
    r = subprocess.run([sys.executable, "-m", "provisioner", "plan", str(path)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (f"model /var/lib/rigctl/models/dep/m.gguf: downloaded on the host from https://example.com/a/m.gguf "
            f"(sha256 {SHA[:12]}...), resumable") in r.stdout
    assert (f"model /var/lib/rigctl/models/fromhub/m.gguf: m.gguf of org/m-GGUF@{REV[:12]} downloaded on the host "
            "(huggingface_hub, checksums from the Hub, with the HF token)") in r.stdout
