"""The timeline picture: a Gantt chart with one lane per robot, skills coloured by outcome.

:func:`skill_runs` turns observed events into bars; :func:`render` draws them with matplotlib
(imported lazily: every ``robobus`` process imports the CLI modules, and matplotlib is slow).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robobus.launch.observe import RUNNER, TERMINAL_SKILL, Observed
from robobus.schemas.tasks import FINAL

COLOURS = {"done": "#4caf50", "failed": "#e53935", "cancelled": "#fb8c00",
           "rejected": "#8e24aa", "lost": "#9e9e9e", "running": "#90caf9"}
MAX_LANES = 40
AXIS_IN, CHAR_IN = 10.3, 0.053  # axis width and a 7 pt character, in inches (figure is 12 in)


@dataclass
class SkillRun:
    """One skill execution: ``start``/``end`` in seconds from the scenario's time 0."""

    robot: str
    skill: str
    label: str
    task_id: str | None
    start: float
    end: float
    outcome: str  # done, failed, cancelled, rejected, lost (robot died), running (run ended)
    reason: str | None = None


@dataclass
class Mark:
    """A point in time worth showing: a task boundary or a fault."""

    t: float
    kind: str  # instruction, task_end, fault
    label: str
    robot: str | None = None


def origin_ns(events: list[Observed]) -> int:
    """Scenario time 0: the ``ready`` marker, else the first event."""
    for ev in events:
        if ev.type == RUNNER and ev.data.get("kind") == "ready":
            return ev.t_ns
    return events[0].t_ns if events else 0


def skill_runs(events: list[Observed]) -> list[SkillRun]:
    """Bars from skill commands and feedback; skills of a robot that died end as ``lost``."""
    t0 = origin_ns(events)
    end_t = (events[-1].t_ns - t0) / 1e9 if events else 0.0
    commands: dict[str, dict[str, Any]] = {}
    open_runs: dict[str, SkillRun] = {}
    runs: list[SkillRun] = []
    for ev in events:
        t = (ev.t_ns - t0) / 1e9
        if ev.type == "SkillCommand" and ev.data.get("action", "run") == "run":
            commands[ev.data["command_id"]] = ev.data
        elif ev.type == "SkillFeedback":
            _feedback(ev.data, t, commands, open_runs, runs)
        elif ev.type == "Alive" and not ev.data.get("online", True):
            _close_robot(ev.data["robot"], t, "lost", open_runs, runs)
        elif ev.type == RUNNER and ev.data.get("kind") == "fault" and ev.data.get("fault") == "kill":
            _close_robot(ev.data["robot"], t, "lost", open_runs, runs)
    for run in open_runs.values():
        run.end, run.outcome = end_t, "running"
        runs.append(run)
    return sorted(runs, key=lambda r: (r.start, r.robot))


def _feedback(fb: dict[str, Any], t: float, commands: dict[str, dict[str, Any]],
              open_runs: dict[str, SkillRun], runs: list[SkillRun]) -> None:
    cid, status = fb["command_id"], fb["status"]
    if status in ("accepted", "started", "progress") and cid not in open_runs:
        cmd = commands.get(cid, {})
        args = [str(v) for v in (cmd.get("args") or {}).values()]
        label = " ".join([fb["skill"], *args[:2]])
        open_runs[cid] = SkillRun(fb["robot"], fb["skill"], label, fb.get("task_id")
                                  or cmd.get("task_id"), t, t, "running")
    elif status in TERMINAL_SKILL:
        run = open_runs.pop(cid, None)
        if run is None:  # rejected before it started: a zero-length bar still shows it
            run = SkillRun(fb["robot"], fb["skill"], fb["skill"], fb.get("task_id"), t, t, status)
        run.end, run.outcome, run.reason = t, status, fb.get("reason_code") or fb.get("reason")
        runs.append(run)


def _close_robot(robot: str, t: float, outcome: str, open_runs: dict[str, SkillRun],
                 runs: list[SkillRun]) -> None:
    for cid in [c for c, r in open_runs.items() if r.robot == robot]:
        run = open_runs.pop(cid)
        run.end, run.outcome = t, outcome
        runs.append(run)


def marks(events: list[Observed]) -> list[Mark]:
    """Instruction times, task ends and faults, from the runner's markers and task statuses."""
    t0 = origin_ns(events)
    out: list[Mark] = []
    ended: set[str] = set()
    for ev in events:
        t = (ev.t_ns - t0) / 1e9
        if ev.type == RUNNER and ev.data.get("kind") == "instruction":
            out.append(Mark(t, "instruction", f"{ev.data['task_id']} sent"))
        elif ev.type == RUNNER and ev.data.get("kind") == "fault":
            out.append(Mark(t, "fault", ev.data.get("label", "fault"), ev.data.get("robot")))
        elif ev.type == "TaskStatus" and ev.data["status"] in FINAL:
            if ev.data["task_id"] not in ended:
                ended.add(ev.data["task_id"])
                out.append(Mark(t, "task_end", f"{ev.data['task_id']} {ev.data['status']}"))
    return out


