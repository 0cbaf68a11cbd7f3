#!/usr/bin/python3
# rigctl: fetch one deployment's model on the host (serve[].source), before its service starts.
"""Ansible module: download a model file from a URL (resumed, sha256-checked) or files of a
Hugging Face repository at a pinned commit (through huggingface_hub, each file checked against
the sha256 the Hub publishes for LFS files, or the git blob id for the small ones), or check
that a path already on the host exists.

The work is done in slices (``slice_s``): a call returns ``done: false`` with the progress
so far and the task calls it again (``until: done``); every slice after the first resumes
the partial file with an HTTP Range request, which is also how an interrupted download (a
dropped connection, a failed apply) carries on. A file that is already there and verified is
not read again: a stamp beside it records its size, mtime and digest.

The token is never an argument: ``token_file`` names the root-only env file (HF_TOKEN=...)
that the base role's secret.yml wrote, and this module reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule

CHUNK = 1 << 20
STAMP_DIR = ".rigctl"  # beside the model files: <dir>/.rigctl/<name>.verified


def _digest(path: str, algo: str = "sha256", git_blob: bool = False) -> str:
    h = hashlib.new(algo)
    if git_blob:  # git's blob id: sha1 of "blob <size>\0" + content
        h.update(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _stamp_path(path: str) -> str:
    d, name = os.path.split(path)
    return os.path.join(d, STAMP_DIR, name.replace("/", "%2F") + ".verified")


def _stamped(path: str, want: str) -> bool:
    """The file is there and was verified against ``want`` as it is now (size and mtime)."""
    try:
        st = os.stat(path)
        with open(_stamp_path(path)) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return False
    return rec == {"digest": want, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _stamp(path: str, want: str) -> None:
    st = os.stat(path)
    sp = _stamp_path(path)
    os.makedirs(os.path.dirname(sp), mode=0o755, exist_ok=True)
    with open(sp + ".tmp", "w") as f:
        json.dump({"digest": want, "size": st.st_size, "mtime_ns": st.st_mtime_ns}, f)
    os.replace(sp + ".tmp", sp)


def _gb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


# ------------------------------------------------------------------ URL


def fetch_url(m: AnsibleModule, who: str) -> dict:
    p = m.params
    dest, url, want = p["dest"], p["url"], p["sha256"].lower()
    os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
    if os.path.isfile(dest):
        if _stamped(dest, want):
            return {"changed": False, "done": True, "msg": f"{who}: {dest} is there and verified (sha256)"}
        if _digest(dest) == want:
            _stamp(dest, want)
            return {"changed": False, "done": True, "msg": f"{who}: {dest} is there; sha256 verified"}
        os.unlink(dest)  # another version of the file: replace it
    part = dest + ".part"
    offset = os.path.getsize(part) if os.path.isfile(part) else 0
    deadline = time.monotonic() + p["slice_s"]
    req = urllib.request.Request(url, headers={"User-Agent": "rigctl-model-fetch",
                                               **({"Range": f"bytes={offset}-"} if offset else {})})
    total = None
    eof = False
    try:
        try:
            resp = urllib.request.urlopen(req, timeout=p["timeout_s"])
        except urllib.error.HTTPError as exc:
            if exc.code != 416 or not offset:  # 416: the part already holds the whole file
                raise
            eof = True
            resp = None
        if resp is not None:
            with resp:
                if offset and resp.status != 206:
                    offset = 0  # the server ignored the range: start again
                length = resp.headers.get("Content-Length")
                total = offset + int(length) if length and length.isdigit() else None
                with open(part, "ab" if offset else "wb") as f:
                    while True:
                        try:
                            block = resp.read(CHUNK)
                        except (OSError, socket.timeout, ValueError) as exc:  # IncompleteRead, reset
                            m.warn(f"{who}: download interrupted at {_gb(f.tell())} ({exc}); resuming")
                            break
                        if not block:
                            eof = total is None or f.tell() >= total
                            break
                        f.write(block)
                        if time.monotonic() > deadline:
                            break
    except urllib.error.HTTPError as exc:
        m.fail_json(msg=f"{who}: {url} answered HTTP {exc.code} {exc.reason}; the service was not started "
                        "— check source.url (and that the server serves the file to this host)")
    except (urllib.error.URLError, OSError, socket.timeout) as exc:
        reason = getattr(exc, "reason", exc)
        m.fail_json(msg=f"{who}: cannot download {url}: {reason}; the service was not started — check "
                        "source.url and that this host reaches that server")
    have = os.path.getsize(part)
    if not eof:
        pct = f" ({have / total:.0%})" if total else ""
        return {"changed": True, "done": False, "bytes": have, "total": total,
                "msg": f"{who}: {_gb(have)} of {_gb(total)}{pct} of {os.path.basename(dest)}"}
    got = _digest(part)
    if got != want:
        os.unlink(part)
        m.fail_json(msg=f"{who}: {url} has sha256 {got}, source.sha256 says {want}; the download was "
                        "removed and the service was not started — check source.sha256 and source.url")
    os.chmod(part, 0o644)
    os.replace(part, dest)
    _stamp(dest, want)
    return {"changed": True, "done": True, "bytes": have, "total": have,
            "msg": f"{who}: downloaded {os.path.basename(dest)} ({_gb(have)}), sha256 verified"}


# ------------------------------------------------------------------ Hugging Face


def _token(m: AnsibleModule, who: str) -> str | None:
    path = m.params["token_file"]
    if not path:
        return None
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("HF_TOKEN="):
                    return line.split("=", 1)[1].strip() or None
    except OSError as exc:
        m.fail_json(msg=f"{who}: cannot read the token file {path}: {exc.strerror}")
    m.fail_json(msg=f"{who}: {path} holds no HF_TOKEN= line")


def _manifest(path: str, repo: str, rev: str, files: list | None) -> dict | None:
    """file -> digest recorded for this repo, commit and file list, or None."""
    try:
        with open(path) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    if rec.get("repo") != repo or rec.get("revision") != rev or rec.get("files") != files:
        return None
    return rec.get("digests") or None


def _write_manifest(path: str, repo: str, rev: str, files: list | None, digests: dict) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump({"repo": repo, "revision": rev, "files": files, "digests": digests}, f)
    os.replace(path + ".tmp", path)


def fetch_hf(m: AnsibleModule, who: str) -> dict:
    p = m.params
    if p["endpoint"]:
        os.environ["HF_ENDPOINT"] = p["endpoint"]  # read by huggingface_hub at import
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if p["pylib"]:
        sys.path.insert(0, p["pylib"])
    try:
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                            RevisionNotFoundError)
    except ImportError as exc:
        m.fail_json(msg=f"{who}: huggingface_hub is not importable from {p['pylib'] or sys.path} ({exc})")
    repo, rev, dest = p["repo"], p["revision"], p["dest"]
    endpoint = p["endpoint"] or "https://huggingface.co"
    os.makedirs(dest, mode=0o755, exist_ok=True)
    manifest = os.path.join(dest, STAMP_DIR, "manifest.json")
    known = _manifest(manifest, repo, rev, p["files"])
    if known and all(_stamped(os.path.join(dest, f), d) for f, d in known.items()):
        # the pinned commit cannot change: verified files need no call to the Hub
        return {"changed": False, "done": True,
                "msg": f"{who}: {len(known)} file(s) of {repo}@{rev[:12]} are there and verified"}
    token = _token(m, who)

    def refused(exc) -> None:
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        if isinstance(exc, GatedRepoError) or (isinstance(exc, RepositoryNotFoundError) and status == 401):
            fix = ("the token was refused: check that it is valid and that its account accepted the licence"
                   if token else "the repository is gated or private and no token was given: set source.token")
            m.fail_json(msg=f"{who}: {endpoint} answered {status} for {repo}: {fix} (accept it on "
                            f"https://huggingface.co/{repo}); the service was not started")
        if isinstance(exc, RevisionNotFoundError):
            m.fail_json(msg=f"{who}: {repo} has no revision {rev}: check source.hf.revision; "
                            "the service was not started")
        if isinstance(exc, RepositoryNotFoundError):
            m.fail_json(msg=f"{who}: {repo} not found on {endpoint}: check source.hf.repo; the service was not started")
        m.fail_json(msg=f"{who}: {endpoint} refused {repo}@{rev[:12]}: {str(exc).splitlines()[0]}; "
                        "the service was not started")

    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(repo, revision=rev, files_metadata=True, token=token)
    except HfHubHTTPError as exc:
        refused(exc)
    except Exception as exc:  # the hub (or its stand-in) cannot be reached
        m.fail_json(msg=f"{who}: cannot reach {endpoint} for {repo}: {exc}; the service was not started — "
                        "check that this host reaches the Hub (HF_ENDPOINT)")
    siblings = {s.rfilename: s for s in info.siblings or []}
    files = p["files"] or sorted(siblings)
    unknown = [f for f in files if f not in siblings]
    if unknown:
        m.fail_json(msg=f"{who}: {repo}@{rev[:12]} has no file {', '.join(unknown)}: check source.hf.files "
                        f"(the revision has {', '.join(sorted(siblings)[:8])}{', ...' if len(siblings) > 8 else ''})")

    def expected(f: str) -> tuple[str, bool]:
        s = siblings[f]
        if s.lfs is not None and s.lfs.sha256:
            return s.lfs.sha256, False
        return s.blob_id, True  # a small file in git itself: its blob id

    _write_manifest(manifest, repo, rev, p["files"], {f: expected(f)[0] for f in files})
    deadline = time.monotonic() + p["slice_s"]
    fetched, total_bytes = [], 0
    todo = [f for f in files if not _stamped(os.path.join(dest, f), expected(f)[0])]
    for n, f in enumerate(todo):
        if fetched and time.monotonic() > deadline:
            return {"changed": True, "done": False,
                    "msg": f"{who}: {len(files) - len(todo) + n} of {len(files)} files of {repo} ({_gb(total_bytes)} in this step)"}
        want, git_blob = expected(f)
        try:
            local = hf_hub_download(repo, f, revision=rev, local_dir=dest, token=token)
        except HfHubHTTPError as exc:
            refused(exc)
        except Exception as exc:
            m.fail_json(msg=f"{who}: download of {f} from {repo} failed: {exc}; the service was not started")
        got = _digest(local, "sha1" if git_blob else "sha256", git_blob=git_blob)
        if got != want:
            os.unlink(local)
            kind = "git blob id" if git_blob else "sha256"
            m.fail_json(msg=f"{who}: {f} of {repo}@{rev[:12]} has {kind} {got}, the Hub publishes {want}; "
                            "the file was removed and the service was not started")
        _stamp(local, want)
        fetched.append(f)
        total_bytes += os.path.getsize(local)
    if not fetched:
        return {"changed": False, "done": True, "msg": f"{who}: {len(files)} file(s) of {repo}@{rev[:12]} are there and verified"}
    return {"changed": True, "done": True, "files": fetched,
            "msg": f"{who}: downloaded {len(fetched)} file(s) of {repo}@{rev[:12]} ({_gb(total_bytes)}), checksums verified"}


def main() -> None:
    m = AnsibleModule(argument_spec={
        "kind": {"type": "str", "required": True, "choices": ["url", "hf", "path"]},
        "deployment": {"type": "str", "required": True},
        "host": {"type": "str", "default": ""},
        "dest": {"type": "str"},
        "path": {"type": "str"},
        "url": {"type": "str"},
        "sha256": {"type": "str"},
        "repo": {"type": "str"},
        "revision": {"type": "str"},
        "files": {"type": "list", "elements": "str"},
        "token_file": {"type": "str"},
        "endpoint": {"type": "str"},
        "pylib": {"type": "str"},
        "slice_s": {"type": "float", "default": 30.0},
        "timeout_s": {"type": "float", "default": 30.0},
    }, supports_check_mode=False)
    p = m.params
    who = f"deployment {p['deployment']}" + (f" on {p['host']}" if p["host"] else "")
    if p["kind"] == "path":
        if not os.path.exists(p["path"]):
            m.fail_json(msg=f"{who}: source.path {p['path']} does not exist on this host (is the share "
                            "mounted?); the service was not started")
        m.exit_json(changed=False, done=True, msg=f"{who}: {p['path']} is on the host")
    res = fetch_url(m, who) if p["kind"] == "url" else fetch_hf(m, who)
    m.exit_json(**res)


if __name__ == "__main__":
    main()
