"""A ``Channel`` over the relay's mailbox (docs/PROTOCOL.md, "Mailbox").

``RelayMailbox`` is one connection to a relay, kept for the code exchanges
of one command: the sender allocates a nameplate on it (and a new one after
a wrong code), the receiver claims one. Each nameplate is a
``MailboxChannel``.

The connection logs in with a key made for it and thrown away afterwards,
never the node's own key: the relay allows one connection per key (a second
login replaces the first, which would cut the sender's data path through
the same relay), and the relay need not link a code to a node. What the
relay learns is the nameplate, the times, the sizes and the bytes of the
SPAKE2 messages and the sealed ticket, which it cannot open.
"""

from __future__ import annotations

from p2pcp.core.errors import LocalProtocolError
from p2pcp.core.identity import NodeId, SecretKey
from p2pcp.relay.client import RelayClient
from p2pcp.rendezvous.channel import MAX_MESSAGE_BYTES


def _no_packets(_source: NodeId, _datagrams: list[bytes]) -> None:
    """The mailbox connection carries no datagrams (none are sent to it)."""


class MailboxChannel:
    """One nameplate of a ``RelayMailbox``, as a ``Channel``."""

    def __init__(self, client: RelayClient, nameplate: int) -> None:
        self._client = client
        self.nameplate = nameplate
        self._is_closed = False

    async def send(self, message: bytes) -> None:
        if len(message) > MAX_MESSAGE_BYTES:
            raise LocalProtocolError(f"a code message has at most {MAX_MESSAGE_BYTES} bytes")
        self._client.mailbox_send(self.nameplate, message)

    async def receive(self, timeout_s: float) -> bytes:
        return await self._client.mailbox_receive(self.nameplate, timeout_s)

    async def close(self) -> None:
        if not self._is_closed:
            self._is_closed = True
            self._client.release_nameplate(self.nameplate)


class RelayMailbox:
    """A connection to ``relay_url`` for code exchanges; ``close()`` ends it
    (and with it every nameplate it still holds)."""

    def __init__(self, relay_url: str) -> None:
        self.relay_url = relay_url
        self._client = RelayClient(relay_url, SecretKey.generate(), on_packets=_no_packets)

    async def allocate(self, timeout_s: float, nameplate: int | None = None) -> MailboxChannel:
        """A new nameplate (``nameplate`` when given: a code the user chose),
        this side its first (ConnectError, CodeError)."""
        nameplate = await self._client.allocate_nameplate(timeout_s, nameplate)
        return MailboxChannel(self._client, nameplate)

    async def claim(self, nameplate: int, timeout_s: float) -> MailboxChannel:
        """Join ``nameplate`` as its second side (CodeError: no such code,
        already used, expired; ConnectError: no relay)."""
        await self._client.claim_nameplate(nameplate, timeout_s)
        return MailboxChannel(self._client, nameplate)

    async def close(self) -> None:
        await self._client.close()
