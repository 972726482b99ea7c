"""iptables faults on real sockets between two loopback addresses (root + iptables only)."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from chaos.firewall import IptablesFirewall

WHY_NOT = IptablesFirewall.available()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"iptables unusable: {WHY_NOT}")

A, B = "127.0.0.11", "127.0.0.12"


@pytest.fixture
def firewall():
    fw = IptablesFirewall(f"RLTEST-{os.getpid()}")
    fw.setup()
    yield fw
    fw.close()
    assert not fw.exists()


async def _connects(src: str, dst: str, port: int, timeout: float = 0.5) -> bool:
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(dst, port, local_addr=(src, 0)), timeout)
    except TimeoutError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


def test_dropped_link_silences_only_that_pair(firewall):
    async def scenario():
        server = await asyncio.start_server(lambda r, w: w.close(), B, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            assert await _connects(A, B, port)
            firewall.drop([(A, B)])
            assert not await _connects(A, B, port)
            assert await _connects("127.0.0.13", B, port)  # a third address still gets in
            firewall.heal()
            assert await _connects(A, B, port)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_lossy_link_is_a_statistic_rule(firewall):
    firewall.drop([(A, B)], probability=0.25)
    (rule,) = firewall.rules()
    assert "--mode random --probability 0.25" in rule and rule.endswith("-j DROP")


def test_setup_removes_what_an_interrupted_run_left(firewall):
    firewall.drop([(A, B)])
    again = IptablesFirewall(firewall.chain)  # a new run, same chain: the old one crashed
    again.setup()
    assert again.rules() == []
    jumps = subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True, text=True)
    assert jumps.stdout.count(f"-j {firewall.chain}") == 1


@pytest.mark.parametrize("link", [("10.0.0.1", B), (A, "8.8.8.8")])
def test_only_loopback_addresses_are_accepted(firewall, link):
    with pytest.raises(ValueError, match="loopback"):
        firewall.drop([link])
    assert firewall.rules() == []


def test_bad_probability_and_chain_names_are_refused(firewall):
    with pytest.raises(ValueError):
        firewall.drop([(A, B)], probability=0)
    with pytest.raises(ValueError):
        IptablesFirewall("bad chain; rm -rf /")
