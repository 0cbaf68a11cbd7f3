"""Read a rig spec file: bytes -> YAML data with positions -> pydantic Rig.

Every problem comes back as a located Diagnostic; nothing here raises for bad
user input. ``LoadResult.fatal`` tells the CLI to stop with exit code 2
(unreadable input) rather than 1 (schema findings).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..diagnostics import Diagnostic, Location, Severity, path_str
from . import inputfile, yamlload
from .models import PATTERN_HELP, Rig


@dataclass
class LoadResult:
    file: str
    rig: Rig | None = None
    data: Any = None
    positions: yamlload.Positions = field(default_factory=yamlload.Positions)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    fatal: bool = False

    def locate(self, d: Diagnostic) -> Diagnostic:
        """Attach file:line:col from the diagnostic's spec path."""
        if d.location is not None:
            return d
        is_key = d.data.get("at_key", False)
        line, col = self.positions.locate(self.data, d.path, key=is_key)
        return d.at(Location(self.file, line, col))


def _fatal(file: str, message: str, line: int = 1, col: int = 1, rule: str = "yaml-syntax") -> LoadResult:
    d = Diagnostic(rule, Severity.error, message, location=Location(file, line, col))
    return LoadResult(file=file, diagnostics=[d], fatal=True)


def read_text(path: str | Path) -> tuple[str | None, LoadResult | None]:
    """The decoded text of a spec file, or a fatal LoadResult saying why it cannot be read."""
    name = str(path)
    try:
        raw = inputfile.read_bounded(path, limit=yamlload.MAX_FILE_BYTES, what="rig spec")
        return yamlload.decode(raw), None
    except inputfile.InputFileError as exc:
        return None, _fatal(name, exc.message, rule="input")
    except yamlload.YamlError as exc:
        return None, _fatal(name, exc.message, exc.line, exc.column, rule="encoding")


def load_rig(path: str | Path) -> LoadResult:
    text, failed = read_text(path)
    if failed:
        return failed
    return load_text(text, str(path))


def load_text(text: str, file: str = "<string>") -> LoadResult:
    try:
        data, positions = yamlload.load(text)
    except yamlload.YamlError as exc:
        return _fatal(file, exc.message, exc.line, exc.column)
    result = LoadResult(file=file, data=data, positions=positions)
    if data is None:
        result.diagnostics.append(
            Diagnostic("schema", Severity.error, "the file is empty; a rig spec starts with `version: 1`",
                       location=Location(file, 1, 1))
        )
        result.fatal = True
        return result
    if not isinstance(data, dict):
        kind = type(data).__name__.replace("list", "a list").replace("str", "a string")
        result.diagnostics.append(
            Diagnostic("schema", Severity.error,
                       f"the top level is {kind}; a rig spec is a mapping with version, name, nodes and serve",
                       location=Location(file, *positions.root))
        )
        result.fatal = True
        return result
    try:
        result.rig = Rig.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            if err["type"] == "string_type" and isinstance(err.get("input"), dict):
                continue  # the str branch of `model: str | ModelArch`; the mapping branch explains
            result.diagnostics.append(result.locate(_schema_diagnostic(err, data)))
    return result


# ------------------------------------------------------------ pydantic errors


_UNIT_VALUE = re.compile(r"^\s*[-+]?\d+(\.\d+)?\s*([a-zA-Z%/]+)\s*$")
_UNITS = {"_gib": "GiB", "_gb": "GB", "_w": "watts", "_gbps": "Gbit/s", "_mib": "MiB", "_us": "microseconds", "_tokens": "tokens"}