def render(events: list[Observed], path: Path, *, title: str = "", robots: list[str] | None = None) -> Path:
    """Draw the Gantt chart of ``events`` to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    runs, points = skill_runs(events), marks(events)
    lanes, hidden = _lanes(runs, points, robots or [])
    end = max([r.end for r in runs] + [m.t for m in points] + [1.0])
    points = _merge(points, end / 60)
    fig, ax = plt.subplots(figsize=(12, 1.9 + 0.55 * len(lanes)), dpi=110)
    _draw_bars(ax, runs, lanes, end, multi_task=len({r.task_id for r in runs}) > 1)
    _draw_marks(ax, points, lanes)
    ax.set_yticks(range(len(lanes)), lanes)
    ax.set_ylim(len(lanes) - 0.4, -1.3)
    ax.set_xlim(0, end * 1.08)
    ax.set_xlabel("scenario time (s, from fleet ready)")
    ax.grid(axis="x", alpha=0.3)
    more = f"  (+{hidden} idle robots not shown)" if hidden else ""
    ax.set_title(f"{title}{more}", loc="left", fontsize=11)
    used = sorted({r.outcome for r in runs}, key=list(COLOURS).index)
    handles = [Patch(color=COLOURS[o], label=o) for o in used]
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=8, ncol=len(handles),
                  bbox_to_anchor=(1.0, 1.0 + 0.9 / (2 + len(lanes))))
    with warnings.catch_warnings():
        # long lane labels (a fuzzed robot name, say) can leave no room to tighten: the plot
        # is still written, with matplotlib's default margins
        warnings.filterwarnings("ignore", "Tight layout not applied", UserWarning)
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _merge(points: list[Mark], eps: float) -> list[Mark]:
    """Join task marks of one kind closer than ``eps``: ``t0, t1 sent`` instead of overprinting."""
    out: list[Mark] = []
    for m in points:
        prev = next((p for p in reversed(out) if p.kind == m.kind), None)
        if m.kind != "fault" and prev is not None and m.t - prev.t < eps:
            head, _, verb = prev.label.rpartition(" ")
            name, _, verb2 = m.label.rpartition(" ")
            prev.label = f"{head}, {name} {verb}" if verb == verb2 else f"{prev.label}, {m.label}"
            continue
        out.append(Mark(m.t, m.kind, m.label, m.robot))
    return out


def _lanes(runs: list[SkillRun], points: list[Mark], robots: list[str]) -> tuple[list[str], int]:
    """Robots with activity first in fleet order; idle ones too when the fleet is small."""
    active = {r.robot for r in runs} | {m.robot for m in points if m.robot}
    order = robots + sorted(active - set(robots))
    if len(order) <= MAX_LANES:
        return order, 0
    shown = [r for r in order if r in active][:MAX_LANES]
    return shown, len(order) - len(shown)


def _draw_bars(ax: Any, runs: list[SkillRun], lanes: list[str], end: float,
               multi_task: bool) -> None:
    index = {name: i for i, name in enumerate(lanes)}
    min_w = end / 400
    char_w = CHAR_IN * end * 1.08 / AXIS_IN  # data units per character at font size 7
    outside = 0
    for run in runs:
        if run.robot not in index:
            continue
        y, width = index[run.robot], max(run.end - run.start, min_w)
        ax.barh(y, width, left=run.start, height=0.6, color=COLOURS.get(run.outcome, "#bdbdbd"),
                edgecolor="#37474f", linewidth=0.6, hatch="//" if run.outcome == "lost" else None)
        text = next((t for t in _variants(run, multi_task) if len(t) * char_w < width * 0.95), None)
        if text is not None:
            ax.text(run.start + width / 2, y, text, ha="center", va="center", fontsize=7)
            continue
        outside += 1  # too narrow: label above the bar, two heights alternating
        ax.text(run.start, y - 0.32 - 0.14 * (outside % 2), _variants(run, False)[1],
                ha="left", va="bottom", fontsize=6, color="#37474f")


def _variants(run: SkillRun, multi_task: bool) -> list[str]:
    """Labels from most to least detailed: ``place apple basket (failed) [t0]`` ... ``place``."""
    state = "" if run.outcome == "done" else f" ({run.outcome})"
    tag = f" [{run.task_id}]" if multi_task and run.task_id else ""
    short = " ".join(run.label.split()[:2])
    return [f"{run.label}{state}{tag}", f"{run.label}{state}", f"{short}{state}",
            f"{run.skill}{state}", run.skill]


def _draw_marks(ax: Any, points: list[Mark], lanes: list[str]) -> None:
    index = {name: i for i, name in enumerate(lanes)}
    for k, m in enumerate(points):
        if m.kind == "fault":
            y = index.get(m.robot or "", -0.5) + 0.38  # under the lane: labels go above
            ax.plot(m.t, y, marker="X", color="#b71c1c", markersize=9, zorder=5, clip_on=False)
            ax.annotate(m.label, (m.t, y), xytext=(7, 0), textcoords="offset points", zorder=6,
                        fontsize=7, color="#b71c1c", fontweight="bold", va="center",
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
            continue
        colour = "#1565c0" if m.kind == "instruction" else "#2e7d32"
        if m.kind == "task_end" and m.label.split()[-1] != "done":
            colour = "#c62828"
        ax.axvline(m.t, color=colour, linestyle="--", linewidth=1, alpha=0.8)
        ax.text(m.t, -0.72 - 0.2 * (k % 3), f" {m.label}", color=colour, fontsize=7,
                va="center", ha="left")
