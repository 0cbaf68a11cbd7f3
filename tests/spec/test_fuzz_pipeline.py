"""A seeded mutation fuzzer over validate, plan and render (issue #10's bar).

Seeds: every example spec. Each case applies 1-5 mutations, structural (a value replaced
by a hostile one, a key deleted, an item duplicated, an unknown key) or textual (a control
character, a cut, deep nesting, a duplicated line). Every case goes through the real CLI
in-process: ``validate --format json``, ``plan --format json`` and ``render -o DIR``.

Asserted for every case: no traceback, an exit code from the README's table, one JSON
document on stdout for the JSON formats, no command over 10 s. For the cases that render,
each rendered file must parse for its consumer (YAML with !unsafe, ``systemd-analyze
verify``, ``docker compose config``, the firewall template through ``nft -c``), checked
once per distinct file. RIGCTL_FUZZ_CASES sets the number of cases (default 2000) and
RIGCTL_FUZZ_SEED the seed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import yaml

from provisioner.cli import main
from tests import consumers

ROOT = Path(__file__).resolve().parents[2]
SEEDS = sorted((ROOT / "examples").rglob("*.yaml"))
RENDERABLE = [p for p in SEEDS if p.parent.name == "examples"]  # pitfalls/ fail validate by design
CASES = int(os.environ.get("RIGCTL_FUZZ_CASES", "2000"))
SEED = int(os.environ.get("RIGCTL_FUZZ_SEED", "20261201"))
EXIT_CODES = {0, 1, 2}  # validate/plan/render: ok, findings, unreadable input (README table)
LIMIT_S = 10

PAYLOADS = [
    "{{ lookup('pipe', 'touch /tmp/rigctl-fuzz-pwned') }}", "{% if true %}x{% endif %}", "$(touch /tmp/x)",
    "`id`", "a;b", "a\nb", "a\"b", "a'b", "%n%h", "${HOME}", "$$", "x\" accept\ntcp dport 1 accept comment \"",
    "a: b", "- x", "&a", "!!python/object:os.system", "\x07bell", "\x00nul", "\u2028", "\ufffe", "\x85", "\x7f",
    "a" * 300, " 127.0.0.1 ", "127.0.0.2", "[::1]", "0.0.0.0", "", " ", "../../etc/passwd", "/dev/zero",
]
NUMBERS = [0, -1, 1, 2, 3, 255, 256, 65536, 10**6, 10**10, 10**30, 0.5, 1e-9, 1e300,
           float("inf"), float("-inf"), float("nan"), True, False, None]


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"over {LIMIT_S} s")


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


def _hostile(rng: random.Random, old, gentle: bool = False):
    """Mostly a value of the same type (so the case still reaches render), sometimes any."""
    if gentle or rng.random() < 0.7:
        if isinstance(old, bool):
            return not old
        if isinstance(old, str):
            return rng.choice(PAYLOADS) if rng.random() < 0.5 else old + rng.choice(PAYLOADS)
        if isinstance(old, (int, float)):
            return rng.choice([n for n in NUMBERS if isinstance(n, (int, float)) and not isinstance(n, bool)])
    pick = rng.random()
    if pick < 0.4:
        return rng.choice(PAYLOADS)
    if pick < 0.75:
        return rng.choice(NUMBERS)
    if pick < 0.85:
        return [rng.choice(PAYLOADS), rng.choice(NUMBERS)]
    if pick < 0.95:
        return {rng.choice(["x", "value", "\x01", "a\u2028b"]): rng.choice(NUMBERS)}
    return old


def _leaf(data, path) -> bool:
    for part in path:
        data = data[part]
    return isinstance(data, (str, int, float))


def _mutate_data(rng: random.Random, data, gentle: bool):
    paths = [p for p in _paths(data) if not gentle or _leaf(data, p)]
    if not paths:
        return
    path = rng.choice(paths)
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    key = path[-1]
    op = 0.0 if gentle else rng.random()
    if gentle:
        parent[key] = _hostile(rng, parent[key], gentle=True)
    elif op < 0.7:
        parent[key] = _hostile(rng, parent[key])
    elif op < 0.78:
        del parent[key]
    elif op < 0.88 and isinstance(parent, list):
        parent.append(parent[key])  # duplicate ids, names, placements
    elif isinstance(parent, dict):
        parent[rng.choice(["extra", "gpu", "bind ", "Name"])] = rng.choice(PAYLOADS)


def _mutate_text(rng: random.Random, text: str) -> str:
    op = rng.random()
    if op < 0.3:
        i = rng.randrange(len(text) + 1)
        return text[:i] + rng.choice(["\x01", "\x1b", "\x7f", "\x85", "\ufeff", "\ud7ff", "\t", "{", "]", "&x", "*x"]) + text[i:]
    if op < 0.5:
        return text[: rng.randrange(len(text) + 1)]
    if op < 0.65:
        depth = rng.choice([50, 500, 5000])
        return text + "\nextra: " + "[" * depth + "]" * depth + "\n"
    lines = text.splitlines(keepends=True)
    i = rng.randrange(len(lines))
    return "".join(lines[: i + 1] + [lines[i]] + lines[i + 1:])


def _case(rng: random.Random) -> str:
    seed = rng.choice(SEEDS if rng.random() < 0.2 else RENDERABLE)
    data = yaml.safe_load(seed.read_text())
    # a gentle case changes only leaf values, keeping their type: it probes what a field
    # lets through to the rendered files; the others probe the loader and the schema
    gentle = rng.random() < 0.4
    for _ in range(rng.choice([1, 1, 2]) if gentle else rng.randint(1, 5)):
        _mutate_data(rng, data, gentle)
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=1000)
    if not gentle and rng.random() < 0.3:
        text = _mutate_text(rng, text)
    return text


def _cli(*args) -> tuple[int, str, str, float]:
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    signal.alarm(LIMIT_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code
    finally:
        signal.alarm(0)
    return code, out.getvalue(), err.getvalue(), time.monotonic() - t0


def _check_command(problems: list, case: int, name: str, res, json_out: bool):
    code, out, err, took = res
    if "Traceback" in err or code not in EXIT_CODES:
        problems.append(f"case {case}: {name} exit {code}: {err[-600:]}")
    if json_out:
        try:
            json.loads(out)
        except ValueError:
            problems.append(f"case {case}: {name} printed no single JSON document: {out[:200]!r} {err[-300:]!r}")


def _consumer_problems(tree: Path, seen: set) -> list[str]:
    problems, units = [], {}
    group_vars = {}
    gv = tree / "inventory" / "group_vars" / "all.yml"
    for f in sorted(p for p in tree.rglob("*") if p.is_file()):
        rel = f.relative_to(tree).as_posix()
        if rel.startswith(("roles/", "plugins/")) or rel in ("site.yml", "README.md", ".rigctl-render"):
            continue  # static files, the same in every render
        text = f.read_text(encoding="utf-8")
        if (rel, text) in seen:
            continue
        seen.add((rel, text))
        if f.suffix in (".yml", ".yaml"):
            try:
                doc = consumers.load_ansible_yaml(text)
            except yaml.YAMLError as exc:
                problems.append(f"{rel}: not YAML: {exc}")
                continue
            if rel.endswith("compose.yml"):
                problems += [f"{rel}: {p}" for p in consumers.check_compose(text)]
            if rel.startswith("inventory/host_vars/"):
                if gv.is_file():
                    group_vars = consumers.load_ansible_yaml(gv.read_text()) or {}
                ruleset = consumers.nft_ruleset(doc or {}, group_vars)
                problems += [f"{rel} (firewall): {p}" for p in consumers.check_nft(ruleset)]
        elif f.suffix == ".service":
            units[rel] = text
    problems += consumers.check_units(units)
    return problems


def test_fuzzed_specs_never_crash_hang_or_render_what_a_consumer_rejects(tmp_path):
    try:
        consumers.compose_bin(), consumers.check_nft("table inet t\n"), consumers.check_units({})
    except consumers.ToolMissing as exc:
        pytest.skip(f"consumer tool missing: {exc}")
    old = signal.signal(signal.SIGALRM, _alarm)
    rng = random.Random(SEED)
    problems: list[str] = []
    seen: set = set()
    rendered = 0
    try:
        for case in range(CASES):
            spec = tmp_path / f"case{case % 50}.yaml"
            spec.write_bytes(_case(rng).encode("utf-8", "surrogatepass"))
            try:
                val = _cli("validate", spec, "--format", "json")
                _check_command(problems, case, "validate", val, True)
                if val[0] == 2:
                    continue  # unreadable: plan and render stop at the same loader
                _check_command(problems, case, "plan", _cli("plan", spec, "--format", "json"), True)
                out = tmp_path / f"out{case}"
                res = _cli("render", spec, "-o", out, "-q")
                _check_command(problems, case, "render", res, False)
            except Hang as exc:
                problems.append(f"case {case}: {exc}: {spec.read_text()[:300]!r}")
                continue
            if res[0] == 0:
                rendered += 1
                problems += [f"case {case}: {p}" for p in _consumer_problems(out, seen)]
            if len(problems) > 20:
                break
    finally:
        signal.signal(signal.SIGALRM, old)
        spec_file = Path("/tmp/rigctl-fuzz-pwned")
        assert not spec_file.exists(), "a spec string ran a command"
    assert not problems, "\n".join(problems[:20])
    # most payloads are refused by the schema patterns (as they should be); enough must get
    # through to exercise the consumer checks
    assert rendered >= CASES // 50, f"only {rendered} of {CASES} cases rendered: the mutator is too destructive"
