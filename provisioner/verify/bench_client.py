# -*- coding: utf-8 -*-
"""Runs ON a rig host (sent over SSH by rigctl bench): one measurement step against an endpoint.

Standard library only (Python 3.6+), like endpoint_probe.py, and for the same reason: endpoints
are often bound to loopback. Input is ``ARGS`` (host, port, key or key_file, op, ...); output is
one JSON line. Every request has a timeout (``timeout_s``); a step never runs past ``deadline_s``.

ops:
  prepare     wait for the health route (503 = loading), read the model id
  completion  one /v1/completions request: prompt and decode tokens/s (llama.cpp ``timings``
              when the server sends them, else wall time)
  ttft        one streamed request: seconds to the first token
  concurrent  ``n`` completions at once: aggregate decode tokens/s, per-request latency
  soak        multi-turn chats for ``duration_s``: each request's latency, errors
  memory      resident memory of the service's main process (/proc/PID/status VmRSS)
"""

import json
import random
import socket
import subprocess
import sys
import threading
import time
from urllib import error, request

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def _reason(exc):
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    return " ".join(str(reason).split()) or type(reason).__name__


def _snippet(text):
    text = " ".join((text or "").split())
    return text[:160] + ("..." if len(text) > 160 else "")


class Client(object):
    def __init__(self, a):
        host = a["host"]
        self.base = "http://%s:%d" % ("[%s]" % host if ":" in host else host, int(a["port"]))
        self.timeout = float(a.get("timeout_s", 60))
        self.headers = {"User-Agent": "rigctl-bench", "Content-Type": "application/json"}
        key = a.get("key")
        if a.get("key_file"):
            with open(a["key_file"]) as f:
                key = f.read().strip()
        if key:
            self.headers["Authorization"] = "Bearer " + key
        self.extra = dict(a.get("extra") or {})  # stack-specific body fields (llama.cpp: ignore_eos)

    def call(self, method, path, body=None, timeout=None):
        """(status, doc or text, error)."""
        data = json.dumps(body).encode() if body is not None else None
        req = request.Request(self.base + path, data=data, method=method, headers=self.headers)
        try:
            with request.urlopen(req, timeout=max(timeout or self.timeout, 0.5)) as resp:
                text = resp.read(4 << 20).decode("utf-8", "replace")
                status = resp.status
        except error.HTTPError as exc:
            return exc.code, exc.read(4096).decode("utf-8", "replace"), None
        except Exception as exc:
            return None, "", _reason(exc)
        try:
            return status, json.loads(text), None
        except ValueError:
            return status, text, None

    def stream_first(self, path, body):
        """Seconds until the first streamed chunk that carries text, and the total."""
        body = dict(body, stream=True)
        req = request.Request(self.base + path, data=json.dumps(body).encode(), method="POST", headers=self.headers)
        t0 = time.time()
        first = None
        try:
            with request.urlopen(req, timeout=self.timeout) as resp:
                for raw in resp:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:") or line == "data: [DONE]":
                        continue
                    try:
                        choice = (json.loads(line[5:]).get("choices") or [{}])[0]
                    except ValueError:
                        continue
                    text = choice.get("text") or (choice.get("delta") or {}).get("content")
                    if first is None and text:
                        first = time.time() - t0
                    if time.time() - t0 > self.timeout:
                        break
        except error.HTTPError as exc:
            return {"ok": False, "error": "HTTP %d %s" % (exc.code, _snippet(exc.read(4096).decode("utf-8", "replace")))}
        except Exception as exc:
            return {"ok": False, "error": _reason(exc)}
        if first is None:
            return {"ok": False, "error": "the stream carried no text"}
        return {"ok": True, "ttft_s": round(first, 4), "total_s": round(time.time() - t0, 4)}


def prompt_words(n, nonce):
    """n words, starting with a nonce so no request reuses another's cached prompt."""
    return " ".join([nonce] + [WORDS[i % len(WORDS)] for i in range(max(0, n - 1))])


