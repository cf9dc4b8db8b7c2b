"""Stock rules: no negative stock; levels cached in Redis; a `stock` event after each commit."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from inventory.models import Product, StockMove

CACHE_TTL_S = 300


class OutOfStock(Exception):
    """Shipping more than is in stock."""


class Inventory:
    """The app's service layer over one Session and a Redis client.

    Keys are `<prefix>level:<sku>`; events go to `<prefix>inventory:<name>` channels, the
    app's own naming (testbed learns it from e2e_channel_format).
    """

    def __init__(self, session: Session, redis: Any, *, prefix: str = "") -> None:
        self.session = session
        self.redis = redis
        self.prefix = prefix

    def channel(self, name: str) -> str:
        """The pub/sub channel of one kind of event."""
        return f"{self.prefix}inventory:{name}"

    def add_product(self, *, sku: str, name: str, price: Decimal) -> Product:
        """Create a product with no stock."""
        product = Product(sku=sku, name=name, price=price)
        self.session.add(product)
        self.session.commit()
        return product

    def level(self, sku: str) -> int:
        """Units in stock: from the cache, else summed from the moves (then cached)."""
        cached = self.redis.get(f"{self.prefix}level:{sku}")
        if cached is not None:
            return int(cached)
        level = self._level_from_moves(sku)
        self.redis.set(f"{self.prefix}level:{sku}", level, ex=CACHE_TTL_S)
        return level

    def receive(self, sku: str, quantity: int) -> int:
        """Book `quantity` units in; returns the new level."""
        return self._move(sku, quantity, "received")

    def ship(self, sku: str, quantity: int) -> int:
        """Book `quantity` units out; OutOfStock if there are not that many."""
        if self._level_from_moves(sku) < quantity:
            raise OutOfStock(f"{sku}: fewer than {quantity} in stock")
        return self._move(sku, -quantity, "shipped")

    def _product(self, sku: str) -> Product:
        return self.session.execute(select(Product).where(Product.sku == sku)).scalar_one()

    def _level_from_moves(self, sku: str) -> int:
        total = self.session.execute(
            select(func.coalesce(func.sum(StockMove.delta), 0))
            .join(Product)
            .where(Product.sku == sku)
        ).scalar_one()
        return int(total)

    def _move(self, sku: str, delta: int, reason: str) -> int:
        if delta == 0:
            raise ValueError("a stock move needs a non-zero quantity")
        self.session.add(StockMove(product=self._product(sku), delta=delta, reason=reason))
        self.session.commit()
        level = self._level_from_moves(sku)
        self.redis.delete(f"{self.prefix}level:{sku}")
        self.redis.publish(self.channel("stock"), json.dumps({"sku": sku, "level": level}))
        return level
