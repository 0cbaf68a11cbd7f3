#!/usr/bin/env python3
"""Turn `rigctl validate --format json` into a GitLab Code Quality report.

GitLab shows Code Quality findings in the merge request widget and on the diff; it does
not read SARIF. Report format:
https://docs.gitlab.com/ci/testing/code_quality/#code-quality-report-format

Usage: rigctl-codequality.py RIGCTL.json > gl-code-quality-report.json
Standard library only, so it runs in any image that has Python (rigctl needs one anyway).
"""

from __future__ import annotations

import hashlib
import json
import sys

# rigctl severity -> GitLab's scale (info, minor, major, critical, blocker)
SEVERITY = {"error": "critical", "warning": "minor", "info": "info"}


def convert(report: dict) -> list[dict]:
    issues = []
    for d in report.get("diagnostics", []):
        # The spec path (nodes/0/psu), not the line, identifies a finding: editing lines
        # above it must not make GitLab call it new.
        key = "\0".join([d["rule"], d.get("file") or "", "/".join(str(p) for p in d.get("path") or [])])
        text = d["message"] + (f" Hint: {d['hint']}" if d.get("hint") else "")
        issues.append({
            "description": text,
            "check_name": d["rule"],
            "fingerprint": hashlib.sha256(key.encode()).hexdigest(),
            "severity": SEVERITY.get(d["severity"], "major"),
            "location": {"path": d.get("file") or "", "lines": {"begin": d.get("line") or 1}},
        })
    return issues


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: rigctl-codequality.py RIGCTL.json > gl-code-quality-report.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        report = json.load(f)
    json.dump(convert(report), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
