"""Port checks: free/held detection and a PortConflict that names the holder."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.errors import PortConflict, ServicesUnavailable
from testbed.services import ports
from testbed.services.ports import _invisible_holder, check_free, ephemeral_range, holder, is_free


@pytest.fixture
def listening() -> Iterator[int]:
    """A port this test process listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_free_and_held(listening: int) -> None:
    assert not is_free(listening)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert is_free(port)
    check_free(port, service="PostgreSQL", env="E2E_PG_PORT")


@pytest.mark.skipif(not os.path.isdir("/proc/net"), reason="holder lookup reads /proc")
def test_holder_is_found_via_proc(listening: int) -> None:
    found = holder(listening)
    assert found is not None
    assert found[0] == os.getpid()


def test_conflict_names_port_holder_and_fix(listening: int) -> None:
    with pytest.raises(PortConflict) as info:
        check_free(listening, service="Valkey", env="E2E_REDIS_PORT")
    message = str(info.value)
    assert f"port {listening} for Valkey" in message
    assert "E2E_REDIS_PORT=" in message
    if os.path.isdir("/proc/net"):
        assert f"pid {os.getpid()}" in message
        assert info.value.holder
    assert info.value.port == listening
    assert isinstance(info.value, ServicesUnavailable)


def _fake_proc(tmp_path: Path, port: int, state: str | None) -> Path:
    """A /proc with one socket on port in the given TCP state, and the default port range."""
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "sys/net/ipv4").mkdir(parents=True)
    (proc / "sys/net/ipv4/ip_local_port_range").write_text("32768\t60999\n")
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
    row = ""
    if state is not None:
        row = f"   0: 0100007F:{port:04X} 0100007F:1F90 {state} 0:0 0:0 0 0 0 12345 1 0\n"
    (proc / "net" / "tcp").write_text(header + row)
    return proc


def test_time_wait_is_named_with_the_command_to_see_it(tmp_path: Path) -> None:
    why = _invisible_holder(57380, "E2E_REDIS_PORT", _fake_proc(tmp_path, 57380, "06"))
    assert why == (
        "held by a connection in TIME_WAIT (it clears within a minute; `ss -tan | grep :57380`): "
        "57380 is in the range 32768-60999 the kernel hands out to outgoing connections. "
        "Choose a port below 32768 with E2E_REDIS_PORT=<port>."
    )


def test_unseen_holder_below_the_ephemeral_range(tmp_path: Path) -> None:
    assert _invisible_holder(25433, "E2E_PG_PORT", _fake_proc(tmp_path, 25433, None)) == (
        "not bindable; a connection in TIME_WAIT may hold it (`ss -tan | grep :25433`). "
        "Stop it, or choose another port with E2E_PG_PORT=<port>."
    )
    listen = _invisible_holder(25433, "E2E_PG_PORT", _fake_proc(tmp_path / "l", 25433, "0A"))
    assert listen.startswith(
        "held by a process testbed cannot see (another user's, or inside a container). Stop it"
    )
    assert ephemeral_range(tmp_path / "missing") == (32768, 60999)


def test_conflict_without_visible_holder_says_what_to_try(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ports, "is_free", lambda port: False)
    monkeypatch.setattr(ports, "describe_holder", lambda port: None)
    with pytest.raises(PortConflict) as info:
        check_free(1, service="PostgreSQL", env="E2E_PG_PORT")
    assert str(info.value).startswith("port 1 for PostgreSQL is ")
    assert "ss -tan | grep :1`" in str(info.value)
    assert str(info.value).endswith("choose another port with E2E_PG_PORT=<port>.")
