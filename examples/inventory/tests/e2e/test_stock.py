"""Stock rules against real PostgreSQL and Valkey, one schema and Redis database per worker."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.orm import Session

from inventory.models import Product
from inventory.service import Inventory, OutOfStock
from testbed.isolation.pubsub import EventListener


def _products(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(Product)).scalar_one())


def test_receive_and_ship_keep_the_level(inventory: Inventory) -> None:
    inventory.add_product(sku="BOLT-M6", name="Bolt M6", price=Decimal("0.10"))
    assert inventory.receive("BOLT-M6", 50) == 50
    assert inventory.ship("BOLT-M6", 20) == 30
    with pytest.raises(OutOfStock):
        inventory.ship("BOLT-M6", 31)
    assert inventory.level("BOLT-M6") == 30


@pytest.mark.parametrize("attempt", [1, 2])
def test_every_test_starts_with_empty_tables(
    inventory: Inventory, db_session: Session, attempt: int
) -> None:
    # The same SKU in both runs: the first run's commit was rolled back with its test.
    assert _products(db_session) == 0
    inventory.add_product(sku="SAME-SKU", name=f"attempt {attempt}", price=Decimal(1))
    assert _products(db_session) == 1


def test_levels_are_cached_in_the_workers_redis_database(
    inventory: Inventory, e2e_redis: redis.Redis[str], e2e_redis_prefix: str
) -> None:
    inventory.add_product(sku="NUT-M6", name="Nut M6", price=Decimal("0.05"))
    inventory.receive("NUT-M6", 7)
    assert e2e_redis.get(f"{e2e_redis_prefix}level:NUT-M6") is None  # a move clears it
    assert inventory.level("NUT-M6") == 7
    assert e2e_redis.get(f"{e2e_redis_prefix}level:NUT-M6") == "7"
    assert all(key.startswith(e2e_redis_prefix) for key in e2e_redis.scan_iter())


def test_stock_events_arrive_on_the_apps_channel(
    inventory: Inventory, e2e_events: EventListener
) -> None:
    inventory.add_product(sku="WASHER", name="Washer", price=Decimal("0.02"))
    with e2e_events.subscribe("stock") as sub:
        inventory.receive("WASHER", 10)
        inventory.ship("WASHER", 4)
        events = sub.drain()
    assert [(e["sku"], e["level"]) for e in events] == [("WASHER", 10), ("WASHER", 6)]
    assert {e["_channel"] for e in events} == {inventory.channel("stock")}


def test_session_options_come_from_the_ini(inventory: Inventory, db_session: Session) -> None:
    # e2e_session_options = "expire_on_commit=true": like the app's own sessionmaker().
    product = inventory.add_product(sku="GEAR", name="Gear", price=Decimal(3))
    assert db_session.expire_on_commit is True
    assert "name" in inspect(product).expired_attributes
    assert product.name == "Gear"  # reloaded inside the test's transaction


@pytest.mark.committed
def test_committed_rows_are_visible_to_other_connections(
    inventory: Inventory, db_engine: Engine
) -> None:
    inventory.add_product(sku="SHARED", name="Seen elsewhere", price=Decimal(2))
    with db_engine.connect() as other:
        names = other.execute(text("SELECT name FROM products")).scalars().all()
    assert names == ["Seen elsewhere"]  # and the tables are truncated after this test
