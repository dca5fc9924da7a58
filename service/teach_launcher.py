"""``python -m arinext.service.teach_launcher LIMITS -- COMMAND``: a teaching run's bounds, then
the trainer itself.

The server starts the trainer through this small program rather than with a ``preexec_fn``
(unsafe in a process with threads, as the server is): it lowers its priority, caps the address
space of the run (``RLIMIT_AS``, inherited by the trainer's worker processes), asks Linux to
kill it when the server dies, and then replaces itself with the trainer (``exec``), so the
process the server holds, times and kills is the trainer.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import sys
from collections.abc import Sequence

__all__ = ["launcher_argv", "main"]

_PR_SET_PDEATHSIG = 1


def launcher_argv(command: Sequence[str], *, memory_bytes: int, niceness: int) -> list[str]:
    """The argv that runs ``command`` under these bounds with the server's interpreter."""
    return [
        sys.executable,
        "-m",
        "arinext.service.teach_launcher",
        f"--memory-bytes={memory_bytes}",
        f"--niceness={niceness}",
        f"--parent={os.getpid()}",
        "--",
        *command,
    ]


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL when the server goes, however it goes (kept across ``exec``)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the server went before the call: nobody waits for this run
        sys.exit(1)


def main(argv: Sequence[str] | None = None) -> None:
    """Apply the limits and ``exec`` the command; returns only by raising."""
    parser = argparse.ArgumentParser(prog="teach_launcher")
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--niceness", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True, help="the server's process id")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    os.nice(args.niceness)
    resource.setrlimit(resource.RLIMIT_AS, (args.memory_bytes, args.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.execvp(args.command[0], args.command)


if __name__ == "__main__":
    main()
