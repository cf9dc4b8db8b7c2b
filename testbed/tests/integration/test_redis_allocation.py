"""Valkey databases handed out through the instance: two runs never get the same one."""

from __future__ import annotations

import time

import pytest
import redis

from testbed.isolation.sessions import NotEnoughDatabases, run_redis, with_db
from testbed.run import allocation
from testbed.services.native import NativeBackend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_runs_get_distinct_databases_and_free_them(native: NativeBackend) -> None:
    eps = native.up()
    client = run_redis(eps.redis_url)
    try:
        mine = [allocation.allocate(client, "aaaaaaaa", f"gw{i}", 64) for i in range(2)]
        other = [allocation.allocate(client, "bbbbbbbb", f"gw{i}", 64) for i in range(2)]
        assert len(set(mine + other)) == 4
        assert 0 not in mine + other  # database 0 is every run's shared one
        left = redis.Redis.from_url(with_db(eps.redis_url, other[0]))
        left.set("a-dead-runs-key", "1")
        assert allocation.renew(client, "aaaaaaaa") == 2
        assert client.ttl(f"{allocation.PREFIX}{mine[0]}") > allocation.TTL_S - 5
        # Run b died: nobody renews its claims, so they expire; the next claimer flushes.
        for number in other:
            client.pexpire(f"{allocation.PREFIX}{number}", 1)
        time.sleep(0.05)
        again = allocation.allocate(client, "dddddddd", "gw0", 64)
        assert again in other
        assert left.dbsize() == 0
        left.close()
        assert allocation.release(client, "dddddddd") == [again]
        assert sorted(allocation.held(client)) == sorted(mine)
        assert sorted(allocation.release(client, "aaaaaaaa")) == sorted(mine)
        assert allocation.held(client) == {}
        taken = [allocation.allocate(client, "cccccccc", f"gw{i}", 64) for i in range(63)]
        assert sorted(taken) == list(range(1, 64))
        with pytest.raises(NotEnoughDatabases, match="in use by other runs"):
            allocation.allocate(client, "cccccccc", "gw63", 64)
        with pytest.raises(ValueError, match="never flushed"):
            allocation.flush(client, 0)
    finally:
        client.close()
