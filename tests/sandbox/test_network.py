"""SANDBOX.md case 25: a network-on jail has a namespace of its own, filtered by the host.

The jails' peers here are test hosts in a network namespace this module makes, with no
default route out of it: a broken filter still sends nothing off the machine. Nothing here
looks up a name or connects to an address outside this machine.
"""

import dataclasses
import inspect
import ipaddress
import json
import os
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from execution.sandbox import FreshSandbox, Limits, SandboxConfig, SandboxRequest, network
from execution.sandbox.ranges import BLOCKED_V4, BLOCKED_V6

pytestmark = pytest.mark.sandbox

# 198.18.0.0/15 (benchmarking) is allowed; 10.0.0.0/8 is not. A /30 of each per run.
NET = os.getpid() % 250
ALLOWED_HOST, ALLOWED_GATEWAY = f"198.18.{NET}.1", f"198.18.{NET}.2"
BLOCKED_HOST, BLOCKED_GATEWAY = f"10.255.{NET}.1", f"10.255.{NET}.2"
GREETING = b"hello from the test host"
SYS_NET = Path("/sys/class/net")


def reach(targets: list) -> list:
    """What answered, of (host, port) targets; run in a jail, or in a namespace by a test."""
    import socket  # the jail runs this function's source alone

    reached = []
    for host, port in targets:
        try:
            with socket.create_connection((host, port), timeout=2) as conn:
                reached.append([host, port, conn.recv(64).decode(errors="replace")])
        except OSError:
            pass
    return reached


PROBE = inspect.getsource(reach) + "\nmain = reach\n"


@dataclass
class Hosts:
    port: int  # where the test hosts listen, on ALLOWED_HOST and BLOCKED_HOST


def _ip(*argv: str) -> str:
    return subprocess.run(["ip", *argv], check=True, capture_output=True, text=True).stdout


