"""A Valkey that accepts connections and never answers must not hang the stdio server: calls
answer within the server's Valkey timeout, and nothing is reported as done that was not."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from stdio_server import StdioServer, server_env

from opsdesk.domains.crm.models import Company
from testbed.isolation.workers import Worker
from testbed.services import Endpoints

VALKEY_TIMEOUT = 0.5  # seconds, given to the server as OPSDESK_VALKEY_TIMEOUT
ANSWER_WITHIN = 15.0  # seconds: a few Valkey timeouts, never "forever"


@pytest.fixture
def silent_valkey_url() -> Iterator[str]:
    """A loopback port that completes TCP connections (the backlog) but never replies."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


@pytest.mark.heavy
@pytest.mark.committed
def test_a_silent_valkey_costs_a_timeout_not_a_hang(
    e2e_docker_compose: Endpoints,
    e2e_worker: Worker,
    e2e_session: Session,
    silent_valkey_url: str,
) -> None:
    env = server_env(
        e2e_docker_compose,
        e2e_worker,
        REDIS_URL=silent_valkey_url,
        OPSDESK_VALKEY_TIMEOUT=str(VALKEY_TIMEOUT),
    )
    server = StdioServer(env)
    try:
        server.initialize()
        keyed = server.request(
            "tools/call",
            {"name": "crm_create_company", "arguments": {"name": "Keyed", "idempotency_key": "s1"}},
            within=ANSWER_WITHIN,
        )
        assert keyed is not None, f"no answer; server log:\n{server.log()}"
        assert keyed["result"]["isError"] is True
        assert "changed nothing" in keyed["result"]["content"][0]["text"]
        # Without a key Valkey is only needed for the event after the COMMIT: the call succeeds.
        plain = server.request(
            "tools/call",
            {"name": "crm_create_company", "arguments": {"name": "Plain"}},
            within=ANSWER_WITHIN,
        )
        assert plain is not None, f"no answer; server log:\n{server.log()}"
        assert plain["result"].get("isError") is not True, plain
    finally:
        server.close()
    assert list(e2e_session.scalars(select(Company.name))) == ["Plain"]
