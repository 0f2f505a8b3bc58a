"""Machines for the multi-host pipeline tests: network namespaces joined by veth pairs.

    with Namespaces(["host1", "host2"]) as net:
        net.hub                      # the broker's namespace
        net.spokes["host1"]          # a worker machine's namespace ...
        net.hub_address("host1")     # ... and the broker's address on its link: 10.251.1.1
        net.cut("host1")             # that machine loses its link

Each spoke has its own link to the hub (10.251.N.1 on the hub's side, 10.251.N.2 on the
spoke's), so one can go down alone. The addresses exist only inside these namespaces.
Everything is deleted on exit, also after a failure; where the kernel or the user may
not make namespaces, `Namespaces` raises `Unavailable` with the reason.
"""
from __future__ import annotations

import os
import shutil
import subprocess


class Unavailable(Exception):
    pass


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Namespaces:
    def __init__(self, spokes: list[str]):
        if os.geteuid() != 0:
            raise Unavailable("network namespaces need root")
        if not shutil.which("ip"):
            raise Unavailable("the ip command (iproute2) is not installed")
        tag = f"wasinn{os.getpid()}"
        self.hub = f"{tag}-broker"
        self.spokes = {name: f"{tag}-{name}" for name in spokes}
        self._made: list[str] = []
        try:
            self._add(self.hub)
        except RuntimeError as e:
            raise Unavailable(f"the kernel refused a network namespace: {e}") from None
        try:
            for n, (name, ns) in enumerate(self.spokes.items(), 1):
                self._add(ns)
                _ip("-n", self.hub, "link", "add", f"veth{n}", "type", "veth", "peer", "name", "veth0", "netns", ns)
                _ip("-n", self.hub, "addr", "add", f"10.251.{n}.1/24", "dev", f"veth{n}")
                _ip("-n", ns, "addr", "add", f"10.251.{n}.2/24", "dev", "veth0")
                _ip("-n", self.hub, "link", "set", f"veth{n}", "up")
                _ip("-n", ns, "link", "set", "veth0", "up")
        except BaseException:
            self.close()
            raise

    def _add(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._made.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def hub_address(self, spoke: str) -> str:
        return f"10.251.{list(self.spokes).index(spoke) + 1}.1"

    def hub_addresses(self) -> list[str]:
        return [self.hub_address(s) for s in self.spokes]

    def cut(self, spoke: str) -> None:
        """The spoke's link goes down: its packets go nowhere, nobody is told."""
        _ip("-n", self.spokes[spoke], "link", "set", "veth0", "down")

    def close(self) -> None:
        # Deleting a namespace deletes its end of each veth pair, and so the pair.
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self._made.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
