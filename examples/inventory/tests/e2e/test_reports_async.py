"""Async SQLAlchemy: AsyncSession(bind=conn, join_transaction_mode="create_savepoint")."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from inventory import reports
from inventory.models import Product, StockMove

pytestmark = pytest.mark.anyio


async def test_stock_value_over_an_async_session(e2e_async_session: AsyncSession) -> None:
    product_id = await reports.add_product(
        e2e_async_session, sku="CABLE", name="Cable", price=Decimal("2.50")
    )
    e2e_async_session.add(StockMove(product_id=product_id, delta=4, reason="received"))
    await e2e_async_session.commit()  # releases a SAVEPOINT only
    assert await reports.stock_value(e2e_async_session) == Decimal("10.00")


@pytest.mark.parametrize("attempt", [1, 2])
async def test_async_commits_are_rolled_back(
    e2e_async_session: AsyncSession, e2e_worker: object, attempt: int
) -> None:
    assert await e2e_async_session.scalar(select(func.count()).select_from(Product)) == 0
    await reports.add_product(e2e_async_session, sku="ONCE", name="Once", price=Decimal(1))
    schema = await e2e_async_session.scalar(text("SELECT current_schema()"))
    assert schema == e2e_worker.schema  # type: ignore[attr-defined]
