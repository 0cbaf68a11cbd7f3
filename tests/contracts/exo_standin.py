"""STAND-IN for exo's HTTP API: exo cannot run here (Python 3.13 with Rust bindings built from
source, MLX on Apple Silicon; no model weights).

Implements only the routes the exo role calls, as exo v1.0.71 answers them
(src/exo/api/main.py; provisioner/contracts/exo.yaml): GET /v1/models (health), GET
/state/instances ({id: {"MlxRingInstance": {"instanceId", "shardAssignments": {"modelId"}}}}),
GET /instance/placement (400 {"error": {"message", "type", "code"}} when it does not fit),
POST /place_instance ("Command received."; the instance appears in the state afterwards).
It records every request. Knobs: `no_fit` (placement check answers 400 with that message),
`no_fit_times` (the first N checks answer 400, as while peers join), `drop_placements` (accepts
the command but never creates the instance), `fail_place` (POST /place_instance answers 500
with that message). Standard library only, so it also runs on a lab
host: `python3 exo_standin.py PORT LOG` serves on 127.0.0.1:PORT and appends each request to LOG
as a JSON line.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class StandIn:
    def __init__(self, port: int = 0, log=None):
        self.requests: list[tuple[str, str, object]] = []
        self.instances: dict[str, dict] = {}
        self.no_fit: str | None = None
        self.no_fit_times = 0
        self.drop_placements = False
        self.fail_place: str | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, code, message, phrase):
                self._reply(code, {"error": {"message": message, "type": phrase, "code": code}})

            def _record(self, entry):
                outer.requests.append(entry)
                if log is not None:
                    log.write(json.dumps(entry) + "\n")
                    log.flush()

            def do_GET(self):
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                self._record(("GET", url.path, query or None))
                if url.path == "/v1/models":
                    return self._reply(200, {"object": "list", "data": []})
                if url.path == "/state/instances":
                    return self._reply(200, outer.instances)
                if url.path == "/instance/placement":
                    if outer.no_fit_times > 0:
                        outer.no_fit_times -= 1
                        return self._error(400, "No cycles found with sufficient memory", "Bad Request")
                    if outer.no_fit:
                        return self._error(400, outer.no_fit, "Bad Request")
                    return self._reply(200, {"MlxRingInstance": {"instanceId": "preview"}})
                self._reply(404, {"detail": "Not Found"})

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                url = urlsplit(self.path)
                self._record(("POST", url.path, body))
                if url.path == "/place_instance":
                    if "model_id" not in body:  # pydantic: a required field
                        return self._reply(422, {"detail": [{"loc": ["body", "model_id"], "msg": "Field required"}]})
                    if outer.fail_place:  # e.g. the model card cannot be fetched
                        return self._error(500, outer.fail_place, "Internal Server Error")
                    if not outer.drop_placements:
                        iid = str(uuid.uuid4())
                        outer.instances[iid] = {"MlxRingInstance": {
                            "instanceId": iid, "shardAssignments": {"modelId": body["model_id"]},
                            "ephemeralPort": 50123}}
                    return self._reply(200, {"message": "Command received.", "command_id": str(uuid.uuid4())})
                self._reply(404, {"detail": "Not Found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":  # on a lab host: python3 exo_standin.py PORT LOG [no-fit message]
    with open(sys.argv[2], "a", encoding="utf-8") as log:  # written before each reply is sent
        s = StandIn(int(sys.argv[1]), log=log)
        if len(sys.argv) > 3:
            s.no_fit = sys.argv[3]
        s.thread.join()