def completion(c, a, words=None, max_tokens=None):
    words = int(a.get("words", 32) if words is None else words)
    body = dict(c.extra, model=a.get("model") or "default", prompt=prompt_words(words, "%08x" % random.getrandbits(32)),
                max_tokens=int(a.get("max_tokens", 64) if max_tokens is None else max_tokens), temperature=0)
    t0 = time.time()
    status, doc, err = c.call("POST", "/v1/completions", body)
    wall = time.time() - t0
    if status != 200 or not isinstance(doc, dict):
        what = err if status is None else "HTTP %d %s" % (status, _snippet(doc if isinstance(doc, str) else json.dumps(doc)))
        return {"ok": False, "error": "POST /v1/completions failed: %s" % what, "wall_s": round(wall, 3)}
    usage = doc.get("usage") or {}
    timings = doc.get("timings") or {}
    out = {"ok": True, "wall_s": round(wall, 4), "prompt_tokens": usage.get("prompt_tokens"),
           "completion_tokens": usage.get("completion_tokens")}
    if timings.get("predicted_per_second") or timings.get("prompt_per_second"):
        out.update(source="timings", prompt_tps=timings.get("prompt_per_second"),
                   decode_tps=timings.get("predicted_per_second") if (timings.get("predicted_n") or 0) > 1 else None)
    else:  # no server timings: decode over the wall time (it includes the prompt)
        n = out["completion_tokens"] or 0
        out.update(source="wall", prompt_tps=None, decode_tps=round(n / wall, 2) if n > 1 and wall > 0 else None)
    return out


def prepare(c, a):
    start = time.time()
    deadline = start + float(a.get("deadline_s", 120))
    health = a.get("health_path") or "/"
    while True:
        status, doc, err = c.call("GET", health, timeout=min(10.0, max(deadline - time.time(), 0.5)))
        if status == 200:
            break
        if not (status == 503 or err == "connection refused") or time.time() + 1 > deadline:
            what = err if status is None else "HTTP %d" % status
            return {"ok": False, "error": "GET %s failed: %s" % (health, what)}
        time.sleep(1)
    model = a.get("model_hint") or "default"
    status, doc, err = c.call("GET", "/v1/models", timeout=10)
    if status == 200 and isinstance(doc, dict):
        data = doc.get("data") or []
        if data and data[0].get("id"):
            model = data[0]["id"]
    # tokens per word for this model's tokenizer: the prompt lengths are asked in tokens
    r = completion(c, dict(a, model=model), words=64, max_tokens=1)
    if not r.get("ok"):
        return r
    per_word = (r.get("prompt_tokens") or 64) / 64.0
    return {"ok": True, "model": model, "tokens_per_word": round(per_word, 4), "ready_s": round(time.time() - start, 2)}


def concurrent(c, a):
    n = max(1, int(a.get("n", 1)))
    results = [None] * n

    def one(i):
        results[i] = completion(c, a)

    t0 = time.time()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(c.timeout + 5)
    wall = time.time() - t0
    ok = [r for r in results if r and r.get("ok")]
    tokens = sum(r.get("completion_tokens") or 0 for r in ok)
    errors = [r.get("error") if r else "no answer" for r in results if not (r and r.get("ok"))]
    return {"ok": bool(ok), "n": n, "wall_s": round(wall, 3), "completion_tokens": tokens,
            "aggregate_tps": round(tokens / wall, 2) if wall > 0 and tokens else None,
            "latencies_s": [r["wall_s"] for r in ok], "errors": errors[:3], "error_count": len(errors),
            "error": errors[0] if not ok and errors else None}


