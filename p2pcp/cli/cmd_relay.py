"""``p2pcp relay``: run a relay server (WebSocket relay, /health, /metrics, STUN)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from p2pcp.cli.common import VerboseOption


def relay(
    host: Annotated[
        str,
        typer.Option(
            "--host",
            metavar="ADDRESS",
            help="Address to listen on ('::' is every interface, IPv6 and IPv4).",
        ),
    ] = "::",
    port: Annotated[
        int,
        typer.Option(
            "--port",
            metavar="PORT",
            min=0,
            max=65535,
            help="TCP port for HTTP(S) and WebSocket; the same UDP port answers STUN "
            "(0: any free port).",
        ),
    ] = 3340,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", metavar="PEM", help="TLS certificate chain: serve HTTPS."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", metavar="PEM", help="TLS private key.")
    ] = None,
    max_clients: Annotated[
        int,
        typer.Option("--max-clients", metavar="N", min=1, help="Most clients connected at once."),
    ] = 10_000,
    datagrams_per_second: Annotated[
        int,
        typer.Option(
            "--datagrams-per-second",
            metavar="N",
            min=1,
            help="Datagrams each client may send per second; more are dropped.",
        ),
    ] = 100_000,
    queue_depth: Annotated[
        int,
        typer.Option(
            "--queue-depth",
            metavar="N",
            min=1,
            help="Messages queued per client (at most 4 MiB in all) before dropping.",
        ),
    ] = 256,
    idle_timeout: Annotated[
        float,
        typer.Option(
            "--idle-timeout", metavar="SECONDS", help="Close a client silent for this long."
        ),
    ] = 60.0,
    login_timeout: Annotated[
        float,
        typer.Option(
            "--login-timeout",
            metavar="SECONDS",
            help="Close a connection that has not logged in after this long.",
        ),
    ] = 10.0,
    code_expiry: Annotated[
        float,
        typer.Option(
            "--code-expiry",
            metavar="SECONDS",
            help="End a short code's nameplate unclaimed or idle for this long.",
        ),
    ] = 3600.0,
    max_codes: Annotated[
        int,
        typer.Option("--max-codes", metavar="N", min=1, help="Most short codes open at once."),
    ] = 10_000,
    codes_per_client: Annotated[
        int,
        typer.Option(
            "--codes-per-client", metavar="N", min=1, help="Most short codes one client holds."
        ),
    ] = 8,
    stun_host: Annotated[
        str | None,
        typer.Option(
            "--stun-host",
            metavar="ADDRESS",
            help="Address for STUN on UDP (default: --host); for a relay behind a TLS proxy.",
        ),
    ] = None,
    stun_port: Annotated[
        int | None,
        typer.Option(
            "--stun-port",
            metavar="PORT",
            min=1,
            max=65535,
            help="UDP port for STUN (default: --port); must be the port of the public URL.",
        ),
    ] = None,
    no_stun: Annotated[bool, typer.Option("--no-stun", help="Answer no STUN requests.")] = False,
    verbose: VerboseOption = 0,
) -> None:
    """Run a relay: carries encrypted packets between nodes that cannot reach each other.

    Nodes use it with --relay http://HOST:PORT (or https:// with --tls-cert and
    --tls-key, or behind a TLS proxy). GET /health and GET /metrics (Prometheus)
    on the same port. Stops cleanly on SIGTERM (exit 0) or Ctrl-C (exit 130).
    """
    import asyncio
    import logging

    from p2pcp.cli.output import console, setup_logging
    from p2pcp.core.errors import Interrupted
    from p2pcp.relay.limits import RelayLimits
    from p2pcp.relay.server import RelayOptions, RelayServer, run_relay

    setup_logging(verbose)
    if verbose <= 0:
        # Warnings (too few open files) still reach the operator.
        from rich.logging import RichHandler

        relay_logger = logging.getLogger("p2pcp.relay")
        relay_logger.addHandler(RichHandler(console=console, show_path=False, show_time=False))
        relay_logger.setLevel(logging.WARNING)
    options = RelayOptions(
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        relay_limits=RelayLimits(
            max_clients=max_clients,
            datagrams_per_s=datagrams_per_second,
            queue_depth=queue_depth,
            idle_timeout_s=idle_timeout,
            login_timeout_s=login_timeout,
            code_expiry_s=code_expiry,
            max_nameplates=max_codes,
            nameplates_per_client=codes_per_client,
        ),
        stun_host=stun_host,
        stun_port=stun_port,
        has_stun=not no_stun,
    )

    def started(server: RelayServer) -> None:
        ports = server.ports
        stun = f"STUN on UDP {ports.stun_port}" if ports and ports.stun_port else "no STUN"
        where = " (every interface: use this machine's public name)"
        console.print(
            f"p2pcp relay listening: {server.url} "
            f"({stun}; GET /health, /metrics){where if server.is_listening_everywhere else ''}",
            markup=False,
            highlight=False,
        )

    try:
        asyncio.run(run_relay(options, started))
    except KeyboardInterrupt:
        raise Interrupted("interrupted") from None
