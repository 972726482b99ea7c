"""Hypothesis strategies for lock table commands: any well-typed command, or one aimed at
a small table (few sessions, few names) so that commands meet each other."""

from __future__ import annotations

from hypothesis import strategies as st

from lockservice import commands as c
from lockservice.sequencer import LockMode, Sequencer

modes = st.sampled_from(LockMode)


def command_strategy(
    u64: st.SearchStrategy[int], names: st.SearchStrategy[str]
) -> st.SearchStrategy[c.Command]:
    sequencers = st.builds(Sequencer, names, modes, u64, u64)
    return st.one_of(
        st.builds(c.OpenSession, u64, u64),
        st.builds(c.KeepAlive, u64, u64, u64),
        st.builds(c.CloseSession, u64),
        st.builds(c.ExpireSessions, u64),
        st.builds(c.ExpireSession, u64, u64),
        st.builds(c.GrantFreshLeases, u64),
        st.builds(c.Acquire, u64, names, modes, st.booleans(), u64, st.none() | u64),
        st.builds(c.Release, u64, names),
        st.builds(c.CancelWait, u64, names),
        st.builds(c.CheckSequencer, sequencers),
        st.builds(c.Put, names, st.binary(max_size=20), st.none() | u64, st.none() | u64),
        st.builds(c.Delete, names, st.none() | u64),
        st.builds(c.Get, names),
        st.builds(c.Watch, u64, names),
        st.builds(c.Unwatch, u64, names),
        st.builds(c.OpenClientSession, u64, u64, st.sampled_from(["", "a", "b"]) | names),
    )


u64 = st.integers(0, 2**63 - 1)
names = st.text(max_size=20)
commands = command_strategy(u64, names)
# Aimed at a small table: small ids and times, a few names; sometimes anything at all.
small = st.integers(0, 40) | st.integers(0, 5000) | u64
aimed = command_strategy(small, st.sampled_from(["a", "b", "a/x", ""]) | names)
