"""The network the nemesis acts on: iptables rules, link proxies, or both.

- `drop(links, probability)`: with the firewall (root + iptables), packets are DROPped, all
  or a random share; without it, the proxies hold the links' traffic (a full partition;
  random loss needs the firewall, so a lossy link without it is refused with the reason).
- `delay(links, seconds)`: the proxies forward each chunk that much later (this kernel has
  no netem, so slow links need the proxies).
- `heal()`: lifts every rule of both.

Which parts exist is the runner's choice (`kv-chaos run --net auto|iptables|proxy`): auto
uses the firewall when it is available and adds the proxies when the plan has `delay` or
when there is no firewall for its partitions.
"""

from __future__ import annotations

from chaos.firewall import IptablesFirewall
from chaos.proxy import ProxyNetwork


class NetworkFaults:
    def __init__(self, firewall: IptablesFirewall | None = None,
                 proxies: ProxyNetwork | None = None) -> None:
        self.firewall, self.proxies = firewall, proxies

    def drop(self, links: list[tuple[str, str]], probability: float = 1.0) -> None:
        if self.firewall is not None:
            self.firewall.drop(links, probability)
        elif self.proxies is not None and probability >= 1.0:
            self.proxies.hold(links)
        elif self.proxies is not None:
            raise RuntimeError("lossy links need iptables as root; the proxies can only hold "
                               "or delay a link")
        else:
            raise RuntimeError("network faults need iptables as root, or --net proxy")

    def delay(self, links: list[tuple[str, str]], delay_s: float) -> None:
        if self.proxies is None:
            raise RuntimeError("slow links need the link proxies (--net proxy or auto)")
        self.proxies.delay(links, delay_s)

    def heal(self) -> None:
        if self.firewall is not None:
            self.firewall.heal()
        if self.proxies is not None:
            self.proxies.heal()

    @property
    def can_lose(self) -> bool:
        return self.firewall is not None
