"""Text search through MCP is literal: LIKE's wildcards and escape characters match themselves."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from mcp import ClientSession
from mcp_calls import call

from testbed.data.factory import Factory


@dataclass(frozen=True)
class SearchTool:
    """A tool whose text argument is a case-insensitive 'contains' match on some columns."""

    name: str
    factory: str  # the fixture that makes rows for it
    field: str  # the searched column the test writes, and reads back from the results
    argument: str = "query"


SEARCH_TOOLS = [
    SearchTool("crm_search_contacts", "crm_contact_factory", "name"),
    SearchTool("tasks_search_tasks", "task_factory", "title"),
    SearchTool("tickets_search_tickets", "support_ticket_factory", "subject"),
    SearchTool("finance_search_accounts", "account_factory", "name"),
    SearchTool("finance_search_invoices", "finance_data_factory", "customer_name", "customer"),
]

# (text to find, a row that the text would also find if its special character were a wildcard
# or an escape: `_` is any one character, `%` any run, `\` PostgreSQL's default LIKE escape and
# `/` the escape character SQLAlchemy's autoescape uses).
CASES = {
    "underscore": ("Under_score", "Underxscore"),
    "percent": ("50%off", "50 and off"),
    "backslash": ("C:\\temp", "C:temp"),
    "slash": ("either/or", "eitheror"),
    "all at once": ("a_%\\/z", "ax%\\/z"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("tool", SEARCH_TOOLS, ids=lambda t: t.name)
async def test_special_characters_match_only_themselves(
    mcp_service: ClientSession, request: pytest.FixtureRequest, tool: SearchTool, case: str
) -> None:
    wanted, decoy = CASES[case]
    factory: Factory[object] = request.getfixturevalue(tool.factory)
    for value in (wanted, decoy, wanted.upper()):
        factory.create(**{tool.field: value})
    out = await call(mcp_service, tool.name, **{tool.argument: wanted})
    found = sorted(row[tool.field] for row in out["results"])
    # Case-insensitive, and nothing but the literal text: the decoy must not match.
    assert found == sorted([wanted, wanted.upper()]), f"{tool.name} {wanted!r} found {found}"


@pytest.mark.parametrize("tool", SEARCH_TOOLS, ids=lambda t: t.name)
async def test_a_fragment_around_a_special_character_still_matches(
    mcp_service: ClientSession, request: pytest.FixtureRequest, tool: SearchTool
) -> None:
    factory: Factory[object] = request.getfixturevalue(tool.factory)
    factory.create(**{tool.field: "Report 2024_Q1 (100%)"})
    factory.create(**{tool.field: "Report 2024-Q1 (1000)"})
    for fragment in ("4_q", "(100%)", "_Q1 (1"):
        out = await call(mcp_service, tool.name, **{tool.argument: fragment})
        found = [row[tool.field] for row in out["results"]]
        assert found == ["Report 2024_Q1 (100%)"], f"{tool.name} {fragment!r} found {found}"


async def test_knowledge_search_treats_the_characters_as_word_separators(
    mcp_service: ClientSession,
) -> None:
    # Full-text search is not LIKE: punctuation separates words, so none of these is an error
    # or a wildcard; each query finds the document by its words.
    doc = await call(
        mcp_service,
        "knowledge_create_doc",
        title="Backup paths",
        body="Copy C:\\temp to the backup_server at 50% load.",
    )
    await call(mcp_service, "knowledge_create_doc", title="Other", body="Copy C:tmp elsewhere.")
    for query in ("backup_server", "C:\\temp", "50%", "temp\\"):
        out = await call(mcp_service, "knowledge_search", query=query)
        assert [hit["id"] for hit in out["results"]] == [doc["id"]], query
