"""Fixtures shared by more than one test folder (helpers live in tests/support)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.memnet import sockets_forbidden

# No p2pcp that a test starts announces a short code by multicast DNS on this
# machine's real network (a sender with no relay would): traffic stays on
# loopback and in the labs' namespaces. A LAN test sets P2PCP_LAN itself.
os.environ["P2PCP_LAN"] = "off"


@pytest.fixture
def no_sockets() -> Iterator[None]:
    """The test fails if it creates an IPv4 or IPv6 socket: it must run on
    the in-memory network (tests/support/memnet.py) alone."""
    with sockets_forbidden():
        yield
