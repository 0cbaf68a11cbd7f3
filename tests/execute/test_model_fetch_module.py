"""playbooks/library/rigctl_model_fetch.py run as Ansible runs a module (a JSON args file),
on this machine, against the real HTTP server and the labelled Hub stand-in of
tests/integration/model_server.py: resume after a cut connection, skip when verified, a
wrong sha256, an unreachable URL, the Hub's 401 without the token, a file whose bytes do
not match the digest the Hub publishes, and a missing host path. The lab test runs the same
module on a lab host through `rigctl apply`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "playbooks" / "library" / "rigctl_model_fetch.py"
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from model_server import HubRepo, ModelServer  # noqa: E402

REV = "a" * 40
DATA = bytes(range(256)) * 2000  # 512 kB


def run(tmp_path: Path, **args) -> dict:
    f = tmp_path / "args.json"
    f.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"deployment": "dep", "host": "h1", **args}}))
    r = subprocess.run([sys.executable, str(MODULE), str(f)], capture_output=True, text=True, timeout=120)
    return json.loads(r.stdout)


@pytest.fixture
def server():
    srv = ModelServer("127.0.0.1").start()
    yield srv
    srv.stop()


def test_url_resumes_after_a_cut_and_is_not_fetched_again(tmp_path, server):
    url = server.add_file("m.gguf", DATA)
    server.drop_after["m.gguf"] = 100_000
    sha = hashlib.sha256(DATA).hexdigest()
    dest = tmp_path / "models" / "dep" / "m.gguf"
    first = run(tmp_path, kind="url", dest=str(dest), url=url, sha256=sha)
    assert first["done"] is False and first["bytes"] == 100_000 and "(20%)" in first["msg"], first
    second = run(tmp_path, kind="url", dest=str(dest), url=url, sha256=sha)
    assert second["done"] is True and second["changed"] is True, second
    assert [r["range"] for r in server.requests("/files/m.gguf")] == [None, "bytes=100000-"]
    assert dest.read_bytes() == DATA and oct(dest.stat().st_mode & 0o777) == "0o644"
    third = run(tmp_path, kind="url", dest=str(dest), url=url, sha256=sha)
    assert third["changed"] is False and "verified" in third["msg"]
    assert len(server.requests("/files/m.gguf")) == 2  # nothing fetched, nothing re-hashed against the server


def test_wrong_sha256_removes_the_download(tmp_path, server):
    url = server.add_file("m.gguf", DATA)
    dest = tmp_path / "m.gguf"
    res = run(tmp_path, kind="url", dest=str(dest), url=url, sha256="0" * 64)
    assert res["failed"] and res["msg"].startswith("deployment dep on h1: ")
    assert f"has sha256 {hashlib.sha256(DATA).hexdigest()}, source.sha256 says {'0' * 64}" in res["msg"]
    assert not dest.exists() and not Path(str(dest) + ".part").exists()


def test_unreachable_url(tmp_path):
    res = run(tmp_path, kind="url", dest=str(tmp_path / "m.gguf"), url="http://127.0.0.1:9/m.gguf", sha256="0" * 64)
    assert res["failed"] and "deployment dep on h1: cannot download http://127.0.0.1:9/m.gguf" in res["msg"]


def test_missing_host_path(tmp_path):
    res = run(tmp_path, kind="path", path=str(tmp_path / "share" / "m.gguf"))
    assert res["failed"] and "does not exist on this host (is the share mounted?)" in res["msg"]


@pytest.fixture(scope="module")
def hub_lib(tmp_path_factory):
    """huggingface_hub at the role's version, unpacked from the lab bundle (pip, PyPI)."""
    import tarfile

    from provisioner.lab.hfhub import HfHubBundleError, ensure_hf_hub_bundle

    try:
        bundle = ensure_hf_hub_bundle()
    except HfHubBundleError as exc:
        pytest.skip(f"no huggingface_hub bundle: {exc}")
    d = tmp_path_factory.mktemp("pylib")
    with tarfile.open(bundle) as tar:
        tar.extractall(d, filter="data")
    return str(d)


def test_hf_token_checksums_and_401(tmp_path, server, hub_lib):
    repo = HubRepo("org/m", REV, {"m.gguf": DATA, "bad.gguf": DATA[::-1], "README.md": b"hi\n"}, token="t0ken")
    repo.wrong_digest.add("bad.gguf")
    server.repos["org/m"] = repo
    tok = tmp_path / "tok.env"
    tok.write_text("HF_TOKEN=t0ken\n")
    common = {"kind": "hf", "repo": "org/m", "revision": REV, "endpoint": server.url, "pylib": hub_lib}
    dest = tmp_path / "dep"
    ok = run(tmp_path, dest=str(dest), files=["m.gguf", "README.md"], token_file=str(tok), **common)
    assert ok["done"] and ok["changed"] and ok["files"] == ["m.gguf", "README.md"], ok
    assert (dest / "m.gguf").read_bytes() == DATA and {r["bearer"] for r in server.log} == {"t0ken"}
    n = len(server.log)
    again = run(tmp_path, dest=str(dest), files=["m.gguf", "README.md"], token_file=str(tok), **common)
    assert again["changed"] is False and len(server.log) == n  # verified at the pinned commit: no request
    bad = run(tmp_path, dest=str(tmp_path / "bad"), files=["bad.gguf"], token_file=str(tok), **common)
    assert bad["failed"] and "bad.gguf of org/m@aaaaaaaaaaaa has sha256" in bad["msg"], bad
    assert not (tmp_path / "bad" / "bad.gguf").exists()
    missing = run(tmp_path, dest=str(tmp_path / "x"), files=["nope.gguf"], token_file=str(tok), **common)
    assert missing["failed"] and "has no file nope.gguf" in missing["msg"]
    denied = run(tmp_path, dest=str(tmp_path / "y"), files=["m.gguf"], **common)
    assert denied["failed"] and "answered 401 for org/m" in denied["msg"] and "set source.token" in denied["msg"]
    wrong_rev = run(tmp_path, dest=str(tmp_path / "z"), files=["m.gguf"], token_file=str(tok),
                    **{**common, "revision": "b" * 40})
    assert wrong_rev["failed"] and "has no revision" in wrong_rev["msg"], wrong_rev
