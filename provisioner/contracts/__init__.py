"""Engine contracts: what each engine reads, as data read from its source (one YAML file per stack).

`check(svc)` holds a planned Service against its stack's contract and returns the mismatches
(empty: every flag, environment variable, config key, port and health route rigctl renders is
one the pinned engine version reads). A stack without a contract file returns no mismatches;
add `<stack>.yaml` here to cover one. Pure: reads only the packaged data files.
"""

from __future__ import annotations

import posixpath
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
    data = yaml.safe_load(f.read_text(encoding="utf-8"))
    if data.get("extends"):  # the same engine under another stack name: its sections, these on top
        data = {**load(data["extends"]), **data}
    return data


def check(svc, contract: dict | None = None) -> list[str]:
    """Every way `svc` (a plan Service) departs from its engine's contract."""
    c = contract if contract is not None else load(svc.stack)
    if c is None:
        return []
    c = _program(c, svc.argv)
    where = f"{svc.name} ({c['stack']} {c['version']})"
    out = [f"{where}: {p}" for p in _argv(svc.argv, c, svc)]
    out += [f"{where}: environment variable {k} is not read by the engine"
            for k in sorted(svc.env) if k not in (c.get("env") or {})]
    out += [f"{where}: {p}" for p in _env_values(svc, c.get("env") or {})]
    out += [f"{where}: secret variable {k} is not read by the engine"
            for k in sorted(svc.secret_env) if k not in (c.get("env") or {}) and not k.endswith("_FILE")]
    if svc.health_path and svc.health_path not in (c.get("health_routes") or {}):
        out.append(f"{where}: health route {svc.health_path} is not served by the engine")
    out += [f"{where}: {p}" for p in _config(svc, c)]
    cm = _module(c, svc.argv)  # `python -m <module>`: that module's ports
    out += [f"{where}: {p}" for p in listeners.ports(svc, cm) + listeners.bodies(svc, cm)]
    return out


def _program(c: dict, argv: list[str]) -> dict:
    """The contract with the sections of the program argv[0] names merged in (`programs:`: one
    stack, several executables with their own parsers, e.g. vLLM's server and `ray start`)."""
    progs = c.get("programs") or {}
    return {**c, **progs[argv[0]]} if argv and argv[0] in progs else c


def _module(c: dict, argv: list[str]) -> dict:
    """The contract with the sections of the module argv runs (`python -m MODULE`) merged in."""
    mods = c.get("modules") or {}
    if len(argv) > 2 and argv[1] == "-m" and argv[2] in mods:
        return {**c, **mods[argv[2]]}
    return c


def _argv(argv: list[str], c: dict, svc=None) -> list[str]:
    if not argv or argv[0] not in c.get("argv0", []):
        return [f"argv[0] {argv[:1]} is not the engine's entry point {c.get('argv0')}"]
    rest = argv[1:]
    out = []
    if c.get("modules") is not None:  # python -m <module>: each module has its own parser
        if len(rest) < 2 or rest[0] != "-m" or rest[1] not in c["modules"]:
            return [f"{' '.join(rest[:2])!r} is not `-m` and one of {sorted(c['modules'])}"]
        c = _module(c, argv)
        rest = rest[2:]
    if c.get("script"):
        if not rest or rest[0] != c["script"]:
            return [f"argv[1] {rest[:1]} is not the engine's script {c['script']}"]
        rest = rest[1:]
    if c.get("subcommands") is not None:
        if not rest or rest[0] not in c["subcommands"]:
            return [f"subcommand {rest[:1]} is not one of {sorted(c['subcommands'])}"]
        rest = rest[1:]
    flags = c.get("flags") or {}
    positional = int(c.get("positional") or 0)
    seen: dict[str, list[str]] = {}
    i = 0
    while i < len(rest):
        arg = rest[i]
        # `inline_values: false`: the engine matches whole arguments, so --flag=value is no flag
        name = arg.split("=", 1)[0] if c.get("inline_values", True) else arg
        if not arg.startswith("-") and positional > 0:
            positional -= 1  # e.g. Petals' model name (nargs='?')
        elif name not in flags:
            out.append(f"flag {arg} is not accepted by the engine")
        elif "=" in arg:
            seen[name] = [arg.split("=", 1)[1]]
        elif flags[name].get("nargs") in ("+", "*"):  # argparse: values up to the next option
            j = i + 1
            while j < len(rest) and not rest[j].startswith("-"):
                j += 1
            seen[name] = rest[i + 1:j]
            if flags[name]["nargs"] == "+" and not seen[name]:
                out.append(f"flag {name} needs at least one value")
            i = j - 1
        elif flags[name].get("takes_value"):
            n = int(flags[name]["takes_value"])  # true: one value; 2: two (llama.cpp's str_str handlers)
            seen[name] = rest[i + 1:i + 1 + n]
            if len(seen[name]) < n:
                out.append(f"flag {name} needs {n} value(s)")
            i += n  # its values
        else:
            seen[name] = []
        i += 1
    for name, values in seen.items():
        out += _flag_values(name, values, flags[name], seen, svc)
    return out


def _flag_values(name: str, values: list[str], f: dict, seen: dict, svc) -> list[str]:
    """A flag's values against its contract: choices, pattern, the service's port, persisted state."""
    out = [f"flag {name} and {x} exclude each other ({f['source']})" for x in f.get("excludes") or [] if x in seen]
    for v in values:
        if "choices" in f and v not in f["choices"]:
            out.append(f"flag {name} {v!r} is not one of {f['choices']}")
        if "pattern" in f and not re.fullmatch(f["pattern"], v):
            out.append(f"flag {name} {v!r} does not match {f['pattern']}")
        if f.get("port") and svc is not None:
            m = re.fullmatch(r"\d+", v) or re.search(r"/tcp/(\d+)$", v)
            if not m or int(m.group(m.lastindex or 0)) != svc.port:
                out.append(f"flag {name} {v!r} does not listen on the service's port {svc.port}")
        if f.get("persist") and svc is not None:
            d = posixpath.dirname(v)
            if not any(d == m or d.startswith(m.rstrip("/") + "/") for m in svc.state_mounts.values()):
                out.append(f"flag {name} {v!r}: its directory is no read-write host mount, so the file is lost "
                           f"when the container is re-created ({f.get('note', f['source'])})")
    return out


def _env_values(svc, env: dict) -> list[str]:
    """Environment values against the contract: one of its `values`; a cache directory must lie in a
    volume that survives."""
    out = []
    for k, v in sorted(svc.env.items()):
        allowed = (env.get(k) or {}).get("values")
        if allowed and v not in allowed:
            out.append(f"environment variable {k}={v!r} is not one of {allowed} ({env[k]['source']})")
        if (env.get(k) or {}).get("in_volume"):
            mounts = list(svc.volumes.values()) + list(svc.state_mounts.values())
            if not any(v == m or v.startswith(m.rstrip("/") + "/") for m in mounts):
                out.append(f"environment variable {k}={v!r} is in no volume {sorted(mounts)}: "
                           f"lost when the container is re-created ({env[k]['source']})")
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
