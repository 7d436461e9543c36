"""The stream answer's codec (transfer/stream.py), GET_STREAM's request
(transfer/wire.py) and the manifest's text flag (blobs/collection.py):
fed whole and one byte at a time, honest and lying."""

from __future__ import annotations

import random

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcp.blobs.collection import MAX_TEXT_BYTES, Manifest, decode_manifest, encode_manifest
from p2pcp.core.errors import (
    IntegrityError,
    LocalProtocolError,
    P2pcpError,
    RemoteProtocolError,
)
from p2pcp.transfer import wire
from p2pcp.transfer.stream import (
    MAX_FRAME_BYTES,
    StreamData,
    StreamDecoder,
    StreamEnded,
    StreamHead,
    encode_end,
    encode_frame_header,
    encode_head,
)

DATA = random.Random(3).randbytes(100_000)


def _answer(pieces: list[bytes], name: str = "stdin", *, digest: bytes | None = None) -> bytes:
    whole = b"".join(pieces)
    body = bytearray(encode_head(name))
    for piece in pieces:
        body += encode_frame_header(len(piece)) + piece
    body += encode_end(len(whole), blake3.blake3(whole).digest() if digest is None else digest)
    return bytes(body)


def _decode(answer: bytes, step: int) -> tuple[str, bytes, StreamEnded | None]:
    decoder = StreamDecoder()
    name, data, ended = "", bytearray(), None
    for at in range(0, len(answer), step):
        decoder.receive_data(answer[at : at + step])
        while (event := decoder.next_event()) is not None:
            if isinstance(event, StreamHead):
                name = event.name
            elif isinstance(event, StreamData):
                data += event.data
            else:
                ended = event
    decoder.receive_end()
    return name, bytes(data), ended


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 30])
def test_an_honest_stream_decodes_whole_and_byte_by_byte(step: int) -> None:
    whole = DATA if step > 1 else DATA[:3000]  # byte by byte: a smaller stream
    pieces = [whole[:10], whole[10:2000], whole[2000:]]
    name, data, ended = _decode(_answer(pieces, "backup.tar"), step)
    assert name == "backup.tar"
    assert data == whole
    assert ended == StreamEnded(len(whole), blake3.blake3(whole).digest())


def test_an_empty_stream() -> None:
    name, data, ended = _decode(_answer([]), 1)
    assert (name, data) == ("stdin", b"")
    assert ended == StreamEnded(0, blake3.blake3(b"").digest())


def test_a_wrong_blake3_or_length_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError, match="BLAKE3"):
        _decode(_answer([DATA], digest=bytes(32)), 4096)
    lying = bytearray(_answer([DATA]))
    lying[-40:-32] = (len(DATA) + 1).to_bytes(8, "big")
    with pytest.raises(IntegrityError, match="length"):
        _decode(bytes(lying), 4096)


def test_a_stream_cut_short_or_extended_is_refused() -> None:
    answer = _answer([DATA])
    with pytest.raises(IntegrityError, match="without its end mark"):
        _decode(answer[:-1], 4096)
    with pytest.raises(RemoteProtocolError, match="after the end"):
        _decode(answer + b"x", 4096)


def test_a_frame_over_the_limit_and_a_bad_name_are_refused() -> None:
    too_long = bytes([5]) + b"stdin" + (MAX_FRAME_BYTES + 1).to_bytes(4, "big")
    with pytest.raises(RemoteProtocolError, match="too large"):
        _decode(too_long, 4096)
    for name in (b"../x", b"a/b", b".."):
        with pytest.raises(RemoteProtocolError):
            _decode(bytes([len(name)]) + name, 4096)
    with pytest.raises(RemoteProtocolError):
        _decode(bytes([0]), 4096)
    with pytest.raises(LocalProtocolError):
        encode_head("a/b")


def test_a_decoder_that_failed_stays_failed() -> None:
    decoder = StreamDecoder()
    with pytest.raises(RemoteProtocolError):
        decoder.receive_data(bytes([3]) + b"../")
    with pytest.raises(RemoteProtocolError):
        decoder.receive_data(b"anything")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_hostile_bytes_raise_only_p2pcp_errors(data: bytes) -> None:
    decoder = StreamDecoder()
    try:
        decoder.receive_data(data)
        decoder.receive_end()
    except P2pcpError:
        pass


def test_get_stream_round_trips_and_is_checked() -> None:
    request = wire.StreamRequest(bytes(range(32)))
    assert wire.decode_request(wire.encode_request(request)) == request
    with pytest.raises(RemoteProtocolError):
        wire.decode_request(bytes([wire.REQUEST_GET_STREAM]) + bytes(31))


def test_the_text_flag_round_trips_and_is_bounded() -> None:
    single = Manifest.single_file("text", 5, bytes(32))
    text = Manifest(single.files, (), "text", is_text=True)
    assert decode_manifest(encode_manifest(text)) == text
    assert decode_manifest(encode_manifest(single)).is_text is False
    too_big = Manifest.single_file("text", MAX_TEXT_BYTES + 1, bytes(32))
    with pytest.raises(LocalProtocolError, match="text message"):
        encode_manifest(Manifest(too_big.files, (), "text", is_text=True))
    folder = Manifest.folder("d", single.files[:0], ["d"])
    with pytest.raises(LocalProtocolError, match="text message"):
        encode_manifest(Manifest(folder.files, folder.empty_dirs, "d", is_text=True))
