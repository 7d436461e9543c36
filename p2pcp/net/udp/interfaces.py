"""Local interface addresses, without external dependencies.

``interface_addresses()`` lists the unicast addresses of every interface
that is up, via libc ``getifaddrs`` (ctypes), falling back to
``/proc/net/if_inet6`` plus ``SIOCGIFADDR`` where ctypes cannot load libc.
The "connect a UDP socket and read its name" trick is not enough: it needs a
default route, and p2pcp must work on machines with only a LAN or only lo.

Invariants: link-local IPv6 (fe80::/10) is skipped (it needs a scope id,
which tickets do not carry), as are IPv4 link-local 169.254/16, unspecified
and multicast addresses. Loopback is kept and flagged, so the caller can
order it (a host whose only interface is lo, as in a test namespace, must
still offer a loopback candidate, or nothing could dial it).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import ipaddress
import socket
import struct
import sys
from dataclasses import dataclass

_IFF_UP = 0x1
_SIOCGIFADDR = 0x8915


@dataclass(frozen=True)
class InterfaceAddress:
    """One usable unicast address of a local interface."""

    host: str
    is_ipv6: bool
    is_loopback: bool


class _Sockaddr(ctypes.Structure):
    _fields_ = [("sa_family", ctypes.c_ushort), ("sa_data", ctypes.c_char * 14)]


class _SockaddrBsd(ctypes.Structure):
    _fields_ = [
        ("sa_len", ctypes.c_ubyte),
        ("sa_family", ctypes.c_ubyte),
        ("sa_data", ctypes.c_char * 14),
    ]


class _Ifaddrs(ctypes.Structure):
    pass


_Ifaddrs._fields_ = [
    ("ifa_next", ctypes.POINTER(_Ifaddrs)),
    ("ifa_name", ctypes.c_char_p),
    ("ifa_flags", ctypes.c_uint),
    ("ifa_addr", ctypes.c_void_p),
    ("ifa_netmask", ctypes.c_void_p),
    ("ifa_ifu", ctypes.c_void_p),
    ("ifa_data", ctypes.c_void_p),
]


def _usable(host: str) -> InterfaceAddress | None:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if ip.is_link_local or ip.is_unspecified or ip.is_multicast:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return None
    return InterfaceAddress(host=str(ip), is_ipv6=ip.version == 6, is_loopback=ip.is_loopback)


def _from_getifaddrs() -> list[InterfaceAddress] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        getifaddrs = libc.getifaddrs
        freeifaddrs = libc.freeifaddrs
    except (OSError, AttributeError):
        return None
    head = ctypes.POINTER(_Ifaddrs)()
    if getifaddrs(ctypes.byref(head)) != 0:
        return None
    is_bsd = sys.platform != "linux"
    found: list[InterfaceAddress] = []
    try:
        node = head
        while node:
            entry = node.contents
            node = entry.ifa_next
            if not entry.ifa_addr or not entry.ifa_flags & _IFF_UP:
                continue
            sockaddr_type = _SockaddrBsd if is_bsd else _Sockaddr
            family = ctypes.cast(entry.ifa_addr, ctypes.POINTER(sockaddr_type)).contents.sa_family
            if family == socket.AF_INET:
                # sockaddr_in: family(2) port(2) addr(4)
                raw = ctypes.string_at(entry.ifa_addr + 4, 4)
            elif family == socket.AF_INET6:
                # sockaddr_in6: family(2) port(2) flowinfo(4) addr(16) scope(4)
                raw = ctypes.string_at(entry.ifa_addr + 8, 16)
            else:
                continue
            usable = _usable(socket.inet_ntop(family, raw))
            if usable is not None and usable not in found:
                found.append(usable)
    finally:
        freeifaddrs(head)
    return found


def _from_proc_and_ioctl() -> list[InterfaceAddress]:
    found: list[InterfaceAddress] = []
    with contextlib.suppress(OSError), open("/proc/net/if_inet6") as lines:
        for line in lines:
            fields = line.split()
            if len(fields) >= 6:
                text = ":".join(fields[0][i : i + 4] for i in range(0, 32, 4))
                usable = _usable(text)
                if usable is not None and usable not in found:
                    found.append(usable)
    try:
        names = socket.if_nameindex()
    except OSError:
        names = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _index, ifname in names:
            try:
                import fcntl  # POSIX only

                request = struct.pack("256s", ifname.encode()[:15])
                reply = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
            except (OSError, ImportError):
                continue
            usable = _usable(socket.inet_ntoa(reply[20:24]))
            if usable is not None and usable not in found:
                found.append(usable)
    return found


def interface_addresses() -> list[InterfaceAddress]:
    """Every usable unicast address of the interfaces that are up."""
    found = _from_getifaddrs()
    if found is None:
        found = _from_proc_and_ioctl()
    return found
