"""The code session (rendezvous/session.py) through a relay in process: the
sender's offer and the receiver's claim with real RelayClients."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from p2pcp.core.errors import CodeError
from p2pcp.relay.limits import RelayLimits
from p2pcp.rendezvous.codes import Code, parse_code
from p2pcp.rendezvous.events import (
    CodeExpired,
    CodeOffered,
    CodeRejected,
    CodeUnavailable,
    CodeUsed,
)
from p2pcp.rendezvous.mailbox import RelayMailbox
from p2pcp.rendezvous.session import CodeOffer, claim
from tests.support.aio import run_bounded, wait_until
from tests.support.relay import running_relay

TEST_TIMEOUT_S = 30.0
TICKET = "p2pcp" + "b" * 200


def _wrong(code: Code) -> Code:
    """The same nameplate and a different last word."""
    last = "apple" if code.words[-1] != "apple" else "banjo"
    return Code(code.nameplate, (*code.words[:-1], last))


def test_a_code_gives_the_receiver_the_ticket_once() -> None:
    async def body() -> None:
        async with running_relay() as server:
            events: list[object] = []
            offer = CodeOffer(RelayMailbox(server.url), word_count=3)
            code = await offer.start()
            assert len(code.words) == 3
            serving = asyncio.create_task(offer.serve(TICKET, events.append))
            claimed = await claim(parse_code(str(code)), relay_url=server.url, timeout_s=5)
            await asyncio.wait_for(serving, 10)
            assert claimed.ticket_text == TICKET
            assert events == [CodeUsed(code.nameplate, claimed.verifier)]
            # Single use: the nameplate is gone, a second claim is refused.
            await wait_until(lambda: server.mailbox.open_count == 0)
            with pytest.raises(CodeError, match=r"already used|no such code"):
                await claim(code, relay_url=server.url, timeout_s=5)

    run_bounded(body, TEST_TIMEOUT_S)


def test_a_wrong_code_is_refused_and_a_new_code_is_offered() -> None:
    async def body() -> None:
        async with running_relay() as server:
            events: list[object] = []
            offer = CodeOffer(RelayMailbox(server.url), word_count=2, words=("crossbow", "puzzle"))
            code = await offer.start()
            assert code.words == ("crossbow", "puzzle")
            serving = asyncio.create_task(offer.serve(TICKET, events.append))
            with pytest.raises(CodeError, match=r"^wrong code: .*the nameplate is burnt") as caught:
                await claim(_wrong(code), relay_url=server.url, timeout_s=5)
            assert "puzzle" not in str(caught.value) and "crossbow" not in str(caught.value)
            await wait_until(lambda: len(events) >= 2)
            rejected, offered = events[:2]
            assert isinstance(rejected, CodeRejected) and rejected.nameplate == code.nameplate
            assert isinstance(offered, CodeOffered)
            new = parse_code(offered.code)
            assert new.nameplate != code.nameplate and len(new.words) == 2
            # The burnt code stays burnt; the new one works.
            with pytest.raises(CodeError):
                await claim(code, relay_url=server.url, timeout_s=5)
            claimed = await claim(new, relay_url=server.url, timeout_s=5)
            assert claimed.ticket_text == TICKET
            await asyncio.wait_for(serving, 10)
            assert isinstance(events[-1], CodeUsed)

    run_bounded(body, TEST_TIMEOUT_S)


def test_an_unused_code_expires_on_both_sides() -> None:
    async def body() -> None:
        async with running_relay(relay_limits=RelayLimits(code_expiry_s=0.5)) as server:
            events: list[object] = []
            offer = CodeOffer(RelayMailbox(server.url), word_count=2)
            code = await offer.start()
            await asyncio.wait_for(offer.serve(TICKET, events.append), 10)
            assert events == [CodeExpired(code.nameplate)]
            with pytest.raises(CodeError, match="expired"):
                await claim(code, relay_url=server.url, timeout_s=5)

    run_bounded(body, TEST_TIMEOUT_S)


def test_the_sender_s_own_expiry_ends_the_offer() -> None:
    async def body() -> None:
        async with running_relay() as server:
            events: list[object] = []
            offer = CodeOffer(RelayMailbox(server.url), word_count=2, expiry_s=0.3)
            code = await offer.start()
            await asyncio.wait_for(offer.serve(TICKET, events.append), 10)
            assert events == [CodeExpired(code.nameplate)]
            await wait_until(lambda: server.mailbox.open_count == 0)

    run_bounded(body, TEST_TIMEOUT_S)


def test_a_lost_relay_ends_the_offer_without_a_traceback() -> None:
    async def body() -> None:
        events: list[object] = []
        async with running_relay() as server:
            offer = CodeOffer(RelayMailbox(server.url), word_count=2)
            await offer.start()
            serving = asyncio.create_task(offer.serve(TICKET, events.append))
            await asyncio.sleep(0.1)
        await asyncio.wait_for(serving, 10)
        assert len(events) == 1 and isinstance(events[0], CodeUnavailable)

    run_bounded(body, TEST_TIMEOUT_S)


def test_a_code_without_a_relay_is_a_one_line_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # With the LAN off too (with it on, the LAN is the rendezvous: lan.py).
    monkeypatch.setenv("P2PCP_HOME", str(tmp_path))
    monkeypatch.setenv("P2PCP_LAN", "off")

    async def body() -> None:
        with pytest.raises(CodeError, match="a code needs a relay"):
            await claim(parse_code("7-crossbow-puzzle"), relay_url=None, timeout_s=5)

    run_bounded(body, TEST_TIMEOUT_S)
