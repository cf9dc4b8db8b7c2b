"""CRM tables: companies, contacts (case-insensitive unique email), deals with stages."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Numeric, String, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from opsdesk.db import Base, enum_check, utcnow


class DealStage(StrEnum):
    """Pipeline stages of a deal; won and lost are final."""

    LEAD = "lead"
    QUALIFIED = "qualified"
    PROPOSAL = "proposal"
    WON = "won"
    LOST = "lost"


class Company(Base):
    """A customer organisation."""

    __tablename__ = "crm_companies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    domain: Mapped[str | None] = mapped_column(String(253))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )

    contacts: Mapped[list[Contact]] = relationship(back_populates="company")


class Contact(Base):
    """A person; the email is unique regardless of case (unique index on lower(email))."""

    __tablename__ = "crm_contacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(50))
    company_id: Mapped[int | None] = mapped_column(
        ForeignKey("crm_companies.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )

    company: Mapped[Company | None] = relationship(back_populates="contacts")


# Case-insensitive uniqueness without the citext extension: a unique expression index.
Index("uq_crm_contacts_email_lower", func.lower(Contact.email), unique=True)


class Deal(Base):
    """A sales opportunity moving through the pipeline stages."""

    __tablename__ = "crm_deals"
    __table_args__ = (
        enum_check("stage", [s.value for s in DealStage]),
        CheckConstraint("amount >= 0", name="amount_non_negative"),
        Index("ix_crm_deals_stage", "stage"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 2))
    stage: Mapped[str] = mapped_column(String(20), default=DealStage.LEAD.value)
    company_id: Mapped[int | None] = mapped_column(
        ForeignKey("crm_companies.id", ondelete="SET NULL"), index=True
    )
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("crm_contacts.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )
