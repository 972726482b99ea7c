"""A lock holder in its own process, for the SIGKILL test in test_server_expiry.py.

    python -m tests.lockservice.holder_child PORT NAME TTL_MS LOCK_DELAY_MS

Opens a session on the member at PORT, acquires NAME, then keeps the session alive for ever,
printing one JSON line per answer ({"step": "open"|"acquire"|"keepalive", ...}).
"""

from __future__ import annotations

import json
import sys

from tests.lockservice.cluster import call


def main() -> None:
    port, name, ttl, delay = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    code, opened = call(port, "POST", "/lock/v1/sessions", {"ttl_ms": ttl})
    assert code == 201, opened
    print(json.dumps({"step": "open", **opened}), flush=True)
    sid = opened["session"]
    code, got = call(port, "POST", f"/lock/v1/locks/{name}/acquire",
                     {"session": sid, "lock_delay_ms": delay})
    assert code == 200, got
    print(json.dumps({"step": "acquire", **got}), flush=True)
    while True:
        code, ka = call(port, "POST", f"/lock/v1/sessions/{sid}/keepalive", {})
        print(json.dumps({"step": "keepalive", "status": code, **(ka or {})}), flush=True)


if __name__ == "__main__":
    main()