def _serve(listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:  # shut down at teardown
            return
        with conn:
            conn.sendall(GREETING)


def _stop(listener: socket.socket) -> None:
    """Wake the accept() of _serve (close alone leaves it blocked, the socket listening)."""
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()


@pytest.fixture(scope="module")
def test_host(sandbox):
    """Two test hosts (one allowed address, one blocked) in a namespace of the test's own."""
    name, iface = f"stepwell-test-{os.getpid()}", f"swt{os.getpid()}"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", iface, "type", "veth", "peer", "name", "eth0", "netns", name)
        for gateway, host in ((ALLOWED_GATEWAY, ALLOWED_HOST), (BLOCKED_GATEWAY, BLOCKED_HOST)):
            _ip("addr", "add", f"{gateway}/30", "dev", iface)
            _ip("-n", name, "addr", "add", f"{host}/30", "dev", "eth0")
        _ip("link", "set", iface, "up")
        _ip("-n", name, "link", "set", "eth0", "up")
        assert "default" not in _ip("-n", name, "route", "show")
        with network.entered(network.NETNS_DIR / name):
            listener = socket.create_server(("0.0.0.0", 0))
        threading.Thread(target=_serve, args=(listener,), daemon=True).start()
        try:
            yield Hosts(listener.getsockname()[1])
        finally:
            _stop(listener)
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
        subprocess.run(["ip", "link", "delete", iface], check=False, capture_output=True)


def host_addresses() -> list[str]:
    """Every address of this machine, in every family, as `ip` lists them now."""
    found = []
    for link in json.loads(_ip("-j", "addr", "show")):
        for info in link.get("addr_info", []):
            address = ipaddress.ip_address(info["local"])
            if address.version == 6 and address.is_link_local:
                found.append(f"{address}%{link['ifname']}")
            else:
                found.append(str(address))
    return found


@pytest.fixture
def host_listener():
    """A listener on every host address (0.0.0.0 and ::), as a host service would be."""
    listener = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
    threading.Thread(target=_serve, args=(listener,), daemon=True).start()
    yield listener.getsockname()[1]
    _stop(listener)


def _targets(test_host, host_port, sandbox_config):
    gateways = [
        network.slot_addresses(uid)[0]
        for uid in range(sandbox_config.uid_base, sandbox_config.uid_base + sandbox_config.slots)
    ]
    return [
        [ALLOWED_HOST, test_host.port],
        [BLOCKED_HOST, test_host.port],
        ["127.0.0.1", 6379],  # Redis
        ["127.0.0.1", 5432],  # PostgreSQL
        *([address, host_port] for address in {*host_addresses(), *gateways}),
    ]


def test_a_network_on_jail_reaches_an_allowed_host_and_nothing_of_the_host(
    run, test_host, host_listener, sandbox_config
):
    result = run(PROBE, _targets(test_host, host_listener, sandbox_config), network=True)
    assert result.status == "ok", result.error
    assert result.result == [[ALLOWED_HOST, test_host.port, GREETING.decode()]]


def test_a_network_off_jail_reaches_nothing(run, test_host, host_listener, sandbox_config):
    result = run(PROBE, _targets(test_host, host_listener, sandbox_config))
    assert result.status == "ok", result.error
    assert result.result == []


def test_a_port_bound_in_a_network_on_jail_is_not_bound_on_the_host(run, host_listener):
    code = """
import socket
def main(port):
    with socket.create_server(("0.0.0.0", port)) as server:
        return server.getsockname()[1]
"""
    # The host already listens on this port: only a namespace of its own lets the jail bind.
    result = run(code, host_listener, network=True)
    assert result.status == "ok", result.error
    assert result.result == host_listener


def test_a_network_on_jail_cannot_reach_the_hosts_abstract_unix_sockets(run):
    # Abstract unix sockets belong to a network namespace, and have no permissions:
    # in the host's, a jail could talk to any daemon listening on one.
    name = f"stepwell-test-{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind("\0" + name)
    listener.listen()
    code = """
import socket
def main(name):
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect("\\0" + name)
        except OSError as exc:
            return exc.errno
        return "connected"
"""
    try:
        result = run(code, name, network=True)
    finally:
        listener.close()
    assert result.status == "ok", result.error
    assert result.result == 111  # ECONNREFUSED: no such socket in the jail's namespace


def test_the_blocked_ranges_are_the_policy_listed_one_by_one():
    case_25 = {
        "0.0.0.0/8",
        "127.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
    }
    assert case_25 <= set(BLOCKED_V4)
    assert {"::1/128", "fc00::/7", "fe80::/10"} <= set(BLOCKED_V6)
    benchmarking = ipaddress.ip_network("198.18.0.0/15")
    assert not any(ipaddress.ip_network(r).overlaps(benchmarking) for r in BLOCKED_V4)
    for rules in (network.host_rules(), network.slot_rules()):
        assert all(r in rules for r in BLOCKED_V4)


def test_each_slot_gets_its_own_addresses():
    pairs = {network.slot_addresses(uid) for uid in range(99000, 99064)}
    assert len(pairs) == 64
    assert all(ipaddress.ip_address(a) in network.SLOT_SUBNET for pair in pairs for a in pair)
    assert all(len(network.host_iface(uid)) <= 15 for uid in (99000, 2**32 - 1))


def test_a_slot_left_half_made_is_made_again(sandbox, sandbox_config):
    uid = sandbox_config.uid_base + sandbox_config.slots - 1
    network.remove_slot(uid)
    subprocess.run(["ip", "netns", "add", network.netns_name(uid)], check=True)
    assert network.netns_path(uid).exists()  # a namespace without its veth: a worker died
    path = sandbox.network.slot(uid)
    alias = (SYS_NET / network.host_iface(uid) / "ifalias").read_text()
    assert path == network.netns_path(uid) and alias.strip() == network.READY
    network.remove_slot(uid)
    assert not network.netns_path(uid).exists()
    assert not (SYS_NET / network.host_iface(uid)).exists()


def _reached_from(path, targets) -> list[list]:
    """What answers a connection from the namespace at `path`, as a jail there would see."""
    with network.entered(path):
        return reach(targets)


@pytest.fixture
def spare_slot(sandbox, sandbox_config):
    """The namespace of the last slot (no test step here holds it), removed afterwards."""
    uid = sandbox_config.uid_base + sandbox_config.slots - 1
    yield uid, sandbox.network.slot(uid)
    network.remove_slot(uid)


def test_the_host_table_alone_keeps_a_jail_from_the_host_and_the_blocked_ranges(
    spare_slot, test_host, host_listener, sandbox_config
):
    _, path = spare_slot
    with network.entered(path):  # as if the slot's own filter were gone
        subprocess.run(["nft", "delete", "table", "inet", network.TABLE], check=True)
    reached = _reached_from(path, _targets(test_host, host_listener, sandbox_config))
    assert reached == [[ALLOWED_HOST, test_host.port, GREETING.decode()]]


def test_the_slot_table_alone_keeps_a_jail_from_the_host(
    sandbox, spare_slot, host_listener, sandbox_config
):
    uid, path = spare_slot
    gateway = network.slot_addresses(uid)[0]
    try:
        # As after a host firewall reload that flushed the whole ruleset.
        subprocess.run(["nft", "delete", "table", "inet", network.TABLE], check=True)
        assert _reached_from(path, [[gateway, host_listener]]) == []
    finally:
        sandbox.network.apply_host_rules()
    with network.entered(path):
        subprocess.run(["nft", "delete", "table", "inet", network.TABLE], check=True)
    # Without either table the host answers: the two tests above prove something.
    try:
        subprocess.run(["nft", "delete", "table", "inet", network.TABLE], check=True)
        assert _reached_from(path, [[gateway, host_listener]]) != []
    finally:
        sandbox.network.apply_host_rules()


def test_nameservers_out_of_the_jails_reach_are_refused(tmp_path):
    for address, why in [
        ("127.0.0.53", "127.0.0.0/8 is blocked"),
        ("10.255.255.53", "10.0.0.0/8 is blocked"),
        ("169.254.169.253", "169.254.0.0/16 is blocked"),
        ("fd00::53", "no IPv6 route"),
        ("dns.example", "is not an IP address"),
    ]:
        with pytest.raises(ValueError, match=why):
            SandboxConfig(state_dir=tmp_path, nameservers=(address,), nsjail_path="/bin/true")


def test_a_network_on_jail_sees_the_configured_nameservers(sandbox_config):
    config = dataclasses.replace(sandbox_config, nameservers=(ALLOWED_HOST, "9.9.9.9"))
    box = FreshSandbox(config)
    code = "def main(x):\n    return open('/etc/resolv.conf').read()\n"
    result = box.run(SandboxRequest("acme", code, None, Limits(network=True)))
    assert result.status == "ok", result.error
    assert result.result == f"nameserver {ALLOWED_HOST}\nnameserver 9.9.9.9\n"


def test_a_network_on_jail_cannot_change_or_bypass_its_namespace(run):
    code = """
import errno, fcntl, socket, struct
SIOCSIFFLAGS = 0x8914
def main(x):
    denied = []
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
    except PermissionError:
        denied.append("raw socket")
    with socket.socket() as s:
        try:
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"eth0", 0))  # eth0 down
        except PermissionError:
            denied.append("interface down")
    return {"denied": denied, "interfaces": sorted(n for _, n in socket.if_nameindex())}
"""
    result = run(code, network=True)
    assert result.status == "ok", result.error
    assert result.result == {
        "denied": ["raw socket", "interface down"],
        "interfaces": ["eth0", "lo"],
    }


def test_network_off_steps_touch_no_network_set_up(sandbox_config):
    box = FreshSandbox(sandbox_config)
    result = box.run(SandboxRequest("acme", "def main(x):\n    return x\n", 1, Limits()))
    assert result.status == "ok", result.error
    assert not box.network._host_ready  # no table, no forwarding, no connection tracking


def test_without_nftables_network_on_steps_say_why_and_network_off_ones_run(
    sandbox_config, monkeypatch
):
    monkeypatch.setattr(network, "_which", lambda tool: None if tool == "nft" else "/bin/ip")
    box = FreshSandbox(sandbox_config)
    code = "def main(x):\n    return x\n"
    assert box.run(SandboxRequest("acme", code, 1, Limits())).status == "ok"
    result = box.run(SandboxRequest("acme", code, 1, Limits(network=True)))
    assert result.status == "sandbox_failure"
    assert "network-on steps need nft" in result.error["message"]
    assert "scripts/install.sh" in result.error["message"]


def test_a_jail_opening_flows_too_fast_is_refused_past_the_burst(sandbox, test_host):
    # Last in this module: the jail's slot then opens no new flow for a second or two.
    code = """
import socket
def main(target):
    opened = refused = 0
    for _ in range(int(target[2])):
        try:
            socket.create_connection((target[0], target[1]), timeout=2).close()
            opened += 1
        except ConnectionRefusedError:
            refused += 1
    return [opened, refused]
"""
    attempts = network.NEW_FLOWS_BURST + 4 * network.NEW_FLOWS_PER_SECOND
    target = [ALLOWED_HOST, test_host.port, attempts]
    result = sandbox.run(SandboxRequest("acme", code, target, Limits(network=True)))
    assert result.status == "ok", result.error
    opened, refused = result.result
    assert opened >= network.NEW_FLOWS_BURST and refused > 0, result.result
