"""The ports `make example` runs the example apps on: E2E_PG_PORT and E2E_REDIS_PORT (testbed's
defaults when unset) while both are free, else spare ones just above them, so the examples start
services of their own beside whatever already answers there (e.g. opsdesk's `make up`).

    python scripts/spare_ports.py      prints "<postgresql port> <valkey port>"
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping

from testbed.config import OPTIONS_BY_NAME
from testbed.config.parse import parse_port
from testbed.errors import UsageError
from testbed.services.identity import spare_port
from testbed.services.ports import is_free


def configured(env: Mapping[str, str]) -> tuple[int, int]:
    """The E2E ports the environment asks for, else testbed's defaults; UsageError for a bad one."""
    found = []
    for name, variable in (("pg_port", "E2E_PG_PORT"), ("redis_port", "E2E_REDIS_PORT")):
        default = OPTIONS_BY_NAME[name].default
        assert isinstance(default, int)
        value = env.get(variable)
        try:  # testbed's own words for a bad one: the run would refuse it so anyway
            found.append(parse_port(value) if value else default)
        except UsageError as error:
            raise UsageError(f"{variable}: {error}") from None
    return found[0], found[1]


def choose(
    pg: int,
    redis: int,
    *,
    free: Callable[[int], bool] = is_free,
    spare: Callable[..., int | None] = spare_port,
) -> tuple[int, int]:
    """pg and redis while both are free; else a spare port above each (the two never equal).
    Where no spare port is found the configured one stays: the run then names the conflict."""
    if free(pg) and free(redis):
        return pg, redis
    spare_pg = spare(pg + 1) or pg
    return spare_pg, spare(redis + 1, avoid=(spare_pg,)) or redis


def main() -> int:
    """Print the two ports, space-separated; say on stderr when they are not the configured ones."""
    try:
        wanted = configured(os.environ)
    except UsageError as error:
        print(f"examples: {error}", file=sys.stderr)
        return 2
    pg, redis = choose(*wanted)
    if (pg, redis) != wanted:
        print(
            f"examples: the E2E ports {wanted[0]} and {wanted[1]} are not both free; "
            f"running the examples on {pg} and {redis}",
            file=sys.stderr,
        )
    print(pg, redis)
    return 0


if __name__ == "__main__":
    sys.exit(main())
