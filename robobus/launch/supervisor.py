"""A process supervisor: each agent is an OS process in its own process group, logging to a file.

Stopping is by process group, so grandchildren die with their parent; an ``atexit`` hook kills
whatever is left if the interpreter exits without unwinding (a second Ctrl-C, an unhandled
error), so a scenario never leaves orphans behind. Each child also carries a death signal
(:mod:`robobus.launch.deathsig`): when the supervising process dies without unwinding at all
(SIGKILL, an unhandled SIGHUP), the kernel sends every child SIGTERM.

A process started with ``restart=True`` is started again when it exits unexpectedly, after a
backoff of 0.5 s doubling up to 10 s, back to 0.5 s once it has run a minute (systemd's
``Restart=on-failure``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc
import structlog

from robobus.launch import deathsig
from robobus.launch.errors import ProcessCrashed

log = structlog.get_logger("launch.supervisor")

_live: weakref.WeakSet[Supervisor] = weakref.WeakSet()
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
STABLE_S = 60.0  # a process that ran this long restarts after the first backoff again


@dataclass(eq=False)
class Managed:
    """One supervised process. ``tier`` orders shutdown: higher tiers stop first.

    With ``restart`` an unexpected exit starts it again (``restart_argv`` if set, else ``argv``)
    after a backoff; ``restarts`` counts how often that happened to this name.
    """

    name: str
    argv: list[str]
    log_path: Path
    tier: int
    critical: bool
    process: anyio.abc.Process | None = None
    expected_exit: bool = False
    exited: anyio.Event = field(default_factory=anyio.Event)
    restart: bool = False
    restart_argv: list[str] | None = None
    restarts: int = 0
    started_at: float = 0.0
    backoff_s: float = BACKOFF_FIRST_S
    _log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else -1

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    def tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of the process log (for crash messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Supervisor:
    """Starts, watches and stops processes. Use as ``async with Supervisor(log_dir) as sup``.

    An unexpected exit of a ``critical`` process raises :class:`ProcessCrashed` in the
    supervisor's task group (cancelling the ``async with`` body); other exits are logged.
    """

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = {**os.environ, **(env or {})}
        self.procs: dict[str, Managed] = {}
        self._halted: set[str] = set()  # stopped on purpose: a pending restart is dropped
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> Supervisor:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        _live.add(self)
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        with anyio.CancelScope(shield=True):
            await self.stop_all()
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        try:
            return await self._tg.__aexit__(*exc)
        except BaseExceptionGroup as group:
            crash = _first_crash(group)
            if crash is None:
                raise
            raise crash from None

    async def start(self, name: str, argv: Sequence[str], *, tier: int = 1,
                    critical: bool = True) -> Managed:
        """Start ``argv`` in a new session (its own process group), output to ``NAME.log``.

        The child gets SIGTERM from the kernel if this process dies (:mod:`deathsig`)."""
        if name in self.procs and self.procs[name].returncode is None:
            raise ValueError(f"process {name!r} is already running")
        managed = Managed(name, list(argv), self.log_dir / f"{name}.log", tier, critical)
        managed._log_file = open(managed.log_path, "ab")  # noqa: SIM115 - closed on exit
        managed.process = await anyio.open_process(
            deathsig.wrap(managed.argv), stdin=subprocess.DEVNULL, stdout=managed._log_file,
            stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
        )
        managed.started_at = anyio.current_time()
        self._halted.discard(name)
        self.procs[name] = managed
        log.debug("process_started", name=name, pid=managed.pid)
        assert self._tg is not None
        self._tg.start_soon(self._watch, managed, name=f"watch:{name}")
        return managed

    async def _watch(self, managed: Managed) -> None:
        assert managed.process is not None
        code = await managed.process.wait()
        managed.exited.set()
        if managed._log_file is not None:
            managed._log_file.close()
        if managed.expected_exit:
            return
        log.warning("process_exited", name=managed.name, code=code)
        if managed.restart:
            assert self._tg is not None
            self._tg.start_soon(self._respawn, managed, name=f"respawn:{managed.name}")
        elif managed.critical:
            raise ProcessCrashed(managed.name, code, managed.tail())

    async def _respawn(self, old: Managed) -> None:
        """Start ``old`` again after its backoff, unless it was stopped meanwhile."""
        ran = anyio.current_time() - old.started_at
        delay = BACKOFF_FIRST_S if ran >= STABLE_S else old.backoff_s
        log.warning("process_restarting", name=old.name, in_s=delay, restarts=old.restarts + 1)
        await anyio.sleep(delay)
        if old.name in self._halted or self.procs.get(old.name) is not old:
            return
        new = await self.start(old.name, old.restart_argv or old.argv, tier=old.tier,
                               critical=old.critical)
        new.restart, new.restart_argv, new.restarts = True, old.restart_argv, old.restarts + 1
        new.backoff_s = min(delay * 2, BACKOFF_MAX_S)

    def kill(self, name: str) -> None:
        """SIGKILL ``name``'s process group, as a crash would (a scripted fault)."""
        managed = self.procs[name]
        managed.expected_exit = True
        _killpg(managed.pid, signal.SIGKILL)

    async def restart(self, name: str) -> Managed:
        """Start ``name`` again with its restart command (after :meth:`kill`)."""
        old = self.procs[name]
        with anyio.fail_after(5):
            await old.exited.wait()
        new = await self.start(name, old.restart_argv or old.argv, tier=old.tier,
                               critical=old.critical)
        new.restart, new.restart_argv = old.restart, old.restart_argv
        return new

    async def stop(self, names: Sequence[str], timeout: float = 5.0) -> None:
        """SIGTERM the groups of ``names`` together, wait, then SIGKILL what is left."""
        self._halted.update(names)
        group = [self.procs[n] for n in names if n in self.procs]
        for managed in group:
            managed.expected_exit = True
            if managed.returncode is None:
                _killpg(managed.pid, signal.SIGTERM)
        with anyio.move_on_after(timeout):
            await self._reap(group)
        for managed in group:
            if managed.returncode is None:
                log.warning("process_kill", name=managed.name, after_s=timeout)
            _killpg(managed.pid, signal.SIGKILL)  # orphans left in the group, too
        with anyio.move_on_after(timeout):
            await self._reap(group)

    @staticmethod
    async def _reap(group: list[Managed]) -> None:
        for managed in group:
            if managed.process is not None:
                await managed.process.wait()

    async def stop_all(self, timeout: float = 5.0) -> None:
        """Stop every process, highest tier first (edges, then brain and memory, then the hub)."""
        for tier in sorted({m.tier for m in self.procs.values()}, reverse=True):
            await self.stop([m.name for m in self.procs.values() if m.tier == tier], timeout)

    def kill_all_now(self) -> None:
        """Synchronous last resort (``atexit``): SIGKILL every group still known."""
        for managed in self.procs.values():
            managed.expected_exit = True
            _killpg(managed.pid, signal.SIGKILL)


def _first_crash(group: BaseExceptionGroup) -> ProcessCrashed | None:
    for exc in group.exceptions:
        if isinstance(exc, ProcessCrashed):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (inner := _first_crash(exc)) is not None:
            return inner
    return None


def _killpg(pid: int, sig: signal.Signals) -> None:
    if pid > 0:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


@atexit.register
def _kill_leftovers() -> None:
    for sup in list(_live):
        sup.kill_all_now()
