"""record, replay (timing fidelity), export to MCAP and ``log info|cat``, as processes."""

from __future__ import annotations

import gc
import json
import subprocess
import time
from pathlib import Path

import anyio
import msgspec
import pytest

from bench.replay import T0, LagProbe, gap_errors, lag_within, quantile, replay_round, schedule
from robobus import memory_store, testing
from robobus.bus import Bus, BusOptions
from robobus.schemas.messages import Alive, RobotState

pytestmark = pytest.mark.anyio


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(testing.robobus_cmd(*args), capture_output=True, text=True, timeout=60,
                          check=True)


def _irregular_log(path: Path, prefix: str, n: int = 120) -> list[int]:
    """A log whose gaps vary between 1 and 15 ms (bench/replay.py's schedule); returns the
    timestamps in ns."""
    ts = schedule(n, seed=7)
    with memory_store.open(path) as store:
        store.append_many([(f"{prefix}/replay/x", b"%d" % i, t) for i, t in enumerate(ts)])
    return ts


def _p(sorted_ns: list[int], q: float) -> float:
    return quantile(sorted_ns, q) / 1e6


async def test_replay_keeps_the_original_gaps(tmp_path: Path, prefix: str) -> None:
    """``robobus replay`` (a process) through a hub into a subscriber keeps the recorded gaps:
    every event, in order, the median gap error within what this machine's wake-up lag allows,
    and no drift from the recorded schedule.

    The tolerance scales with the lag measured during this replay by a sleeper process
    (bench.replay.LagProbe): 2 ms plus three times the probe's p90 lateness (each event wakes
    three processes, heavier than the probe). A replay that bursts (no sleep), drifts (relative
    sleeps) or runs at the wrong speed moves its last third by tens to hundreds of ms and fails
    at any load (a real run at load 8, transformed: burst -625 ms, 0.1 ms a gap of drift 9.4 ms,
    speed 1.1 57 ms, against 4.1 ms); a coarse 10 ms tick (median error 4 ms) fails only on a
    quiet machine. The 1 ms p99 target is bench.replay's figure (speed is measured in bench/,
    not in timed tests). Measured beside
    it on the 2-core VM: under three busy loops (load 10-13) the probe's p90 was 9-34 ms and the
    replay's gap error p50 3-7 ms, p99 22-55 ms (the former 1 ms p99 bound, even over a raw
    pyzmq floor measured right after, failed 1 run in 3); under one busy loop the gap error p90
    reached 2-5 ms while the probe's p90 stayed at 0.2 ms, so the p90 is not asserted.
    """
    path = tmp_path / "log"
    ts = _irregular_log(path, prefix)
    gc.collect()
    gc.disable()  # the collector in the subscriber would count against the replay, not the probe
    try:
        with testing.ipc_hub(tmp_path) as hub_url:  # ipc: no stray process joins by a reused port
            probe = LagProbe()
            try:
                received = await replay_round(path, hub_url, len(ts), 30.0, prefix)
            finally:
                samples = await anyio.to_thread.run_sync(probe.stop)
    finally:
        gc.enable()
    assert [p for _, p in received] == [b"%d" % i for i in range(len(ts))]
    lag = lag_within(samples, received[0][0], received[-1][0])
    assert len(lag) >= 20, f"the lag probe woke {len(lag)} times during the replay"
    tolerance = 2_000_000 + 3 * quantile(lag, 0.9)
    errors = gap_errors(received, ts)
    # each arrival minus its recorded offset: a constant plus that event's own lateness when the
    # replay sleeps to absolute deadlines; the earliest in the first and in the last third stay
    # level (a replay that drifts or bursts moves the last third by the sum of its errors)
    offsets = [t - (ts[int(p)] - ts[0]) for t, p in received]
    third = len(offsets) // 3
    drift = min(offsets[-third:]) - min(offsets[:third])
    figures = (f"gap error p50/p90/p99 {_p(errors, 0.5):.2f}/{_p(errors, 0.9):.2f}/"
               f"{_p(errors, 0.99):.2f} ms, drift {drift / 1e6:.2f} ms, wake-up lag p50/p90 "
               f"{_p(lag, 0.5):.2f}/{_p(lag, 0.9):.2f} ms, tolerance {tolerance / 1e6:.2f} ms")
    print(f"REPLAY {figures}")
    assert quantile(errors, 0.5) <= tolerance, figures
    assert abs(drift) <= tolerance, figures


