"""The report folder: ``events.jsonl``, ``summary.json`` and ``timeline.png``.

Everything here is a pure function of the observed events (plus the expectation results), so
a report can be rebuilt from ``events.jsonl`` alone: ``robobus scenario report DIR``.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

from robobus.launch.observe import RUNNER, Observed, follow
from robobus.launch.timeline import origin_ns, render, skill_runs
from robobus.schemas.tasks import FINAL

#: Keys of summary.json that describe the run rather than result from its events.
META_KEYS = ("scenario", "file", "bus", "prefix", "speed", "planner", "robots", "fleet", "wall_s",
             "error")


@dataclass
class ExpectResult:
    """One expectation's outcome, with a reason a person can act on."""

    expect: str
    ok: bool
    reason: str


def write_events(events: list[Observed], path: Path) -> Path:
    """One JSON object per line, in receive order."""
    enc = msgspec.json.Encoder()
    with path.open("wb") as fh:
        for ev in events:
            fh.write(enc.encode(ev))
            fh.write(b"\n")
    return path


def read_events(path: Path) -> list[Observed]:
    """Read back ``events.jsonl``."""
    dec = msgspec.json.Decoder(Observed)
    with path.open("rb") as fh:
        return [dec.decode(line) for line in fh if line.strip()]


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    values = sorted(values)
    return {"n": len(values), "p50": round(statistics.median(values), 3),
            "max": round(values[-1], 3), "mean": round(statistics.fmean(values), 3)}


def _msg_ts(ev: Observed) -> int:
    """The sender's wall-clock stamp if the message has one (same host), else receive time."""
    ts = ev.data.get("ts_ns") if isinstance(ev.data, dict) else None
    return int(ts) if ts else ev.t_ns


def task_table(events: list[Observed]) -> dict[str, dict[str, Any]]:
    """Per task: when it was sent, accepted, planned, first commanded and ended; replans."""
    tasks: dict[str, dict[str, Any]] = {}
    for ev in events:
        if ev.type == RUNNER and ev.data.get("kind") == "instruction":
            tasks[ev.data["task_id"]] = {"text": ev.data.get("text", ""),
                                         "priority": ev.data.get("priority", 0),
                                         "sent_ns": ev.data.get("ts_ns", ev.t_ns)}
        elif ev.type == "TaskStatus":
            _fold_status(tasks.setdefault(ev.data["task_id"], {}), ev)
        elif ev.type == "SkillCommand" and ev.data.get("task_id"):
            task = tasks.setdefault(ev.data["task_id"], {})
            task.setdefault("first_command_ns", _msg_ts(ev))
            task["commands"] = task.get("commands", 0) + 1
    return tasks


def _fold_status(task: dict[str, Any], ev: Observed) -> None:
    status = follow(task.get("state"), ev.data["status"])
    if status is None:  # refused by the task state machine: nothing follows a final status
        task["refused"] = task.get("refused", 0) + 1
        return
    task["state"] = status
    task.setdefault(f"{status}_ns", _msg_ts(ev))
    task["replans"] = max(task.get("replans", 0), ev.data.get("replans", 0))
    task["replanning"] = task.get("replanning", 0) + (status == "replanning")
    task["preempted"] = task.get("preempted", 0) + (status == "preempted")
    if status in FINAL and "end_ns" not in task:
        task["end_ns"], task["status"], task["reason"] = _msg_ts(ev), status, ev.data.get("reason")


def summarize(events: list[Observed], results: list[ExpectResult] | None = None,
              meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``summary.json`` content: makespan, latencies, counts and expectation results."""
    results = results or []
    tasks = task_table(events)
    runs = skill_runs(events)
    sent = [t["sent_ns"] for t in tasks.values() if "sent_ns" in t]
    ends = [t["end_ns"] for t in tasks.values() if "end_ns" in t]
    lat = {name: _stats([_ms(t[b] - t["sent_ns"]) for t in tasks.values() if b in t and "sent_ns" in t])
           for name, b in (("instruction_to_accepted_ms", "accepted_ns"),
                           ("instruction_to_planned_ms", "planned_ns"),
                           ("instruction_to_first_command_ms", "first_command_ns"),
                           ("instruction_to_end_ms", "end_ns"))}
    lat["command_to_skill_start_ms"] = _stats(_dispatch_ms(events))
    return {
        **(meta or {}),
        "passed": bool(results) and all(r.ok for r in results),
        "makespan_s": round((max(ends) - min(sent)) / 1e9, 3) if sent and ends else None,
        "latency": lat,
        "replans": sum(max(t.get("replans", 0), t.get("replanning", 0)) for t in tasks.values()),
        "preemptions": sum(t.get("preempted", 0) for t in tasks.values()),
        "skills": dict(Counter(r.outcome for r in runs)),
        "skills_per_robot": dict(Counter(r.robot for r in runs)),
        "errors_reported": sum(ev.type == "ErrorReport" for ev in events),
        "messages": len([ev for ev in events if ev.type != RUNNER]),
        "messages_by_type": dict(Counter(ev.type for ev in events if ev.type != RUNNER)),
        "tasks": {tid: _task_summary(t) for tid, t in tasks.items()},
        "expectations": [asdict(r) for r in results],
    }


def _task_summary(task: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in task.items() if not k.endswith("_ns") and k != "state"}
    if "sent_ns" in task and "end_ns" in task:
        out["duration_s"] = round((task["end_ns"] - task["sent_ns"]) / 1e9, 3)
    out.setdefault("status", "unfinished")
    return out


def _dispatch_ms(events: list[Observed]) -> list[float]:
    """Command stamp to the edge's ``started`` stamp, per command."""
    sent: dict[str, int] = {}
    out: list[float] = []
    for ev in events:
        if ev.type == "SkillCommand":
            sent.setdefault(ev.data["command_id"], _msg_ts(ev))
        elif ev.type == "SkillFeedback" and ev.data["status"] == "started":
            t = sent.pop(ev.data["command_id"], None)
            if t is not None:
                out.append(_ms(_msg_ts(ev) - t))
    return out


def write_report(folder: Path, events: list[Observed], results: list[ExpectResult],
                 meta: dict[str, Any], robots: list[str] | None = None) -> dict[str, Any]:
    """Write ``events.jsonl``, ``summary.json`` and ``timeline.png`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_events(events, folder / "events.jsonl")
    summary = summarize(events, results, meta)
    verdict = "PASS" if summary["passed"] else "FAIL"
    title = f"{meta.get('scenario', 'scenario')}: {verdict}, makespan {summary['makespan_s']} s"
    render(events, folder / "timeline.png", title=title, robots=robots)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    return summary


def rebuild(folder: Path) -> dict[str, Any]:
    """Re-render ``timeline.png`` and ``summary.json`` from a report folder's ``events.jsonl``."""
    events = read_events(folder / "events.jsonl")
    old = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else {}
    results = [ExpectResult(**r) for r in old.get("expectations", [])]
    meta = {k: v for k, v in old.items() if k in META_KEYS}
    return write_report(folder, events, results, meta, old.get("fleet"))


def t_rel(events: list[Observed], ev: Observed) -> float:
    """Seconds of ``ev`` after the scenario's time 0."""
    return (ev.t_ns - origin_ns(events)) / 1e9
