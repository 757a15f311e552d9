"""Networking for jails with network on: one network namespace per sandbox slot.

A network-off jail gets an empty namespace of its own from nsjail (`clone_newnet`), and
nothing here runs for it. A network-on jail runs in the namespace of its slot: nsjail is
spawned from a thread that has entered that namespace (setns is per thread) and keeps
`clone_newnet` off, so the jail sits in it. Each slot's namespace is made once, the first
time a network-on step needs it, and then kept:

    jail (uid_base + n)             host
    eth0 100.64.x.y/31  <-- veth -->  swj<uid> 100.64.x.y-1/31 --> NAT --> the world

The host filters in an nftables table of its own, `inet stepwell`, matching the host ends
by name (`swj*`): anything from a jail to an address of the host itself is rejected in the
input hook (so every host address is covered, whichever it has now or gets later); what
it forwards is rejected when it goes to a blocked range (ranges.py) or is IPv6, and is
masqueraded otherwise; nothing from outside is forwarded into a jail unless it answers
the jail. The slot's namespace has the same range filter on its own output hook, which
the jail cannot touch (it holds no capability over a namespace of the host's user
namespace), so a host firewall reload that drops the host's table does not open the
private ranges.

Why not user-mode networking (nsjail's `--use_pasta`): pasta opens the jail's
connections as ordinary sockets of the host, as user nobody, so filtering them means host
rules keyed on a uid other services share; it is one more process per step, started
without waiting for it to be ready; its defaults forward ports between the jail's and the
host's loopback unless each is turned off, and nsjail's version of the flags does not
reach all of them; and Debian 12's pasta predates most of those flags. A veth pair per
slot costs nothing per step (two setns calls), is filtered by the kernel, and outlives any
worker: a dead worker leaves its slot's namespace as it found it, ready for the next jail.
What it needs: `ip` (iproute2), `nft` (nftables) and IPv4 forwarding on the host.
"""

import contextlib
import ipaddress
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from execution.sandbox.config import SandboxSetupError
from execution.sandbox.ranges import BLOCKED_V4, BLOCKED_V6

logger = logging.getLogger(__name__)

TABLE = "stepwell"
HOST_PREFIX = "swj"  # host ends are swj<uid>: 15 characters at most for any uid
NETNS_DIR = Path("/run/netns")
JAIL_IFACE = "eth0"
READY = "stepwell-jail-ready"  # the host end's alias, set last: a slot made to the end
SLOT_SUBNET = ipaddress.IPv4Network("100.64.0.0/10")  # a /31 per uid, from the uid
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
COMMAND_SECONDS = 10


def netns_name(uid: int) -> str:
    return f"stepwell-{uid}"


def netns_path(uid: int) -> Path:
    return NETNS_DIR / netns_name(uid)


def host_iface(uid: int) -> str:
    return f"{HOST_PREFIX}{uid}"


def slot_addresses(uid: int) -> tuple[str, str]:
    """(host end, jail end) of the uid's /31: one per uid, so slots never share a route."""
    pairs = SLOT_SUBNET.num_addresses // 2
    base = SLOT_SUBNET.network_address + 2 * (uid % pairs)
    return str(base), str(base + 1)


def _elements(ranges: Iterable[str]) -> str:
    return "{ " + ", ".join(ranges) + " }"


REFUSE = """
    chain refuse {
        meta l4proto tcp reject with tcp reset
        reject with icmpx type admin-prohibited
    }"""
# A refused TCP connection gets a reset: the kernel rate-limits ICMP errors (about one a
# second after a burst), so refusing by ICMP alone leaves a probing step waiting seconds.


# Each forwarded flow takes an entry in the host's connection tracking table, which the
# host's own connections share (new ones are dropped when it is full); closed TCP flows
# stay there for two minutes. So each jail (one source address) gets a cap on its live
# flows and on how fast it opens new ones, far above what a step that calls some APIs
# needs, far below what fills the table (nf_conntrack_max, 262144 on a 24 GB machine).
LIVE_FLOWS = 256
NEW_FLOWS_PER_SECOND = 100
NEW_FLOWS_BURST = 300


def host_rules() -> str:
    """The host's table, replaced whole in one transaction (so never half there)."""
    jails = f'"{HOST_PREFIX}*"'
    live = f"add @live_flows {{ ip saddr ct count over {LIVE_FLOWS} }}"
    per_second = f"{NEW_FLOWS_PER_SECOND}/second burst {NEW_FLOWS_BURST} packets"
    rate = f"update @new_flows {{ ip saddr limit rate over {per_second} }}"
    return f"""
table inet {TABLE} {{}}
delete table inet {TABLE}
table inet {TABLE} {{{REFUSE}
    set live_flows {{ type ipv4_addr; size 65536; flags dynamic; }}
    set new_flows {{ type ipv4_addr; size 65536; flags dynamic,timeout; timeout 1m; }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname {jails} jump refuse
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        oifname {jails} ct state established,related accept
        oifname {jails} drop
        iifname {jails} meta nfproto ipv6 jump refuse
        iifname {jails} ip daddr {_elements(BLOCKED_V4)} jump refuse
        iifname {jails} ct state new {live} jump refuse
        iifname {jails} ct state new {rate} jump refuse
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        iifname {jails} oifname != {jails} meta nfproto ipv4 masquerade
    }}
}}
"""


