"""The command line: Typer commands and the one error boundary.

``main()`` is the only place that turns errors into exit codes:
``P2pcpError`` -> one line on stderr and its exit code; Ctrl-C -> 130;
a usage error -> 2; anything else -> 1 with a hint to set
``P2PCP_DEBUG=1`` for the traceback (which never shows local variables:
they can hold keys).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from p2pcp import __version__
from p2pcp.cli import cmd_id, cmd_receive, cmd_relay, cmd_send, cmd_ticket

EXIT_CODES_HELP = (
    "Exit codes: 0 success, 1 unexpected error, 2 usage error or bad ticket, "
    "3 cannot reach the peer, 4 verification failed, 5 would overwrite, 130 interrupted."
)

app = typer.Typer(
    name="p2pcp",
    help=(
        "Copy files and folders between two machines, end-to-end encrypted, every byte "
        "verified.\n\n'p2pcp send PATH' prints a ticket; 'p2pcp receive TICKET' on the "
        "other machine fetches it.\n\n" + EXIT_CODES_HELP
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"p2pcp {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            help="Print the version and exit.",
            callback=_show_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Copy files and folders between two machines."""


app.command("send", epilog=EXIT_CODES_HELP)(cmd_send.send)
app.command("receive", epilog=EXIT_CODES_HELP)(cmd_receive.receive)
app.command("ticket", epilog=EXIT_CODES_HELP)(cmd_ticket.ticket)
app.command("id", epilog=EXIT_CODES_HELP)(cmd_id.node_id)
app.command("relay", epilog=EXIT_CODES_HELP)(cmd_relay.relay)


def _fail(message: str, code: int) -> int:
    from p2pcp.cli.output import console

    console.print(f"p2pcp: error: {message}", markup=False, highlight=False)
    return code


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (Typer reports usage errors itself, exit 2)."""
    from p2pcp.core.errors import EXIT_INTERRUPTED, EXIT_UNEXPECTED, P2pcpError

    try:
        app(args=argv, prog_name="p2pcp")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except P2pcpError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:
        if os.environ.get("P2PCP_DEBUG"):
            import traceback

            traceback.print_exception(exc)  # no locals: they can hold keys
        return _fail(
            f"unexpected {type(exc).__name__}: {exc} (set P2PCP_DEBUG=1 for the traceback)",
            EXIT_UNEXPECTED,
        )
    return 0


def main() -> None:
    sys.exit(run())
