"""``p2pcp id``: print this node's id (its Ed25519 public key)."""

from __future__ import annotations

import sys


def node_id() -> None:
    """Print this node's id (its public key). The key is created on first use."""
    from p2pcp.core.identity import load_or_create_secret_key

    sys.stdout.write(f"{load_or_create_secret_key().public}\n")
