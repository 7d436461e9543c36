"""Fixtures shared by more than one test folder (helpers live in tests/support)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.memnet import sockets_forbidden


@pytest.fixture
def no_sockets() -> Iterator[None]:
    """The test fails if it creates an IPv4 or IPv6 socket: it must run on
    the in-memory network (tests/support/memnet.py) alone."""
    with sockets_forbidden():
        yield
