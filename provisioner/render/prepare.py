"""Spec file + inventory directory -> everything render and apply need (the IO side)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..check import CheckResult, check_file
from ..diagnostics import Diagnostic, Severity
from ..escape import Unrepresentable
from ..plan import build_plan
from ..plan.model import Plan
from .inventory import InventoryOverrides, load_overrides


@dataclass
class Prepared:
    check: CheckResult
    overrides: InventoryOverrides = field(default_factory=InventoryOverrides)
    plan: Plan | None = None
    model_facts: dict = field(default_factory=dict)  # deployment -> facts read from its model file

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.check.diagnostics if d.severity is Severity.error]

    @property
    def ctx(self):
        return self.check.context


def prepare(spec: str, inventory: str | None = None, catalog_files: list[str] = ()) -> Prepared:
    """Validate the spec (with extra ``catalog_files``, as ``validate --catalog``), read the
    inventory overrides and plan; the plan is None when the spec has errors. Raises
    InventoryError for a bad inventory."""
    from ..plan.modelfile import spec_model_facts, usable_facts
    from ..plan import engines
    from . import plan_addresses

    # memory is judged on the real file sizes, as `rigctl plan` does
    res = check_file(spec, catalog_files=list(catalog_files), model_files=lambda ctx: usable_facts(
        spec_model_facts(ctx, spec, cache=_applied_facts(spec, ctx))))
    facts = res.context.model_files if res.context is not None else {}
    overrides = load_overrides(inventory)
    out = Prepared(res, overrides, model_facts=facts)
    if res.fatal or res.context is None or out.errors:
        return out
    try:
        out.plan = build_plan(res.context, plan_addresses(res.context, overrides))
        engines.mark_override(out.plan, engines.artifact_overrides(res.context.rig, overrides))
    except Unrepresentable as exc:
        # a value a rendered file cannot carry literally (validate's patterns refuse most first)
        res.diagnostics.append(res.load.locate(Diagnostic(
            "unrepresentable-value", Severity.error, str(exc), path=exc.path)))
    return out


def _applied_facts(spec: str, ctx) -> dict | None:
    """Model-file facts of the last apply (reused where path, size and mtime still match,
    as `rigctl plan` does); None when there is no usable state."""
    from ..plan.state import StateError, default_render_dir, load_state, state_path

    try:
        old = load_state(state_path(default_render_dir(spec, ctx.rig.name)))
    except StateError:
        return None  # apply rewrites it; reading the files again is the safe answer
    return (old or {}).get("model_files")
