"""`rigctl report` without hosts: the archive's members and its redaction (the lab run is
tests/integration/test_report_lab.py)."""

from __future__ import annotations

import tarfile
from pathlib import Path

from provisioner.supportbundle import redact

ROOT = Path(__file__).resolve().parent.parent
KEY = "k3y-" + "9f2c" * 6


def test_archive_has_the_spec_and_plan_and_no_secret(tmp_path, rigctl, monkeypatch):
    monkeypatch.setenv("RIGCTL_LAB_API_KEY", KEY)
    spec = tmp_path / "rig.yaml"
    # the key pasted into the spec's text, as happens: it must not reach the archive either
    spec.write_text((ROOT / "examples" / "lab-cpu-rpc.yaml").read_text()
                    .replace("name: lab-cpu-rpc", f"name: lab-cpu-rpc\ndescription: our key is {KEY}", 1))
    out = tmp_path / "r.tar.gz"
    rc, stdout, err = rigctl("report", spec, "-o", out)
    assert rc == 0, err
    assert stdout.startswith(f"wrote {out} (") and "redacted" in stdout
    assert "no run under" in err  # never applied from tmp_path: said, not an error
    assert (out.stat().st_mode & 0o777) == 0o600
    with tarfile.open(out) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames()}
        blob = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())
    assert {"MANIFEST.txt", "spec/rig.yaml", "plan.txt", "plan.json"} <= names
    assert KEY.encode() not in blob
    assert b"our key is <redacted>" in blob and b"rigctl-tiny" in blob


def test_key_shaped_values_are_redacted_and_placeholders_kept():
    assert redact("llama-server --api-key abc123xyz --port 8080", set()) == "llama-server --api-key <redacted> --port 8080"
    assert redact("-H 'Authorization: Bearer sk-live-123456'", set()) == "-H 'Authorization: Bearer <redacted>'"
    assert redact("HF_TOKEN=hf_abcdef OTHER=1", set()) == "HF_TOKEN=<redacted> OTHER=1"
    for kept in ("LLAMA_API_KEY_FILE=<secret reference>", "context_tokens: 512", "--api-key-file /etc/rigctl/x.key"):
        assert redact(kept, set()) == kept
    assert redact("a longsecretvalue b", {"longsecretvalue"}) == "a <redacted> b"
