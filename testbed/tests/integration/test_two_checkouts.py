"""Two checkouts starting native services on the same ports: one wins, the other is told who."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import low_free_port

from testbed.config import Settings, default_state_root, load_settings
from testbed.errors import PortConflict
from testbed.services import native
from testbed.services.endpoints import Endpoints
from testbed.services.native import NativeBackend
from testbed.services.ownership import USER, ProcessIdentity, new_lease
from testbed.services.portlock import lock_path
from testbed.services.ports import is_free
from testbed.services.procs import is_alive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

Make = Callable[[str], NativeBackend]


@pytest.fixture
def make() -> Iterator[Make]:
    """Builds backends of distinct "checkouts" sharing one pair of ports; downs them all."""
    taken: set[int] = set()
    pg, redis = low_free_port(taken), low_free_port(taken)
    made: list[NativeBackend] = []

    def build(name: str) -> NativeBackend:
        project = f"opsdesk-e2e-it-{name}-{uuid.uuid4().hex[:8]}"
        settings: Settings = load_settings(
            {k: v for k, v in os.environ.items() if not k.startswith("E2E_")},
            backend="native",
            pg_port=pg,
            redis_port=redis,
            state_dir=default_state_root() / project,
            project=project,
            wait_timeout=20,
        )
        made.append(NativeBackend(settings, say=lambda message: None))
        return made[-1]

    yield build
    for backend in made:
        backend.down()
        (backend.settings.cache_dir / "locks" / f"{backend.settings.project}.lock").unlink(
            missing_ok=True
        )
    for port in (pg, redis):
        lock_path(port).unlink(missing_ok=True)


def test_racing_checkouts_one_starts_the_other_is_told_who(make: Make) -> None:
    backends = [make("a"), make("b")]
    barrier = threading.Barrier(2)
    results: list[tuple[Endpoints, bool] | BaseException] = [RuntimeError(), RuntimeError()]

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = backends[i].ensure(new_lease(USER, None))
        except BaseException as exc:  # collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(45)
    winners = [i for i, r in enumerate(results) if isinstance(r, tuple)]
    assert len(winners) == 1, results
    winner, loser = backends[winners[0]], backends[1 - winners[0]]
    assert results[winners[0]] == (winner.running(), True)
    error = results[1 - winners[0]]
    assert isinstance(error, PortConflict), error
    pg, redis = winner.settings.pg_port, winner.settings.redis_port
    servers = winner.pids()
    assert str(error).startswith(
        f"port {pg} is held by the E2E services of another checkout "
        f"(project {winner.settings.project}, state dir {winner.state_dir}, "
        f"pid {servers['postgres']}): run `python -m testbed down` in "
    ), str(error)
    assert "or use other ports: E2E_PG_PORT=" in str(error)
    assert not loser.state_dir.exists()
    assert loser.running() is None
    winner.down()
    assert not any(is_alive(pid) for pid in servers.values())
    assert not winner.state_dir.exists()
    assert is_free(pg)
    assert is_free(redis)


def test_a_server_that_lost_the_bind_is_caught_and_cleaned_up(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make("a")
    first.up()
    second = make("b")
    # What an older testbed without the port lock did: no lock, no port check, just start.
    monkeypatch.setattr(native, "port_lock", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(second, "_check_port", lambda *a: None)
    spawned: list[int] = []

    def spawn(*args: Any, **kwargs: Any) -> ProcessIdentity:
        found = real_spawn(*args, **kwargs)
        spawned.append(found.pid)
        return found

    real_spawn = native.spawn
    monkeypatch.setattr(native, "spawn", spawn)
    with pytest.raises(PortConflict) as info:
        second.ensure(new_lease(USER, None))
    # Valkey is checked first; ours exits on the taken port (the winner asks for a password
    # ours does not have, so its health gate can no longer pass through the winner).
    port = second.settings.redis_port
    assert str(info.value).startswith(
        f"the Valkey answering on port {port} is not the one we started (ours exited: another "
        f"process holds the port): we stopped ours. Port {port} is held by the "
        f"E2E services of another checkout (project {first.settings.project}, state dir "
        f"{first.state_dir}, pid {first.pids()['valkey']})"
    ), str(info.value)
    assert not second.state_dir.exists()
    assert first.running() is not None  # the other checkout's services are untouched
    assert spawned
    assert not any(is_alive(pid) for pid in spawned)
