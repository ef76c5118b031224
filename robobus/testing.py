"""Test helpers users can reuse: free ports, a private Mosquitto, a hub, agent processes.

Everything binds to loopback, and every process started here is killed (with its process
group) when its context exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from robobus.bus.zmq_wire import endpoints

LOOPBACK = "127.0.0.1"


def free_port(span: int = 1) -> int:
    """A loopback TCP port P such that P .. P+span-1 are all free right now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        if port + span < 65535 and all(_is_free(port + i) for i in range(1, span)):
            return port
    raise RuntimeError(f"no {span} consecutive free loopback ports")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def wait_port(port: int, timeout: float = 10.0, host: str = LOOPBACK) -> None:
    """Block until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


MOSQUITTO_CONF = """\
listener {port} {host}
allow_anonymous true
persistence {persistence}
persistence_location {dir}/
{autosave}max_queued_messages 1000000
max_inflight_messages 0
max_packet_size {max_packet}
# Nagle plus delayed ACK turns a QoS 1 round trip into ~88 ms; always disable it.
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
{user}"""


def mosquitto_binary() -> str:
    path = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(path).exists():
        raise FileNotFoundError("mosquitto not installed: run the README test command")
    return path


#: Save the persistence file after every change (message queued or retained, subscription).
#: Mosquitto acks a QoS 1 publish before any save and never fsyncs first; without these lines it
#: saves every 1,800 s, and a ``kill -9`` lost acknowledged messages (issue 13). Now only what
#: arrived in the loop iteration of the kill can be lost (docs/reliability.md, bench/broker_durability.py).
AUTOSAVE_EVERY_CHANGE = "autosave_on_changes true\nautosave_interval 1\n"


def write_mosquitto_conf(directory: Path, port: int, *, persistence: bool = True,
                         max_packet: int = 4 << 20,
                         autosave: str | None = AUTOSAVE_EVERY_CHANGE) -> Path:
    """Generate a loopback-only Mosquitto config in ``directory``; ``autosave`` is its
    ``autosave_*`` lines (None: Mosquitto's default, a save every 1,800 s)."""
    conf = directory / "mosquitto.conf"
    conf.write_text(
        MOSQUITTO_CONF.format(
            port=port, host=LOOPBACK, dir=directory, max_packet=max_packet,
            persistence="true" if persistence else "false",
            autosave=(autosave or "") if persistence else "",
            # as root, mosquitto drops to user "mosquitto", which cannot write our temp dir
            user="user root\n" if os.getuid() == 0 else "",
        )
    )
    return conf


@contextlib.contextmanager
def mosquitto(port: int | None = None, directory: Path | None = None,
              autosave: str | None = None) -> Iterator[str]:
    """Run a private Mosquitto on a free loopback port; yields ``mqtt://127.0.0.1:PORT``.

    Unlike the fleet's generated config, it keeps Mosquitto's periodic save unless ``autosave``
    says otherwise (e.g. :data:`AUTOSAVE_EVERY_CHANGE`): a save per change costs about 98% of
    one QoS 1 publisher's throughput (bench/broker_durability.py), and this broker serves the
    throughput benchmarks and tests that never kill it."""
    port = port or free_port()
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mosq-")))
        conf = write_mosquitto_conf(directory, port, autosave=autosave)
        proc = stack.enter_context(spawn([mosquitto_binary(), "-c", str(conf)], name="mosquitto"))
        wait_port(port)
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}")
        yield f"mqtt://{LOOPBACK}:{port}"


@contextlib.contextmanager
def hub(port: int | None = None, extra: Sequence[str] = ()) -> Iterator[str]:
    """Run ``robobus hub`` as a separate process; yields ``zmq://127.0.0.1:PORT``."""
    port = port or free_port(span=3)
    url = f"zmq://{LOOPBACK}:{port}"
    with spawn(robobus_cmd("hub", "--bus", url, *extra), name="hub"):
        for p in (port, port + 1, port + 2):
            wait_port(p)
        yield url


@contextlib.contextmanager
def ipc_hub(directory: Path, timeout: float = 10.0) -> Iterator[str]:
    """Run ``robobus hub`` on ``zmq+ipc://`` sockets in ``directory``: no port, so no process
    left over from an earlier test can reach it by a reused port number."""
    url = f"zmq+ipc://{directory}/hub"
    ep = endpoints(url)
    sockets = [Path(e.removeprefix("ipc://")) for e in (ep.publish, ep.subscribe, ep.control)]
    with spawn(robobus_cmd("hub", "--bus", url), name="hub"):
        deadline = time.monotonic() + timeout
        while not all(path.exists() for path in sockets):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no hub on {url} within {timeout} s")
            time.sleep(0.02)
        yield url


def robobus_cmd(*args: str) -> list[str]:
    """The argv that runs ``robobus ARGS`` with this interpreter."""
    return [sys.executable, "-m", "robobus.cli.main", *args]


@contextlib.contextmanager
def spawn(
    argv: Sequence[str], *, name: str = "proc", env: dict[str, str] | None = None,
    log_dir: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` in its own process group; on exit, SIGTERM then SIGKILL the group."""
    full_env = {**os.environ, **(env or {})}
    out: int | IO[bytes] = subprocess.DEVNULL
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        out = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(list(argv), env=full_env, stdout=out, stderr=subprocess.STDOUT
                            if log_dir is not None else None, start_new_session=True)
    try:
        yield proc
    finally:
        stop(proc)
        if not isinstance(out, int):
            out.close()


def account_env(secure_dir: Path, account: str) -> dict[str, str]:
    """The environment ``robobus secure init`` wrote for ``account`` (``DIR/env/ACCOUNT.env``)."""
    lines = (secure_dir / "env" / f"{account}.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


@contextlib.contextmanager
def secured_mosquitto(secure_dir: Path) -> Iterator[str]:
    """The TLS Mosquitto ``robobus secure init`` configured in ``secure_dir``, for the
    duration; yields its ``mqtts://`` URL (with the CA)."""
    conf = (secure_dir / "mosquitto.conf").read_text()
    port = int(conf.split("listener ", 1)[1].split()[0])
    with spawn([mosquitto_binary(), "-c", str(secure_dir / "mosquitto.conf")],
               name="mosquitto-tls"):
        wait_port(port)
        yield f"mqtts://127.0.0.1:{port}?ca={secure_dir / 'ca.crt'}"


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Terminate ``proc`` and its process group, escalating to SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)


def kill9(proc: subprocess.Popen[bytes]) -> None:
    """``kill -9`` the process group, as a crash would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)