def slot_rules() -> str:
    """The same ranges, inside a slot's namespace, where the jail cannot change them."""
    return f"""
table inet {TABLE} {{{REFUSE}
    chain output {{
        type filter hook output priority filter; policy accept;
        oifname "lo" accept
        ip6 daddr {_elements(BLOCKED_V6)} jump refuse
        meta nfproto ipv6 jump refuse
        ip daddr {_elements(BLOCKED_V4)} jump refuse
    }}
}}
"""


def _run(*argv: str, stdin: str | None = None) -> None:
    try:
        subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
            timeout=COMMAND_SECONDS,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
    except subprocess.CalledProcessError as exc:
        raise SandboxSetupError(
            f"{' '.join(argv[:4])} failed: {exc.stderr.strip() or exc.returncode}"
        ) from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxSetupError(f"{argv[0]} failed: {exc}") from None


@contextlib.contextmanager
def entered(path: Path) -> Iterator[None]:
    """This thread in the network namespace at `path`, back in its own afterwards.

    setns(CLONE_NEWNET) moves only the calling thread, and a process it spawns meanwhile
    starts there; the worker's other threads (lease renewal, database) never move.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.setns(target, os.CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            yield
        finally:
            os.setns(own, os.CLONE_NEWNET)
    finally:
        os.close(own)


def inside(path: Path | None) -> contextlib.AbstractContextManager[None]:
    """Spawn in here to start a process in the namespace at `path`, or where it is if None."""
    return entered(path) if path is not None else contextlib.nullcontext()


def _write_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value)


class Network:
    """The host side (made with the first slot), each slot's namespace, and their removal.

    The host's table waits for the first network-on step of the process: its rules turn on
    connection tracking for all of the host's traffic, which a machine whose tenants all
    run without network should not pay for.
    """

    def __init__(self) -> None:
        self.error: str | None = None  # why network-on steps cannot run, if they cannot
        self._host_ready = False
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """At start-up: a machine without the tools still runs network-off steps; network-on
        steps then fail with the reason."""
        missing = [tool for tool in ("ip", "nft") if _which(tool) is None]
        self.error = None
        if missing:
            self.error = (
                f"network-on steps need {' and '.join(missing)} "
                "(iproute2, nftables): run scripts/install.sh"
            )
            logger.error("%s", self.error)

    def apply_host_rules(self) -> None:
        """Replace the host's table whole, and turn IPv4 forwarding on."""
        _run("nft", "-f", "-", stdin=host_rules())
        if IP_FORWARD.read_text().strip() != "1":
            logger.warning("enabling IPv4 forwarding for network-on sandboxes")
            IP_FORWARD.write_text("1")
        self._host_ready = True

    def slot(self, uid: int) -> Path:
        """The slot's namespace, made now if it is not whole. Call it holding the slot."""
        if self.error:
            raise SandboxSetupError(self.error)
        if not self._host_ready:
            with self._lock:
                if not self._host_ready:
                    self.apply_host_rules()
        path = netns_path(uid)
        if path.exists() and _alias(host_iface(uid)) == READY:
            return path
        remove_slot(uid)
        try:
            _make_slot(uid)
        except (OSError, SandboxSetupError):
            remove_slot(uid)
            raise
        return path


def _which(tool: str) -> str | None:
    return shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")


def _alias(iface: str) -> str:
    try:
        return Path("/sys/class/net", iface, "ifalias").read_text().strip()
    except OSError:
        return ""


def _make_slot(uid: int) -> None:
    name, iface, path = netns_name(uid), host_iface(uid), netns_path(uid)
    host_ip, jail_ip = slot_addresses(uid)
    _run("ip", "netns", "add", name)
    with entered(path):
        # Before the veth exists, so its jail end never gets an IPv6 address; the jail's
        # own loopback keeps ::1.
        _write_sysctl("net.ipv6.conf.default.disable_ipv6", "1")
        _run("nft", "-f", "-", stdin=slot_rules())
    _run("ip", "link", "add", iface, "type", "veth", "peer", "name", JAIL_IFACE, "netns", name)
    _write_sysctl(f"net.ipv6.conf.{iface}.disable_ipv6", "1")
    _run("ip", "addr", "add", f"{host_ip}/31", "dev", iface)
    _run("ip", "link", "set", iface, "up")
    _run("ip", "-n", name, "addr", "add", f"{jail_ip}/31", "dev", JAIL_IFACE)
    _run("ip", "-n", name, "link", "set", JAIL_IFACE, "up")
    _run("ip", "-n", name, "link", "set", "lo", "up")
    _run("ip", "-n", name, "route", "add", "default", "via", host_ip)
    _run("ip", "link", "set", iface, "alias", READY)


def remove_slot(uid: int) -> None:
    """Remove the slot's namespace and veth, whatever state they are in."""
    # The veth first: a namespace goes away in the background (or, while a process holds
    # it, not at all), and its end of the veth with it.
    if Path("/sys/class/net", host_iface(uid)).exists():
        _run("ip", "link", "delete", host_iface(uid))
    if netns_path(uid).exists():
        _run("ip", "netns", "delete", netns_name(uid))


def remove(uids: Iterable[int]) -> None:
    """Remove these slots' namespaces, and the host's table once no slot of any uid is left."""
    for uid in uids:
        remove_slot(uid)
    left = [p for p in Path("/sys/class/net").iterdir() if p.name.startswith(HOST_PREFIX)]
    if not left and _which("nft"):
        _run("nft", "-f", "-", stdin=f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\n")
