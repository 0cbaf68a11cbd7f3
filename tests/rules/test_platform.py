"""macos-native on the shipped macOS examples: a stack that cannot run where the spec puts it
is a located error with the fix, and render writes nothing (never a project that fails later)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.check import check_file
from provisioner.diagnostics import Severity

ROOT = Path(__file__).resolve().parents[2]
MACOS_EXAMPLES = ("exo.yaml", "mac-studio.yaml")


def _variant(tmp_path: Path, example: str, old: str, new: str) -> tuple[Path, str]:
    text = (ROOT / "examples" / example).read_text()
    assert text.count(old) == 1, old
    path = tmp_path / example
    path.write_text(text.replace(old, new))
    return path, path.read_text()


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("example", MACOS_EXAMPLES)
def test_container_mode_on_a_mac_is_a_located_error_and_nothing_renders(example, tmp_path, rigctl):
    spec, text = _variant(tmp_path, example, "version: 1\n", "version: 1\ndeploy_mode: container\n")
    res = check_file(str(spec))
    errors = [d for d in res.diagnostics if d.severity is Severity.error]
    assert [d.rule for d in errors] == ["macos-native[container]"], [d.message for d in errors]
    assert errors[0].location.line == _line_of(text, "deploy_mode: container")
    assert "remove deploy_mode: container" in errors[0].message
    code, _, stderr = rigctl("render", spec, "-o", tmp_path / "out")
    assert code == 1 and "macos-native[container]" in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stack", ["ollama", "vllm", "tabbyapi", "petals"])
def test_container_only_stacks_on_the_mac_studio_are_refused(stack, tmp_path):
    spec, text = _variant(tmp_path, "mac-studio.yaml", "stack: llamacpp", f"stack: {stack}")
    res = check_file(str(spec))
    mine = [d for d in res.diagnostics if d.base_rule == "macos-native"]
    other = [d.rule for d in res.diagnostics if d.rule == "driver-architecture[cuda-only]"]
    if stack == "ollama":
        # Ollama runs on Apple Silicon upstream, but rigctl deploys only its Linux container
        assert [(d.rule, d.location.line) for d in mine] == [("macos-native[stack]", _line_of(text, "- {node: studio}"))]
        assert "use stack llamacpp" in mine[0].message
    else:
        # an Apple GPU is placed: driver-architecture[cuda-only] names it at serve[].stack, once
        assert other == ["driver-architecture[cuda-only]"] and not mine


def test_the_macos_examples_have_no_errors():
    for example in MACOS_EXAMPLES:
        res = check_file(str(ROOT / "examples" / example))
        assert not [d for d in res.diagnostics if d.severity is Severity.error], example
