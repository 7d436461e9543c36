"""The QUIC configuration: p2pcp's ALPN, the smallest datagram size, the node's certificate."""

from __future__ import annotations

from nacl.signing import SigningKey

from p2pcp.net.quic.configuration import (
    ALPN,
    CLIENT_CID_BYTES,
    MAX_DATA_BYTES,
    MAX_STREAM_DATA_BYTES,
    SERVER_CID_BYTES,
    SOLE_CLIENT_CID_BYTES,
    client_configuration,
    server_configuration,
    sole_client_configuration,
)
from p2pcp.net.quic.identity import certificate_node_key

SEED = bytes(range(32))


def test_configurations_speak_p2pcp() -> None:
    node_id = bytes(SigningKey(SEED).verify_key)
    for config in (client_configuration(SEED), server_configuration(SEED)):
        assert config.alpn_protocols == [ALPN]
        assert config.max_datagram_size == 1200
        assert (config.max_data, config.max_stream_data) == (MAX_DATA_BYTES, MAX_STREAM_DATA_BYTES)
        assert certificate_node_key(config.certificate) == node_id
    assert client_configuration(SEED).is_client
    assert not server_configuration(SEED).is_client


def test_connection_id_lengths() -> None:
    client = client_configuration(SEED)
    assert client.connection_id_length == CLIENT_CID_BYTES
    assert sole_client_configuration(client).connection_id_length == SOLE_CLIENT_CID_BYTES
    assert client.connection_id_length == CLIENT_CID_BYTES  # the original is untouched
    assert server_configuration(SEED).connection_id_length == SERVER_CID_BYTES
