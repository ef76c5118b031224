"""Security: `robobus secure init` output enforced by a real Mosquitto and a real CURVE hub."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from robobus import testing
from robobus.bus import Bus, BusError, ConnectError
from robobus.bus.backends.mqtt_options import parse
from robobus.bus.policy import instructions_topic
from robobus.secure import SecureConfig, secure_init

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


@pytest.fixture(scope="module")
def secure_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("secure")
    port = testing.free_port()
    secure_init(SecureConfig(directory, robots=["r1", "r2"], port=port))
    return directory


@pytest.fixture(scope="module")
def broker(secure_dir: Path) -> Iterator[str]:
    with testing.secured_mosquitto(secure_dir) as url:
        yield url



def as_account(monkeypatch: pytest.MonkeyPatch, secure_dir: Path, account: str | None) -> None:
    for key in ("ROBOBUS_MQTT_USERNAME", "ROBOBUS_MQTT_PASSWORD", "ROBOBUS_MQTT_PASSWORD_FILE"):
        monkeypatch.delenv(key, raising=False)
    if account is not None:
        env = testing.account_env(secure_dir, account)
        monkeypatch.setenv("ROBOBUS_MQTT_USERNAME", env["ROBOBUS_MQTT_USERNAME"])
        monkeypatch.setenv("ROBOBUS_MQTT_PASSWORD_FILE", env["ROBOBUS_MQTT_PASSWORD_FILE"])


def test_generated_files_are_private(secure_dir: Path) -> None:
    for secret in ("ca.key", "server.key", "passwd", "accounts/r1.password", "zmq/hub.key_secret"):
        assert (secure_dir / secret).stat().st_mode & 0o077 == 0, secret
    acl = (secure_dir / "acl").read_text()
    assert "topic write robobus/robots/r1/state" in acl
    assert "topic read robobus/robots/r1/#" in acl and "pattern read robobus/_inbox/%c/#" in acl
    password = (secure_dir / "accounts" / "r1.password").read_text().strip()
    assert password not in (secure_dir / "passwd").read_text(), "password file must be hashed"


async def test_anonymous_client_is_refused(broker: str, secure_dir: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    as_account(monkeypatch, secure_dir, None)
    with pytest.raises(ConnectError):
        async with Bus.connect(broker + "&reconnect=0", name="anon"):
            pass


async def test_client_without_tls_is_refused(broker: str, secure_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    as_account(monkeypatch, secure_dir, "operator")
    plain = broker.replace("mqtts://", "mqtt://").split("?", 1)[0] + "?reconnect=0"
    with pytest.raises(ConnectError):
        async with Bus.connect(plain, name="plain"):
            pass


async def test_wrong_password_is_refused(broker: str, secure_dir: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    as_account(monkeypatch, secure_dir, "operator")
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    monkeypatch.setenv("ROBOBUS_MQTT_PASSWORD_FILE", str(wrong))
    with pytest.raises(ConnectError):
        async with Bus.connect(broker + "&reconnect=0", name="guess"):
            pass


async def _receives(bus: Bus, pattern: str, timeout: float) -> list[bytes]:
    got: list[bytes] = []
    async with bus.subscribe(pattern) as sub:
        with anyio.move_on_after(timeout):
            async for msg in sub:
                got.append(msg.payload)
    return got


async def test_robot_cannot_command_another_robot(broker: str, secure_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    as_account(monkeypatch, secure_dir, "memory")  # memory may read everything
    async with Bus.connect(broker, name="memory") as watcher:
        async with watcher.subscribe("robobus/robots/r2/skills/#") as sub:
            as_account(monkeypatch, secure_dir, "r1")
            async with Bus.connect(broker, name="r1") as r1:
                with pytest.raises(BusError):
                    await r1.publish("robobus/robots/r2/skills/pick", b"evil", qos=1)
                await r1.publish("robobus/robots/r2/skills/pick", b"evil-qos0")
            as_account(monkeypatch, secure_dir, "brain")
            async with Bus.connect(broker, name="brain") as brain:
                await brain.publish("robobus/robots/r2/skills/pick", b"legit", qos=1)
            with anyio.fail_after(5):
                msg = await sub.get()
            assert msg.payload == b"legit", "the first message r2 sees must be the brain's"
            assert sub.get_nowait() is None


async def test_robot_cannot_read_another_robots_commands(broker: str, secure_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Mosquitto grants wildcard subscriptions and enforces the ACL on delivery.
    as_account(monkeypatch, secure_dir, "r1")
    async with Bus.connect(broker, name="r1") as r1:
        async with r1.subscribe("robobus/robots/+/skills/#") as spy:
            as_account(monkeypatch, secure_dir, "r2")
            async with Bus.connect(broker, name="r2") as r2, \
                    r2.subscribe("robobus/robots/r2/skills/#") as own:
                as_account(monkeypatch, secure_dir, "brain")
                async with Bus.connect(broker, name="brain") as brain:
                    await brain.publish("robobus/robots/r2/skills/pick", b"for r2", qos=1)
                    await brain.publish("robobus/robots/r1/skills/pick", b"for r1", qos=1)
                with anyio.fail_after(5):
                    assert (await own.get()).payload == b"for r2"
                    assert (await spy.get()).payload == b"for r1"
                assert spy.get_nowait() is None, "r1 must not see r2's commands"


async def test_only_operators_publish_instructions(broker: str, secure_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Each operator on its own topic only (issue 13): the level is its identity."""
    as_account(monkeypatch, secure_dir, "memory")
    async with Bus.connect(broker, name="memory") as watcher, \
            watcher.subscribe("robobus/instructions") as shared, \
            watcher.subscribe("robobus/instructions/+") as sub:
        as_account(monkeypatch, secure_dir, "r1")
        async with Bus.connect(broker, name="r1") as r1:
            for topic in ("robobus/instructions", "robobus/instructions/r1"):
                with pytest.raises(BusError):
                    await r1.publish(topic, b"robot says go", qos=1)
        as_account(monkeypatch, secure_dir, "operator")
        async with Bus.connect(broker, name="operator") as op:
            for topic in ("robobus/instructions", "robobus/instructions/brain"):
                with pytest.raises(BusError):
                    await op.publish(topic, b"as another", qos=1)
            assert instructions_topic(broker, "robobus") == "robobus/instructions/operator"
            await op.publish("robobus/instructions/operator", b"bring the apple", qos=1)
        with anyio.fail_after(5):
            msg = await sub.get()
        assert (msg.topic, msg.payload) == ("robobus/instructions/operator", b"bring the apple")
        assert sub.get_nowait() is None and shared.get_nowait() is None


