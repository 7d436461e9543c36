"""The code session (rendezvous/session.py) on the LAN: with no relay, the
sender announces and the receiver finds, through session's one place that
picks the channel. On 127.0.0.1 (``P2PCP_LAN``), real multicast DNS and TCP.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from p2pcp.core.errors import CodeError
from p2pcp.rendezvous.codes import Code, new_code
from p2pcp.rendezvous.events import CodeOffered, CodeRejected, CodeUsed
from p2pcp.rendezvous.lan import LanRendezvous
from p2pcp.rendezvous.session import CodeOffer, claim, sender_rendezvous
from tests.support.aio import run_bounded, wait_until

TICKET = "p2pcp" + "t" * 200
TEST_TIMEOUT_S = 60.0


@pytest.fixture
def loopback_lan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("P2PCP_HOME", str(tmp_path))
    monkeypatch.setenv("P2PCP_LAN", "127.0.0.1")


def other_words(code: Code) -> Code:
    """The same nameplate with other words: a wrong code for it."""
    while True:
        guess = new_code(code.nameplate, len(code.words))
        if guess.words != code.words:
            return guess


@pytest.mark.usefixtures("loopback_lan")
def test_with_no_relay_a_code_goes_over_the_lan() -> None:
    async def body() -> None:
        rendezvous = sender_rendezvous(None)
        assert isinstance(rendezvous, LanRendezvous)
        offer = CodeOffer(rendezvous, word_count=2)
        code = await offer.start()
        events: list[object] = []
        serving = asyncio.create_task(offer.serve(TICKET, events.append))
        claimed = await claim(code, relay_url=None, timeout_s=10)
        assert claimed.ticket_text == TICKET
        await asyncio.wait_for(serving, 10)
        assert events == [CodeUsed(code.nameplate, claimed.verifier)]
        # Single use: the nameplate is gone from the LAN.
        with pytest.raises(
            CodeError, match=f"no sender on this LAN announces nameplate {code.nameplate} "
        ):
            await claim(code, relay_url=None, timeout_s=10)

    run_bounded(body, TEST_TIMEOUT_S)


@pytest.mark.usefixtures("loopback_lan")
def test_a_wrong_code_on_the_lan_burns_the_nameplate_and_the_sender_offers_a_new_one() -> None:
    async def body() -> None:
        rendezvous = sender_rendezvous(None)
        assert rendezvous is not None
        offer = CodeOffer(rendezvous, word_count=2)
        code = await offer.start()
        events: list[object] = []
        serving = asyncio.create_task(offer.serve(TICKET, events.append))
        try:
            with pytest.raises(CodeError, match="wrong code"):
                await claim(other_words(code), relay_url=None, timeout_s=10)
            await wait_until(lambda: any(isinstance(e, CodeOffered) for e in events))
            rejected, offered = events[:2]
            assert isinstance(rejected, CodeRejected) and rejected.nameplate == code.nameplate
            assert isinstance(offered, CodeOffered) and offered.code != str(code)
            # The burnt code stays burnt; the new one works.
            with pytest.raises(CodeError):
                await claim(code, relay_url=None, timeout_s=10)
            assert offer.code is not None and str(offer.code) == offered.code
            claimed = await claim(offer.code, relay_url=None, timeout_s=10)
            assert claimed.ticket_text == TICKET
            await asyncio.wait_for(serving, 10)
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)

    run_bounded(body, TEST_TIMEOUT_S)


def test_with_the_lan_off_and_no_relay_there_is_no_rendezvous(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("P2PCP_HOME", str(tmp_path))
    monkeypatch.setenv("P2PCP_LAN", "off")
    assert sender_rendezvous(None) is None
