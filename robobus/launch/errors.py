"""Errors of the launcher: scenario runs, fleets and the processes they supervise."""

from __future__ import annotations


class LaunchError(Exception):
    """Base of every error raised by :mod:`robobus.launch`."""


class ProcessCrashed(LaunchError):
    """A critical process (hub, memory, brain) exited while the run needed it."""

    def __init__(self, name: str, code: int | None, tail: str = "") -> None:
        detail = f"\n--- last lines of {name}.log ---\n{tail}" if tail else ""
        super().__init__(f"process {name!r} exited unexpectedly with code {code}{detail}")
        self.name = name
        self.code = code
        self.tail = tail


class NotReady(LaunchError):
    """The fleet did not become ready in time; ``missing`` says what was still awaited."""

    def __init__(self, timeout: float, missing: list[str]) -> None:
        super().__init__(f"fleet not ready after {timeout:.0f}s; still waiting for: "
                         + "; ".join(missing))
        self.timeout = timeout
        self.missing = missing


class ProfileNotFound(LaunchError):
    """A robot profile name resolved to no file."""

    def __init__(self, profile: str, searched: list[str]) -> None:
        super().__init__(f"robot profile {profile!r} not found; looked in: {', '.join(searched)}")
        self.profile = profile
        self.searched = searched


class BusUnavailable(LaunchError):
    """The bus URL cannot be used for a multi-process run (or its hub/broker did not start)."""


class FleetRunning(LaunchError):
    """``robobus up`` found a fleet already running on the bus (and was not told to join it)."""
