"""The external backend: user-given URLs, refused by the guard before anything connects, never
started, stopped or reaped, and never shown with their passwords. Health probes are faked."""

from __future__ import annotations

from typing import Any

import pytest

from testbed.config import load_settings
from testbed.errors import ForeignTarget, ServicesUnavailable, UsageError
from testbed.services import health
from testbed.services.external import ExternalBackend
from testbed.services.ownership import USER, new_lease

PG = "postgresql://shop_e2e:pg-secret@127.0.0.1:25433/shop_e2e"
REDIS = "redis://:redis-secret@127.0.0.1:25380/0"


class Probes:
    """health's probes as the backend calls them; `down` makes the named service not answer."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float | None]] = []
        self.down: set[str] = set()

    def wait_postgres(self, url: str, timeout: float) -> str:
        self.calls.append(("postgres", url, timeout))
        if "postgres" in self.down:
            raise ServicesUnavailable("PostgreSQL did not answer")
        return "16.4"

    def wait_redis(self, url: str, timeout: float) -> str:
        self.calls.append(("redis", url, timeout))
        if "redis" in self.down:
            raise ConnectionRefusedError(111, "refused")  # any failure: not answering
        return "8.1.8"

    def redis_databases(self, url: str) -> int:
        self.calls.append(("databases", url, None))
        return 64


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> Probes:
    fake = Probes()
    for name in ("wait_postgres", "wait_redis", "redis_databases"):
        monkeypatch.setattr(health, name, getattr(fake, name))
    return fake


def backend(
    database_url: str | None = PG, redis_url: str | None = REDIS, **kw: Any
) -> ExternalBackend:
    env = {k: v for k, v in (("E2E_DATABASE_URL", database_url), ("E2E_REDIS_URL", redis_url)) if v}
    return ExternalBackend(load_settings(env, **kw))


# -- the URLs ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("database_url", "redis_url", "missing"),
    [
        (None, REDIS, "E2E_DATABASE_URL not set"),
        (PG, None, "E2E_REDIS_URL not set"),
        (None, None, "E2E_DATABASE_URL and E2E_REDIS_URL not set"),
        ("", REDIS, "E2E_DATABASE_URL not set"),
    ],
)
def test_both_urls_are_needed(
    probes: Probes, database_url: str | None, redis_url: str | None, missing: str
) -> None:
    with pytest.raises(UsageError) as refused:
        backend(database_url, redis_url)
    message = str(refused.value)
    assert missing in message
    assert "E2E_BACKEND=auto" in message  # the way out: let testbed start its own
    assert "secret" not in message
    assert probes.calls == []


@pytest.mark.parametrize(
    ("database_url", "redis_url", "why"),
    [
        ("postgresql://shop_e2e:pg-secret@127.0.0.1:5432/shop_e2e", REDIS, "port 5432"),
        ("postgresql://shop_e2e:pg-secret@127.0.0.1/shop_e2e", REDIS, "port 5432"),  # default
        ("postgresql://shop_e2e:pg-secret@h:25433/shop_e2e?port=5432", REDIS, "port 5432"),
        ("postgresql://shop:pg-secret@127.0.0.1:25433/shop", REDIS, "does not contain 'e2e'"),
        ("postgresql://shop_e2e:pg-secret@127.0.0.1:25433/shop", REDIS, "'shop'"),
        ("mysql://shop_e2e:pg-secret@127.0.0.1:25433/shop_e2e", REDIS, "not a PostgreSQL URL"),
        ("postgresql://shop_e2e:pg-secret@127.0.0.1:x/shop_e2e", REDIS, "not a number"),
        (PG, "redis://:redis-secret@127.0.0.1:6379/0", "port 6379"),
        (PG, "redis://:redis-secret@127.0.0.1/0", "port 6379"),  # the default port
        (PG, "http://:redis-secret@127.0.0.1:25380/0", "not a Redis URL"),
    ],
    ids=[
        "pg-dev-port",
        "pg-default-port",
        "pg-port-in-query",
        "pg-not-e2e",
        "pg-db-not-e2e",
        "pg-scheme",
        "pg-port-text",
        "redis-dev-port",
        "redis-default-port",
        "redis-scheme",
    ],
)
def test_a_url_that_is_not_an_e2e_service_is_refused_before_any_connection(
    probes: Probes, database_url: str, redis_url: str, why: str
) -> None:
    with pytest.raises(ForeignTarget) as refused:
        backend(database_url, redis_url)
    message = str(refused.value)
    assert why in message
    assert "secret" not in message  # passwords never reach a message
    assert probes.calls == []


# -- what it does: probe, and nothing else ------------------------------------------------------
def test_up_waits_for_both_within_the_wait_timeout(probes: Probes) -> None:
    eps = backend(wait_timeout=7.5).up()
    assert (eps.backend, eps.database_url, eps.redis_url) == ("external", PG, REDIS)
    assert (eps.pg_version, eps.redis_version, eps.redis_databases) == ("16.4", "8.1.8", 64)
    assert probes.calls == [
        ("postgres", PG, 7.5),
        ("redis", REDIS, 7.5),
        ("databases", REDIS, None),
    ]


def test_up_fails_when_a_service_does_not_answer(probes: Probes) -> None:
    probes.down.add("postgres")
    with pytest.raises(ServicesUnavailable, match="did not answer"):
        backend().up()


def test_ensure_never_counts_as_started_by_us(probes: Probes) -> None:
    eps, started = backend().ensure(new_lease(USER, None))
    assert started is False  # so no run ever takes these services down
    assert eps.database_url == PG


def test_it_never_stops_releases_reaps_or_logs(probes: Probes) -> None:
    b = backend()
    assert b.release("any-lease") is False
    assert b.release("any-lease", keep=True) is False
    said = b.down()
    assert "not managed by testbed" in said
    assert "nothing to stop" in said
    assert b.reap() == []
    assert b.logs() == {}
    assert probes.calls == []  # none of these even connects


def test_running_is_none_when_either_does_not_answer(probes: Probes) -> None:
    b = backend(wait_timeout=30)
    assert b.running() is not None
    assert {timeout for _, _, timeout in probes.calls if timeout} == {2.0}  # a quick look
    for service in ("postgres", "redis"):
        probes.down = {service}
        assert b.running() is None


def test_status_when_answering(probes: Probes) -> None:
    status = backend().status()
    assert status.healthy
    assert status.backend == "external"
    assert status.problems == ()
    assert any("not managed by testbed" in d for d in status.details)


def test_status_when_not_answering_names_the_targets_without_passwords(probes: Probes) -> None:
    probes.down = {"redis"}
    status = backend().status()
    assert not status.healthy
    (problem,) = status.problems
    assert "127.0.0.1:25433/shop_e2e" in problem
    assert "127.0.0.1:25380/0" in problem
    assert "does not answer" in problem
    assert "secret" not in problem
    assert "secret" not in status.render()


def test_a_password_in_the_query_is_hidden_too(probes: Probes) -> None:
    url = "postgresql://shop_e2e@127.0.0.1:25433/shop_e2e?password=query-secret"
    probes.down = {"postgres"}
    status = backend(url).status()
    assert "query-secret" not in status.render()
    assert "password=***" in status.problems[0]
