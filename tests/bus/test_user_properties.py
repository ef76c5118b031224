"""MQTT 5 user properties and the Payload Format Indicator end to end (issues 12 and 14), with
clients nobody here wrote (``mosquitto_pub``/``mosquitto_sub``) and robobus as processes:

* a received Message carries the publisher's user properties (``sender`` stays the bus's own)
  and its payload format indicator; ``Bus.publish(user_properties=...)`` sends them;
* ``robobus topic pub --qos 2 -D user-property K V`` publishes exactly-once with the properties;
* ``robobus record --exclude FILTER`` skips matching topics and keeps the properties in each
  event's header; ``robobus replay`` publishes them again, as ``mosquitto_sub -F %P`` shows;
* on ZeroMQ a QoS 2 publish is acknowledged like QoS 1.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import pytest
import typer

from robobus import memory_store, testing
from robobus.bus import Bus, BusOptions
from robobus.cli.topic import expand_properties, pub_properties

pytestmark = pytest.mark.anyio


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(testing.robobus_cmd(*args), capture_output=True, text=True, timeout=60,
                          check=True)


async def _acli(*args: str) -> subprocess.CompletedProcess[str]:
    """A CLI run off the event loop: the test's bus client keeps its keepalive meanwhile."""
    return await anyio.to_thread.run_sync(lambda: _cli(*args))


def _mosquitto(tool: str, url: str, *args: str) -> list[str]:
    parts = urlsplit(url)
    return ["stdbuf", "-oL", tool, "-V", "mqttv5", "-h", str(parts.hostname), "-p", str(parts.port), *args]


async def _record(out: Path, url: str, prefix: str, *extra: str) -> subprocess.Popen[str]:
    """``robobus record`` of ``prefix/#`` as a process, returned once it is subscribed."""
    argv = testing.robobus_cmd("record", str(out), "--bus", url, "--prefix", prefix,
                               "--topics", f"{prefix}/#", "--duration", "30", *extra)
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stderr is not None
    with anyio.fail_after(20):
        while "memory_ready" not in await anyio.to_thread.run_sync(proc.stderr.readline):
            pass
    return proc


@pytest.mark.broker
async def test_user_properties_survive_record_and_replay(tmp_path: Path, prefix: str,
                                                         mosquitto_url: str) -> None:
    out, moved = tmp_path / "rec", f"{prefix}r"
    async with Bus.connect(mosquitto_url, name="watch", options=BusOptions(prefix=prefix)) as bus, \
            bus.subscribe(f"{prefix}/custom/#") as sub:
        proc = await _record(out, mosquitto_url, prefix, "--exclude", f"{prefix}/custom/skip/#")
        try:
            await anyio.to_thread.run_sync(lambda: subprocess.run(_mosquitto(
                "mosquitto_pub", mosquitto_url, "-q", "1", "-t", f"{prefix}/custom/a",
                "-m", '{"a": 1}', "-D", "publish", "user-property", "k", "v",
                "-D", "publish", "user-property", "k2", "v 2",
                "-D", "publish", "payload-format-indicator", "1"), check=True, timeout=20))
            await bus.publish(f"{prefix}/custom/skip/x", b"not recorded", qos=1)
            await _acli("topic", "pub", f"{prefix}/custom/q2", '{"b": 2}', "--bus", mosquitto_url,
                        "--qos", "2", "-D", "user-property", "from", "cli",
                        "-D", "publish", "user-property", "n", "2",
                        "-D", "payload-format-indicator", "1")
            with anyio.fail_after(10):
                live = {(m := await sub.get()).topic.rsplit("/", 1)[-1]: m for _ in range(3)}
            await anyio.sleep(0.5)  # the recorder got them too: it stops cleanly on SIGTERM
            proc.terminate()
            assert await anyio.to_thread.run_sync(proc.wait, 20) == 0
        finally:
            testing.stop(proc)  # type: ignore[arg-type]
    # live: the properties as sent; the bus's own ``sender`` is not among them
    assert live["a"].user_properties == (("k", "v"), ("k2", "v 2"))
    assert live["a"].payload_format == 1 and live["a"].sender is None
    assert live["q2"].user_properties == (("from", "cli"), ("n", "2"))
    assert live["q2"].sender == "cli-pub" and live["q2"].qos == 1  # we subscribe at QoS 1
    assert live["q2"].payload_format == 1
    with memory_store.open(out, readonly=True) as store:
        got = {ev.topic.rsplit("/", 1)[-1]: ev for ev in store.scan()}
    assert set(got) == {"a", "q2"}  # --exclude kept custom/skip/x out
    assert got["a"].props is not None and got["a"].props.user == (("k", "v"), ("k2", "v 2"))
    assert got["a"].props.payload_format == 1
    assert got["q2"].props is not None and got["q2"].props.user == (("from", "cli"), ("n", "2"))

    # replay, seen by mosquitto_sub -F %P (subscribed before the replay starts: -d says SUBACK)
    watcher = subprocess.Popen(_mosquitto("mosquitto_sub", mosquitto_url, "-d", "-C", "2",
                                          "-W", "20", "-t", f"{moved}/custom/#",
                                          "-F", "%t|%P|%p"),
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert watcher.stdout is not None
        with anyio.fail_after(10):
            while "SUBACK" not in await anyio.to_thread.run_sync(watcher.stdout.readline):
                pass
        done = await _acli("replay", str(out), "--bus", mosquitto_url, "--prefix", moved,
                           "--speed", "10")
        assert "replayed 2 events" in done.stdout, done
        seen = (await anyio.to_thread.run_sync(lambda: watcher.communicate(timeout=20)))[0]
    finally:
        testing.stop(watcher)  # type: ignore[arg-type]
    lines = {ln.split("|")[0]: ln for ln in seen.splitlines() if ln.startswith(moved)}
    # mosquitto_sub prints each user property as key:value; the replay's sender comes too
    assert "k:v k2:v 2" in lines[f"{moved}/custom/a"], seen
    assert "sender:robobus-replay" in lines[f"{moved}/custom/a"], seen
    assert "from:cli n:2" in lines[f"{moved}/custom/q2"], seen


async def test_zeromq_takes_qos2_like_qos1(hub_url: str, prefix: str) -> None:
    async with Bus.connect(hub_url, name="z") as bus, bus.subscribe(f"{prefix}/#") as sub:
        await bus.publish(f"{prefix}/a", b"x", qos=2, user_properties=[("k", "v")])
        with anyio.fail_after(10):
            msg = await sub.get()
    assert (msg.payload, msg.sender, msg.user_properties) == (b"x", "z", ())


def test_dash_d_reads_like_mosquitto_pub() -> None:
    argv = ["t", "-D", "publish", "user-property", "k", "-v", "-q", "2",
            "--property", "payload-format-indicator", "1", "-D", "response-topic", "r/t",
            "--", "-D"]
    words = expand_properties(argv)
    assert words == ["t", "-D", "user-property", "-D", "k", "-D", "-v", "-q", "2",
                     "--property", "payload-format-indicator", "--property", "1",
                     "-D", "response-topic", "-D", "r/t", "--", "-D"]
    assert pub_properties(["user-property", "k", "-v", "user-property", "a", "b",
                           "payload-format-indicator", "1", "correlation-data", "c"]) == {
        "user_properties": [("k", "-v"), ("a", "b")], "payload_format": 1, "correlation": b"c"}
    with pytest.raises(typer.BadParameter):
        pub_properties(["message-expiry-interval", "5"])
    with pytest.raises(typer.BadParameter):
        pub_properties(["user-property", "k"])
