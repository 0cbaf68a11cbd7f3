"""Contract checks for a service's ports and rendered API request bodies (exo first).

`ports(svc, c)`: with a `ports:` section in the contract, every port the plan opens (the main
port and `extra_ports`, which the firewall filters) must be one the engine listens on, set by the
flag the contract names when it has one; a port whose flag is `required` (its default is not a
fixed port: exo's --libp2p-port 0 is OS-assigned) must be passed; a flag's value must be a port
the plan opens; a port marked `filtered: false` (the engine picks it at random in a range that
overlaps the host's ephemeral ports, or shares it with the host) must not be planned. `bodies(svc, c)`: a rendered file named in `request_files:` must be a JSON object
with only the keys the route reads, its required keys, allowed values and types, and (with
`model_ids:`) a model id the engine accepts. Pure: no filesystem, no network.
"""

from __future__ import annotations

import json
import posixpath


def _flag_value(argv: list[str], flag: str) -> str | None:
    """The flag's value; of a multiaddr (/ip4/0.0.0.0/tcp/31337: Petals, hivemind) its port."""
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return _maddr_port(argv[i + 1])
        if a.startswith(flag + "="):
            return _maddr_port(a.split("=", 1)[1])
    return None


def _maddr_port(value: str) -> str:
    parts = value.split("/")
    return parts[4] if value.startswith("/") and len(parts) == 5 and parts[3] in ("tcp", "udp") else value


def ports(svc, c: dict) -> list[str]:
    # only entries with a protocol describe listeners (ollama's `ports: default` names its default only)
    spec = {k: v for k, v in (c.get("ports") or {}).items() if isinstance(v, dict) and "proto" in v}
    if not spec:
        return []
    out = []
    opened = ([(svc.port, "tcp", None)] if svc.port else []) + [(p.port, p.proto, p.last) for p in svc.extra_ports]
    for name, p in spec.items():
        if not p.get("flag"):
            continue
        value = _flag_value(svc.argv, p["flag"])
        if value is None and p.get("required"):
            out.append(f"{p['flag']} is not given: the engine's {name} port defaults to {p.get('default')} "
                       f"(OS-assigned), so the firewall and the peers cannot know it ({p['source']})")
        elif value is not None and (not value.isdigit() or (int(value), p["proto"], None) not in opened):
            out.append(f"{p['flag']} {value}: the plan opens no {p['proto']} port {value} for it")
    for port, proto, last in opened:
        if not any(_listens(p, port, proto, last, svc.argv) for p in spec.values()):
            what = f"{port}-{last}" if last else str(port)
            out.append(f"port {what}/{proto} is not a port the engine listens on "
                       f"(its ports: {', '.join(sorted(spec))})")
    return out


def _listens(p: dict, port: int, proto: str, last: int | None, argv: list[str]) -> bool:
    if p["proto"] != proto or p.get("filtered") is False:  # a port rigctl must leave alone
        return False
    if "range" in p:
        lo, hi = p["range"]  # the engine's default range; `range_flags` (first, last) move it
        for k, flag in enumerate(p.get("range_flags") or []):
            value = _flag_value(argv, flag)
            if value is not None and value.isdigit():
                lo, hi = (int(value), hi) if k == 0 else (lo, int(value))
        return lo <= port and (last or port) <= hi
    if last:
        return False
    if p.get("flag"):
        value = _flag_value(argv, p["flag"])
        return int(value) == port if value is not None and value.isdigit() else p.get("default") == port
    return p.get("default") == port


def bodies(svc, c: dict) -> list[str]:
    spec = c.get("request_files")
    if not spec:
        return []
    out = []
    for path, text in sorted(svc.files.items()):
        name = posixpath.basename(path)
        if name not in spec:
            continue
        f = spec[name]
        try:
            body = json.loads(text)
        except ValueError as exc:
            out.append(f"{name}: not JSON ({exc})")
            continue
        if not isinstance(body, dict):
            out.append(f"{name}: not a JSON object")
            continue
        keys = f["keys"]
        out += [f"{name}: key {k} is not read by {f['route']} ({f['source']})" for k in sorted(body) if k not in keys]
        out += [f"{name}: key {k} is required by {f['route']}" for k, v in keys.items()
                if v.get("required") and k not in body]
        for k, v in sorted(body.items()):
            rule = keys.get(k) or {}
            if "values" in rule and value_not_in(v, rule["values"]):
                out.append(f"{name}: {k} {v!r} is not one of {rule['values']} ({rule.get('source', f['source'])})")
            if rule.get("type") == "int" and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                out.append(f"{name}: {k} {v!r} is not a positive integer")
        if "model_id" in body and c.get("model_ids"):
            ids = c["model_ids"]
            known = set((ids.get("builtin") or {}).get("ids") or []) | set(ids.get("fetched") or {})
            if body["model_id"] not in known:
                out.append(f"{name}: model_id {body['model_id']!r} is neither a built-in model card of "
                           f"{c['stack']} {c['version']} nor a repo the contract names")
    return out


def value_not_in(v, allowed: list) -> bool:
    return not isinstance(v, str) or v not in allowed
