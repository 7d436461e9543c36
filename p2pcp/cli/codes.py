"""Short codes on the command line: the send and receive options, the
sender's offer beside its ticket, the receiver's claim, and their messages.

``p2pcp send`` offers a code when a rendezvous is there (a relay from
``--relay``, P2PCP_RELAY or the config file: ``core.config.choose_relay``):
the code is shown beside the ticket on stderr (``Code: 7-crossbow-puzzle``),
and ``-q`` does not hide it (like the ticket, it is what the command is
for); with ``--json`` the ``ticket`` event carries ``"code"`` and later code
events are JSON lines too; stdout otherwise carries the ticket alone.
``p2pcp receive CODE`` claims it on the same relay, learns the ticket and
then receives exactly as with the ticket.

``--code WORDS`` lets a script choose the words (``crossbow-puzzle``); the
relay chooses the number, so the whole code is in the ``ticket`` event (or
on stderr). A code is never logged: only the user who asked sees it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from p2pcp.core.errors import UsageError

if TYPE_CHECKING:
    from p2pcp.cli.output import OutputMode
    from p2pcp.cli.progress import SendView
    from p2pcp.core.config import RelayUrl
    from p2pcp.rendezvous.codes import Code
    from p2pcp.rendezvous.session import CodeOffer

CodeWordsOption = Annotated[
    int,
    typer.Option(
        "--code-words",
        metavar="N",
        help="Words in the short code (2 to 8; each word makes a guess 256 times harder).",
    ),
]
CodeOption = Annotated[
    str | None,
    typer.Option(
        "--code",
        metavar="WORDS",
        help="Choose the code's words (e.g. crossbow-puzzle, from p2pcp's word list); the "
        "relay adds the number. For scripts: the full code is in the --json ticket event.",
    ),
]
NoCodeOption = Annotated[
    bool, typer.Option("--no-code", help="Offer no short code, only the ticket.")
]
VerifyOption = Annotated[
    bool,
    typer.Option(
        "--verify",
        help="Show a verification string derived from the code's key; both sides show the "
        "same one (compare them if you want to be sure no one stood in between).",
    ),
]


@dataclass(frozen=True)
class SendCodePlan:
    """What the sender was asked for: a code with these words (or random
    ones), on this relay."""

    relay_url: RelayUrl
    word_count: int
    words: tuple[str, ...] | None
    is_verify: bool


def send_code_plan(
    *,
    code: str | None,
    code_words: int,
    no_code: bool,
    verify: bool,
    relay_url: RelayUrl | None,
) -> SendCodePlan | None:
    """The sender's code options, checked before anything starts; None: no code."""
    from p2pcp.rendezvous.codes import check_word_count, looks_like_code, parse_words

    check_word_count(code_words)
    if no_code:
        if code is not None:
            raise UsageError("--code and --no-code contradict each other")
        return None
    words = None
    if code is not None:
        if looks_like_code(code):
            raise UsageError(
                "--code: give the words only (e.g. crossbow-puzzle); the relay chooses the number"
            )
        words = parse_words(code, "--code")
    if relay_url is None:
        if code is not None:
            raise UsageError("--code needs a relay (--relay URL, P2PCP_RELAY or the config file)")
        return None
    return SendCodePlan(relay_url, len(words) if words else code_words, words, verify)


