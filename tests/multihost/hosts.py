"""Test hosts built from Linux network namespaces joined by one bridge, and the processes run on them.

Every name this suite creates starts with PREFIX (namespaces, veth links, the bridge) and every address
is in SUBNET: cleanup deletes exactly those, and kills by process id what it started. Traffic goes only
to the namespaces' addresses (and to each namespace's own loopback): the bridge's address in the root
namespace is how the test process itself, the "client", reaches the app hosts and the database.

A network partition is a pair of `prohibit` routes (no iptables needed): packets to the other side fail
at once with EACCES in both directions, as a firewall's reject would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from sentinelflow_site.processes import start_process, stop_process

# One /24 and one name prefix per test run (by process id), so two runs side by side never share either.
RUN_NUMBER = os.getpid() % 200 + 20
PREFIX = f"sfmh{RUN_NUMBER}"
SUBNET = f"10.213.{RUN_NUMBER}"
BRIDGE = f"{PREFIX}br"
CLIENT_ADDRESS = f"{SUBNET}.1"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def namespaces_available() -> str | None:
    """None when this process can build namespaces, bridges and veth links; else the reason it cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"{PREFIX}probe"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        link = ip("link", "add", f"{PREFIX}pb", "type", "bridge", check=False)
        if link.returncode != 0:
            return f"cannot create a bridge: {link.stderr.strip()}"
        ip("link", "del", f"{PREFIX}pb", check=False)
    finally:
        ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    name: str
    address: str
    processes: list[subprocess.Popen] = field(default_factory=list)
    scratch: list[Path] = field(default_factory=list)  # directories made for it, removed at close

    @property
    def netns(self) -> str:
        return f"{PREFIX}-{self.name}"

    @property
    def link(self) -> str:
        return f"{PREFIX}{self.name}"

    def command(self, args: list[str]) -> list[str]:
        # `ip netns exec` enters the namespace and execs the command: the process id is the command's own.
        return ["ip", "netns", "exec", self.netns, *args]

    def start(self, args: list[str], *, env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
        process = start_process(self.command(args), env=env, cwd=cwd, log=log, die_with_parent=True)
        self.processes.append(process)
        return process

    def kill_all(self) -> None:
        """SIGKILL every process in this host's namespace (a host lost at once), by process id."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def pids(self) -> list[int]:
        listed = ip("netns", "pids", self.netns, check=False).stdout.split()
        return [int(pid) for pid in listed if pid.isdigit()]

    def cut_off_from(self, other: Host) -> None:
        ip("-n", self.netns, "route", "add", "prohibit", f"{other.address}/32")
        ip("-n", other.netns, "route", "add", "prohibit", f"{self.address}/32")

    def reconnect_to(self, other: Host) -> None:
        ip("-n", self.netns, "route", "del", "prohibit", f"{other.address}/32", check=False)
        ip("-n", other.netns, "route", "del", "prohibit", f"{self.address}/32", check=False)


class Network:
    """The bridge and the hosts on it; `close()` removes everything it made, also after a failure."""

    def __init__(self) -> None:
        self.hosts: dict[str, Host] = {}
        self.remove_leftovers()
        ip("link", "add", BRIDGE, "type", "bridge")
        ip("addr", "add", f"{CLIENT_ADDRESS}/24", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")

    def add_host(self, name: str, number: int) -> Host:
        host = Host(name, f"{SUBNET}.{number}")
        peer = f"{host.link}p"
        ip("netns", "add", host.netns)
        ip("link", "add", host.link, "type", "veth", "peer", "name", peer)
        ip("link", "set", host.link, "master", BRIDGE, "up")
        ip("link", "set", peer, "netns", host.netns)
        ip("-n", host.netns, "link", "set", peer, "name", "eth0")
        ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.netns, "link", "set", "eth0", "up")
        ip("-n", host.netns, "link", "set", "lo", "up")
        self.hosts[name] = host
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            for process in host.processes:
                stop_process(process, timeout=5)
            host.kill_all()  # anything a process left behind in the namespace
            for directory in host.scratch:
                shutil.rmtree(directory, ignore_errors=True)
        self.remove_leftovers()

    @staticmethod
    def remove_leftovers() -> None:
        """Delete this run's namespaces, links and bridge by name (also a crashed earlier run's with this prefix)."""
        for line in ip("netns", "list", check=False).stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(f"{PREFIX}-"):
                for pid in ip("netns", "pids", name, check=False).stdout.split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                ip("netns", "del", name, check=False)
        for line in ip("-o", "link", "show", check=False).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
            if name.startswith(PREFIX):
                ip("link", "del", name, check=False)


def wait_for(condition, *, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
