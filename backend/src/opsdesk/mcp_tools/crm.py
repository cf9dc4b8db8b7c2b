"""CRM tools: companies, contacts, deals, stage moves, pipeline totals."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

from opsdesk.app import App
from opsdesk.domains.crm import service as crm
from opsdesk.domains.crm.models import Company, Contact, Deal, DealStage
from opsdesk.mcp_tools.registry import tool_registrar
from opsdesk.mcp_tools.types import (
    Email,
    Id,
    IdempotencyKey,
    Limit,
    Name,
    NonNegativeMoney,
    Query,
    dump,
)


def register(server: MCPServer[Any], app: App) -> None:
    """Add the CRM tools to ``server``."""
    tool = tool_registrar(server)

    @tool("Create a company.")
    def crm_create_company(
        name: Name, domain: Name | None = None, idempotency_key: IdempotencyKey = None
    ) -> dict[str, Any]:
        return app.create(
            model=Company,
            key=idempotency_key,
            arguments={"name": name, "domain": domain},
            make=lambda s: crm.create_company(s, name=name, domain=domain).id,
            load=lambda s, i: dump(crm.get_company(s, company_id=i)),
        )

    @tool("Get a company by id.")
    def crm_get_company(company_id: Id) -> dict[str, Any]:
        return app.run(lambda s: dump(crm.get_company(s, company_id=company_id)))

    @tool("Create a contact; emails are unique ignoring case.")
    def crm_create_contact(
        email: Email,
        name: Name,
        phone: Name | None = None,
        company_id: Id | None = None,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        args: dict[str, Any] = {
            "email": email,
            "name": name,
            "phone": phone,
            "company_id": company_id,
        }
        return app.create(
            model=Contact,
            key=idempotency_key,
            arguments=args,
            make=lambda s: crm.create_contact(s, **args).id,
            load=lambda s, i: dump(crm.get_contact(s, contact_id=i)),
        )

    @tool("Get a contact by id.")
    def crm_get_contact(contact_id: Id) -> dict[str, Any]:
        return app.run(lambda s: dump(crm.get_contact(s, contact_id=contact_id)))

    @tool("Search contacts by a fragment of name or email.")
    def crm_search_contacts(query: Query = "", limit: Limit = 20) -> dict[str, Any]:
        return app.run(
            lambda s: {
                "results": [dump(c) for c in crm.search_contacts(s, query=query, limit=limit)]
            }
        )

    @tool("Create a deal in the lead stage.")
    def crm_create_deal(
        title: Name,
        amount: NonNegativeMoney,
        company_id: Id | None = None,
        contact_id: Id | None = None,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        args: dict[str, Any] = {
            "title": title,
            "amount": amount,
            "company_id": company_id,
            "contact_id": contact_id,
        }
        return app.create(
            model=Deal,
            key=idempotency_key,
            arguments=args,
            make=lambda s: crm.create_deal(s, **args).id,
            load=lambda s, i: dump(crm.get_deal(s, deal_id=i)),
        )

    @tool("Get a deal by id.")
    def crm_get_deal(deal_id: Id) -> dict[str, Any]:
        return app.run(lambda s: dump(crm.get_deal(s, deal_id=deal_id)))

    @tool("Search deals, optionally in one stage.")
    def crm_search_deals(stage: DealStage | None = None, limit: Limit = 50) -> dict[str, Any]:
        return app.run(
            lambda s: {"results": [dump(d) for d in crm.search_deals(s, stage=stage, limit=limit)]}
        )

    @tool(
        "Move a deal to another stage: lead → qualified → proposal → won, "
        "or to lost from any open stage; won and lost are final."
    )
    def crm_move_deal(deal_id: Id, stage: DealStage) -> dict[str, Any]:
        return app.run(lambda s: dump(crm.move_deal(s, deal_id=deal_id, stage=stage)))

    @tool("Deal count and summed amount per pipeline stage.")
    def crm_pipeline_totals() -> dict[str, Any]:
        return app.run(
            lambda s: {
                "stages": [
                    {"stage": t.stage, "count": t.count, "total": str(t.total)}
                    for t in crm.pipeline_totals(s)
                ]
            }
        )
