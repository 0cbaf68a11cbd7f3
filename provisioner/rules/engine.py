"""Rule registry and runner.

A rule is an id, a severity, a one-line summary, tags and a generator
``check(ctx) -> Iterator[Diagnostic]``. Its documentation lives beside it in
``rules/docs/<id>.md``; its test cases in ``tests/rules/cases/<id>.yaml``.
Rules never raise: a crashing rule becomes an ``internal-error`` finding and
the other rules still run.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources

from ..diagnostics import Diagnostic, Severity
from .context import Context

Check = Callable[[Context], Iterator[Diagnostic]]


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    summary: str
    tags: tuple[str, ...]
    check: Check

    @property
    def family(self) -> str:
        return self.tags[0] if self.tags else "general"

    def doc(self) -> str:
        path = resources.files("provisioner.rules") / "docs" / f"{self.id}.md"
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return f"# {self.id}\n\n{self.summary}\n\n(no documentation yet)\n"

    def finding(self, message: str, path: tuple = (), *, tag: str | None = None,
                severity: Severity | None = None, hint: str | None = None, **data) -> Diagnostic:
        rid = f"{self.id}[{tag}]" if tag else self.id
        return Diagnostic(rid, severity or self.severity, message, path=tuple(path), hint=hint, data=data)


REGISTRY: dict[str, Rule] = {}


def rule(id: str, severity: Severity | str, summary: str, tags: tuple[str, ...] = ()):
    """Register a check generator as a rule."""

    def wrap(fn: Check) -> Rule:
        if id in REGISTRY:
            raise RuntimeError(f"rule id {id} registered twice")
        r = Rule(id, Severity(severity), summary, tuple(tags), fn)
        REGISTRY[id] = r
        return r

    return wrap


_FAMILIES = ("reference", "placement", "memory", "power", "pcie", "nvlink", "stack", "drivers", "network", "security", "storage",
             "platform", "llamacpp_build")


def load_rules() -> dict[str, Rule]:
    """Import every rule family module (registration happens on import)."""
    import importlib

    for fam in _FAMILIES:
        try:
            importlib.import_module(f"provisioner.rules.{fam}")
        except ModuleNotFoundError as exc:
            if exc.name != f"provisioner.rules.{fam}":
                raise
    return REGISTRY


def run(ctx: Context, only: set[str] | None = None, skip: set[str] | None = None) -> list[Diagnostic]:
    """Run all rules (or a subset) and return their findings, never raising."""
    out: list[Diagnostic] = []
    for r in load_rules().values():
        if only and r.id not in only and r.family not in only:
            continue
        if skip and (r.id in skip or r.family in skip):
            continue
        try:
            for d in r.check(ctx):
                if skip and d.rule in skip:
                    continue
                out.append(d)
        except Exception as exc:  # noqa: BLE001 - isolate a broken rule
            tb = traceback.format_exc(limit=3)
            out.append(Diagnostic("internal-error", Severity.error,
                                  f"rule {r.id} crashed: {type(exc).__name__}: {exc}; please report this bug",
                                  data={"traceback": tb}))
    return out
