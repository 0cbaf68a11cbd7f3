"""ansible-runner events -> per-host progress and failures (pure; the CLI displays it)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TASK_EVENTS = {
    "runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


@dataclass
class HostProgress:
    host: str
    task: str = ""
    status: str = ""  # last result: ok | changed | failed | unreachable | skipped | running
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: bool = False
    changed_tasks: list[str] = field(default_factory=list)  # names, in run order ("... (output hidden (no_log))")


@dataclass(frozen=True)
class HostFailure:
    host: str
    task: str
    play: str
    reason: str
    unreachable: bool = False

    def __str__(self) -> str:
        kind = "unreachable" if self.unreachable else "failed"
        return f"{self.host}: {kind} in task '{self.task}' (play '{self.play}'): {self.reason}"


@dataclass(frozen=True)
class Update:
    """One line of progress: a task result or a task start on a host."""

    host: str
    task: str
    status: str
    play: str = ""
    hidden: bool = False  # a no_log task: its result is censored


HIDDEN = "output hidden (no_log)"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _censored(res: dict) -> bool:
    return "censored" in res  # Ansible's TaskResult.clean_copy for no_log


def _shown_changed(event: dict) -> bool:
    """Ansible's own line for the result says "changed:": a no_log result carries no `changed`
    key in the event (only "censored"), though the play recap counts it."""
    return _ANSI.sub("", event.get("stdout") or "").lstrip().startswith("changed:")


@dataclass
class Progress:
    hosts: dict[str, HostProgress] = field(default_factory=dict)
    failures: list[HostFailure] = field(default_factory=list)
    play: str = ""
    stats: dict = field(default_factory=dict)
    _changed_items: set = field(default_factory=set)  # (host, task uuid) of no_log loops with a changed item

    def host(self, name: str) -> HostProgress:
        return self.hosts.setdefault(name, HostProgress(name))

    def handle(self, event: dict) -> Update | None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self.play = data.get("play", "") or data.get("name", "")
            return None
        if kind == "playbook_on_stats":
            self.stats = {k: data.get(k) or {} for k in ("ok", "changed", "failures", "dark", "skipped", "processed")}
            return None
        host = data.get("host")
        if not host:
            return None
        task = data.get("task", "") or ""
        hp = self.host(host)
        if kind == "runner_on_start":
            hp.task, hp.status = task, "running"
            return Update(host, task, "running", self.play)
        res = data.get("res") or {}
        if kind == "runner_retry" and res.get("done") is False and res.get("msg") and not _censored(res):
            # a task that reports its progress between tries (rigctl_model_fetch: a download)
            return Update(host, " ".join(str(res["msg"]).split()), "note", self.play)
        if kind == "runner_item_on_ok":
            if _censored(res) and (res.get("changed") or _shown_changed(event)):
                self._changed_items.add((host, data.get("task_uuid")))
            return None
        if kind not in TASK_EVENTS:
            return None
        status = TASK_EVENTS[kind]
        hidden = _censored(res)
        if status == "failed" and data.get("ignore_errors"):
            status = "ok"
        if status == "ok" and (res.get("changed") or hidden and (
                _shown_changed(event) or (host, data.get("task_uuid")) in self._changed_items)):
            status = "changed"
        hp.task, hp.status = task, status
        if status == "ok" and data.get("task_action") in ("debug", "ansible.builtin.debug") and res.get("msg"):
            # roles explain skips and no-ops with a debug message: pass it on
            msg = res["msg"] if isinstance(res["msg"], str) else "; ".join(map(str, res["msg"]))
            hp.ok += 1
            return Update(host, " ".join(msg.split()), "note", self.play)
        if status == "changed":
            hp.changed += 1
            hp.ok += 1
            hp.changed_tasks.append(f"{task} ({HIDDEN})" if hidden else task)
        elif status == "ok":
            hp.ok += 1
        elif status == "skipped":
            hp.skipped += 1
        elif status == "failed":
            hp.failed += 1
            self.failures.append(HostFailure(host, task, self.play, reason(res)))
        elif status == "unreachable":
            hp.unreachable = True
            self.failures.append(HostFailure(host, task, self.play, reason(res), unreachable=True))
        return Update(host, task, status, self.play, hidden=hidden)


def reason(res: dict, limit: int = 900) -> str:
    """The one-line why of a failed result (loop items included)."""
    parts = []
    for item in [res] + [r for r in res.get("results", []) if isinstance(r, dict) and r.get("failed")]:
        for key in ("msg", "stderr", "reason"):
            val = item.get(key)
            if isinstance(val, str) and val.strip() and val.strip() not in parts:
                parts.append(val.strip())
    text = " — ".join(parts) or "no message (see the run's artifacts)"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
