"""Strict, sandboxed Jinja for render templates, with quoting filters.

Spec text (argv, env, names) reaches systemd units and compose files; the filters
here quote it for the consumer so it is never interpreted (no `$VAR`, no `%n`).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..resources import package_dir

_SAFE_WORD = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")


def _escape(text: str, *, dollar: bool) -> str:
    out = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    out = out.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return out.replace("$", "$$") if dollar else out


def systemd_word(text: str, expand: bool = False) -> str:
    """One ExecStart word: literal unless expand=True (then ${VAR} is left to systemd)."""
    text = str(text)
    if _SAFE_WORD.match(text):
        return text
    return '"' + _escape(text, dollar=not expand) + '"'


def systemd_env(value: str, key: str) -> str:
    """An Environment= assignment (systemd does not expand $ there; % it does)."""
    return '"' + _escape(f"{key}={value}", dollar=False) + '"'


def compose_escape(value):
    """Double `$` so compose interpolates nothing (recursively for lists)."""
    if isinstance(value, (list, tuple)):
        return [compose_escape(v) for v in value]
    return str(value).replace("$", "$$")


def _tojson(value) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(str(package_dir("templates"))),
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True)
    env.filters.update(systemd_word=systemd_word, systemd_env=systemd_env,
                       compose_escape=compose_escape, tojson=_tojson)
    return env


def render_template(name: str, **values) -> str:
    return environment().get_template(name).render(**values)
