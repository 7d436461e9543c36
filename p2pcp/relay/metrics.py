"""The relay server's counters, and their Prometheus text rendering.

Plain integers bumped on the hot path (no locks: one event loop). Counters
only grow; ``clients`` and ``connections_pending`` are gauges. Drops are
counted in datagrams, by reason.
"""

from __future__ import annotations

from collections import Counter

# Why a datagram was dropped.
DROP_RATE_LIMITED = "rate_limited"  # the sender was over its datagrams per second
DROP_QUEUE_FULL = "queue_full"  # the destination's queue was full
DROP_NO_DESTINATION = "no_destination"  # the destination is not connected

# Why a connection ended (other than the client closing it).
CLOSE_REPLACED = "replaced"
CLOSE_IDLE = "idle"
CLOSE_PROTOCOL = "protocol_error"
CLOSE_FLOODING = "flooding"
CLOSE_LOGIN_TIMEOUT = "login_timeout"
CLOSE_SHUTDOWN = "shutdown"


class RelayMetrics:
    """Everything ``/metrics`` shows."""

    def __init__(self) -> None:
        self.clients = 0
        self.connections_pending = 0
        self.connections_total = 0
        self.connections_rejected_total = 0
        self.logins_total = 0
        self.login_failures_total: Counter[str] = Counter()
        self.closes_total: Counter[str] = Counter()
        self.messages_relayed_total = 0
        self.datagrams_relayed_total = 0
        self.bytes_relayed_total = 0
        # Every reason shows from the start, at zero.
        self.drops_total: Counter[str] = Counter(
            dict.fromkeys((DROP_RATE_LIMITED, DROP_QUEUE_FULL, DROP_NO_DESTINATION), 0)
        )
        self.peer_gone_sent_total = 0
        self.stun_requests_total = 0
        self.stun_dropped_total: Counter[str] = Counter()
        # The mailbox (short codes): mailbox.py keeps these.
        self.nameplates_open = 0
        self.nameplates_allocated_total = 0
        self.nameplates_claimed_total = 0
        self.nameplates_expired_total = 0
        self.nameplates_refused_total: Counter[str] = Counter(
            dict.fromkeys(("unknown", "used", "expired", "too_many", "full", "over_limit"), 0)
        )
        self.mailbox_messages_total = 0

    def render(self) -> str:
        """Prometheus text exposition format, version 0.0.4."""
        lines: list[str] = []

        def metric(
            name: str, kind: str, help_text: str, value: int | Counter[str], label: str = "reason"
        ) -> None:
            full = f"p2pcp_relay_{name}"
            lines.append(f"# HELP {full} {help_text}")
            lines.append(f"# TYPE {full} {kind}")
            if isinstance(value, Counter):
                for key in sorted(value):
                    lines.append(f'{full}{{{label}="{key}"}} {value[key]}')
            else:
                lines.append(f"{full} {value}")

        metric("clients", "gauge", "Logged-in clients.", self.clients)
        metric(
            "connections_pending",
            "gauge",
            "Connections not yet logged in.",
            self.connections_pending,
        )
        metric(
            "connections_total", "counter", "WebSocket connections opened.", self.connections_total
        )
        metric(
            "connections_rejected_total",
            "counter",
            "Connections refused because the relay was full.",
            self.connections_rejected_total,
        )
        metric("logins_total", "counter", "Successful logins.", self.logins_total)
        metric(
            "login_failures_total", "counter", "Failed logins by reason.", self.login_failures_total
        )
        metric(
            "closes_total",
            "counter",
            "Connections closed by the relay, by reason.",
            self.closes_total,
        )
        metric(
            "messages_relayed_total",
            "counter",
            "Packet frames (batches) relayed.",
            self.messages_relayed_total,
        )
        metric(
            "datagrams_relayed_total", "counter", "Datagrams relayed.", self.datagrams_relayed_total
        )
        metric(
            "bytes_relayed_total",
            "counter",
            "Datagram payload bytes relayed.",
            self.bytes_relayed_total,
        )
        metric("drops_total", "counter", "Datagrams dropped, by reason.", self.drops_total)
        metric(
            "peer_gone_sent_total", "counter", "Peer-gone frames sent.", self.peer_gone_sent_total
        )
        metric(
            "stun_requests_total",
            "counter",
            "STUN binding requests answered.",
            self.stun_requests_total,
        )
        metric(
            "stun_dropped_total",
            "counter",
            "UDP packets not answered, by reason.",
            self.stun_dropped_total,
        )
        metric("nameplates_open", "gauge", "Mailbox nameplates open.", self.nameplates_open)
        metric(
            "nameplates_allocated_total",
            "counter",
            "Nameplates allocated.",
            self.nameplates_allocated_total,
        )
        metric(
            "nameplates_claimed_total",
            "counter",
            "Nameplates claimed.",
            self.nameplates_claimed_total,
        )
        metric(
            "nameplates_expired_total",
            "counter",
            "Nameplates ended by the code expiry.",
            self.nameplates_expired_total,
        )
        metric(
            "nameplates_refused_total",
            "counter",
            "Mailbox requests refused (allocate, claim, add), by reason.",
            self.nameplates_refused_total,
        )
        metric(
            "mailbox_messages_total",
            "counter",
            "Mailbox messages passed on or queued (bodies are never logged).",
            self.mailbox_messages_total,
        )
        return "\n".join(lines) + "\n"
