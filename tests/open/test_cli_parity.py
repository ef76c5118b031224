"""``robobus topic`` and ``robobus log`` with the habits of ros2 and mosquitto_pub/sub (issue 14,
item 7), as subprocesses against the private Mosquitto."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from unittest.mock import patch

import anyio
import msgspec
import pytest
from anyio.abc import Process
from typer.testing import CliRunner

from robobus import memory_store, testing
from robobus.bus import Bus, BusOptions
from robobus.cli.main import app, hoist_root_options
from robobus.schemas.messages import Instruction, Pose, RobotState

pytestmark = pytest.mark.anyio
TIMEOUT = 30.0
T0 = 1_800_000_000_000_000_000


async def robobus(*args: str, stdin: bytes | None = None) -> str:
    with anyio.fail_after(TIMEOUT):
        done = await anyio.run_process(testing.robobus_cmd(*args), input=stdin, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


async def _logged(proc: Process, word: bytes) -> None:
    """Read ``proc``'s stderr until ``word`` shows up."""
    seen = b""
    assert proc.stderr is not None
    with anyio.fail_after(TIMEOUT):
        while word not in seen:
            seen += await proc.stderr.receive()


class Watcher:
    """A ``robobus topic`` process started in the background; :meth:`output` once it ends."""

    def __init__(self, *args: str) -> None:
        self.args = args

    async def __aenter__(self) -> Watcher:
        self.proc = await anyio.open_process(testing.robobus_cmd(*self.args))
        await _logged(self.proc, b"subscribed")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.proc.aclose()

    async def output(self) -> str:
        assert self.proc.stdout is not None
        out = b""
        with anyio.fail_after(TIMEOUT):
            async for chunk in self.proc.stdout:
                out += chunk
            assert await self.proc.wait() == 0
        return out.decode()


def _cli(*args: str) -> str:
    """``robobus ARGS`` in this process, as :func:`robobus.cli.main.main` would run it."""
    with patch("robobus.cli.main.setup_logging"):  # structlog is the test process's own
        result = CliRunner().invoke(app, hoist_root_options(list(args)))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_help_has_no_bool_metavars_and_log_level_goes_anywhere() -> None:
    for cmd in (("topic", "echo"), ("topic", "pub"), ("log", "cat"), ("schema",)):
        out = _cli(*cmd, "--help")
        assert "<bool>" not in out and "--help" in out, cmd
    assert json.loads(_cli("schema", "Pose", "--log-level", "debug"))["$ref"] == "#/$defs/Pose"
    assert hoist_root_options(["topic", "pub", "t", "x", "--log-level=debug", "--", "--log-level"]) \
        == ["--log-level=debug", "topic", "pub", "t", "x", "--", "--log-level"]


@pytest.mark.broker
async def test_echo_info_list_and_hz(mosquitto_url: str, prefix: str) -> None:
    state = f"{prefix}/robots/g1/state"
    url = mosquitto_url
    async with Bus.connect(url, name="g1", options=BusOptions(max_payload=4 << 20)) as bus, \
            bus.subscribe("+/errors") as errors:
        await bus.publish(state, RobotState(robot="g1", pose=Pose(x=1.0)), retain=True, qos=1)
        async with Watcher("topic", "echo", f"{prefix}/robots/+/state", "--no-retained",
                           "--field", "pose.x", "-n", "1", "--bus", url) as echo, \
                Watcher("topic", "echo", f"{prefix}/big", "-n", "1", "--bus", url) as big, \
                Watcher("topic", "hz", f"{prefix}/robots/+/state", "-n", "10", "--bus", url) as hz:
            for i in range(5):
                for robot in ("g1", "g2"):
                    await bus.publish(f"{prefix}/robots/{robot}/state",
                                      RobotState(robot=robot, pose=Pose(x=2.5 + i)), qos=1)
            await bus.publish(f"{prefix}/big", b"x" * (1536 << 10), qos=1)  # 1.5 MiB of text
            assert (await echo.output()).strip() == "2.5"  # not the retained 1.0
            shown = (await big.output()).strip()
            assert shown.endswith(f"[truncated: {1536 << 10} bytes, over the 1048576-byte limit]")
            assert len(shown) < 3000
            rates = (await hz.output()).splitlines()
        assert any(line.startswith(f"{state}  average rate:") for line in rates)
        assert any(line.startswith(f"{prefix}/robots/g2/state  average rate:") for line in rates)
        assert rates[-1] == "(1 retained value(s) not counted)"
        info = await robobus("topic", "info", state, "-d", "0.5", "--bus", url)
        assert "type       RobotState" in info and "retained   yes" in info
        assert "last       from g1," in info and "msgpack" in info
        listing = await robobus("topic", "list", f"{prefix}/#", "-d", "0.5", "--bus", url)
        assert f"{state}  count=1" in listing and "type=RobotState" in listing
        with anyio.move_on_after(0.5):
            report = await errors.get()
            pytest.fail(f"a watcher reported an error: {report.topic} {report.payload[:80]!r}")


