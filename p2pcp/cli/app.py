"""The command line: Typer commands and the one error boundary.

``run()`` is the only place that turns errors into exit codes, and every
error leaves the same way: one line ``p2pcp: error: ...`` on stderr, its exit
code, and, when ``--json`` is among the arguments, exactly one JSON
``error`` event (message, exit_code) on stdout.

- ``P2pcpError``: its message and exit code;
- the option parser's errors (unknown option, missing argument, bad value):
  exit 2 (Typer runs with ``standalone_mode=False`` so they reach us instead
  of being printed as a usage block);
- Ctrl-C: 130;
- anything else: exit 1 with a hint to set ``P2PCP_DEBUG=1`` for the
  traceback (which never shows local variables: they can hold keys).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from p2pcp import __version__
from p2pcp.cli import cmd_id, cmd_receive, cmd_relay, cmd_send, cmd_share, cmd_ticket
from p2pcp.core.config import is_debug

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


def _argument_name(param: Any) -> str:
    """An argument as a person reads it: ``PATH...``, ``TICKET``, ``[DIR]``."""
    name = str(param.metavar or param.name.upper())
    if param.nargs != 1 and not name.endswith("..."):
        name += "..."
    return name if param.required else f"[{name}]"


class _Command(TyperCommand):
    """Help in plain words: arguments by their names, without the type
    annotations some Typer versions print (``{PATH...}...``, ``<list[Path]>``).
    Options keep Typer's rendering; each states a metavar so it shows no
    ``<int range>``."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                pieces.append(_argument_name(param))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments: list[tuple[str, str]] = []
        options: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                arguments.append((_argument_name(param), getattr(param, "help", None) or ""))
            elif param.param_type_name == "option" and (record := param.get_help_record(ctx)):
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


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


for _name, _function in (
    ("send", cmd_send.send),
    ("receive", cmd_receive.receive),
    ("share", cmd_share.share),
    ("ticket", cmd_ticket.ticket),
    ("id", cmd_id.node_id),
    ("relay", cmd_relay.relay),
):
    app.command(_name, cls=_Command, epilog=EXIT_CODES_HELP)(_function)


def _parser_errors() -> tuple[type[BaseException], ...]:
    """The option parser's exception base (``ClickException``), from whichever
    click this Typer uses (its own copy, or the click package): ``BadParameter``
    is public in every Typer and derives from it."""
    return tuple(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException") or (
        typer.BadParameter,
    )


def _wants_json(args: list[str]) -> bool:
    """``--json`` among the options (before a ``--`` that ends them)."""
    options = args[: args.index("--")] if "--" in args else args
    return "--json" in options


def _fail(message: str, code: int, *, is_json: bool) -> int:
    from p2pcp.cli.output import OutputMode, console

    message = " ".join(message.splitlines())  # one line (spaces in names kept as they are)
    console.print(f"p2pcp: error: {message}", markup=False, highlight=False, soft_wrap=True)
    if is_json:
        OutputMode(is_json=True).json("error", message=message, exit_code=code)
    return code


def _parser_message(exc: Any) -> str:
    """The parser's own words, and where to read more."""
    # Some Typer versions validate with pydantic, whose messages open with this.
    message = str(exc.format_message()).replace("Value error, ", "").rstrip(".")
    context = getattr(exc, "ctx", None)
    where = f"{context.command_path} --help" if context is not None else "p2pcp --help"
    return f"{message} (see '{where}')"


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    from p2pcp.core.errors import EXIT_INTERRUPTED, EXIT_UNEXPECTED, P2pcpError

    args = list(sys.argv[1:] if argv is None else argv)
    is_json = _wants_json(args)
    try:
        result = typer.main.get_command(app).main(
            args=args, prog_name="p2pcp", standalone_mode=False
        )
    except P2pcpError as exc:
        return _fail(str(exc), exc.exit_code, is_json=is_json)
    except (KeyboardInterrupt, typer.Abort):
        return _fail("interrupted", EXIT_INTERRUPTED, is_json=is_json)
    except _parser_errors() as exc:
        code = int(getattr(exc, "exit_code", 2))
        if type(exc).__name__ == "NoArgsIsHelpError":  # `p2pcp` alone: the help
            sys.stderr.write(str(getattr(exc, "format_message", str)()) + "\n")
            return code
        return _fail(_parser_message(exc), code, is_json=is_json)
    except Exception as exc:
        if is_debug():
            import traceback

            traceback.print_exception(exc)  # no locals: they can hold keys
        return _fail(
            f"unexpected {type(exc).__name__}: {exc} (set P2PCP_DEBUG=1 for the traceback)",
            EXIT_UNEXPECTED,
            is_json=is_json,
        )
    if result == EXIT_INTERRUPTED:
        # Some Typer versions turn a Ctrl-C that reached them into exit 130, silently.
        return _fail("interrupted", EXIT_INTERRUPTED, is_json=is_json)
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run())
