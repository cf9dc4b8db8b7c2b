"""Reports with async SQLAlchemy (AsyncSession), as an async web handler would run them."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from inventory.models import Product, StockMove


async def stock_value(session: AsyncSession) -> Decimal:
    """The value of everything in stock: sum of level x price."""
    value = await session.scalar(
        select(func.coalesce(func.sum(StockMove.delta * Product.price), 0)).join(Product)
    )
    return Decimal(value or 0)


async def add_product(session: AsyncSession, *, sku: str, name: str, price: Decimal) -> int:
    """Create a product and commit; returns its id."""
    product = Product(sku=sku, name=name, price=price)
    session.add(product)
    await session.flush()
    product_id = product.id  # read before commit: expired attributes cannot lazy-load in async
    await session.commit()
    return product_id
