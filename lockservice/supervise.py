"""A child process that must not outlive the lock it runs under (`kv lock run`, `kv elect`).

`stop()` sends SIGTERM, then SIGKILL after `kill_after` seconds if the child is still
there; the caller invokes it the moment its session falls into jeopardy, which is before
the server's lease ends, so the child is gone before the lock can pass to another holder
(as long as `kill_after` is shorter than the safety margin plus the lock-delay).
On Linux the child also gets SIGKILL if this process dies first (PR_SET_PDEATHSIG), so a
SIGKILLed `kv lock run` does not leave an orphan acting as holder. SIGTERM and SIGINT sent
to this process are passed on to the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def _pdeathsig_setter(parent: int):
    """A function for the child to run before exec: SIGKILL when the parent goes.

    The library is loaded here in the parent; the child only makes the system call.
    None where there is no prctl (not Linux).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl

    def in_child() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return in_child


def exit_status(returncode: int) -> int:
    """A child's status as a shell reports it: its code, or 128 + the signal that ended it."""
    return 128 - returncode if returncode < 0 else returncode


class Supervised:
    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None,
                 kill_after: float = 1.0) -> None:
        if not argv:
            raise ValueError("no command to run")
        self.argv, self.env, self.kill_after = argv, env, kill_after
        self.proc: asyncio.subprocess.Process | None = None
        self.stopped_because: str | None = None
        self._killer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, preexec_fn=_pdeathsig_setter(os.getpid()))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._pass_on, sig)
        if self.stopped_because is not None:  # stop() came while it was starting
            self._terminate()

    def _pass_on(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)

    def stop(self, reason: str) -> None:
        """SIGTERM now, SIGKILL after `kill_after` s; safe to call any number of times."""
        if self.stopped_because is None:
            self.stopped_because = reason
            log.warning("stopping %s: %s", self.argv[0], reason)
            self._terminate()

    def _terminate(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        self._killer = asyncio.get_running_loop().call_later(self.kill_after, self._kill)

    def _kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            log.warning("%s ignored SIGTERM for %.1f s: SIGKILL", self.argv[0], self.kill_after)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def wait(self) -> int:
        """Wait for the child; returns its exit status as a shell would report it."""
        assert self.proc is not None
        try:
            return exit_status(await self.proc.wait())
        finally:
            if self._killer is not None:
                self._killer.cancel()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
