"""The fast YAML writer render uses writes exactly PyYAML's bytes (render: same input, same bytes)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from provisioner.check import check_file
from provisioner.escape import Unsafe
from provisioner.render import _pyyaml, render_project, yamlemit
from provisioner.render.prepare import prepare

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [p for p in sorted((ROOT / "examples").glob("*.yaml")) if check_file(str(p)).errors == 0]
TAGS = {Unsafe: "!unsafe"}

# scalars PyYAML quotes, tags, escapes or folds: YAML 1.1 booleans/numbers/nulls, indicators,
# comments, quotes, Jinja, control and non-ASCII characters, line breaks, long lines
ATOMS = ["", " ", "a", "a b", "true", "True", "yes", "no", "null", "~", "1", "01", "0x1f", "1.5", "1e3", "1_000",
         "12:30", "0,1,2", "-", "- a", "a: b", "a:b", "#x", "a #b", "'", '"', "it's", "{{ x }}", "{% y %}", "[x]",
         "{x}", "&a", "*a", "!t", "|", ">", "@", "`", "%x", "a\nb", "a\n", "\n", "\t", "é", "日本", "\u2028", "\x85",
         "\ufeff", "\x00", "\x7f", " lead", "trail ", "?", "? x", ",", "a,b", "/etc/rigctl/x.yml", "http://h:1/p",
         "--flag", "=", "<<", "x" * 130, ("word " * 40).strip(), "a" * 119 + " b", "line1\nline2 has spaces " * 8,
         "2024-01-01", "0o17", ".inf", "-.inf", ".nan", "+1", "+.5"]
KEYS = [a for a in ATOMS if a and len(a) < 120 and not any(c in a for c in "\n\x85\u2028")]


def _tree(rnd: random.Random, depth: int):
    r = rnd.random()
    if depth > 4 or r < 0.35:
        r = rnd.random()
        if r < 0.6:
            s = rnd.choice(ATOMS) + (rnd.choice(ATOMS) if rnd.random() < 0.3 else "")
            return Unsafe(s) if rnd.random() < 0.5 else s
        return rnd.choice([0, 1, -5, 10**20, 8080, 0.5, 1e17, -2.25, float("inf"), float("nan"), 1e-7, 3.0,
                           True, False, None])
    if r < 0.65:
        return {(rnd.choice(KEYS) if rnd.random() < 0.5 else f"k{rnd.randrange(50)}"): _tree(rnd, depth + 1)
                for _ in range(rnd.randrange(0, 5))}
    return [_tree(rnd, depth + 1) for _ in range(rnd.randrange(0, 5))]


def _fast(data) -> str:
    return yamlemit.dump(data, fallback=lambda d: pytest.fail(f"fell back to PyYAML for {d!r}"), tags=TAGS)


def test_random_documents_match_pyyaml():
    rnd = random.Random(10)
    for _ in range(1500):
        data = {f"k{j}": _tree(rnd, 1) for j in range(rnd.randrange(1, 5))}
        assert _fast(data) == _pyyaml(data), data


@pytest.mark.parametrize("data", [
    {"a": [1], "b": None},  # the same list twice: PyYAML writes an anchor and an alias
    {1: "int key"},
    {"k": (1, 2)},
    {"x" * 123: "a long key PyYAML writes as '? key'"},
    {"multi\nline": 1},
    ["a root list"],
])
def test_other_shapes_are_written_by_pyyaml(data):
    if "b" in data:
        data["b"] = data["a"]
    assert yamlemit.dump(data, fallback=_pyyaml, tags=TAGS) == _pyyaml(data)


@pytest.mark.parametrize("spec", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_rendered_examples_are_the_bytes_pyyaml_writes(spec, monkeypatch):
    prep = prepare(str(spec))
    assert prep.plan is not None
    fast = {f.path: f.content for f in render_project(prep.ctx, prep.plan, prep.overrides)}
    monkeypatch.setattr(yamlemit, "dump", lambda data, fallback, tags=None: fallback(data))
    slow = {f.path: f.content for f in render_project(prep.ctx, prep.plan, prep.overrides)}
    assert fast == slow
