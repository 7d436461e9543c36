"""``p2pcp receive TICKET``: fetch, verify and write what a sender offers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from p2pcp.cli.codes import LanOption, VerifyOption
from p2pcp.cli.common import (
    CongestionOption,
    JsonOption,
    LimitRateOption,
    NoRelayOption,
    QuietOption,
    RelayOption,
    VerboseOption,
)
from p2pcp.cli.pipes import check_stdout_out


def receive(
    ticket: Annotated[
        str | None,
        typer.Argument(
            metavar="TICKET|CODE",
            show_default=False,
            help="The ticket the sender printed, or its short code (7-crossbow-puzzle); "
            "or give --ticket-file.",
        ),
    ] = None,
    ticket_file: Annotated[
        str | None,
        typer.Option(
            "--ticket-file",
            metavar="FILE|-",
            show_default=False,
            help="Read the ticket (or code) from FILE, - for standard input, instead of the "
            "command line, where other local users can see it (ps).",
        ),
    ] = None,
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR|-",
            help="Folder to receive into; - writes a single file or a stream to standard "
            "output (not with --json).",
        ),
    ] = ".",
    force: Annotated[
        bool, typer.Option("--force", help="Replace existing files whose content differs.")
    ] = False,
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="Replace files whose content differs, fetching only the parts that changed; "
            "each is swapped in whole once verified (no --force needed).",
        ),
    ] = False,
    delete: Annotated[
        bool,
        typer.Option(
            "--delete",
            help="Once everything arrived verified, remove what the sender's snapshot does not "
            "hold inside the received folders (each removal is reported).",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Fetch and verify the file list, then list what would be added, updated, "
            "deleted or have its time or mode fixed; write nothing.",
        ),
    ] = False,
    no_times: Annotated[
        bool,
        typer.Option(
            "--no-times",
            help="Do not set the sender's modification times (files get the time of writing).",
        ),
    ] = False,
    no_perms: Annotated[
        bool,
        typer.Option(
            "--no-perms",
            help="Do not set the sender's permission bits: new files get the default mode "
            "(executables stay executable), replaced files keep theirs.",
        ),
    ] = False,
    unsafe_links: Annotated[
        bool,
        typer.Option(
            "--unsafe-links",
            help="Also create the sender's symbolic links whose target is absolute or points "
            "outside the received folder (by default they are skipped, with a warning).",
        ),
    ] = False,
    congestion: CongestionOption = None,
    relay: RelayOption = None,
    no_relay: NoRelayOption = False,
    relay_only: Annotated[
        bool, typer.Option("--relay-only", help="Never use a direct path, only the relay.")
    ] = False,
    direct_only: Annotated[
        bool, typer.Option("--direct-only", help="Never use the relay, only direct paths.")
    ] = False,
    retry_for: Annotated[
        float,
        typer.Option(
            "--retry-for",
            metavar="SECONDS",
            min=0,
            help="Keep reconnecting this long after the connection drops (0: never).",
        ),
    ] = 60.0,
    verify: VerifyOption = False,
    lan: LanOption = False,
    limit_rate: LimitRateOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Receive files and folders from a sender's ticket into DIR (default: here).

    Every byte is verified against the ticket's hash before it is written
    under its final name; existing identical files are kept, different ones
    are never replaced without --force or --update.
    """
    from p2pcp.cli.codes import claim_ticket
    from p2pcp.cli.common import endpoint_config, path_argument, run_async
    from p2pcp.cli.output import OutputMode, setup_logging
    from p2pcp.cli.progress import ReceiveView
    from p2pcp.cli.ticketfile import ticket_argument
    from p2pcp.core.config import load_config, relay_from_flag
    from p2pcp.core.errors import Interrupted, UsageError
    from p2pcp.core.identity import load_or_create_secret_key
    from p2pcp.core.ticket import TicketKind, decode_ticket
    from p2pcp.net import PathPolicy
    from p2pcp.rendezvous.codes import looks_like_code, parse_code
    from p2pcp.transfer.fetcher import FetchOptions
    from p2pcp.transfer.pipeout import fetcher_for
    from p2pcp.transfer.ratelimit import parse_rate

    mode = OutputMode(is_json=as_json, is_quiet=quiet, verbosity=verbose)
    setup_logging(verbose)
    ticket = ticket_argument(ticket, ticket_file, is_quiet=quiet)
    # A code is parsed (and a ticket decoded) before anything else happens.
    code = parse_code(ticket) if looks_like_code(ticket) else None
    if code is None:
        decoded = decode_ticket(ticket)
    limit_rate_bps = parse_rate(limit_rate) if limit_rate is not None else None
    to_stdout = check_stdout_out(out, as_json=as_json)
    if to_stdout and (delete or dry_run):
        raise UsageError("--delete and --dry-run work on a folder (--out DIR), not on --out -")
    out_dir = Path(".") if to_stdout else _out_dir(path_argument(out, "--out"))
    if relay_only and (direct_only or no_relay):
        raise UsageError("--relay-only contradicts --direct-only and --no-relay")
    if relay and no_relay:
        raise UsageError("--relay and --no-relay contradict each other")
    if code is not None:
        # Every usage error above comes first: claiming spends the code. Its
        # relay is the configured one (or --relay), which must be the sender's.
        decoded = decode_ticket(
            claim_ticket(code, relay=relay, no_relay=no_relay, verify=verify, mode=mode, is_lan=lan)
        )
    if (delete or dry_run) and decoded.kind in (TicketKind.TEXT, TicketKind.STREAM):
        raise UsageError(
            f"--delete and --dry-run work on files and folders, not on a {decoded.kind} ticket"
        )
    if relay_only:
        policy = PathPolicy.RELAY_ONLY
    elif direct_only or no_relay:
        policy = PathPolicy.DIRECT_ONLY
    else:
        policy = PathPolicy.AUTO
    # The receiver's relay is the ticket's; --relay overrides it (the
    # environment's and the config file's relay are the sender's home).
    options = FetchOptions(
        out_dir=out_dir,
        force=force,
        endpoint=endpoint_config(
            settings=load_config(),
            congestion=congestion,
            relay_url=relay_from_flag(relay) if relay else None,
            path_policy=policy,
        ),
        retry_for_s=retry_for,
        limit_rate_bps=limit_rate_bps,
        delete=delete,
        dry_run=dry_run,
        update=update,
        use_hash_cache=True,
        keep_times=not no_times,
        keep_perms=not no_perms,
        unsafe_links=unsafe_links,
    )
    secret_key = load_or_create_secret_key()
    with ReceiveView(mode, is_dry_run=dry_run) as view:
        try:
            fetcher = fetcher_for(decoded, options, view.handle, to_stdout=to_stdout)
            result = run_async(fetcher.run(secret_key))
        except Interrupted:
            if not view.has_manifest or to_stdout or dry_run:
                raise
            # What verified is kept in the partial folder; the same command
            # picks it up (the ticket names the same content).
            raise Interrupted("interrupted: run the same command again to resume") from None
        view.finished(result)


def _out_dir(out: Path) -> Path:
    """``--out`` must be a folder or not exist yet (it is then created): a
    file there is a usage error found before any network activity, not after
    connecting."""
    from p2pcp.blobs.names import display_path
    from p2pcp.core.errors import UsageError

    if out.exists() and not out.is_dir():
        shown = display_path(str(out))
        raise UsageError(f"--out {shown}: not a folder (give the folder to receive into)")
    return out
