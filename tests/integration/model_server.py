"""HTTP servers on the controller for the model-source lab tests.

``ModelServer`` is one real ``http.server`` on the lab bridge serving two things:

- ``/files/<name>``: plain files with Range support (a URL source). ``drop_after[name] = n``
  makes the next GET of that file send only n bytes and close the connection, as a broken
  link would: the download must resume.
- a STAND-IN for the Hugging Face Hub (labelled as one: the real hub cannot be reached
  here). It serves the two routes huggingface_hub 2.4.0 calls for ``model_info(...,
  files_metadata=True)`` and ``hf_hub_download``, read from its source:
  ``GET /api/models/{repo}/revision/{rev}?blobs=True`` (hf_api.py model_info: JSON with
  ``sha`` and ``siblings`` [{rfilename, size, blobId, lfs: {sha256, size, pointerSize}}]) and
  ``HEAD|GET /{repo}/resolve/{rev}/{file}`` (file_download.py get_hf_file_metadata reads
  ``X-Repo-Commit``, ``X-Linked-Etag`` or ``ETag``, ``X-Linked-Size`` or ``Content-Length``;
  http_get sends ``Range`` to resume). A gated repository answers 401 with
  ``X-Error-Code: GatedRepo`` (utils/_http.py hf_raise_for_status) unless the request
  carries ``Authorization: Bearer <token>``; an unknown revision answers 404
  ``X-Error-Code: RevisionNotFound``. Files at least ``LFS_MIN`` bytes are "LFS" files (sha256
  published), smaller ones are plain git blobs (their blob id).

Every request is logged (method, path, Range, whether a bearer token came, and which) so
tests can see resumes, skips and that the token went only where it should.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LFS_MIN = 1024


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubRepo:
    def __init__(self, repo: str, revision: str, files: dict[str, bytes], token: str | None = None):
        self.repo, self.revision, self.files, self.token = repo, revision, files, token
        self.wrong_digest: set[str] = set()  # files whose published sha256 does not match their bytes

    def sibling(self, name: str) -> dict:
        data = self.files[name]
        out = {"rfilename": name, "size": len(data), "blobId": git_blob_id(data)}
        if len(data) >= LFS_MIN:
            digest = hashlib.sha256(data + (b"x" if name in self.wrong_digest else b"")).hexdigest()
            out["lfs"] = {"sha256": digest, "size": len(data), "pointerSize": 134}
        return out


class ModelServer:
    def __init__(self, host: str, port: int = 0):
        self.files: dict[str, bytes] = {}
        self.repos: dict[str, HubRepo] = {}
        self.drop_after: dict[str, int] = {}
        self.log: list[dict] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ModelServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_file(self, name: str, data: bytes) -> str:
        self.files[name] = data
        return f"{self.url}/files/{name}"

    def requests(self, path_part: str, method: str | None = None) -> list[dict]:
        with self._lock:
            return [r for r in self.log if path_part in r["path"] and (method is None or r["method"] == method)]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet; requests go to server.log
                pass

            def _record(self) -> None:
                auth = self.headers.get("Authorization") or ""
                with server._lock:
                    server.log.append({"method": self.command, "path": self.path, "range": self.headers.get("Range"),
                                       "bearer": auth[7:] if auth.startswith("Bearer ") else None})

            def do_HEAD(self):
                self._record()
                self._route(head=True)

            def do_GET(self):
                self._record()
                self._route(head=False)

            def _send(self, code: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _error(self, code: int, error_code: str, head: bool):
                self._send(code, json.dumps({"error": error_code}).encode(),
                           {"X-Error-Code": error_code, "Content-Type": "application/json"}, head)

            def _route(self, head: bool):
                path = self.path.split("?", 1)[0]
                if path.startswith("/files/"):
                    name = path[len("/files/"):]
                    if name not in server.files:
                        return self._send(404, b"not found", head=head)
                    return self._file(server.files[name], name, head, {})
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
                if m:
                    repo = self._repo(m.group(1), m.group(2), head)
                    if repo is None:
                        return
                    body = {"id": repo.repo, "modelId": repo.repo, "sha": repo.revision, "private": False,
                            "gated": "auto" if repo.token else False,
                            "siblings": [repo.sibling(n) for n in sorted(repo.files)]}
                    return self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if m:
                    repo = self._repo(m.group(1), m.group(2), head)
                    if repo is None:
                        return
                    name = m.group(3)
                    if name not in repo.files:
                        return self._error(404, "EntryNotFound", head)
                    sib = repo.sibling(name)
                    etag = sib["lfs"]["sha256"] if "lfs" in sib else sib["blobId"]
                    return self._file(repo.files[name], f"{repo.repo}/{name}", head,
                                      {"X-Repo-Commit": repo.revision, "ETag": f'"{etag}"',
                                       "X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(repo.files[name]))})
                self._send(404, b"not found", head=head)

            def _repo(self, repo_id: str, rev: str, head: bool) -> HubRepo | None:
                repo = server.repos.get(repo_id)
                if repo is None:
                    self._error(401, "RepoNotFound", head)  # the Hub answers 401 for unknown repos too
                    return None
                auth = self.headers.get("Authorization") or ""
                if repo.token and auth != f"Bearer {repo.token}":
                    self._error(401, "GatedRepo", head)
                    return None
                if rev != repo.revision:
                    self._error(404, "RevisionNotFound", head)
                    return None
                return repo

            def _file(self, data: bytes, key: str, head: bool, extra: dict):
                start = 0
                rng = self.headers.get("Range")
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m:
                    start = int(m.group(1))
                    if start >= len(data):
                        return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head)
                body = data[start:]
                self.send_response(206 if m else 200)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Accept-Ranges", "bytes")
                if m:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if head:
                    return
                cut = server.drop_after.pop(key, None)
                if cut is not None and cut < len(body):
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        return Handler


def tiny_repo_files(gguf: Path) -> dict[str, bytes]:
    """A small repository: the GGUF (an "LFS" file) and a README (a plain git blob)."""
    return {"tiny.gguf": gguf.read_bytes(), "README.md": b"# tiny random-weight llama for rigctl lab tests\n"}
