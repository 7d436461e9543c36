"""The one seam between the code exchange and whatever carries its messages.

A ``Channel`` joins the two sides of one nameplate: the relay's mailbox
(``rendezvous.mailbox``) or a direct TCP connection found on the LAN (``rendezvous.lan``).
``rendezvous.session`` runs a ``CodeExchange`` over any of them and never learns
which; tests can put an in-memory pair behind it.

Rules every channel keeps:

- ``send`` delivers whole messages, in order, each at most
  ``MAX_MESSAGE_BYTES`` (the relay's mailbox limit); it does not wait for
  the other side to be there (a mailbox keeps what was sent before the
  other side arrived).
- ``receive(timeout_s)`` returns the other side's next message. A channel
  that the other side or the rendezvous closed, or a nameplate that is
  unknown, used or expired, raises ``CodeError`` (exit 2) saying which; no
  message within ``timeout_s`` raises ``ConnectError`` (exit 3).
- ``close()`` releases the nameplate (single use) and is idempotent.
"""

from __future__ import annotations

from typing import Protocol

# The relay's mailbox carries bodies of up to 4 KiB (docs/PROTOCOL.md).
MAX_MESSAGE_BYTES = 4096


class Channel(Protocol):
    """Both ends of one nameplate, seen from one side."""

    async def send(self, message: bytes) -> None: ...

    async def receive(self, timeout_s: float) -> bytes: ...

    async def close(self) -> None: ...
