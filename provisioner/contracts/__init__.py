"""Engine contracts: what each engine reads, as data read from its source (one YAML file per stack).

`check(svc)` holds a planned Service against its stack's contract and returns the mismatches
(empty: every flag, environment variable, config key, port and health route rigctl renders is
one the pinned engine version reads). A stack without a contract file returns no mismatches;
add `<stack>.yaml` here to cover one. Pure: reads only the packaged data files.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

import yaml

from . import listeners


@lru_cache(maxsize=None)
def load(stack: str) -> dict | None:
    """The contract of a stack, or None when it has none."""
    f = resources.files(__name__) / f"{stack}.yaml"
    if not f.is_file():
        return None
    return yaml.safe_load(f.read_text(encoding="utf-8"))


def check(svc, contract: dict | None = None) -> list[str]:
    """Every way `svc` (a plan Service) departs from its engine's contract."""
    c = contract if contract is not None else load(svc.stack)
    if c is None:
        return []
    where = f"{svc.name} ({c['stack']} {c['version']})"
    out = [f"{where}: {p}" for p in _argv(svc.argv, c)]
    out += [f"{where}: environment variable {k} is not read by the engine"
            for k in sorted(svc.env) if k not in (c.get("env") or {})]
    out += [f"{where}: secret variable {k} is not read by the engine"
            for k in sorted(svc.secret_env) if k not in (c.get("env") or {}) and not k.endswith("_FILE")]
    if svc.health_path and svc.health_path not in (c.get("health_routes") or {}):
        out.append(f"{where}: health route {svc.health_path} is not served by the engine")
    out += [f"{where}: {p}" for p in _config(svc, c)]
    out += [f"{where}: {p}" for p in listeners.ports(svc, c) + listeners.bodies(svc, c)]
    return out


def _argv(argv: list[str], c: dict) -> list[str]:
    if not argv or argv[0] not in c.get("argv0", []):
        return [f"argv[0] {argv[:1]} is not the engine's entry point {c.get('argv0')}"]
    rest = argv[1:]
    out = []
    if c.get("script"):
        if not rest or rest[0] != c["script"]:
            return [f"argv[1] {rest[:1]} is not the engine's script {c['script']}"]
        rest = rest[1:]
    if c.get("subcommands") is not None:
        if not rest or rest[0] not in c["subcommands"]:
            return [f"subcommand {rest[:1]} is not one of {sorted(c['subcommands'])}"]
        rest = rest[1:]
    flags = c.get("flags") or {}
    i = 0
    while i < len(rest):
        arg = rest[i]
        name = arg.split("=", 1)[0]
        if name not in flags:
            out.append(f"flag {arg} is not accepted by the engine")
        elif flags[name].get("takes_value") and "=" not in arg:
            i += 1  # its value
        i += 1
    return out


def _config(svc, c: dict) -> list[str]:
    out = []
    keys = c.get("config_keys")
    if keys:
        configs = [p for p in svc.files if p.endswith("config.yml")]
        if not configs:
            return ["no config.yml among the rendered files"]
        data = yaml.safe_load(svc.files[configs[0]]) or {}
        sections = keys.get("sections") or {}
        for sec, body in data.items():
            if sec not in sections:
                out.append(f"config section {sec} is not read by the engine")
                continue
            out += [f"config key {sec}.{k} is not read by the engine" for k in body or {} if k not in sections[sec]]
        for dotted, allowed in (keys.get("values") or {}).items():
            sec, _, k = dotted.partition(".")
            value = (data.get(sec) or {}).get(k)
            for v in value if isinstance(value, list) else [value] if value is not None else []:
                v = v.lower() if dotted == "network.api_servers" else v
                if v not in allowed:
                    out.append(f"config {dotted}: {v!r} is not one of {allowed}")
        for dotted in keys.get("required_false") or []:
            sec, _, k = dotted.partition(".")
            if (data.get(sec) or {}).get(k) is not False:
                out.append(f"config {dotted} must be false")
        port = (data.get("network") or {}).get("port")
        if port != svc.port:
            out.append(f"config network.port {port} is not the service's port {svc.port}")
    mf = (c.get("config_files") or {}).get("Modelfile")
    if mf:
        for path, text in svc.files.items():
            if path.endswith("/Modelfile"):
                for line in text.splitlines():
                    words = line.split()
                    if not words:
                        continue
                    if words[0] not in mf["instructions"]:
                        out.append(f"Modelfile instruction {words[0]} is not parsed by the engine")
                    elif words[0] == "PARAMETER" and (len(words) < 3 or words[1] not in mf["parameters"]):
                        out.append(f"Modelfile {line!r}: not a parameter rigctl's contract lists")
    host = svc.env.get("OLLAMA_HOST")
    if c["stack"] == "ollama":
        m = re.search(r":(\d+)$", host or "")
        if not m or int(m.group(1)) != svc.port:
            out.append(f"OLLAMA_HOST {host!r} does not listen on the service's port {svc.port}")
    for name, sf in (c.get("secret_files") or {}).items():
        if svc.secret_env and sf["path"] not in getattr(svc, "secret_mounts", {}).values():
            out.append(f"the API key does not reach {sf['path']} ({name}, {sf['source']}): the engine would generate its own")
    return out
