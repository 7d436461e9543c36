"""``receive --ticket-file``'s reader: what it accepts around the ticket, its
size cap, its warning for a file open to other users, and its error kinds."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from p2pcp.cli.common import write_ticket_file
from p2pcp.cli.ticketfile import MAX_TICKET_FILE_BYTES, read_ticket_file, ticket_argument
from p2pcp.core.errors import StorageError, TicketError, UsageError
from p2pcp.core.ticket import Ticket, encode_ticket
from p2pcp.rendezvous.codes import new_code

TICKET = encode_ticket(
    Ticket(
        node_id=bytes(range(32)),
        relay_url="http://127.0.0.1:3340",
        addresses=(("127.0.0.1", 9),),
        root_hash=bytes(32),
        total_size=1,
    )
)


def test_the_file_send_writes_is_read_as_is_without_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "ticket"
    write_ticket_file(path, TICKET)
    assert read_ticket_file(str(path)).text == TICKET
    assert read_ticket_file(str(path)).warning is None


@pytest.mark.parametrize(
    "data",
    [
        TICKET.encode(),
        f"\n\n  {TICKET}\t\r\n\r\n".encode(),
        b"\xef\xbb\xbf" + TICKET.encode() + b"\r\n",  # a BOM, as some editors write
        TICKET.upper().encode() + b"\n",
    ],
)
def test_whitespace_around_the_ticket_is_ignored(data: bytes) -> None:
    assert read_ticket_file("-", io.BytesIO(data)).text.lower() == TICKET.lower()


def test_a_code_is_accepted_as_on_the_command_line() -> None:
    code = str(new_code(7))
    assert read_ticket_file("-", io.BytesIO(f"{code}\n".encode())).text == code


def test_the_size_cap_is_exact() -> None:
    padded = TICKET.encode() + b" " * (MAX_TICKET_FILE_BYTES - len(TICKET))
    assert len(padded) == MAX_TICKET_FILE_BYTES
    assert read_ticket_file("-", io.BytesIO(padded)).text == TICKET
    with pytest.raises(UsageError, match="larger than 64 KiB"):
        read_ticket_file("-", io.BytesIO(padded + b" "))


@pytest.mark.parametrize(
    ("mode", "warns"),
    [(0o600, False), (0o400, False), (0o700, False), (0o640, True), (0o604, True), (0o620, True)],
)
def test_a_file_open_to_other_users_warns(tmp_path: Path, mode: int, warns: bool) -> None:
    path = tmp_path / "ticket"
    path.write_text(TICKET + "\n")
    path.chmod(mode)
    result = read_ticket_file(str(path))
    assert result.text == TICKET
    if warns:
        assert result.warning == (
            f"warning: --ticket-file {path} is open to other users (mode {mode:04o}); "
            "a ticket is a key: chmod 600 it"
        )
    else:
        assert result.warning is None


def test_a_pipe_is_read_like_a_file(tmp_path: Path) -> None:
    """``--ticket-file <(command)`` names a pipe: read to its end, no warning
    (its mode says nothing about who can read the ticket)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o666)

    def write() -> None:
        with open(fifo, "w") as handle:
            handle.write(TICKET + "\n")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    result = read_ticket_file(str(fifo))
    writer.join(timeout=10)
    assert result.text == TICKET and result.warning is None


def test_errors_have_their_kind_and_never_quote_the_content(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "two").write_text(f"{TICKET}\n{TICKET}\n")
    (tmp_path / "typo").write_text(TICKET.replace("p2pcp", "p2pcq", 1))
    cases: list[tuple[str, type[Exception], str]] = [
        (str(tmp_path / "missing"), UsageError, "no such file"),
        (str(tmp_path / "missing" / "below"), UsageError, "no such file"),
        (str(tmp_path / "folder"), UsageError, "is a folder"),
        (str(tmp_path / "two"), UsageError, "holds 2 lines"),
        (str(tmp_path / "typo"), TicketError, "that is not a p2pcp ticket"),
        ("", UsageError, "--ticket-file is empty"),
    ]
    for name, kind, words in cases:
        with pytest.raises(kind) as raised:
            read_ticket_file(name)
        assert type(raised.value) is kind
        assert words in str(raised.value)
        assert TICKET[5:20] not in str(raised.value)


def test_a_read_error_is_an_io_error() -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: object) -> int:
            raise OSError(5, "Input/output error")

    with pytest.raises(StorageError, match=r"standard input\): cannot read it: input/output error"):
        read_ticket_file("-", io.BufferedReader(Broken()))


def test_exactly_one_source() -> None:
    assert ticket_argument(TICKET, None, is_quiet=False) == TICKET
    with pytest.raises(UsageError, match="not both"):
        ticket_argument(TICKET, "-", is_quiet=False)
    with pytest.raises(UsageError, match="missing TICKET"):
        ticket_argument(None, None, is_quiet=False)