def _model_at(path: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the last key of ``path``."""
    model: Any = Rig
    for part in path[:-1]:
        if isinstance(part, int):
            continue
        f = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if f is None:
            return None
        model = _inner_model(f.annotation)
        if model is None:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner_model(annotation) -> Any:
    args = getattr(annotation, "__args__", None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for a in args or ():
        m = _inner_model(a)
        if m is not None:
            return m
    return None


def _unit_of(field_name: str) -> str | None:
    for suffix, unit in _UNITS.items():
        if field_name.endswith(suffix):
            return unit
    return None


def _schema_diagnostic(err: dict, data: Any) -> Diagnostic:
    # pydantic adds union-branch and validator names to loc; keep only real keys
    kind = err["type"]
    raw = err["loc"]
    keep = raw[:-1] if kind == "extra_forbidden" and raw else raw
    loc = tuple(p for p in keep if isinstance(p, int) or not _is_internal(p))
    if kind == "extra_forbidden" and raw:
        loc += (raw[-1],)
    value = err.get("input")
    where = path_str(loc) or "top level"
    field_name = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if kind == "extra_forbidden":
        model = _model_at(loc)
        known = list(model.model_fields) if model else []
        close = difflib.get_close_matches(str(field_name), known, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else (f"known keys: {', '.join(known)}" if known else None)
        return Diagnostic("schema[unknown-key]", Severity.error, f"unknown key '{field_name}' in {path_str(loc[:-1]) or 'top level'}",
                          path=loc, hint=hint, data={"at_key": True})
    if kind == "missing":
        return Diagnostic("schema[missing]", Severity.error, f"missing required key '{field_name}' in {path_str(loc[:-1]) or 'top level'}",
                          path=loc[:-1], data={"at_key": False})
    unit = _unit_of(str(field_name))
    if kind in ("int_type", "float_type", "int_parsing", "float_parsing", "int_from_float") and isinstance(value, str):
        m = _UNIT_VALUE.match(value)
        if m:
            want = unit or "the unit in the key's name"
            return Diagnostic("schema[units]", Severity.error,
                              f"{where}: '{value}' carries a unit; this field takes a plain number in {want}",
                              path=loc, hint=f"write `{field_name}: {value.strip().rstrip(m.group(2)).strip()}` (the unit is in the key name)")
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return Diagnostic("schema[value]", Severity.error, f"{where}: {value!r} is not one of {expected}", path=loc)
    if kind in ("value_error", "assertion_error"):
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
        return Diagnostic("schema[value]", Severity.error, f"{where}: {msg}", path=loc)
    if kind == "string_pattern_mismatch":
        pattern = err.get("ctx", {}).get("pattern", "")
        expects = PATTERN_HELP.get(pattern) or _description(loc) or f"text matching {pattern}"
        return Diagnostic("schema[value]", Severity.error, f"{where}: {_shown(value)} must be {expects}", path=loc)
    msg = err["msg"]
    if unit and kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "int_type", "float_type"):
        msg += f" (in {unit})"
    shown = "" if isinstance(value, (dict, list)) else f" (got {_shown(value)})"
    text = f"{where}: {msg[0].lower() + msg[1:]}{shown}"
    if kind in ("less_than", "less_than_equal", "greater_than", "greater_than_equal", "finite_number", "too_long"):
        about = _description(loc)
        if about:  # the description carries the reason for the bound
            text += f"; {field_name}: {about}"
    return Diagnostic("schema[type]", Severity.error, text, path=loc)


def _shown(value: Any, limit: int = 80) -> str:
    """repr() of a user value, cut short: a 10 MB string must not become a 10 MB message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


def _description(loc: tuple) -> str | None:
    """The description of the field at ``loc`` (list indexes after it skipped)."""
    keys = list(loc)
    while keys and isinstance(keys[-1], int):
        keys.pop()
    if not keys:
        return None
    model = _model_at(tuple(keys))
    f = model.model_fields.get(keys[-1]) if model else None
    return f.description if f else None


def _is_internal(part: str) -> bool:
    # union branches ("str", "ModelArch"), function validators ("function-after[...]")
    return part[:1].isupper() or "[" in part or part in ("str", "int", "float", "list[str]", "bool")
