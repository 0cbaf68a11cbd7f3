"""Sources a user can follow: rule docs, rule modules and catalogs cite URLs or files in this repo.

The catalogs and rules were first written from research notes that never shipped with
rigctl (`rules.md`, `gpu-catalog.md`, `stacks.md`, keys such as `[S19]` or `[P6]`); a user
reading `rigctl rules show` or `rigctl catalog gpus` could not check a number. These tests
fail on any such citation and on a repository path that points at nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "provisioner" / "spec" / "data"
RULES = ROOT / "provisioner" / "rules"

CITED_FILES = sorted([*RULES.glob("docs/*.md"), *RULES.glob("*.py"), *DATA.glob("*.yaml"), DATA / "SOURCES.md",
                      ROOT / "README.md", *ROOT.glob("examples/*.yaml"), *ROOT.glob("examples/pitfalls/*.yaml")])
PRIVATE_NOTE = re.compile(r"\b(?:rules|gpu-catalog|stacks)\.md\b|\bgpu-catalog\b|/work/shared|shared/reference")
KEY = r"[A-Z][0-9]{1,2}(?:-old)?"
# "[S19]", "[R22, R23]", "[L3/L4]", "[S22–S24]": a bracket holding only note keys
BRACKET_KEY = re.compile(r"\[\s*" + KEY + r"(?:\s*(?:[,;/]|[–-])\s*" + KEY + r")*\s*\]")
URL = re.compile(r"https?://[^\s)<>\"']+")
REPO_PATH = re.compile(r"(?<![\w/.])((?:provisioner|playbooks|templates|tests|examples|schema|bench|scripts)/[\w.*/-]+"
                       r"|docs/[\w*-]+\.md)")


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


@pytest.mark.parametrize("path", CITED_FILES, ids=_rel)
def test_no_citation_of_notes_outside_the_repository(path):
    bad = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for m in (*PRIVATE_NOTE.finditer(line), *BRACKET_KEY.finditer(line)):
            bad.append(f"{_rel(path)}:{n}: {m.group(0)!r} in {line.strip()[:120]!r}")
    assert not bad, "cite the public URL instead:\n" + "\n".join(bad)


def test_the_checks_catch_what_they_are_for():
    """The patterns above are not vacuous: each old citation style is caught, ordinary text is not."""
    for cited in ("(rules.md §7)", "[S19]", "[R22, R23]", "[L3/L4]", "[S22–S24]", "gpu-catalog §2",
                  "/work/shared/reference/stacks.md", "see `stacks.md` §1"):
        assert PRIVATE_NOTE.search(cited) or BRACKET_KEY.search(cited), cited
    for fine in ("[A-Z0-9_]", "[M2_1]", "`psu-headroom[circuit]`", "nodes[0].gpus[1]", "[str, M2Slot]"):
        assert not (PRIVATE_NOTE.search(fine) or BRACKET_KEY.search(fine)), fine


def _catalog_entries():
    for f in sorted(DATA.glob("*.yaml")):
        for entry in yaml.safe_load(f.read_text(encoding="utf-8")):
            yield f.name, entry


ENTRIES = list(_catalog_entries())


@pytest.mark.parametrize("fname, entry", ENTRIES, ids=[f"{f}:{e['id']}" for f, e in ENTRIES])
def test_catalog_entry_source_points_somewhere_a_user_can_open(fname, entry):
    src = entry.get("source") or ""
    urls = URL.findall(src)
    paths = [p for p in REPO_PATH.findall(src) if _exists(p)]
    assert urls or paths, f"{fname}:{entry['id']}: source has no URL or repository path: {src[:160]!r}"
    for u in urls:
        assert re.match(r"https?://[a-z0-9.-]+\.[a-z]{2,}(/|$)", u, re.I), f"{fname}:{entry['id']}: malformed URL {u}"
        assert "…" not in u and "..." not in u, f"{fname}:{entry['id']}: truncated URL {u}"


def _exists(path: str) -> bool:
    path = path.rstrip(".,;:")
    candidates = [ROOT / path] if not path.startswith("docs/") else [RULES / path]
    return any(c.exists() or any(c.parent.glob(c.name)) for c in candidates)


@pytest.mark.parametrize("path", CITED_FILES, ids=_rel)
def test_repository_paths_cited_exist(path):
    """A path such as `docs/psu-headroom.md` or `provisioner/spec/models.py` must name a real file."""
    text = path.read_text(encoding="utf-8")
    missing = sorted({p.rstrip(".,;:") for p in REPO_PATH.findall(text) if not _exists(p)})
    assert not missing, f"{_rel(path)} cites paths that do not exist: {missing}"


def test_every_url_is_complete():
    """Truncated URLs from the notes (`https://www.elevenforum.com/t/…36234`) cannot be opened."""
    bad = [f"{_rel(p)}: {u}" for p in CITED_FILES for u in URL.findall(p.read_text(encoding="utf-8"))
           if "…" in u or not re.match(r"https?://[a-z0-9.-]+\.[a-z]{2,}(/|:|$)", u, re.I)]
    assert not bad, bad
