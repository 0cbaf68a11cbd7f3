"""STAND-IN for an Ollama server: no Ollama server binary can be installed here.

Implements only the routes the ollama role calls (server/routes.go, v0.18.2): GET /api/tags,
HEAD/POST /api/blobs/sha256:<digest>, POST /api/pull, POST /api/create (stream false). It
records every request so tests can assert what the role sent. `fail_create` makes
/api/create answer 400 with an error body, as Ollama does.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StandIn:
    def __init__(self):
        self.requests: list[tuple[str, str, object]] = []
        self.models: list[str] = []
        self.blobs: set[str] = set()
        self.fail_create: str | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, code, body=None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n)

            def do_GET(self):
                outer.requests.append(("GET", self.path, None))
                if self.path == "/api/tags":
                    return self._reply(200, {"models": [{"name": m, "digest": "x"} for m in outer.models]})
                self._reply(404, {"error": "not found"})

            def do_HEAD(self):
                outer.requests.append(("HEAD", self.path, None))
                digest = self.path.rsplit("/", 1)[-1]
                self._reply(200 if digest in outer.blobs else 404)

            def do_POST(self):
                raw = self._body()
                if self.path.startswith("/api/blobs/"):
                    outer.requests.append(("POST", self.path, len(raw)))
                    outer.blobs.add(self.path.rsplit("/", 1)[-1])
                    return self._reply(201)
                body = json.loads(raw or b"{}")
                outer.requests.append(("POST", self.path, body))
                if self.path == "/api/create":
                    if outer.fail_create:
                        return self._reply(400, {"error": outer.fail_create})
                    outer.models.append(body["model"] + ":latest")
                    return self._reply(200, {"status": "success"})
                if self.path == "/api/pull":
                    return self._reply(200, {"status": "success"})
                self._reply(404, {"error": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
