"""``p2pcp send PATH...``: print a ticket and serve the files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from p2pcp.cli.codes import CodeOption, CodeWordsOption, NoCodeOption, VerifyOption
from p2pcp.cli.common import (
    CongestionOption,
    ExcludeFromOption,
    ExcludeOption,
    GitignoreOption,
    JsonOption,
    LimitRateOption,
    LinksOption,
    NoRelayOption,
    QrOption,
    QuietOption,
    RelayOption,
    TicketTypeOption,
    VerboseOption,
)
from p2pcp.cli.pipes import what_to_send


def send(
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="PATH...",
            help="Files and folders to send; - sends standard input as a stream.",
            show_default=False,
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Exit after the first receiver has everything.")
    ] = False,
    ticket_file: Annotated[
        Path | None,
        typer.Option(
            "--ticket-file",
            metavar="FILE",
            help="Write the ticket to FILE (atomically) as soon as the sender is reachable.",
        ),
    ] = None,
    port: Annotated[
        int,
        typer.Option("--port", metavar="PORT", help="UDP port to listen on (0: any)."),
    ] = 0,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Stop at the first file that cannot be read or sent (exit 1, or 2 for a name)"
            " instead of reporting it as skipped and sending the rest.",
        ),
    ] = False,
    text: Annotated[
        str | None,
        typer.Option(
            "--text",
            metavar="TEXT",
            help="Send TEXT as a message instead of files (- reads it from standard input, "
            "at most 1 MiB); the receiver prints it.",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            metavar="NAME",
            help="With -: the file name a receiver writing to a folder uses (default: stdin).",
        ),
    ] = None,
    exclude: ExcludeOption = None,
    exclude_from: ExcludeFromOption = None,
    gitignore: GitignoreOption = False,
    links: LinksOption = False,
    congestion: CongestionOption = None,
    relay: RelayOption = None,
    no_relay: NoRelayOption = False,
    code_words: CodeWordsOption = 2,
    code: CodeOption = None,
    no_code: NoCodeOption = False,
    verify: VerifyOption = False,
    ticket_type_word: TicketTypeOption = "full",
    limit_rate: LimitRateOption = None,
    qr: QrOption = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = 0,
) -> None:
    """Send files and folders: print a ticket, then serve until stopped (or --once).

    'p2pcp send --text TEXT' sends a message instead; 'p2pcp send -' streams
    standard input to one receiver as it comes (tar c dir | p2pcp send -).

    When stdout is not a terminal, only the ticket is written there, so
    TICKET=$(p2pcp send file) works; with --json, one JSON object per line.
    With -q on a terminal, the ticket alone. Ctrl-C or SIGTERM stops the
    sender with a summary (receivers served, bytes sent) and exit 0; with
    --once, stopping it while a receiver is still fetching exits 130.
    """
    from p2pcp.cli.codes import send_code_plan, send_with_code
    from p2pcp.cli.common import (
        endpoint_config,
        path_argument,
        run_async,
        scan_filter,
        ticket_type,
        write_ticket_file,
    )
    from p2pcp.cli.output import OutputMode, setup_logging, stdout_is_terminal
    from p2pcp.cli.progress import SendView
    from p2pcp.cli.qr import show_qr
    from p2pcp.core.config import choose_relay, load_config
    from p2pcp.core.errors import Interrupted, UsageError
    from p2pcp.net import PathPolicy
    from p2pcp.transfer import events
    from p2pcp.transfer.pipe import run_send_stream
    from p2pcp.transfer.ratelimit import parse_rate
    from p2pcp.transfer.sender import SendOptions, run_send

    mode = OutputMode(is_json=as_json, is_quiet=quiet, verbosity=verbose)
    setup_logging(verbose)
    settings = load_config()
    if (exclude or exclude_from or gitignore or links) and (
        text is not None or "-" in (paths or [])
    ):
        raise UsageError(
            "--exclude, --exclude-from, --gitignore and --links choose what a folder sends: "
            "they do not apply to --text or - (standard input)"
        )
    what = what_to_send(paths, text, name)
    runner = run_send_stream if what.stream_name is not None else run_send
    relay_url = choose_relay(relay, no_relay, settings)
    code_plan = send_code_plan(
        code=code, code_words=code_words, no_code=no_code, verify=verify, relay_url=relay_url
    )
    options = SendOptions(
        paths=tuple(path_argument(path, "PATH") for path in what.paths),
        text=what.text,
        stream_name=what.stream_name,
        once=once or what.stream_name is not None,  # a stream has one receiver
        endpoint=endpoint_config(
            settings=settings,
            congestion=congestion,
            relay_url=relay_url,
            path_policy=PathPolicy.AUTO,
            port=port,
        ),
        strict=strict,
        scan_filter=scan_filter(exclude, exclude_from, gitignore),
        links=links,
        ticket_type=ticket_type(ticket_type_word, relay_url),
        limit_rate_bps=parse_rate(limit_rate) if limit_rate is not None else None,
    )
    # The ticket is the one thing -q never hides: on a terminal without -q
    # it is in the "run this" message on stderr, otherwise alone on stdout.
    ticket_to_stdout = quiet or not stdout_is_terminal()
    with SendView(mode, ticket_to_stdout=ticket_to_stdout) as view:

        def emit(event: object) -> None:
            if ticket_file is not None and isinstance(event, events.SenderReady):
                write_ticket_file(ticket_file, event.ticket)
            view.handle(event)
            if qr and isinstance(event, events.SenderReady):
                show_qr(view.code or event.ticket, "the code" if view.code else "the ticket")

        try:
            run_async(
                send_with_code(
                    code_plan, lambda out: runner(options, out), emit, view, hold_lan_code=qr
                )
            )
        except Interrupted:
            # Stopping a sender is how it ends, not a failure; only a --once
            # sender stopped before its receiver had everything failed its job.
            is_unfinished = options.once and view.is_mid_transfer
            view.stopped()
            if is_unfinished:
                raise Interrupted("interrupted while a receiver was still fetching") from None
