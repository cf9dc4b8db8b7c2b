"""The guard refuses dev targets and non-E2E names, and redacts passwords everywhere."""

from __future__ import annotations

import pytest

from testbed.errors import ForeignTarget
from testbed.guard import check_postgres_url, check_redis_url, redact


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://opsdesk_e2e@127.0.0.1:5433/opsdesk_e2e",
        "postgresql+psycopg://opsdesk_e2e:pw@127.0.0.1:5433/opsdesk_e2e",
        "postgres://ci_e2e:pw@db.internal:15432/app_e2e",
        "postgresql:///opsdesk_e2e?host=/tmp/sock&port=5433&user=opsdesk_e2e",
    ],
)
def test_e2e_postgres_targets_pass(url: str) -> None:
    check_postgres_url(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("postgresql://opsdesk_e2e@127.0.0.1:5432/opsdesk_e2e", "port 5432"),
        ("postgresql://opsdesk_e2e@127.0.0.1/opsdesk_e2e", "port 5432"),
        ("postgresql://opsdesk_e2e@127.0.0.1:5433/opsdesk_e2e?port=5432", "port 5432"),
        ("postgresql://opsdesk_e2e@127.0.0.1:5433/opsdesk", "database name 'opsdesk'"),
        ("postgresql://postgres@127.0.0.1:5433/opsdesk_e2e", "role name 'postgres'"),
        ("postgresql://127.0.0.1:5433/opsdesk_e2e", "role name ''"),
        ("postgresql://opsdesk_e2e@127.0.0.1:5433/x?dbname=prod", "database name 'prod'"),
        ("mysql://opsdesk_e2e@127.0.0.1:5433/opsdesk_e2e", "not a PostgreSQL URL"),
    ],
)
def test_foreign_postgres_targets_are_refused_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(ForeignTarget, match=why):
        check_postgres_url(url)


def test_refusal_never_shows_the_password() -> None:
    with pytest.raises(ForeignTarget) as info:
        check_postgres_url("postgresql://dev:s3cret@127.0.0.1:5432/dev")
    assert "s3cret" not in str(info.value)
    assert "***" in str(info.value)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6380/0", "rediss://:pw@cache:16380/3", "unix:///tmp/e2e/valkey.sock"]
)
def test_e2e_redis_targets_pass(url: str) -> None:
    check_redis_url(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis://127.0.0.1:6379/0", "port 6379"),
        ("redis://localhost", "port 6379"),
        ("unix:///var/run/redis/redis.sock", "unix socket"),
        ("http://127.0.0.1:6380", "not a Redis URL"),
    ],
)
def test_foreign_redis_targets_are_refused(url: str, why: str) -> None:
    with pytest.raises(ForeignTarget, match=why):
        check_redis_url(url)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://u:secret@h:1/db", "postgresql://u:***@h:1/db"),
        ("redis://:secret@h:1/0", "redis://:***@h:1/0"),
        ("postgresql://u@h:1/db", "postgresql://u@h:1/db"),
        ("postgresql://h/db?user=u&password=secret", "postgresql://h/db?user=u&password=***"),
        (
            "failed: postgresql://a:b@h/d and redis://:c@h/0",
            "failed: postgresql://a:***@h/d and redis://:***@h/0",
        ),
        ("no url here", "no url here"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://opsdesk_e2e@127.0.0.1:5433/opsdesk_e2e?port=x",
        "postgresql://opsdesk_e2e@127.0.0.1:port/opsdesk_e2e",
    ],
)
def test_a_port_that_is_not_a_number_is_refused(url: str) -> None:
    with pytest.raises(ForeignTarget, match="the port is not a number"):
        check_postgres_url(url)


def test_a_redis_port_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ForeignTarget, match="the port is not a number"):
        check_redis_url("redis://127.0.0.1:port/0")


@pytest.mark.parametrize("scheme", ["redis", "rediss", "valkey", "valkeys"])
def test_every_redis_scheme_is_checked_for_the_dev_port(scheme: str) -> None:
    check_redis_url(f"{scheme}://127.0.0.1:6380/0")
    with pytest.raises(ForeignTarget, match="port 6379"):
        check_redis_url(f"{scheme.upper()}://127.0.0.1:6379/0")


def test_the_last_of_repeated_query_parameters_counts_as_libpq_reads_it() -> None:
    check_postgres_url("postgresql://app_e2e@127.0.0.1:5433/x?dbname=prod&dbname=app_e2e")
    with pytest.raises(ForeignTarget, match="database name 'prod'"):
        check_postgres_url("postgresql://app_e2e@127.0.0.1:5433/x?dbname=app_e2e&dbname=prod")


def test_the_refusal_names_the_database_as_given() -> None:
    with pytest.raises(ForeignTarget, match="database name 'Xprod'"):
        check_postgres_url("postgresql://app_e2e@127.0.0.1:5433/Xprod")


def test_an_empty_password_is_left_as_it_is() -> None:
    assert redact("postgresql://u:@h/db") == "postgresql://u:@h/db"


@pytest.mark.parametrize(
    "refuse",
    [
        lambda: check_postgres_url("postgresql://shop_e2e@127.0.0.1:5432/shop_e2e"),
        lambda: check_postgres_url("mysql://shop_e2e@127.0.0.1/shop_e2e"),
        lambda: check_redis_url("redis://127.0.0.1:6379/0"),
        lambda: check_redis_url("http://127.0.0.1/0"),
        lambda: check_redis_url("unix:///tmp/valkey.sock"),
    ],
)
def test_refusals_speak_the_adopters_words(refuse: object) -> None:
    """No port of this repository's (5433, 6380) and no `make` target in what to do next."""
    with pytest.raises(ForeignTarget) as info:
        refuse()  # type: ignore[operator]
    message = str(info.value)
    assert "5433" not in message
    assert "6380" not in message
    assert "make " not in message
