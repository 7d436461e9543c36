"""Short codes on the command line: the send and receive options, the
sender's offer beside its ticket, the receiver's claim, and their messages.

``p2pcp send`` offers a code when a rendezvous is there (a relay from
``--relay``, P2PCP_RELAY or the config file: ``core.config.choose_relay``;
with no relay, the LAN, by multicast DNS, unless the ``lan`` setting is
off; a sender with a relay offers its code on the relay only):
the code is shown beside the ticket on stderr (``Code: 7-crossbow-puzzle``),
and ``-q`` does not hide it (like the ticket, it is what the command is
for); with ``--json`` the ``ticket`` event carries ``"code"`` and later code
events are JSON lines too; stdout otherwise carries the ticket alone.
``p2pcp receive CODE`` claims it on the same relay (with no relay, or with
``--lan``, on the LAN), learns the ticket and then receives exactly as with
the ticket.

``--code CODE`` lets a script choose the code: a full code
(``7-crossbow-puzzle``: the number too, refused with one line when the relay
or the LAN has it in use) or the words only (``crossbow-puzzle``: the relay
chooses the number, so the whole code is in the ``ticket`` event, or on
stderr). It serves once: after a wrong guess the sender offers a new random
code, in a ``code`` event. A code is never logged: only the user who asked
sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        metavar="CODE",
        help="Choose the code: a full one (e.g. 42-crossbow-puzzle; the number is 1 to "
        "999999) or the words only (crossbow-puzzle; the relay adds the number), words from "
        "p2pcp's word list. For scripts: the full code is in the --json ticket event; after "
        "a wrong guess the sender offers a new random code, in a --json code event.",
    ),
]
NoCodeOption = Annotated[
    bool, typer.Option("--no-code", help="Offer no short code, only the ticket.")
]
LanOption = Annotated[
    bool,
    typer.Option(
        "--lan",
        help="Find the code's sender on this LAN (multicast DNS) even when a relay is "
        "configured (a sender with no relay offers its code there).",
    ),
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
    ones), on this relay (None: on the LAN)."""

    relay_url: RelayUrl | None
    word_count: int
    words: tuple[str, ...] | None
    is_verify: bool
    # The nameplate of a full code given with --code (None: any).
    nameplate: int | None = None


def send_code_plan(
    *,
    code: str | None,
    code_words: int,
    no_code: bool,
    verify: bool,
    relay_url: RelayUrl | None,
) -> SendCodePlan | None:
    """The sender's code options, checked before anything starts; None: no code."""
    from p2pcp.rendezvous.codes import check_word_count, looks_like_code, parse_code, parse_words

    check_word_count(code_words)
    if no_code:
        if code is not None:
            raise UsageError("--code and --no-code contradict each other")
        return None
    words = None
    nameplate = None
    if code is not None:
        if looks_like_code(code):
            chosen = parse_code(code)
            nameplate, words = check_chosen_nameplate(chosen.nameplate), chosen.words
        else:
            words = parse_words(code, "--code")
    if relay_url is None:
        from p2pcp.rendezvous.lan import lan_settings

        if lan_settings() is None:
            if code is not None:
                raise UsageError(
                    "--code needs a relay (--relay URL, P2PCP_RELAY or the config file) "
                    "or the LAN (the lan setting is off)"
                )
            return None
    return SendCodePlan(relay_url, len(words) if words else code_words, words, verify, nameplate)


def check_chosen_nameplate(nameplate: int) -> int:
    """The number of a code given with ``--code``: 1 to 999,999 (a number people type)."""
    from p2pcp.relay.frames import MAX_REQUESTED_NAMEPLATE

    if not 1 <= nameplate <= MAX_REQUESTED_NAMEPLATE:
        raise UsageError(
            f"--code: the number of a chosen code is 1 to {MAX_REQUESTED_NAMEPLATE:,} "
            f"(got {nameplate:,})"
        )
    return nameplate


# How long a ready sender holds its ticket back for the first code, when the
# relay is slow to hand out a nameplate: the code then appears beside the
# ticket. A relay that does not answer in this time costs no more: the
# ticket is shown, and the code follows on its own line when it comes.
FIRST_CODE_WAIT_S = 2.0


