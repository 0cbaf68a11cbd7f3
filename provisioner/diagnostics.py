"""One diagnostic type for every layer: loader errors, rule findings, drift.

Rules speak in spec paths (``("nodes", 0, "gpus", 1, "slot")``); the loader's
position table turns a path into file:line:col when the diagnostics are
located. Views (text, JSON, SARIF, GitHub) live in ``provisioner.report``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum


class Severity(str, Enum):
    error = "error"
    warning = "warning"
    info = "info"

    @property
    def rank(self) -> int:
        return {"error": 0, "warning": 1, "info": 2}[self.value]


@dataclass(frozen=True)
class Location:
    file: str
    line: int = 1
    column: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Diagnostic:
    """A finding: what is wrong, where, with the numbers and what to do."""

    rule: str  # stable id, optionally with a bracket tag: psu-headroom[circuit]
    severity: Severity
    message: str
    path: tuple = ()
    location: Location | None = None
    hint: str | None = None
    data: dict = field(default_factory=dict, compare=False)

    @property
    def base_rule(self) -> str:
        return self.rule.split("[", 1)[0]

    def at(self, location: Location) -> "Diagnostic":
        return replace(self, location=location)

    def sort_key(self):
        loc = self.location or Location("")
        return (loc.file, loc.line, loc.column, self.severity.rank, self.rule)


def path_str(path: tuple) -> str:
    """('nodes', 0, 'gpus', 1) -> nodes[0].gpus[1]"""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


# Exit codes, documented in the README and `rigctl --help`.
EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_NO_GPU = 3
EXIT_LAB_UNAVAILABLE = 4
EXIT_APPLY_FAILED = 5
EXIT_LOCKED = 6
EXIT_INTERNAL = 70
