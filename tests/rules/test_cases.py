"""Rule cases as data: tests/rules/cases/<rule-id>.yaml.

Each file holds `rule:` and `cases:`; a case has `name`, `spec` (a whole rig
spec as text), `expect` (findings of this rule: rule id incl. [tag], line and
optionally column, relative to the spec text) and optional `contains` strings
that the first finding's message must include. Line numbers are asserted, so
a rule that reports at the wrong place fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provisioner.rules.context import Context
from provisioner.rules.engine import load_rules, run
from provisioner.spec.catalog import builtin
from provisioner.spec.loader import load_text

CASES = Path(__file__).parent / "cases"


def _cases():
    for f in sorted(CASES.glob("*.yaml")):
        doc = yaml.safe_load(f.read_text())
        for i, case in enumerate(doc["cases"]):
            yield pytest.param(doc["rule"], case, id=f"{doc['rule']}:{case.get('name', i)}")


def findings_for(rule_id: str, spec: str):
    res = load_text(spec, "case.yaml")
    assert res.rig is not None, f"case spec does not load: {[d.message for d in res.diagnostics]}"
    ctx = Context(res.rig, builtin(), file="case.yaml")
    diags = [res.locate(d) for d in run(ctx)]
    internal = [d for d in diags if d.rule == "internal-error"]
    assert not internal, internal[0].message + "\n" + internal[0].data.get("traceback", "")
    return [d for d in diags if d.base_rule == rule_id], diags


@pytest.mark.parametrize("rule_id, case", list(_cases()))
def test_rule_case(rule_id, case):
    mine, _ = findings_for(rule_id, case["spec"])
    got = sorted((d.rule, d.location.line) for d in mine)
    want = sorted((e["rule"], e["line"]) for e in case.get("expect", []))
    assert got == want, "\n".join(f"{d.location}: {d.rule}: {d.message}" for d in mine) or "no findings"
    for e in case.get("expect", []):
        if "column" in e:
            match = [d for d in mine if d.rule == e["rule"] and d.location.line == e["line"]]
            assert match[0].location.column == e["column"]
        if "severity" in e:
            match = [d for d in mine if d.rule == e["rule"] and d.location.line == e["line"]]
            assert match[0].severity.value == e["severity"], f"{e['rule']}: {match[0].severity.value}"
    for needle in case.get("not_contains", []):
        assert not any(needle in d.message or needle in (d.hint or "") for d in mine), f"{needle!r} in {[d.message for d in mine]}"
    for needle in case.get("contains", []):
        assert any(needle in d.message or needle in (d.hint or "") for d in mine), f"{needle!r} not in {[d.message for d in mine]}"


def test_every_rule_has_docs_and_both_kinds_of_cases():
    rules = load_rules()
    assert rules, "no rules registered"
    for rid, r in rules.items():
        doc = r.doc()
        assert "(no documentation yet)" not in doc, f"{rid} has no docs/{rid}.md"
        assert "## Failing example" in doc and "## Passing example" in doc, f"{rid} docs lack examples"
        f = CASES / f"{rid}.yaml"
        assert f.exists(), f"{rid} has no case file {f}"
        cases = yaml.safe_load(f.read_text())["cases"]
        assert any(c.get("expect") for c in cases), f"{rid}: no failing case"
        assert any(not c.get("expect") for c in cases), f"{rid}: no passing case"


def test_doc_examples_behave_as_documented():
    """The failing example in each rule's docs triggers the rule; the passing one does not."""
    import re

    for rid, r in load_rules().items():
        doc = r.doc()
        blocks = dict(re.findall(r"## (Failing|Passing) example\s*```yaml\n(.*?)```", doc, re.S))
        if "Failing" in blocks:
            mine, _ = findings_for(rid, blocks["Failing"])
            assert mine, f"{rid}: documented failing example does not fail"
        if "Passing" in blocks:
            mine, _ = findings_for(rid, blocks["Passing"])
            assert not mine, f"{rid}: documented passing example fails: {[d.message for d in mine]}"
