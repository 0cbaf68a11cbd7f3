"""Views of a diagnostic list: text, JSON, SARIF 2.1.0, GitHub annotations."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

from . import __version__
from .diagnostics import Diagnostic, Severity

JSON_SCHEMA_VERSION = 1


def _sorted(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    return sorted(diags, key=lambda d: d.sort_key())


def counts(diags: list[Diagnostic]) -> Counter:
    return Counter(d.severity.value for d in diags)


def text(diags: list[Diagnostic], *, color: bool = False) -> str:
    """Compiler-style lines grouped by file, then a summary line."""
    lines: list[str] = []
    colors = {"error": "\033[31m", "warning": "\033[33m", "info": "\033[36m"}
    for d in _sorted(diags):
        loc = str(d.location) if d.location else "<rig>"
        sev = d.severity.value
        if color:
            sev = f"{colors[sev]}{sev}\033[0m"
        lines.append(f"{loc}: {sev} {d.rule}: {d.message}")
        if d.hint:
            lines.append(f"    hint: {d.hint}")
    lines.append(summary(diags))
    return "\n".join(lines) + "\n"


def summary(diags: list[Diagnostic]) -> str:
    """'2 errors, 1 warning' or 'no problems found'."""
    if not diags:
        return "no problems found"
    c = counts(diags)
    return ", ".join(f"{c[s]} {s}{'s' if c[s] != 1 else ''}" for s in ("error", "warning", "info") if c[s])


def as_dicts(diags: list[Diagnostic]) -> list[dict]:
    out = []
    for d in _sorted(diags):
        item = {
            "rule": d.rule,
            "severity": d.severity.value,
            "message": d.message,
            "hint": d.hint,
            "path": list(d.path),
            "file": d.location.file if d.location else None,
            "line": d.location.line if d.location else None,
            "column": d.location.column if d.location else None,
        }
        out.append(item)
    return out


def to_json(diags: list[Diagnostic], **extra) -> str:
    c = counts(diags)
    doc = {
        "schema_version": JSON_SCHEMA_VERSION,
        "tool": {"name": "rigctl", "version": __version__},
        "summary": {"errors": c["error"], "warnings": c["warning"], "infos": c["info"]},
        "diagnostics": as_dicts(diags),
        **extra,
    }
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


_SARIF_LEVEL = {Severity.error: "error", Severity.warning: "warning", Severity.info: "note"}


def to_sarif(diags: list[Diagnostic], rules: dict | None = None) -> str:
    """SARIF 2.1.0 log with one run; rule metadata from the registry when given."""
    rules = rules or {}
    used = sorted({d.base_rule for d in diags} | set(rules))
    rule_meta = []
    for rid in used:
        r = rules.get(rid)
        meta = {"id": rid, "name": rid, "shortDescription": {"text": r.summary if r else rid}}
        if r is not None:
            meta["defaultConfiguration"] = {"level": _SARIF_LEVEL[r.severity]}
            # The rule's own doc travels inside the log: code scanning shows `help` beside each
            # alert, and the project has no website a helpUri could point at.
            doc = r.doc()
            meta["help"] = {"text": doc, "markdown": doc}
            meta["properties"] = {"tags": list(r.tags), "documentation": f"provisioner/rules/docs/{rid}.md",
                                  "command": f"rigctl rules show {rid}"}
        rule_meta.append(meta)
    index = {rid: i for i, rid in enumerate(used)}
    results = []
    for d in _sorted(diags):
        res = {
            "ruleId": d.rule,
            "ruleIndex": index[d.base_rule],
            "level": _SARIF_LEVEL[d.severity],
            "message": {"text": d.message + (f" Hint: {d.hint}" if d.hint else "")},
        }
        if d.location:
            res["locations"] = [{
                "physicalLocation": {
                    "artifactLocation": {"uri": d.location.file},
                    "region": {"startLine": d.location.line, "startColumn": d.location.column},
                }
            }]
        results.append(res)
    log = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            # No informationUri: it is optional, and rigctl has no public address to give it.
            "tool": {"driver": {"name": "rigctl", "version": __version__, "rules": rule_meta}},
            "results": results,
        }],
    }
    return json.dumps(log, indent=2) + "\n"


def _gh_escape(s: str, prop: bool = False) -> str:
    s = s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        s = s.replace(":", "%3A").replace(",", "%2C")
    return s


def to_github(diags: list[Diagnostic]) -> str:
    """GitHub Actions workflow commands (::error file=..,line=..::msg)."""
    kinds = {Severity.error: "error", Severity.warning: "warning", Severity.info: "notice"}
    lines = []
    for d in _sorted(diags):
        props = []
        if d.location:
            props += [f"file={_gh_escape(d.location.file, True)}", f"line={d.location.line}", f"col={d.location.column}"]
        props.append(f"title={_gh_escape(d.rule, True)}")
        msg = d.message + (f" (hint: {d.hint})" if d.hint else "")
        lines.append(f"::{kinds[d.severity]} {','.join(props)}::{_gh_escape(msg)}")
    return "\n".join(lines) + ("\n" if lines else "")


def render(diags: list[Diagnostic], fmt: str, rules: dict | None = None, color: bool = False) -> str:
    if fmt == "json":
        return to_json(diags)
    if fmt == "sarif":
        return to_sarif(diags, rules)
    if fmt == "github":
        return to_github(diags)
    return text(diags, color=color)
