"""The validate pipeline: file -> Rig -> rule findings, all located."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .diagnostics import Diagnostic, Location, Severity
from .rules import engine
from .rules.context import Context
from .spec import catalog as catalog_mod
from .spec.loader import LoadResult, load_rig


@dataclass
class CheckResult:
    load: LoadResult
    context: Context | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def fatal(self) -> bool:
        return self.load.fatal

    @property
    def errors(self) -> int:
        return sum(d.severity is Severity.error for d in self.diagnostics)


def load_catalog(spec_file: str, extra: list[str], extra_cli: list[str] = ()) -> tuple[catalog_mod.Catalog, list[Diagnostic]]:
    base = catalog_mod.builtin()
    files = [Path(spec_file).parent / f for f in extra] + [Path(f) for f in extra_cli]
    if not files:
        return base, []
    try:
        return base.extended(files), []
    except catalog_mod.CatalogError as exc:
        return base, [Diagnostic("catalog", Severity.error, exc.message, location=Location(exc.file, exc.line, 1))]


def check_file(path: str, *, catalog_files: list[str] = (), only: set[str] | None = None,
               skip: set[str] | None = None,
               model_files: dict | Callable[[Context], dict] | None = None) -> CheckResult:
    """Load, then run the rules once. ``model_files`` is deployment -> facts read from real
    model files, or a function of the loaded Context that reads them (the files to read
    are named in the spec, so they are known only after loading)."""
    load = load_rig(path)
    result = CheckResult(load=load, diagnostics=list(load.diagnostics))
    if load.rig is None:
        return result
    cat, problems = load_catalog(path, load.rig.catalog, list(catalog_files))
    result.diagnostics += problems
    ctx = Context(load.rig, cat, file=path)
    ctx.model_files = (model_files(ctx) if callable(model_files) else model_files) or {}
    result.context = ctx
    index = {d.name: i for i, d in enumerate(load.rig.serve)}
    result.diagnostics += [load.locate(Diagnostic("model-file", Severity.error, facts["refuse"],
                                                  path=("serve", index[name], "model_file")))
                           for name, facts in ctx.model_files.items() if facts.get("refuse") and name in index]
    result.diagnostics += [load.locate(d) for d in engine.run(ctx, only=only, skip=skip)]
    return result