async def send_with_code(
    plan: SendCodePlan | None,
    run_send: Callable[[Callable[[object], None]], Awaitable[None]],
    emit: Callable[[object], None],
    view: SendView,
) -> None:
    """``run_send(emit)`` with a code offered beside its ticket: the first
    code is allocated before the ticket is shown (so the ticket event can
    carry it); the offer runs once the sender is ready, until the code is
    used, expires or the sender stops. No code (no relay reached) is one
    line, and the sender goes on with its ticket."""
    from p2pcp.core.errors import CodeError, ConnectError
    from p2pcp.rendezvous.session import CodeOffer, sender_rendezvous
    from p2pcp.transfer import events

    if plan is None:
        await run_send(emit)
        return
    code_view = CodeView(view.mode, is_verify=plan.is_verify)
    offer: CodeOffer | None = None
    rendezvous = sender_rendezvous(str(plan.relay_url))
    if rendezvous is not None:
        offer = CodeOffer(rendezvous, word_count=plan.word_count, words=plan.words)
        try:
            view.code = str(await offer.start())
        except (CodeError, ConnectError) as exc:
            await offer.close()
            offer = None
            code_view.unavailable(str(exc))
    serving: list[asyncio.Task[None]] = []

    def emit_and_offer(event: object) -> None:
        emit(event)
        if offer is not None and not serving and isinstance(event, events.SenderReady):
            serving.append(asyncio.create_task(offer.serve(event.ticket, code_view.handle)))

    try:
        await run_send(emit_and_offer)
    finally:
        for task in serving:
            task.cancel()
        await asyncio.gather(*serving, return_exceptions=True)
        if offer is not None:
            await offer.close()


class CodeView:
    """The sender's code events, for people (stderr) or scripts (JSON)."""

    def __init__(self, mode: OutputMode, *, is_verify: bool) -> None:
        self.mode = mode
        self.is_verify = is_verify

    def handle(self, event: object) -> None:
        from p2pcp.rendezvous import events

        match event:
            case events.CodeOffered(code=code):
                self._json("code", code=code)
                # Like the first code, a new one is shown even with -q.
                self._say(f"New code: {code} (p2pcp receive {code})", always=True)
            case events.CodeUsed(nameplate=nameplate, verifier=verifier):
                shown = verifier if self.is_verify else None
                self._json("code_used", nameplate=nameplate, verifier=shown)
                self._say("the code was used: a receiver has the ticket (the code is spent)")
                if shown is not None:
                    self._say(f"Verifier: {shown} (the receiver shows the same)", always=True)
            case events.CodeRejected(nameplate=nameplate, reason=reason):
                self._json("code_rejected", nameplate=nameplate, reason=reason)
                self._say(
                    f"someone tried a wrong code: nameplate {nameplate} is burnt "
                    "(the ticket still works)"
                )
            case events.CodeExpired(nameplate=nameplate):
                self._json("code_expired", nameplate=nameplate)
                self._say("the code expired; the ticket still works")
            case events.CodeUnavailable(reason=reason):
                self.unavailable(reason)

    def unavailable(self, reason: str) -> None:
        self._json("code_unavailable", reason=reason)
        self._say(f"no code: {reason}; the ticket still works")

    def _json(self, event: str, **fields: Any) -> None:
        if self.mode.is_json:
            self.mode.json(event, **fields)

    def _say(self, text: str, *, always: bool = False) -> None:
        from p2pcp.cli.output import console

        if self.mode.shows_messages or (always and not self.mode.is_json):
            console.print(text, markup=False, highlight=False)


def claim_ticket(
    code: Code, *, relay: str | None, no_relay: bool, verify: bool, mode: OutputMode
) -> str:
    """``p2pcp receive CODE``: the sender's ticket for the code (CodeError,
    exit 2, for a wrong, unknown, used or expired code)."""
    from p2pcp.cli.common import run_async
    from p2pcp.cli.output import console
    from p2pcp.core.config import choose_relay, load_config
    from p2pcp.rendezvous.session import RENDEZVOUS_TIMEOUT_S, claim

    relay_url = choose_relay(relay, no_relay, load_config())
    claimed = run_async(
        claim(
            code,
            relay_url=str(relay_url) if relay_url is not None else None,
            timeout_s=RENDEZVOUS_TIMEOUT_S,
        )
    )
    if mode.is_json:
        mode.json(
            "code_opened",
            nameplate=code.nameplate,
            verifier=claimed.verifier if verify else None,
        )
    elif verify:
        console.print(
            f"Verifier: {claimed.verifier} (the sender shows the same)",
            markup=False,
            highlight=False,
        )
    return claimed.ticket_text
