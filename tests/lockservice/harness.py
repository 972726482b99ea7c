"""Apply commands to a LockStateMachine the way the Raft driver does: encoded, in log order."""

from __future__ import annotations

from lockservice import commands as c
from lockservice.fsm import LockStateMachine
from lockservice.limits import Limits
from lockservice.results import Result, SessionOpened


class Log:
    """A log of commands applied to one state machine, each through the codec."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.fsm = LockStateMachine(limits)
        self.index = 0
        self.entries: list[bytes] = []

    def __call__(self, cmd: c.Command) -> Result:
        self.index += 1
        data = c.encode(cmd)
        self.entries.append(data)
        result = self.fsm.apply(self.index, data)
        self.fsm.check()
        return result

    def session(self, ttl_ms: int = 10_000, now: int = 0) -> int:
        opened = self(c.OpenSession(ttl_ms, now))
        assert isinstance(opened, SessionOpened), opened
        return opened.session
