"""Products and the stock moves that change their level."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """Declarative base; tables carry no schema (the connection's search_path picks it)."""


class Product(Base):
    """Something we stock, identified by its SKU."""

    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    price: Mapped[Decimal] = mapped_column(Numeric(12, 2), CheckConstraint("price >= 0"))
    moves: Mapped[list[StockMove]] = relationship(back_populates="product")


class StockMove(Base):
    """A change of a product's stock level: positive in, negative out."""

    __tablename__ = "stock_moves"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    delta: Mapped[int]
    reason: Mapped[str] = mapped_column(String(40))
    product: Mapped[Product] = relationship(back_populates="moves")
