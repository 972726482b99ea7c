"""The claimant's decisions (Riak's claimant), pure: who decides, and the next ring.

- The claimant is the lowest-named ring member believed up. Every node computes it from
  its own ring and failure detector; all nodes that agree on the ring and on who is up
  agree on the claimant. When they disagree for a moment, a change request may be
  forwarded once more (kvstore.membership bounds the hops), or two members may both act;
  gossip then keeps exactly one of the two rings (kvstore/gossip.py, `ring_wins`).
- `next_ring` turns one operator request into the next ring, or refuses it with a
  MembershipError saying why. Requests are idempotent: joining a member or leaving when
  already gone returns the same ring (same version), so a retried request changes nothing.
  Removing a node the claimant believes up is refused: a live node should `leave` (it hands
  its data off itself); remove is for the dead.
"""

from __future__ import annotations

from collections.abc import Callable

from kvstore.errors import InvalidRing, MembershipError
from kvstore.ring import Ring

OPS = ("join", "leave", "remove")


class NoClaimant(MembershipError):
    """A change request went round without reaching a claimant (members disagree on the
    ring or on who is up, for a moment); the caller retries shortly."""


def claimant(ring: Ring, is_alive: Callable[[str], bool]) -> str | None:
    """The lowest-named member `is_alive` accepts (None when the ring has none)."""
    return min((m for m in ring.members if is_alive(m)), default=None)


def next_ring(ring: Ring, op: str, node: str, *, node_alive: bool) -> Ring:
    """The ring after `op` on `node` (the same object when nothing changes).

    Raises MembershipError when refused: unknown op, removing a non-member or a node
    believed up (`node_alive`), or the last member leaving.
    """
    if op not in OPS:
        raise MembershipError(f"unknown operation {op!r}")
    try:
        if op == "join":
            return ring if node in ring.members else ring.join(node)
        if node not in ring.members:
            if op == "remove":
                raise MembershipError(f"{node} is not a member")
            return ring  # leaving twice: already done
        if len(ring.members) == 1:
            raise MembershipError(f"{node} is the last member; it cannot {op}")
        if op == "remove" and node_alive:
            raise MembershipError(f"{node} is alive; ask it to leave, or stop it and retry "
                                  "once it is seen down")
        return ring.leave(node) if op == "leave" else ring.remove(node)
    except InvalidRing as exc:
        raise MembershipError(exc.reason) from None
