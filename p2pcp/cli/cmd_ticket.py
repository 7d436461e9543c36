"""``p2pcp ticket TICKET``: decode a ticket and show its fields."""

from __future__ import annotations

from typing import Annotated

import typer

_KIND_WORDS = {
    "files": "files (p2pcp send PATH)",
    "text": "a text message (p2pcp send --text)",
    "stream": "a stream (p2pcp send -: receive it with --out - or into a folder)",
    "share": "a share (p2pcp share PATH: each receive gets what it holds then)",
}


def ticket(
    text: Annotated[str, typer.Argument(metavar="TICKET", help="The ticket to decode.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the fields as JSON.")] = False,
) -> None:
    """Decode a ticket and show what it holds (sender, type, addresses, size).

    Its type is how it says to reach the sender: full (a relay and
    addresses), relay (a relay and no IP address) or addresses (no relay).
    """
    from p2pcp.cli.output import OutputMode, human_bytes
    from p2pcp.core.identity import NodeId
    from p2pcp.core.ticket import TicketKind, decode_ticket

    decoded = decode_ticket(text)
    is_share = decoded.kind is TicketKind.SHARE
    node = NodeId(decoded.node_id)
    addresses = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in decoded.addresses]
    if as_json:
        OutputMode(is_json=True).json(
            "ticket",
            node_id=str(node),
            ticket_type=str(decoded.type) if decoded.type else None,
            kind=str(decoded.kind),
            relay_url=decoded.relay_url,
            addresses=addresses,
            # A share's root field is its secret: shown only inside the ticket.
            root_hash=None if is_share else decoded.root_hash.hex(),
            total_size=None if is_share else decoded.total_size,
        )
        return
    import sys

    lines = [
        f"node id:    {node}",
        f"type:       {decoded.type or '(none: neither a relay nor an address)'}",
        f"offers:     {_KIND_WORDS[str(decoded.kind)]}",
        f"relay:      {decoded.relay_url or '(none)'}",
        f"addresses:  {', '.join(addresses) or '(none)'}",
        f"root hash:  {decoded.root_hash.hex()}",
        f"total size: {decoded.total_size:,} bytes ({human_bytes(decoded.total_size)})",
    ]
    if decoded.kind is TicketKind.STREAM:  # no content hash and no size yet
        lines[-2:] = [f"stream id:  {decoded.root_hash.hex()}", "total size: (unknown: a stream)"]
    if is_share:  # its secret is not shown; the root and size come with each receive
        lines[-2:] = ["root hash:  (none: the share's current snapshot's, when it is received)"]
    sys.stdout.write("\n".join(lines) + "\n")
