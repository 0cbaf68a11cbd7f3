# -*- coding: utf-8 -*-
"""Runs ON a rig host (sent over SSH by rigctl verify): health route, then one small completion.

Standard library only (Python 3.6+). It runs on the host because endpoints are
often bound to loopback; a refused connection here means the server is down,
not a firewall between the controller and the host. Input is ``ARGS``
(host, port, health_path, key or key_file, model_hint, budget_s,
refused_grace_s, max_tokens); output is one JSON line:
{ok, stage, error, status, elapsed_s, model, content, completion_tokens}.
"""

import json
import socket
import sys
import time
from urllib import error, request


def _reason(exc):
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    return " ".join(str(reason).split()) or type(reason).__name__


def _call(method, url, headers, body=None, timeout=10.0):
    """(status, text, error): status None when no HTTP answer came back."""
    data = json.dumps(body).encode() if body is not None else None
    req = request.Request(url, data=data, method=method, headers=dict(headers))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with request.urlopen(req, timeout=max(timeout, 0.5)) as resp:
            return resp.status, resp.read(1 << 20).decode("utf-8", "replace"), None
    except error.HTTPError as exc:
        return exc.code, exc.read(4096).decode("utf-8", "replace"), None
    except Exception as exc:  # refused, reset, timeout, DNS
        return None, "", _reason(exc)


def _snippet(text):
    text = " ".join((text or "").split())
    return text[:160] + ("..." if len(text) > 160 else "")


def check(a):
    start = time.time()
    deadline = start + float(a.get("budget_s", 60))
    host = a["host"]
    base = "http://%s:%d" % ("[%s]" % host if ":" in host else host, int(a["port"]))
    headers = {"User-Agent": "rigctl-verify"}
    key = a.get("key")
    if a.get("key_file"):
        try:
            with open(a["key_file"]) as f:
                key = f.read().strip()
        except OSError as exc:
            return {"ok": False, "stage": "auth", "error": "cannot read the API key file %s: %s"
                    % (a["key_file"], exc.strerror or exc)}
    if key:
        headers["Authorization"] = "Bearer " + key

    health = a.get("health_path") or "/"
    refused_until = start + float(a.get("refused_grace_s", 0))
    while True:
        status, text, err = _call("GET", base + health, headers, timeout=min(10.0, deadline - time.time()))
        if status == 200:
            break
        loading = status == 503 or (err == "connection refused" and time.time() < refused_until)
        if not loading or time.time() + 1 > deadline:
            what = err if status is None else "HTTP %d %s" % (status, _snippet(text))
            if status == 503:
                what += " (still loading after %.0f s)" % (time.time() - start)
            return {"ok": False, "stage": "health", "status": status, "elapsed_s": round(time.time() - start, 2),
                    "error": "GET %s failed: %s" % (health, what)}
        time.sleep(1)

    model = a.get("model_hint") or "default"
    status, text, err = _call("GET", base + "/v1/models", headers, timeout=min(10.0, deadline - time.time()))
    if status == 200:
        try:
            models = json.loads(text).get("data") or []
            if models and models[0].get("id"):
                model = models[0]["id"]
        except (ValueError, AttributeError):
            pass

    body = {"model": model, "max_tokens": int(a.get("max_tokens", 8)), "temperature": 0,
            "messages": [{"role": "user", "content": "Reply with the single word: ready"}]}
    t0 = time.time()
    status, text, err = _call("POST", base + "/v1/chat/completions", headers, body, timeout=deadline - t0)
    out = {"stage": "completion", "status": status, "model": model, "elapsed_s": round(time.time() - start, 2),
           "completion_s": round(time.time() - t0, 2)}
    if status != 200:
        what = err if status is None else "HTTP %d %s" % (status, _snippet(text))
        if err == "timed out":
            what = "no answer within the %s s budget" % a.get("budget_s", 60)
        out.update(ok=False, error="POST /v1/chat/completions failed: %s" % what)
        return out
    try:
        doc = json.loads(text)
        message = doc["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        out.update(ok=False, error="POST /v1/chat/completions answered 200 without choices: %s" % _snippet(text))
        return out
    out.update(ok=True, content=_snippet(message.get("content") or message.get("reasoning_content") or ""),
               completion_tokens=(doc.get("usage") or {}).get("completion_tokens"))
    return out


if __name__ == "rigctl_remote":  # sent by provisioner.verify.ssh.SshSession.run_python
    sys.stdout.write("\n" + json.dumps(check(ARGS)) + "\n")  # noqa: F821 - set by the launcher