@pytest.mark.broker
async def test_pub_from_file_stdin_lines_with_properties(mosquitto_url: str, prefix: str,
                                                         tmp_path: Path) -> None:
    url, topic = mosquitto_url, f"{prefix}/in"
    data = tmp_path / "inst.json"
    data.write_text('{"text": "bring the cup", "priority": 2}')
    rec = tmp_path / "rec"
    async with Bus.connect(url, name="watch") as bus, bus.subscribe(topic) as sub, \
            await anyio.open_process(testing.robobus_cmd(
                "record", str(rec), "--topics", topic, "--bus", url, "--duration", "60")) as recorder:
        await _logged(recorder, b"memory_ready")
        await robobus("topic", "pub", topic, "-f", str(data), "--qos", "1", "-e", f"{prefix}/r",
                      "--correlation", "c-7", "--bus", url)
        await robobus("topic", "pub", topic, "-s", "--bus", url, stdin=b"all of it\nin one")
        await robobus("topic", "pub", topic, "-l", "--bus", url, stdin=b"one\n\ntwo\n")
        await robobus("topic", "pub", topic, '{"a": 1}', "--msgpack", "--bus", url)
        with anyio.fail_after(TIMEOUT):
            got = [await sub.get() for _ in range(5)]
        recorder.send_signal(signal.SIGINT)  # a clean stop: the recorder says what it kept
        assert recorder.stdout is not None
        with anyio.fail_after(TIMEOUT):
            summary = (await recorder.stdout.receive()).decode()
    assert summary.startswith(f"recorded 5 events on 1 topics into {rec} (")
    assert json.loads(got[0].payload) == json.loads(data.read_text())  # JSON stays JSON
    assert got[0].content_type == "application/json"  # and says so (MQTT 5 Content Type)
    assert (got[0].response_topic, got[0].correlation, got[0].qos) == (f"{prefix}/r", b"c-7", 1)
    assert msgspec.json.decode(got[0].payload, type=Instruction).priority == 2
    assert [m.payload for m in got[1:4]] == [b"all of it\nin one", b"one", b"two"]
    assert msgspec.msgpack.decode(got[4].payload) == {"a": 1}
    assert got[4].content_type == "application/msgpack" and got[1].content_type is None


def test_log_info_types_encodings_and_cat_shows_json(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with memory_store.open(path) as store:
        store.append_many([
            ("p/instructions", b'{"text": "bring the cup"}', T0),
            ("p/instructions", b"plain words", T0 + 1),
            ("p/robots/g1/state", msgspec.msgpack.encode(RobotState(robot="g1")), T0 + 2),
            ("p/other", b"\xff\x00", T0 + 3)])
    info = json.loads(_cli("log", "info", str(path), "--json"))
    assert info["types"] == {"p/instructions": "Instruction", "p/robots/g1/state": "RobotState",
                             "p/other": "-"}
    assert info["encodings"]["p/instructions"] == {"json": 1, "text": 1}
    assert info["encodings"]["p/other"] == {"bytes": 1}
    cat = _cli("log", "cat", str(path), "--json", "-n", "1")
    assert json.loads(cat)["data"] == {"text": "bring the cup"}  # the object, not a string
