"""Fixtures shared by more than one test folder (helpers live in tests/support)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests.support.memnet import sockets_forbidden

# No p2pcp that a test starts announces a short code by multicast DNS on this
# machine's real network (a sender with no relay would): traffic stays on
# loopback and in the labs' namespaces. A LAN test sets P2PCP_LAN itself.
os.environ["P2PCP_LAN"] = "off"

# A shell that starts a command in the background without job control (a CI
# runner, `cmd &` in a script) starts it with SIGINT ignored, and every
# process it starts inherits that: the p2pcp processes the tests interrupt
# with SIGINT (Ctrl-C) would then ignore it, as they should. A handler (not
# SIG_IGN) is reset to the default on exec, so the children start as from a
# terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def no_sockets() -> Iterator[None]:
    """The test fails if it creates an IPv4 or IPv6 socket: it must run on
    the in-memory network (tests/support/memnet.py) alone."""
    with sockets_forbidden():
        yield
