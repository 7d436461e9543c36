"""``p2pcp receive TICKET``: fetch, verify and write what a sender offers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from p2pcp.cli.common import JsonOption, QuietOption, VerboseOption


def receive(
    ticket: Annotated[str, typer.Argument(metavar="TICKET", help="The ticket the sender printed.")],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", metavar="DIR", help="Folder to receive into."),
    ] = Path("."),
    force: Annotated[
        bool, typer.Option("--force", help="Replace existing files whose content differs.")
    ] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Receive files and folders from a sender's ticket into DIR (default: here).

    Every byte is verified against the ticket's hash before it is written
    under its final name; existing identical files are kept, different ones
    are never replaced without --force.
    """
    from p2pcp.cli.common import json_errors, max_datagram_size_from_env, run_async
    from p2pcp.cli.output import OutputMode, setup_logging
    from p2pcp.cli.progress import ReceiveView
    from p2pcp.core.identity import load_or_create_secret_key
    from p2pcp.core.ticket import decode_ticket
    from p2pcp.transfer.fetcher import Fetcher, FetchOptions

    mode = OutputMode(is_json=as_json, is_quiet=quiet, verbosity=verbose)
    setup_logging(verbose)
    with json_errors(mode):
        decoded = decode_ticket(ticket)
        options = FetchOptions(
            out_dir=out, force=force, max_datagram_size=max_datagram_size_from_env()
        )
        secret_key = load_or_create_secret_key()
        with ReceiveView(mode) as view:
            result = run_async(Fetcher(decoded, options, view.handle).run(secret_key))
            view.finished(result)