def test_cli_never_logs_the_password(broker: str, secure_dir: Path) -> None:
    env = {**os.environ, **testing.account_env(secure_dir, "operator"), "ROBOBUS_URL": broker,
           "ROBOBUS_LOG": "debug"}
    proc = subprocess.run(testing.robobus_cmd("topic", "pub", "robobus/instructions", "hello",
                                              "--qos", "1"),
                          env=env, capture_output=True, text=True, timeout=30)
    password = (secure_dir / "accounts" / "operator.password").read_text().strip()
    assert proc.returncode == 0, proc.stderr  # acknowledged: on the account's own topic
    assert "robobus/instructions/operator" in proc.stdout + proc.stderr  # (issue 13)
    assert password not in proc.stdout + proc.stderr


async def test_zmq_hub_with_curve_refuses_clients_without_keys(
        secure_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with testing.hub(extra=["--curve-keys", str(secure_dir / "zmq")]) as url:
        monkeypatch.setenv("ROBOBUS_ZMQ_KEYS", str(secure_dir / "zmq"))
        monkeypatch.setenv("ROBOBUS_ZMQ_CLIENT", "r1")
        async with Bus.connect(url, name="r1") as bus, \
                bus.subscribe("robobus/robots/r1/#") as sub:  # what policy.json lets r1 do
            await bus.publish("robobus/robots/r1/state", b"with key")
            with anyio.fail_after(5):
                assert (await sub.get()).payload == b"with key"
            monkeypatch.delenv("ROBOBUS_ZMQ_KEYS")
            with pytest.raises(ConnectError):
                async with Bus.connect(url, name="intruder"):
                    pass
            assert sub.get_nowait() is None


async def test_no_account_takes_the_memory_session_over(broker: str, secure_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: the memory agent's persistent session had the fixed client id
    ``robobus-memory``; a robot account connecting with it kicked the agent off. The id now
    carries a tag only the memory account can compute: r1 asking for ``robobus-memory`` gets
    a session of its own, and the memory agent's connection is never taken over."""
    url = f"{broker}&session=persistent&client_id=robobus-memory"
    as_account(monkeypatch, secure_dir, "memory")
    memory_id = parse(url, "memory-0", 1.0).client_id
    async with Bus.connect(url, name="memory") as memory, \
            memory.subscribe("robobus/robots/r1/state") as sub:
        as_account(monkeypatch, secure_dir, "r1")
        forged_id = parse(url, "r1-0", 1.0).client_id
        assert memory_id.startswith("robobus-memory-") and forged_id != memory_id
        async with Bus.connect(url, name="r1") as r1:
            await r1.publish("robobus/robots/r1/state", b"after", qos=1)
            with anyio.fail_after(10):
                assert (await sub.get()).payload == b"after"
        assert memory.connected and memory.connections == 1, "the memory session was taken over"
