"""Whether the tests run in a network namespace that has nothing but loopback.

The suite is meant to run as `unshare -n sh -c 'ip link set lo up && exec pytest ...'`:
then no packet can leave the machine, whatever a peer gathers or resolves. Tests can
report or require it; outside such a namespace they must still keep to 127.0.0.1.

The interfaces come from the kernel (if_nameindex), not /sys/class/net: `unshare -n`
makes no new mount namespace, so sysfs still lists the interfaces of the namespace it was
mounted in (eth0 and all).
"""

from __future__ import annotations

import socket


def network_interfaces() -> set[str]:
    """Names of the network interfaces in this process's network namespace."""
    return {name for _, name in socket.if_nameindex()}


def in_loopback_only_netns() -> bool:
    """True if `lo` is the only network interface (as after `unshare -n`)."""
    return network_interfaces() == {"lo"}
