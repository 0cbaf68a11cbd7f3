"""Strict, sandboxed Jinja for render templates, with quoting filters.

Spec text (argv, env, names) reaches systemd units and compose files; templates pass
every such value through a filter from ``provisioner.escape`` (one function per
consumer), so it is never interpreted (no `$VAR`, no `%n`, no new YAML key or line).
"""

from __future__ import annotations

from functools import lru_cache

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .. import escape
from ..escape import compose_escape, systemd_env, systemd_word  # noqa: F401  (callers import them from here)
from ..resources import package_dir


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(str(package_dir("templates"))),
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True)
    env.filters.update(systemd_word=escape.systemd_word, systemd_env=escape.systemd_env,
                       systemd_text=escape.systemd_text, systemd_path=escape.systemd_path,
                       systemd_name=escape.systemd_name,
                       comment=escape.comment_text, compose_escape=escape.compose_escape,
                       compose_name=escape.compose_name, env_name=escape.env_name,
                       bind_path=escape.bind_path, yaml=escape.yaml_quote, yaml_flow=escape.yaml_flow)
    return env


def render_template(name: str, **values) -> str:
    return environment().get_template(name).render(**values)
