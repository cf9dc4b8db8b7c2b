"""CRM through MCP: companies, contacts (case-insensitive unique email), deal stages, totals."""

from __future__ import annotations

from decimal import Decimal

import pytest
from mcp import ClientSession
from mcp_calls import call, call_error, is_invalid
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from opsdesk.domains.crm.models import Company, Contact, Deal
from testbed.data.context import DataContext
from testbed.isolation.pubsub import EventListener


async def test_create_company_and_get(
    mcp_service: ClientSession, e2e_session: Session, e2e_events: EventListener
) -> None:
    with e2e_events.subscribe("crm") as sub:
        out = await call(mcp_service, "crm_create_company", name="Acme", domain="acme.test")
        event = sub.next()
    assert event["type"] == "crm.company.created"
    assert event["id"] == out["id"]
    assert e2e_session.get(Company, out["id"]).name == "Acme"  # type: ignore[union-attr]
    got = await call(mcp_service, "crm_get_company", company_id=out["id"])
    assert got["domain"] == "acme.test"


async def test_get_missing_company_is_not_found(mcp_service: ClientSession) -> None:
    assert "NotFound" in await call_error(mcp_service, "crm_get_company", company_id=999_999)


async def test_create_contact_publishes_and_persists(
    mcp_service: ClientSession,
    e2e_session: Session,
    e2e_events: EventListener,
    e2e_data: DataContext,
    company_factory: object,
) -> None:
    company = company_factory.create()  # type: ignore[attr-defined]
    email = e2e_data.email("Grace Hopper")
    with e2e_events.subscribe("crm") as sub:
        out = await call(
            mcp_service,
            "crm_create_contact",
            email=email,
            name="Grace Hopper",
            company_id=company.id,
        )
        event = sub.next()
    assert event["type"] == "crm.contact.created"
    assert event["data"]["email"] == email
    row = e2e_session.get(Contact, out["id"])
    assert row is not None
    assert row.company_id == company.id
    got = await call(mcp_service, "crm_get_contact", contact_id=out["id"])
    assert got["email"] == email


async def test_contact_email_is_unique_ignoring_case(
    mcp_service: ClientSession,
    e2e_session: Session,
    e2e_events: EventListener,
    crm_contact_factory: object,
) -> None:
    existing = crm_contact_factory.create()  # type: ignore[attr-defined]
    with e2e_events.subscribe("crm") as sub:
        message = await call_error(
            mcp_service, "crm_create_contact", email=existing.email.upper(), name="Someone Else"
        )
        assert sub.drain() == []  # a refused change publishes nothing
    assert "Conflict" in message
    count = e2e_session.scalar(
        select(func.count()).where(func.lower(Contact.email) == existing.email.lower())
    )
    assert count == 1


@pytest.mark.parametrize("email", ["not-an-email", "a@b", " "])
async def test_contact_email_must_look_like_one(mcp_service: ClientSession, email: str) -> None:
    assert is_invalid(await call_error(mcp_service, "crm_create_contact", email=email, name="X"))


async def test_contact_with_missing_company_is_not_found(mcp_service: ClientSession) -> None:
    message = await call_error(
        mcp_service, "crm_create_contact", email="x@y.test", name="X", company_id=987_654
    )
    assert "NotFound" in message


async def test_search_contacts_matches_name_or_email(
    mcp_service: ClientSession, crm_contact_factory: object
) -> None:
    crm_contact_factory.create_batch(5)  # type: ignore[attr-defined]
    target = crm_contact_factory.create(name="Zebediah Quill")  # type: ignore[attr-defined]
    by_name = await call(mcp_service, "crm_search_contacts", query="zebediah")
    assert [c["id"] for c in by_name["results"]] == [target.id]
    by_email = await call(mcp_service, "crm_search_contacts", query=target.email[-25:].upper())
    assert [c["id"] for c in by_email["results"]] == [target.id]
    assert len((await call(mcp_service, "crm_search_contacts", limit=3))["results"]) == 3


async def test_deal_moves_forward_one_stage_at_a_time(
    mcp_service: ClientSession, e2e_session: Session, e2e_events: EventListener
) -> None:
    deal = await call(mcp_service, "crm_create_deal", title="Big one", amount="1200.50")
    assert deal["stage"] == "lead"
    with e2e_events.subscribe("crm") as sub:
        for stage in ("qualified", "proposal", "won"):
            out = await call(mcp_service, "crm_move_deal", deal_id=deal["id"], stage=stage)
            assert out["stage"] == stage
            event = sub.next()
            assert event["type"] == "crm.deal.stage_changed"
            assert event["data"]["stage"] == stage
    row = e2e_session.get(Deal, deal["id"])
    assert row is not None
    assert row.stage == "won"
    assert row.amount == Decimal("1200.50")


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ((), "proposal"),
        ((), "won"),
        (("qualified", "proposal", "won"), "lost"),
        (("lost",), "lead"),
    ],
)
async def test_deal_forbidden_moves_are_refused(
    mcp_service: ClientSession, e2e_session: Session, path: tuple[str, ...], target: str
) -> None:
    deal = await call(mcp_service, "crm_create_deal", title="Deal", amount="10")
    for stage in path:
        await call(mcp_service, "crm_move_deal", deal_id=deal["id"], stage=stage)
    message = await call_error(mcp_service, "crm_move_deal", deal_id=deal["id"], stage=target)
    assert "RuleViolation" in message
    row = e2e_session.get(Deal, deal["id"])
    assert row is not None
    assert row.stage == (path[-1] if path else "lead")


async def test_deal_amount_cannot_be_negative(mcp_service: ClientSession) -> None:
    message = await call_error(mcp_service, "crm_create_deal", title="Neg", amount="-1")
    assert is_invalid(message)


async def test_deal_amount_rejects_more_than_two_decimals(mcp_service: ClientSession) -> None:
    assert is_invalid(
        await call_error(mcp_service, "crm_create_deal", title="Fraction", amount="1.001")
    )


async def test_get_and_search_deals(mcp_service: ClientSession, deal_factory: object) -> None:
    deals = deal_factory.create_batch(4)  # type: ignore[attr-defined]
    qualified = deal_factory.create(stage="qualified")  # type: ignore[attr-defined]
    got = await call(mcp_service, "crm_get_deal", deal_id=deals[0].id)
    assert Decimal(str(got["amount"])) == deals[0].amount
    found = await call(mcp_service, "crm_search_deals", stage="qualified")
    assert [d["id"] for d in found["results"]] == [qualified.id]
    assert "NotFound" in await call_error(mcp_service, "crm_get_deal", deal_id=424_242)


async def test_pipeline_totals_sum_exactly_per_stage(
    mcp_service: ClientSession, deal_factory: object
) -> None:
    deal_factory.create_batch(3, amount=Decimal("0.10"))  # type: ignore[attr-defined]
    deal_factory.create_batch(2, stage="won", amount=Decimal("1000.01"))  # type: ignore[attr-defined]
    out = await call(mcp_service, "crm_pipeline_totals")
    totals = {row["stage"]: row for row in out["stages"]}
    assert set(totals) == {"lead", "qualified", "proposal", "won", "lost"}
    assert totals["lead"]["count"] == 3
    assert Decimal(str(totals["lead"]["total"])) == Decimal("0.30")
    assert Decimal(str(totals["won"]["total"])) == Decimal("2000.02")
    assert totals["lost"]["count"] == 0
