"""``p2pcp relay`` as a process: start line, signals, 1,000 idle clients in bounded memory."""

from __future__ import annotations

import asyncio
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pcp.core.identity import SecretKey
from p2pcp.relay.client import RelayClient
from tests.support.processes import relay_process

TEST_TIMEOUT_S = 60.0
IDLE_CLIENTS = 1000
# Generous: several times what 1,000 idle clients cost (the test prints the figure).
RSS_LIMIT_MIB = 300


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def http_get(url: str, path: str) -> tuple[int, str]:
    import urllib.request

    with urllib.request.urlopen(url + path, timeout=10) as response:
        return int(response.status), response.read().decode()


@pytest.mark.e2e
def test_start_line_health_and_sigterm_exit_0() -> None:
    with relay_process() as relay:
        process = relay.process
        status, body = http_get(relay.url, "/health")
        assert status == 200 and '"status": "ok"' in body
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0


@pytest.mark.e2e
def test_ctrl_c_exits_130_with_one_line() -> None:
    with relay_process() as relay:
        relay.process.send_signal(signal.SIGINT)
        assert relay.process.wait(timeout=15) == 130
        assert relay.stderr_after_start().strip() == "p2pcp: error: interrupted"


@pytest.mark.e2e
def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    result = subprocess.run(
        [sys.executable, "-m", "p2pcp", "relay", "--port", "0", "--tls-cert", missing],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "--tls-cert and --tls-key go together" in result.stderr


def raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < IDLE_CLIENTS + 200:
        pytest.skip(f"only {soft} open files allowed; {IDLE_CLIENTS} clients need more")


@pytest.mark.slow
@pytest.mark.e2e
def test_thousand_idle_clients_in_bounded_memory() -> None:
    raise_open_file_limit()
    with relay_process("--max-clients", str(IDLE_CLIENTS + 10)) as relay:
        process, url = relay.process, relay.url
        baseline = rss_mib(process.pid)

        async def body() -> float:
            keys = [SecretKey(i.to_bytes(4, "big") * 8) for i in range(IDLE_CLIENTS)]
            clients = [RelayClient(url, key, on_packets=lambda s, d: None) for key in keys]
            try:
                for start in range(0, IDLE_CLIENTS, 100):
                    results = await asyncio.gather(
                        *(c.start(timeout_s=30) for c in clients[start : start + 100])
                    )
                    assert all(results)
                await asyncio.sleep(0.5)  # let the relay settle
                _, text = await asyncio.to_thread(http_get, url, "/metrics")
                assert f"p2pcp_relay_clients {IDLE_CLIENTS}" in text.splitlines()
                # They are usable, not only connected.
                arrived = asyncio.Event()
                probe = RelayClient(
                    url, SecretKey(bytes(32)), on_packets=lambda s, d: arrived.set()
                )
                assert await probe.start(timeout_s=10)
                assert clients[-1].send(SecretKey(bytes(32)).public, [b"hi"])
                await asyncio.wait_for(arrived.wait(), 10)
                await probe.close()
                return rss_mib(process.pid)
            finally:
                await asyncio.gather(*(c.close() for c in clients))

        started = time.monotonic()
        loaded = asyncio.run(asyncio.wait_for(body(), TEST_TIMEOUT_S))
        print(
            f"\nrelay RSS: {baseline:.1f} MiB idle, {loaded:.1f} MiB with {IDLE_CLIENTS} "
            f"clients ({(loaded - baseline) * 1024 / IDLE_CLIENTS:.1f} KiB each; "
            f"{time.monotonic() - started:.1f} s to connect)"
        )
        assert loaded < RSS_LIMIT_MIB
