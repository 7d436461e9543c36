"""QUIC between nodes over whichever path works: the public API.

transfer/ (and anything above net/) imports only these names; the folders
under net/ are its inside (docs/ARCHITECTURE.md). ``Endpoint`` binds a node
to one UDP port (and, optionally, its home relay) as one ``EndpointConfig``
says (config.py: every setting, checked once), dials and accepts
``Connection``s, whose ``Stream``s carry the requests; ``Route`` says where
a connection's packets go. ``PathPolicy``,
``PathKind`` and ``Congestion`` name the choices (kinds.py);
``DEFAULT_CONGESTION`` and ``CONGESTION_CONTROLLERS`` the congestion
controllers a connection can use.
"""

from p2pcp.net.config import EndpointConfig
from p2pcp.net.kinds import Congestion, PathKind, PathPolicy, Route, SettingError
from p2pcp.net.quic.configuration import CONGESTION_CONTROLLERS, DEFAULT_CONGESTION
from p2pcp.net.quic.endpoint import Connection, Endpoint, Stream

__all__ = [
    "CONGESTION_CONTROLLERS",
    "DEFAULT_CONGESTION",
    "Congestion",
    "Connection",
    "Endpoint",
    "EndpointConfig",
    "PathKind",
    "PathPolicy",
    "Route",
    "SettingError",
    "Stream",
]
