"""Network faults as iptables rules in a chain of the harness's own (needs root).

Theory of operation. Every node listens on, and sends from, its own loopback address
(127.0.0.11, 127.0.0.12, ...). Loopback traffic leaves through the OUTPUT hook, so one jump
rule `OUTPUT -s 127.0.0.0/8 -d 127.0.0.0/8 -j <chain>` sends every local packet through
our chain, and a fault between two nodes is a rule on their two addresses there:

- lost link: `-A <chain> -s SRC -d DST -j DROP` (DROP, not REJECT: the sender sees a
  silent network and times out, as across a real partition);
- lossy link: the same with `-m statistic --mode random --probability P` (this kernel has
  no netem; delay needs the proxy in chaos/proxy.py).

`setup()` first removes whatever an interrupted earlier run left behind (the jump rules and
the chain), so a crash of the harness never leaves a partition in place past the next start;
`close()` removes it all too. Rules only ever name 127.0.0.0/8 addresses.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import subprocess
from collections.abc import Iterable

logger = logging.getLogger(__name__)

CHAIN = "RINGLOCK-CHAOS"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


class FirewallError(RuntimeError):
    """An iptables command failed; the message carries its stderr."""


def _loopback(address: str) -> str:
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    if ipaddress.ip_address(host) not in LOOPBACK:
        raise ValueError(f"{address} is not a loopback address: the harness stays on 127/8")
    return host


class IptablesFirewall:
    """Lost and lossy links between loopback addresses; idempotent setup and close."""

    def __init__(self, chain: str = CHAIN, *, binary: str = "iptables") -> None:
        if not chain.replace("-", "").replace("_", "").isalnum() or len(chain) > 28:
            raise ValueError(f"bad chain name {chain!r}")
        self.chain = chain
        self.binary = binary
        self._jump = ["OUTPUT", "-s", str(LOOPBACK), "-d", str(LOOPBACK), "-j", chain]

    @staticmethod
    def available(binary: str = "iptables") -> str | None:
        """None when iptables can be used here, else the reason it cannot."""
        if os.geteuid() != 0:
            return "not root"
        if shutil.which(binary) is None:
            return f"{binary} is not installed (Debian: apt-get install iptables)"
        probe = subprocess.run([binary, "-w", "-S", "OUTPUT"], capture_output=True, text=True)
        if probe.returncode != 0:
            return f"{binary} does not work here: {probe.stderr.strip()}"
        return None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary, "-w", *args]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise FirewallError(f"{' '.join(cmd)}: {done.stderr.strip()}")
        return done

    def setup(self) -> None:
        """Remove any leftovers of an earlier run, then create the chain and its jump."""
        self.close()
        self._run("-N", self.chain)
        self._run("-I", *self._jump)
        logger.info("firewall chain %s installed", self.chain)

    def close(self) -> None:
        """Remove every jump to the chain and the chain itself (no error if absent)."""
        while self._run("-D", *self._jump, check=False).returncode == 0:
            pass
        self._run("-F", self.chain, check=False)
        self._run("-X", self.chain, check=False)

    def exists(self) -> bool:
        return self._run("-S", self.chain, check=False).returncode == 0

    def drop(self, links: Iterable[tuple[str, str]], probability: float = 1.0) -> None:
        """Lose packets from src to dst for each (src, dst), all of them or with a chance."""
        if not 0.0 < probability <= 1.0:
            raise ValueError(f"probability must be in (0, 1]: {probability}")
        for src, dst in links:
            rule = ["-s", _loopback(src), "-d", _loopback(dst)]
            if probability < 1.0:
                rule += ["-m", "statistic", "--mode", "random",
                         "--probability", f"{probability:.4f}"]
            self._run("-A", self.chain, *rule, "-j", "DROP")

    def heal(self) -> None:
        """Remove every fault; the chain and its jump stay for the next one."""
        self._run("-F", self.chain)

    def rules(self) -> list[str]:
        """The chain's rules as `iptables -S` prints them (for the report and tests)."""
        out = self._run("-S", self.chain).stdout.splitlines()
        return [line for line in out if line.startswith("-A ")]
