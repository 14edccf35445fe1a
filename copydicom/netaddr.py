"""Small address helpers shared by the servers copydicom runs (console, metrics, DIMSE)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address (``127.0.0.0/8``, ``::1``).

    Other host names are not resolved: a name is not loopback (security defaults closed).
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
