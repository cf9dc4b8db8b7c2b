"""Port checks: free/held detection and a PortConflict that names the holder."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from testbed.errors import PortConflict, ServicesUnavailable
from testbed.services.ports import check_free, holder, is_free


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
