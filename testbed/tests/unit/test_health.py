"""Health gates fail in bounded time, with the log tail and what to try."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from testbed.errors import HealthTimeout, ServicesUnavailable
from testbed.services import health


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class FakeClock:
    """health's `time`: monotonic() advances only by sleep(), so bounds are exact, not timed."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(health, "time", fake)
    return fake


def test_postgres_timeout_is_bounded_and_shows_log_tail(tmp_path: Path, clock: FakeClock) -> None:
    log = tmp_path / "postgres.log"
    log.write_text("\n".join(f"line {i}" for i in range(50)) + "\nFATAL: out of disk\n")
    url = f"postgresql://opsdesk_e2e:secret@127.0.0.1:{closed_port()}/opsdesk_e2e"
    with pytest.raises(HealthTimeout) as info:
        health.wait_postgres(url, 0.3, log=log)
    # Refused connections are retried every poll interval until the deadline, never beyond it.
    assert len(clock.slept) >= 2
    assert sum(clock.slept) <= 0.3
    message = str(info.value)
    assert "FATAL: out of disk" in message
    assert "line 10" not in message
    assert "secret" not in message
    assert "try:" in message
    assert "E2E_WAIT_TIMEOUT" in message
    assert isinstance(info.value, ServicesUnavailable)


def test_dead_server_fails_at_once(clock: FakeClock) -> None:
    with pytest.raises(HealthTimeout, match="exited before it answered"):
        health.wait_redis(f"redis://127.0.0.1:{closed_port()}/0", 30, alive=lambda: False)
    assert clock.slept == []  # after the first failed attempt, not one poll interval later


def test_log_tail_without_log(tmp_path: Path) -> None:
    assert "no server log" in health.log_tail(None)
    assert "cannot read" in health.log_tail(tmp_path / "missing.log")
    (tmp_path / "empty.log").write_text("")
    assert "empty log" in health.log_tail(tmp_path / "empty.log")
