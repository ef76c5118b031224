"""The report writer and the timeline, from a synthetic event log (no processes)."""

from __future__ import annotations

import json
from pathlib import Path

from robobus.launch.observe import Observed
from robobus.launch.report import ExpectResult, read_events, rebuild, summarize, write_report
from robobus.launch.timeline import marks, skill_runs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_skill_runs_outcomes_and_lost_robot(demo_events: list[Observed]) -> None:
    runs = skill_runs(demo_events)
    outcomes = {(r.robot, r.label, r.outcome) for r in runs}
    assert ("g1", "pick apple", "failed") in outcomes
    assert ("g1", "pick apple", "done") in outcomes
    assert ("spare", "navigate officeDesk", "lost") in outcomes
    lost = next(r for r in runs if r.outcome == "lost")
    assert abs(lost.end - 6.5) < 1e-6  # ends at the kill, not at the later offline message
    failed = next(r for r in runs if r.outcome == "failed")
    assert failed.reason == "injected" and abs(failed.start - 0.003) < 1e-3


def test_marks_cover_tasks_and_faults(demo_events: list[Observed]) -> None:
    labels = [(m.kind, m.label) for m in marks(demo_events)]
    assert ("instruction", "t0 sent") in labels
    assert ("task_end", "urgent done") in labels
    assert ("fault", "kill") in labels


def test_summary_figures(demo_events: list[Observed]) -> None:
    results = [ExpectResult("object apple at officeDesk", True, "apple is at officeDesk")]
    s = summarize(demo_events, results, {"scenario": "demo"})
    assert s["passed"] is True and s["scenario"] == "demo"
    assert s["makespan_s"] == 8.1
    assert s["replans"] == 1 and s["preemptions"] == 0
    assert s["skills"] == {"done": 7, "failed": 1, "lost": 1}
    first = s["latency"]["instruction_to_first_command_ms"]
    assert first["n"] == 2 and first["max"] == 2.0
    assert s["tasks"]["t0"]["status"] == "done" and s["tasks"]["urgent"]["duration_s"] == 2.1


def test_failed_expectation_fails_summary(demo_events: list[Observed]) -> None:
    s = summarize(demo_events, [ExpectResult("task t0 status done", False, "task t0 is failed")])
    assert s["passed"] is False
    assert s["expectations"][0]["reason"] == "task t0 is failed"


def test_write_report_and_rebuild(tmp_path: Path, demo_events: list[Observed]) -> None:
    events = demo_events
    results = [ExpectResult("object apple at officeDesk", True, "ok")]
    summary = write_report(tmp_path, events, results, {"scenario": "demo"},
                           ["realman_1", "g1", "agilex", "spare"])
    assert (tmp_path / "timeline.png").read_bytes()[:8] == PNG_MAGIC
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert read_events(tmp_path / "events.jsonl") == events
    (tmp_path / "timeline.png").unlink()
    again = rebuild(tmp_path)
    assert again["makespan_s"] == summary["makespan_s"]
    assert (tmp_path / "timeline.png").exists()


def test_timeline_of_large_idle_fleet(tmp_path: Path, demo_events: list[Observed]) -> None:
    robots = [f"amr_{i:02d}" for i in range(50)]
    path = tmp_path / "big"
    write_report(path, demo_events, [], {"scenario": "big"}, robots)
    assert (path / "timeline.png").stat().st_size > 10_000


def test_empty_log_still_renders(tmp_path: Path, demo_events: list[Observed]) -> None:
    summary = write_report(tmp_path, [], [], {"scenario": "nothing"})
    assert summary["makespan_s"] is None and summary["passed"] is False
    assert (tmp_path / "timeline.png").exists()
