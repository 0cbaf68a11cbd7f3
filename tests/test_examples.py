"""Every example validates exactly as its `# expect:` comments say.

An example lists each error and warning it should produce as
`# expect: RULE-ID[tag] line N`; examples without such lines must be clean of
errors and warnings. Infos are not asserted here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from provisioner.check import check_file
from provisioner.diagnostics import Severity

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(ROOT.glob("examples/**/*.yaml"))
EXPECT = re.compile(r"^#\s*expect:\s*(\S+)\s+line\s+(\d+)", re.M)


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p.relative_to(ROOT / "examples")) for p in EXAMPLES])
def test_example_findings(path):
    want = sorted((rule, int(line)) for rule, line in EXPECT.findall(path.read_text()))
    res = check_file(str(path))
    got = sorted((d.rule, d.location.line) for d in res.diagnostics if d.severity is not Severity.info)
    detail = "\n".join(f"{d.location}: {d.severity.value} {d.rule}: {d.message}" for d in res.diagnostics)
    assert got == want, detail


def test_pitfalls_all_fail():
    pitfalls = sorted(ROOT.glob("examples/pitfalls/*.yaml"))
    assert len(pitfalls) >= 5
    for p in pitfalls:
        res = check_file(str(p))
        assert any(d.severity is Severity.error for d in res.diagnostics), p
