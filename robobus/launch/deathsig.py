"""Run a command that ends when the process that started it dies, however that one dies.

The supervisor starts every child as ``python -m robobus.launch.deathsig PARENT_PID -- ARGV``:
this sets Linux's ``PR_SET_PDEATHSIG`` to SIGTERM and then ``exec``s ARGV, which keeps the pid,
the process group and the death signal. So when ``robobus up`` is killed with SIGKILL, or its
terminal closes, the kernel sends each child SIGTERM and it stops cleanly (an edge says
``offline``, the memory agent commits). It covers programs we do not control (Mosquitto) the
same way as our agents, needs no ``preexec_fn`` (unsafe once threads run), and closes the race
where the parent dies before the death signal is armed by checking the parent pid after it.

Caveat: the signal follows the *thread* that forked the child. The supervisor forks from its
event loop's thread, which lives as long as the supervisor does.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
SUPPORTED = sys.platform.startswith("linux")


def wrap(argv: list[str], parent_pid: int | None = None) -> list[str]:
    """``argv`` run so that it gets SIGTERM when ``parent_pid`` (this process) dies."""
    if not SUPPORTED:
        return list(argv)
    pid = os.getpid() if parent_pid is None else parent_pid
    return [sys.executable, "-m", "robobus.launch.deathsig", str(pid), "--", *argv]


def main(args: list[str]) -> int:
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m robobus.launch.deathsig PARENT_PID -- COMMAND [ARGS...]",
              file=sys.stderr)
        return 2
    parent = int(args[0])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        print(f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    if os.getppid() != parent:  # the parent died before the signal was armed
        return 1
    os.execvp(args[2], args[2:])
    return 1  # not reached: execvp replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
