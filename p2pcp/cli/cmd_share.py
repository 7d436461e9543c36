"""``p2pcp share PATH...``: a long-lived sender whose ticket stays the same."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from p2pcp.cli.common import (
    CongestionOption,
    ExcludeFromOption,
    ExcludeOption,
    GitignoreOption,
    JsonOption,
    LimitRateOption,
    LinksOption,
    NoRelayOption,
    QuietOption,
    RelayOption,
    TicketTypeOption,
    VerboseOption,
)

if TYPE_CHECKING:
    from p2pcp.core.identity import NodeId


def share(
    paths: Annotated[
        list[str],
        typer.Argument(metavar="PATH...", help="Files and folders to share.", show_default=False),
    ],
    port: Annotated[
        int,
        typer.Option(
            "--port",
            metavar="PORT",
            help="UDP port to listen on (0: any; the ticket then changes on each start "
            "unless --ticket-type relay).",
        ),
    ] = 0,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            metavar="NODE_ID",
            help="Only this receiver may fetch (its id as 'p2pcp id' prints it on its "
            "machine); repeat for more. Default: anyone with the ticket.",
            show_default=False,
        ),
    ] = None,
    rotate: Annotated[
        bool,
        typer.Option(
            "--rotate",
            help="Make a new secret for this share: a new ticket, and the old ones stop working.",
        ),
    ] = False,
    ticket_file: Annotated[
        Path | None,
        typer.Option(
            "--ticket-file",
            metavar="FILE",
            help="Write the ticket to FILE (atomically) as soon as the share is reachable.",
        ),
    ] = None,
    exclude: ExcludeOption = None,
    exclude_from: ExcludeFromOption = None,
    gitignore: GitignoreOption = False,
    links: LinksOption = False,
    congestion: CongestionOption = None,
    relay: RelayOption = None,
    no_relay: NoRelayOption = False,
    ticket_type_word: TicketTypeOption = "full",
    limit_rate: LimitRateOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Share files and folders under a ticket that stays: each receive gets what they hold then.

    The ticket holds a secret instead of a content hash, so it does not
    change while this machine's key, the relay and the port stay the same
    (the secret is kept in p2pcp's folder, one per command line: other
    PATHs or --exclude, --exclude-from, --gitignore or --links make another
    share with its own ticket; --rotate replaces it). Every
    receive makes the share look again (files not changed since are not
    read again) and gets a snapshot, verified as a send's files are; with
    'p2pcp receive TICKET --out DIR --update' only what changed moves.

    stdout holds only the ticket (or, with --json, one JSON object per
    line). Ctrl-C or SIGTERM stops the share with a summary and exit 0.
    """
    from p2pcp.cli.common import (
        endpoint_config,
        path_argument,
        run_async,
        scan_filter,
        ticket_type,
        write_ticket_file,
    )
    from p2pcp.cli.output import OutputMode, setup_logging, stdout_is_terminal
    from p2pcp.cli.progress import ShareView
    from p2pcp.core.config import choose_relay, load_config
    from p2pcp.core.errors import Interrupted, UsageError
    from p2pcp.core.ticket import TicketType
    from p2pcp.net import PathPolicy
    from p2pcp.transfer import events
    from p2pcp.transfer.ratelimit import parse_rate
    from p2pcp.transfer.share import ShareOptions, defining_words, run_share

    mode = OutputMode(is_json=as_json, is_quiet=quiet, verbosity=verbose)
    setup_logging(verbose)
    settings = load_config()
    if not paths:
        raise UsageError("nothing to share: give at least one PATH")
    allowed = tuple(_node_id(text) for text in allow or ())
    relay_url = choose_relay(relay, no_relay, settings)
    chosen_type = ticket_type(ticket_type_word, relay_url)
    options = ShareOptions(
        paths=tuple(path_argument(path, "PATH") for path in paths),
        endpoint=endpoint_config(
            settings=settings,
            congestion=congestion,
            relay_url=relay_url,
            path_policy=PathPolicy.AUTO,
            port=port,
        ),
        allow=allowed,
        rotate=rotate,
        ticket_type=chosen_type,
        limit_rate_bps=parse_rate(limit_rate) if limit_rate is not None else None,
        scan_filter=scan_filter(exclude, exclude_from, gitignore),
        links=links,
        defining_options=defining_words(
            tuple(exclude or ()), exclude_from, gitignore=gitignore, links=links
        ),
    )
    ticket_to_stdout = quiet or not stdout_is_terminal()
    with ShareView(mode, ticket_to_stdout=ticket_to_stdout) as view:

        def emit(event: object) -> None:
            if ticket_file is not None and isinstance(event, events.SenderReady):
                write_ticket_file(ticket_file, event.ticket)
            view.handle(event)
            is_changing = port == 0 and chosen_type is not TicketType.RELAY
            if isinstance(event, events.SenderReady) and is_changing:
                view.note(
                    "This ticket changes when the share restarts: give --port PORT (or "
                    "--ticket-type relay) for one that stays."
                )

        try:
            run_async(run_share(options, emit))
        except Interrupted:
            view.stopped()  # stopping a share is how it ends


def _node_id(text: str) -> NodeId:
    """``--allow``'s value as a node id; anything else is a usage error."""
    from p2pcp.core.errors import UsageError
    from p2pcp.core.identity import NodeId

    try:
        return NodeId.from_str(text)
    except UsageError:
        raise UsageError(
            f"--allow {text[:60]!r}: not a node id (give the receiver's id as "
            "'p2pcp id' prints it on its machine)"
        ) from None