def soak(c, a):
    """Three-turn chats, one after another, until duration_s: the history grows each turn."""
    end = time.time() + float(a.get("duration_s", 5))
    latencies, errors, turns = [], [], 0
    model = a.get("model") or "default"
    max_tokens = int(a.get("max_tokens", 16))
    # a chat ends early rather than overflow one sequence's context: the next turn adds the
    # user's words, the answer, and slack for the answer's text tokenizing longer than it was made
    budget = int(a.get("context_tokens", 2048) * 0.9)
    user_tokens = 12 * float(a.get("tokens_per_word", 1.5)) + 8
    while time.time() < end:
        messages = [{"role": "system", "content": "You are a benchmark partner."}]
        used = 0
        for turn in range(3):
            if time.time() >= end or used + user_tokens + 3 * max_tokens > budget:
                break
            messages.append({"role": "user", "content": prompt_words(12, "turn%d-%08x" % (turn, random.getrandbits(32)))})
            body = dict(c.extra, model=model, messages=messages, max_tokens=max_tokens, temperature=0)
            t0 = time.time()
            status, doc, err = c.call("POST", "/v1/chat/completions", body)
            dt = time.time() - t0
            turns += 1
            if status != 200 or not isinstance(doc, dict) or not doc.get("choices"):
                what = err if status is None else "HTTP %d %s" % (
                    status, _snippet(doc if isinstance(doc, str) else json.dumps(doc)))
                errors.append("turn %d: %s" % (turn + 1, what))
                break
            latencies.append(round(dt, 4))
            usage = doc.get("usage") or {}
            used = (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or max_tokens)
            msg = doc["choices"][0].get("message") or {}
            messages.append({"role": "assistant", "content": msg.get("content") or ""})
    return {"ok": True, "requests": turns, "latencies_s": latencies, "error_count": len(errors), "errors": errors[:3]}


def _launchd_memory(name):
    try:
        out = subprocess.check_output(["launchctl", "print", "system/io.rigctl." + name],
                                      stderr=subprocess.STDOUT, timeout=10).decode(errors="replace")
        pid = next((line.split("=", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("\tpid = ")), "")
        if not pid.isdigit():
            return {"ok": False, "error": "%s has no running process" % name}
        rss = subprocess.check_output(["ps", "-o", "rss=", "-p", pid], timeout=10).decode().strip()
        return {"ok": True, "pid": int(pid), "rss_kib": int(rss)}
    except Exception as exc:
        return {"ok": False, "error": "cannot find the process of %s: %s" % (name, _reason(exc))}


def memory(a):
    """VmRSS of the service's main process: systemd MainPID, the container's init pid, or
    (macOS) the launchd job's pid and `ps -o rss=` (no /proc there)."""
    name, mode = a["service"], a.get("mode", "native")
    if mode == "launchd":
        return _launchd_memory(name)
    try:
        if mode == "container":
            cmd = ["docker", "inspect", "-f", "{{.State.Pid}}", name]
        else:
            cmd = ["systemctl", "show", "-p", "MainPID", "--value", name + ".service"]
        pid = subprocess.check_output(cmd, stderr=subprocess.STDOUT, timeout=10).decode().strip()
    except Exception as exc:
        return {"ok": False, "error": "cannot find the process of %s: %s" % (name, _reason(exc))}
    if not pid.isdigit() or pid == "0":
        return {"ok": False, "error": "%s has no running process" % name}
    try:
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return {"ok": True, "pid": int(pid), "rss_kib": int(line.split()[1])}
    except OSError as exc:
        return {"ok": False, "error": "cannot read /proc/%s/status: %s" % (pid, exc.strerror)}
    return {"ok": False, "error": "no VmRSS for pid %s" % pid}


def main(a):
    op = a.get("op")
    if op == "memory":
        return memory(a)
    try:
        c = Client(a)
    except (OSError, IOError) as exc:
        return {"ok": False, "error": "cannot read the API key file %s: %s" % (a.get("key_file"), exc)}
    if op == "prepare":
        return prepare(c, a)
    if op == "completion":
        return completion(c, a)
    if op == "ttft":
        body = dict(c.extra, model=a.get("model") or "default", prompt=prompt_words(int(a.get("words", 32)), "%08x" % random.getrandbits(32)),
                    max_tokens=int(a.get("max_tokens", 8)), temperature=0)
        return c.stream_first("/v1/completions", body)
    if op == "concurrent":
        return concurrent(c, a)
    if op == "soak":
        return soak(c, a)
    return {"ok": False, "error": "unknown op %r" % op}


if __name__ == "rigctl_remote":  # sent by provisioner.verify.ssh.SshSession.run_python
    sys.stdout.write("\n" + json.dumps(main(ARGS)) + "\n")  # noqa: F821 - set by the launcher
