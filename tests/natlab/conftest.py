"""Fixtures for the NAT lab: skip unless it can run, build labs, clean up.

Every test here gets a fresh lab (``make_lab``) that is torn down in a
finalizer, even when the test fails. A session fixture first removes labs
left behind by pytest processes that are gone (killed runs), and at the end
removes any of this session's own that a finalizer missed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.netlab.natlab import (
    NatKind,
    NatLab,
    build_lab,
    lab_unavailable_reason,
    remove_leftover_labs,
)


@pytest.fixture(scope="session", autouse=True)
def natlab_available() -> Iterator[None]:
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    remove_leftover_labs()
    yield
    remove_leftover_labs(including_own=True)


MakeLab = Callable[[NatKind, NatKind], NatLab]


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[MakeLab]:
    labs: list[NatLab] = []

    def make(nat_a: NatKind, nat_b: NatKind) -> NatLab:
        lab = build_lab(nat_a, nat_b, tmp_path)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.teardown()


@dataclass(frozen=True)
class Node:
    """One p2pcp node: its own P2PCP_HOME, no relay from the environment."""

    home: Path
    extra_env: tuple[tuple[str, str], ...] = ()

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("P2PCP_RELAY", None)
        env.pop("P2PCP_MAX_DATAGRAM_SIZE", None)
        env["P2PCP_HOME"] = str(self.home)
        # Failures here are read from the logs: keep the traceback.
        env["P2PCP_DEBUG"] = "1"
        env["COLUMNS"] = "120"
        env.update(self.extra_env)
        return env


@pytest.fixture
def make_node(tmp_path: Path) -> Callable[..., Node]:
    count = iter(range(1000))

    def make(**extra_env: str) -> Node:
        home = tmp_path / f"home{next(count)}"
        home.mkdir()
        return Node(home, tuple(extra_env.items()))

    return make