async def test_replay_speed_and_time_window(tmp_path: Path, prefix: str) -> None:
    from robobus.memory_store.replay import ReplayOptions, replay

    path = tmp_path / "log"
    ts = _irregular_log(path, prefix, n=60)
    t_from, t_to = ts[10], ts[40]
    url = f"memory://{prefix}"
    async with Bus.connect(url, name="replay") as pub, Bus.connect(url, name="sub") as watch, \
            watch.subscribe(f"{prefix}/#") as sub:
        with memory_store.open(path, readonly=True) as store:
            start = time.monotonic()
            sent = await replay(pub, store, ReplayOptions(speed=4.0, t0_ns=t_from, t1_ns=t_to))
            took = time.monotonic() - start
        got = [sub.get_nowait() for _ in range(sent)]
    assert sent == 31 and [m.payload for m in got if m] == [b"%d" % i for i in range(10, 41)]
    assert abs(took - (t_to - t_from) / 4e9) < 0.02


async def test_record_writes_the_bus_for_its_duration(tmp_path: Path, prefix: str,
                                                   hub_url: str) -> None:
    out = tmp_path / "rec"
    argv = testing.robobus_cmd("record", str(out), "--bus", hub_url, "--prefix", prefix,
                               "--topics", f"{prefix}/robots/#", "--duration", "2")
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stderr is not None
        with anyio.fail_after(20):
            while "memory_ready" not in await anyio.to_thread.run_sync(proc.stderr.readline):
                pass
        async with Bus.connect(hub_url, name="src", options=BusOptions(prefix=prefix)) as bus:
            for i in range(50):
                await bus.publish(f"{prefix}/robots/g1/state", RobotState(robot="g1", battery=i),
                                  qos=1)
            await bus.publish(f"{prefix}/other", b"not recorded", qos=1)
            await bus.publish(f"{prefix}/robots/g1/alive", Alive(robot="g1", online=True), qos=1)
        assert await anyio.to_thread.run_sync(proc.wait, 20) == 0
    finally:
        testing.stop(proc)  # type: ignore[arg-type]
    info = json.loads(_cli("log", "info", str(out), "--json").stdout)
    assert info["topics"] == {f"{prefix}/robots/g1/alive": 1, f"{prefix}/robots/g1/state": 50}


def test_mcap_export_opens_with_the_reader_and_counts_match(tmp_path: Path) -> None:
    from mcap.reader import make_reader

    path = tmp_path / "log"
    with memory_store.open(path) as store:
        store.append_many(
            [(f"p/robots/g{i % 2}/state", msgspec.msgpack.encode(RobotState(robot="g", battery=i)),
              T0 + i) for i in range(40)]
            + [("p/instructions", b"bring the apple", T0 + 50), ("p/raw", b"\xff\x00", T0 + 51)])
    out = tmp_path / "out.mcap"
    assert "wrote 42 messages" in _cli("export", str(path), "--mcap", str(out)).stdout
    with out.open("rb") as fh:
        reader = make_reader(fh)
        summary = reader.get_summary()
        assert summary is not None and summary.statistics.message_count == 42
        msgs = list(reader.iter_messages())
    assert len(msgs) == 42
    schema, channel, message = msgs[0]
    assert schema.encoding == "jsonschema" and channel.message_encoding == "json"
    assert json.loads(schema.data)["title"] == "RobotState"  # inlined for Foxglove (issue 14)
    assert json.loads(message.data)["robot"] == "g" and message.log_time == T0
    assert json.loads(msgs[-2][2].data) == {"text": "bring the apple"}
    assert "raw_base64" in json.loads(msgs[-1][2].data)


def test_log_info_and_cat(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with memory_store.open(path) as store:
        store.append_many([("p/a", b"\x81\xa1k\x01", T0), ("p/b", b"hello", T0 + 2 * 10**9),
                           ("p/a", b"\x81\xa1k\x02", T0 + 3 * 10**9)])
    text = _cli("log", "info", str(path)).stdout
    assert "events    3" in text and "(3.000 s)" in text and "p/a" in text
    lines = _cli("log", "cat", str(path), "--topics", "p/a", "--json").stdout.splitlines()
    assert [json.loads(line)["data"] for line in lines] == [{"k": 1}, {"k": 2}]
    window = _cli("log", "cat", str(path), "--from", "1", "--to", "2.5").stdout
    assert "hello" in window and "p/a" not in window


def test_cli_sizes_durations_and_times_parse_or_say_why() -> None:
    import typer

    from robobus.cli.memory import parse_duration_ns, parse_size
    from robobus.memory_store.replay import parse_time

    assert parse_size("16GiB") == 16 << 30 and parse_size("1TB") == 1 << 40
    assert parse_size("4096") == 4096
    assert parse_duration_ns("1h") == 3600 * 10**9 and parse_duration_ns("500ms") == 5 * 10**8
    with pytest.raises(typer.BadParameter, match="cannot read size 'lots'"):
        parse_size("lots")
    with pytest.raises(typer.BadParameter, match="cannot read duration"):
        parse_duration_ns("1 fortnight")
    assert parse_time("2.5", T0, 0) == T0 + 2_500_000_000
    assert parse_time(str(T0 + 7), 0, 0) == T0 + 7
    assert parse_time(None, T0, -1) == -1
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday", T0, 0)
