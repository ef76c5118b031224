"""Live progress of a run: a rich table on a terminal, concise log lines otherwise.

Views are CLI output (they write to a console), never library logging.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO

from robobus.launch.observe import RUNNER, TERMINAL_SKILL, Observed, Observer

_TASK_SHOWN = {"accepted", "planned", "replanning", "preempted", "done", "failed", "cancelled"}
_STYLE = {"done": "green", "failed": "red", "cancelled": "yellow", "preempted": "yellow",
          "replanning": "magenta", "running": "cyan", "planned": "cyan"}


class View(Protocol):
    """What the runner calls: attach once, refresh a few times a second, close at the end."""

    def attach(self, observer: Observer, title: str) -> None: ...

    def note(self, text: str) -> None: ...

    def refresh(self) -> None: ...

    def close(self) -> None: ...


class QuietView:
    """No output (library use and tests)."""

    def attach(self, observer: Observer, title: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


class LineView:
    """One line per notable event: task status changes, skills starting and ending, faults."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.t0 = time.time_ns()
        self.observer: Observer | None = None

    def attach(self, observer: Observer, title: str) -> None:
        self.observer = observer
        observer.watchers.append(self._event)
        self._print(title)

    def _print(self, text: str, t_ns: int | None = None) -> None:
        t = ((t_ns or time.time_ns()) - self.t0) / 1e9
        self.out.write(f"[{t:7.2f}s] {text}\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self._print(text)

    def _event(self, ev: Observed) -> None:
        text = self._describe(ev)
        if text:
            self._print(text, ev.t_ns)

    def _describe(self, ev: Observed) -> str | None:
        d = ev.data
        if ev.type == RUNNER and d.get("kind") == "ready":
            self.t0 = ev.t_ns
            return "fleet ready: scenario time 0"
        if ev.type == RUNNER and d.get("kind") == "instruction":
            return f"instruction {d['task_id']} (priority {d.get('priority', 0)}): {d['text']}"
        if ev.type == "TaskStatus" and d["status"] in _TASK_SHOWN:
            why = f" ({d['reason']})" if d.get("reason") else ""
            return f"task {d['task_id']}: {d['status']}{why}"
        if ev.type == "SkillFeedback" and (d["status"] == "started" or d["status"] in TERMINAL_SKILL):
            assert self.observer is not None
            label = self.observer.label(d["command_id"], d["skill"])
            why = f" [{d.get('reason_code') or d.get('reason')}]" if d["status"] != "done" and \
                (d.get("reason_code") or d.get("reason")) else ""
            return f"  {d['robot']}: {label} {d['status']}{why}"
        if ev.type == "Alive" and not d.get("online", True) and not ev.retained:
            return f"  {d['robot']}: offline"
        return None

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        self.out.flush()


class LiveView:
    """A rich Live table: each task's status and each robot's current skill."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console()
        self.live = Live(console=self.console, auto_refresh=False, transient=False)
        self.observer: Observer | None = None
        self.title = ""
        self.notes: list[str] = []
        self.started = time.monotonic()

    def attach(self, observer: Observer, title: str) -> None:
        self.observer, self.title = observer, title
        observer.watchers.append(self._marker)
        self.notes = [f"starting {len(observer.robots)} robots, memory and brain ..."]
        self.live.start()

    def _marker(self, ev: Observed) -> None:
        if ev.type != RUNNER:
            return
        if ev.data.get("kind") == "ready":
            self.note("fleet ready: scenario time 0")
        elif ev.data.get("kind") == "instruction":
            self.note(f"sent {ev.data['task_id']}: {ev.data['text']}")

    def note(self, text: str) -> None:
        self.notes = [*self.notes[-5:], f"{time.monotonic() - self.started:6.1f}s  {text}"]
        self.refresh()

    def refresh(self) -> None:
        if self.observer is not None:
            self.live.update(self._render(self.observer), refresh=True)

    def close(self) -> None:
        self.refresh()
        self.live.stop()

    def _render(self, obs: Observer) -> Any:
        from rich.console import Group
        from rich.table import Table

        tasks = Table(title=self.title, title_justify="left", expand=False)
        for col in ("task", "status", "replans", "instruction"):
            tasks.add_column(col)
        for view in obs.tasks.values():
            style = _STYLE.get(view.status, "")
            why = f" ({view.reason})" if view.reason else ""
            tasks.add_row(view.task_id, f"[{style}]{view.status}[/]{why}", str(view.replans),
                          view.text[:60])
        robots = Table(expand=False)
        for col in ("robot", "alive", "current skill", "last"):
            robots.add_column(col)
        active = [r for r in obs.robots.values() if r.current or r.last or not r.online]
        shown = active if len(obs.robots) > 12 else list(obs.robots.values())
        for r in shown[:20]:
            alive = "[green]online[/]" if r.online else "[red]offline[/]"
            robots.add_row(r.name, alive, ", ".join(r.current.values()) or "-", r.last)
        hidden = len(obs.robots) - len(shown[:20])
        footer = [f"... {hidden} more robots idle"] if hidden else []
        return Group(tasks, robots, *footer, *self.notes)


def default_view() -> View:
    """The rich table on a terminal, log lines when output is piped."""
    return LiveView() if sys.stdout.isatty() else LineView()
