"""`rigctl plan --format html`: one self-contained page, checked as text and in a real browser.

The browser is Debian's chromium (scripts/browser_tools.sh installs it); without it the
browser tests skip and say so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from pngread import color_counts  # noqa: E402

from provisioner.planview import COLORS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPLIT = ROOT / "examples" / "5090-4090-split.yaml"
PITFALL = ROOT / "examples" / "pitfalls" / "quad-3090-on-15a-circuit.yaml"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (run scripts/browser_tools.sh as root)")


@pytest.fixture
def split_page(tmp_path, rigctl):
    out = tmp_path / "plan.html"
    rc, stdout, err = rigctl("plan", SPLIT, "--format", "html", "-o", out)
    assert rc == 0, err
    assert stdout == "" and f"wrote {out}" in err
    return out


def test_page_is_self_contained(split_page):
    page = split_page.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") >= 3  # two memory bars, the power budget, the topology
    assert "<link" not in page and 'src="http' not in page and "<script" not in page
    assert not re.search(r"https?://", page), "no URL at all: nothing to fetch offline"
    assert "default-src 'none'" in page  # the browser itself refuses any fetch or script
    assert (split_page.stat().st_mode & 0o777) == 0o644


def test_bars_carry_the_plan_numbers(split_page, rigctl):
    rc, out, _ = rigctl("plan", SPLIT, "--format", "json")
    devices = json.loads(out)["deployments"][0]["fit"]["devices"]
    page = split_page.read_text()
    for key, field in (("weights", "weights_gib"), ("kv", "kv_gib"), ("overhead", "overhead_gib"), ("free", "free_gib")):
        amounts = [float(a) for a in re.findall(rf'class="seg seg-{key}" data-amount="([0-9.]+)"', page)]
        assert amounts[:2] == pytest.approx([d[field] for d in devices], abs=0.001), key
    for d in devices:
        assert f"{d['label']} ({d['name']})" in page
    # the PSU and circuit budget as the power rules compute it (1105 W DC, 15 % headroom: both cards capped)
    assert "PSU 1600 W: load 1105 W + 15 % headroom = 1271 W" in page
    assert "230 V × 16 A × 0.8 = 2944 W continuous; wall draw 1201 W" in page
    assert "llama-server --model /var/lib/rigctl/models/llama70.gguf" in page


def test_spec_text_cannot_inject_markup(tmp_path, rigctl):
    text = SPLIT.read_text().replace(
        "name: split-5090-4090",
        'name: split-5090-4090\ndescription: "</p><script>alert(1)</script><b onmouseover=x>"', 1)
    text = text.replace("    bind: 127.0.0.1", '    bind: 127.0.0.1\n    extra_args: ["--alias", "\\"><img src=x onerror=alert(2)>"]')
    spec = tmp_path / "evil.yaml"
    spec.write_text(text)
    rc, page, err = rigctl("plan", spec, "--format", "html")
    assert rc == 0, err
    assert "<script" not in page and "<img" not in page and "<b " not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page


def test_spec_with_errors_gives_a_page_of_located_findings(tmp_path, rigctl):
    out = tmp_path / "plan.html"
    rc, _, err = rigctl("plan", PITFALL, "--format", "html", "-o", out)
    assert rc == 1
    assert "error wall-circuit" in err
    page = out.read_text()
    rows = re.findall(r'<tr class="finding error"><td class="sev">error</td><td>([^<]+)</td><td>([^<]+)</td>', page)
    assert ("wall-circuit", f"{PITFALL}:15:33") in rows, rows
    assert "Not planned" in page


def test_output_file_needs_json_or_html(tmp_path, rigctl):
    rc, _, err = rigctl("plan", SPLIT, "-o", tmp_path / "plan.txt")
    assert rc == 2 and "--format json or html" in err
    assert not (tmp_path / "plan.txt").exists()


def _chromium(*args, timeout=90):
    return subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                           "--enable-logging=stderr", "--v=0", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def _console_errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln
            or "Content Security Policy" in ln or "Refused to" in ln]


@needs_browser
def test_browser_loads_the_page_and_its_screenshot_shows_the_bars(split_page, tmp_path):
    shot = tmp_path / "shot.png"
    r = _chromium(f"--screenshot={shot}", "--window-size=1200,1600", split_page.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    assert not _console_errors(r.stderr), _console_errors(r.stderr)
    colors = color_counts(shot)
    # each bar segment colour fills a visible area (a 22 px high bar: > 200 px means > ~9 px wide)
    for key in ("weights", "kv", "overhead", "free"):
        assert colors[COLORS[key]] > 200, (key, colors.most_common(8))
    dom = _chromium("--dump-dom", split_page.as_uri())
    assert dom.returncode == 0
    assert dom.stdout.count('class="seg seg-weights"') >= 2 and 'class="topology"' in dom.stdout


@needs_browser
def test_console_error_detection_works(tmp_path):
    # the check above must be able to fail: a page whose script throws is caught
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>undefined_function()</script></body></html>")
    r = _chromium("--dump-dom", bad.as_uri())
    assert _console_errors(r.stderr), r.stderr[-2000:]
