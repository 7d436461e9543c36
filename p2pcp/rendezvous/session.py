"""Running the code exchange over a channel: the sender's offer, the receiver's claim.

Sender (``CodeOffer``)::

    offer = CodeOffer(rendezvous, word_count=2, words=None, expiry_s=3600)
    code = await offer.start(timeout_s)   # the first code, shown beside the ticket
    await offer.serve(ticket, emit)       # until the code is used or expires

``serve`` emits ``events.CodeUsed`` once a receiver opened the ticket (the
nameplate is then released: a code is single use); after a wrong code it
emits ``CodeRejected`` and ``CodeOffered`` with a new code on a new
nameplate, at most ``MAX_WRONG_CODES`` times; ``CodeExpired`` when nobody
came in ``expiry_s``; ``CodeUnavailable`` when the rendezvous is lost. The
ticket itself is untouched by all of this: the sender keeps serving it.

Receiver::

    opened = await claim(code, relay_url=..., timeout_s=...)  # -> CodeClaimed
    opened.ticket_text, opened.verifier

``claim`` raises ``CodeError`` (exit 2) for a wrong, unknown, used or
expired code and ``ConnectError`` (exit 3) when the rendezvous or the
sender does not answer.

Picking the channel happens in two functions and nowhere else:
``sender_rendezvous`` (the sender's place to allocate nameplates) and
``open_receiver_channel`` (the receiver's way to its nameplate). Each takes
the relay (or None): a relay means its mailbox (``mailbox.py``); None means
the LAN (``lan.py``: ``LanRendezvous`` is a ``SenderRendezvous``, its
channel a ``Channel``), unless the ``lan`` setting is off. A receiver's
``--lan`` passes None even when a relay is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

from p2pcp.core.errors import CodeError, ConnectError
from p2pcp.rendezvous.channel import Channel
from p2pcp.rendezvous.codes import Code, new_code
from p2pcp.rendezvous.events import (
    CodeClaimed,
    CodeExpired,
    CodeOffered,
    CodeRejected,
    CodeUnavailable,
    CodeUsed,
)
from p2pcp.rendezvous.exchange import (
    CodeExchange,
    ExchangeEvent,
    ReceiverConfirmed,
    TicketOpened,
    WrongCode,
)

# A code lives this long unless used (the relay's own expiry, the same
# default, ends it there too): long enough to read it to someone on the
# phone after a coffee, short enough that a forgotten sender stops offering.
CODE_EXPIRY_S = 3600.0
# Connecting to the rendezvous and its answer to an allocate or a claim.
RENDEZVOUS_TIMEOUT_S = 10.0
# Once both sides are there, each message of the exchange: a sender that is
# alive answers in one round trip (the SPAKE2 arithmetic takes milliseconds).
EXCHANGE_TIMEOUT_S = 30.0
# The receiver waits this long after its last message for the sender to
# close the nameplate, so that its confirmation is delivered before its
# connection goes.
LINGER_S = 5.0
# Wrong codes a sender answers with a new code. Each wrong guess burns a
# nameplate and tells the guesser only "no"; stopping after a few keeps an
# attacker's chance at a few in 65,536 for two words.
MAX_WRONG_CODES = 5
# The relay client's CodeError for a nameplate that expired (relay/client.py).
EXPIRED_MESSAGE = "code expired"

Emit = Callable[[object], None]


class SenderRendezvous(Protocol):
    """Where a sender gets nameplates: the relay's mailbox (``RelayMailbox``)
    or, on the LAN, its own announcement."""

    async def allocate(
        self, timeout_s: float, nameplate: int | None = None
    ) -> NameplateChannel: ...

    async def close(self) -> None: ...


class NameplateChannel(Channel, Protocol):
    """A channel that knows its nameplate (the number in the code)."""

    nameplate: int


def sender_rendezvous(relay_url: str | None) -> SenderRendezvous | None:
    """The sender's rendezvous: the relay's mailbox when a relay is
    configured (then only there: its receivers use that relay); with no
    relay, its own announcement on the LAN (``lan.py``); None (no code) when
    the LAN setting is off too."""
    if relay_url is None:
        from p2pcp.rendezvous.lan import LanRendezvous, lan_settings

        lan = lan_settings()
        return LanRendezvous(lan) if lan is not None else None
    from p2pcp.rendezvous.mailbox import RelayMailbox

    return RelayMailbox(relay_url)


async def open_receiver_channel(
    code: Code, *, relay_url: str | None, timeout_s: float
) -> tuple[Channel, Callable[[], Awaitable[None]]]:
    """The receiver's channel to ``code``'s nameplate and what closes it
    (the channel, then its connection). With no relay, the LAN: the
    sender's announcement of the nameplate (``lan.py``)."""
    if relay_url is None:
        from p2pcp.rendezvous.lan import find, lan_settings

        lan = lan_settings()
        if lan is None:
            raise CodeError(
                "a code needs a relay (--relay URL, P2PCP_RELAY or the config file) "
                "or the LAN (the lan setting is off)"
            )
        lan_channel = await find(lan, code.nameplate)
        return lan_channel, lan_channel.close
    from p2pcp.rendezvous.mailbox import RelayMailbox

    mailbox = RelayMailbox(relay_url)
    try:
        channel = await mailbox.claim(code.nameplate, timeout_s)
    except BaseException:
        await mailbox.close()
        raise

    async def close() -> None:
        await channel.close()
        await mailbox.close()

    return channel, close