async def send_with_code(
    plan: SendCodePlan | None,
    run_send: Callable[[Callable[[object], None]], Awaitable[None]],
    emit: Callable[[object], None],
    view: SendView,
    *,
    hold_lan_code: bool = False,
) -> None:
    """``run_send(emit)`` with a code offered beside its ticket. The first
    nameplate is allocated while the sender starts; the ticket event waits
    for it at most FIRST_CODE_WAIT_S (so that it can carry the code). Not
    for a code on the LAN, which takes about a second to claim (multicast
    DNS probes the name three times, 250 ms apart, RFC 6762 8.1): the ticket
    is shown at once and the code on its own line (a "code" event) when it
    is ours, unless ``hold_lan_code`` (--qr: draw the code, not the ticket). The
    offer then runs until the code is used, expires or the sender stops. No
    code (no relay reached) is one line, and the sender goes on."""
    from p2pcp.core.errors import P2pcpError
    from p2pcp.rendezvous.session import CodeOffer, sender_rendezvous
    from p2pcp.transfer import events

    rendezvous = None
    if plan is not None:
        # The relay's mailbox, or the LAN for a plan with no relay.
        relay_text = str(plan.relay_url) if plan.relay_url is not None else None
        rendezvous = sender_rendezvous(relay_text)
    if plan is None or rendezvous is None:
        await run_send(emit)
        return
    code_view = CodeView(view.mode, is_verify=plan.is_verify)
    offer = CodeOffer(
        rendezvous, word_count=plan.word_count, words=plan.words, nameplate=plan.nameplate
    )
    allocating = asyncio.create_task(offer.start())
    tasks: list[asyncio.Task[None]] = []
    # Events held back (the ticket and what follows it) until the first code
    # is there or FIRST_CODE_WAIT_S passed.
    held: list[object] | None = None

    hold_s = FIRST_CODE_WAIT_S if plan.relay_url is not None or hold_lan_code else 0.0

    async def offer_when_ready(ticket: str) -> None:
        nonlocal held
        with contextlib.suppress(asyncio.TimeoutError, P2pcpError):
            await asyncio.wait_for(asyncio.shield(allocating), hold_s)
        if allocating.done() and allocating.exception() is None:
            view.code = str(allocating.result())
        waiting, held = held or [], None
        for event in waiting:
            emit(event)
        try:
            code = await allocating
        except P2pcpError as exc:
            code_view.unavailable(str(exc))
            await offer.close()  # no reconnecting in the background for nothing
            return
        if view.code is None:
            code_view.first_code(str(code))
        await offer.serve(ticket, code_view.handle)

    def emit_and_offer(event: object) -> None:
        nonlocal held
        if held is not None:
            held.append(event)
        elif isinstance(event, events.SenderReady) and not tasks:
            held = [event]
            tasks.append(asyncio.create_task(offer_when_ready(event.ticket)))
        else:
            emit(event)

    try:
        if plan.nameplate is not None:
            # A code the script chose is what it relies on: a refusal (the
            # nameplate is in use) or no rendezvous stops the sender before
            # it starts, with one line, instead of a ticket without the code.
            await asyncio.wait({allocating})
            allocating.result()
        await run_send(emit_and_offer)
    finally:
        for task in [allocating, *tasks]:
            task.cancel()
        await asyncio.gather(allocating, *tasks, return_exceptions=True)
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

    def first_code(self, code: str) -> None:
        """The first code, come after the ticket was shown without it."""
        self._json("code", code=code)
        self._say(f"Code: {code} (p2pcp receive {code}; single use, valid for 1 h)", always=True)

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
    code: Code,
    *,
    relay: str | None,
    no_relay: bool,
    verify: bool,
    mode: OutputMode,
    is_lan: bool = False,
) -> str:
    """``p2pcp receive CODE``: the sender's ticket for the code (CodeError,
    exit 2, for a wrong, unknown, used or expired code); is_lan (``--lan``)
    looks on the LAN whatever relay is configured."""
    from p2pcp.cli.common import run_async
    from p2pcp.cli.output import console
    from p2pcp.core.config import choose_relay, load_config
    from p2pcp.rendezvous.session import RENDEZVOUS_TIMEOUT_S, claim

    relay_url = None if is_lan else choose_relay(relay, no_relay, load_config())
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