async def _run_exchange(
    channel: Channel, exchange: CodeExchange, *, first_timeout_s: float
) -> ExchangeEvent:
    """Feed ``exchange`` from ``channel`` until its one final event; what it
    says in answer is sent before this returns."""
    timeout_s = first_timeout_s
    while True:
        event = exchange.next_event()
        if event is not None:
            # The last word (a confirmation, or BAD) is a courtesy: the other
            # side may have ended the nameplate already.
            with contextlib.suppress(CodeError, ConnectError):
                for message in exchange.outgoing():
                    await channel.send(message)
            return event
        for message in exchange.outgoing():
            await channel.send(message)
        message = await channel.receive(timeout_s)
        timeout_s = EXCHANGE_TIMEOUT_S
        exchange.receive(message)


async def claim(code: Code, *, relay_url: str | None, timeout_s: float) -> CodeClaimed:
    """The receiver's side: the sender's ticket for ``code``."""
    channel, close = await open_receiver_channel(code, relay_url=relay_url, timeout_s=timeout_s)
    try:
        exchange = CodeExchange(code, is_sender=False)
        event = await _run_exchange(channel, exchange, first_timeout_s=EXCHANGE_TIMEOUT_S)
        await _linger(channel)
        if isinstance(event, TicketOpened) and exchange.verifier is not None:
            return CodeClaimed(ticket_text=event.ticket_text, verifier=exchange.verifier)
        reason = event.reason if isinstance(event, WrongCode) else "unexpected answer"
        raise CodeError(
            f"wrong code: {reason}; the nameplate is burnt, ask the sender for a new code"
        )
    finally:
        await close()


async def _linger(channel: Channel) -> None:
    """Wait (briefly) for the other side to end the nameplate, so that the
    last message is delivered before the connection closes."""
    try:
        while True:
            await channel.receive(LINGER_S)
    except (CodeError, ConnectError):
        return


class CodeOffer:
    """The sender's side: codes for one ticket, one at a time."""

    def __init__(
        self,
        rendezvous: SenderRendezvous,
        *,
        word_count: int,
        words: tuple[str, ...] | None = None,
        nameplate: int | None = None,
        expiry_s: float = CODE_EXPIRY_S,
    ) -> None:
        self._rendezvous = rendezvous
        self._word_count = len(words) if words else word_count
        self._words = words
        self._nameplate = nameplate
        self._expiry_s = expiry_s
        self._channel: NameplateChannel | None = None
        self.code: Code | None = None
        self.wrong_codes = 0

    async def start(self, timeout_s: float = RENDEZVOUS_TIMEOUT_S) -> Code:
        """Allocate the first nameplate: the code to show beside the ticket."""
        return await self._next_code(timeout_s)

    async def _next_code(self, timeout_s: float) -> Code:
        # The caller's nameplate and words serve once; a new code (after a
        # wrong guess) is a new random one, announced by a CodeOffered event.
        nameplate, self._nameplate = self._nameplate, None
        channel = await self._rendezvous.allocate(timeout_s, nameplate)
        self._channel = channel
        if self._words is not None:
            self.code, self._words = Code(channel.nameplate, self._words), None
        else:
            self.code = new_code(channel.nameplate, self._word_count)
        return self.code

    async def serve(self, ticket: str, emit: Emit) -> None:
        """Offer the code until it is used, it expires or the offer gives up;
        every outcome is an event (nothing here stops the sender)."""
        payload = ticket.encode("utf-8")
        loop = asyncio.get_running_loop()
        try:
            while self._channel is not None and self.code is not None:
                channel, code = self._channel, self.code
                exchange = CodeExchange(code, is_sender=True, payload=payload)
                deadline = loop.time() + self._expiry_s
                try:
                    event = await _run_exchange(
                        channel, exchange, first_timeout_s=max(0.0, deadline - loop.time())
                    )
                except ConnectError as exc:
                    # Our own wait ran out with nobody there, or the relay is gone.
                    if exchange.verifier is None and loop.time() >= deadline:
                        emit(CodeExpired(code.nameplate))
                    else:
                        emit(CodeUnavailable(str(exc)))
                    return
                except CodeError as exc:
                    # The relay ended the nameplate: expired unclaimed, or the
                    # claimer left mid-exchange (burnt, as by a wrong code).
                    if exc.message == EXPIRED_MESSAGE:
                        emit(CodeExpired(code.nameplate))
                        return
                    event = WrongCode(exc.message)
                finally:
                    await channel.close()
                    self._channel = None
                if isinstance(event, ReceiverConfirmed) and exchange.verifier is not None:
                    emit(CodeUsed(code.nameplate, exchange.verifier))
                    return
                self.wrong_codes += 1
                reason = event.reason if isinstance(event, WrongCode) else "unexpected answer"
                emit(CodeRejected(code.nameplate, reason))
                if self.wrong_codes >= MAX_WRONG_CODES:
                    emit(CodeUnavailable(f"{self.wrong_codes} wrong codes: no new code"))
                    return
                try:
                    emit(CodeOffered(str(await self._next_code(RENDEZVOUS_TIMEOUT_S))))
                except (CodeError, ConnectError) as exc:
                    emit(CodeUnavailable(str(exc)))
                    return
        finally:
            await self.close()

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()
        await self._rendezvous.close()
