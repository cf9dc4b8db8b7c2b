"""Hostile MCP tool calls: every call is answered (result or tool error), nothing crashes, the
ledger stays balanced and a refused call writes nothing.

Examples per property, by HYPOTHESIS_PROFILE: 15 in the edit loop (`make e2e`, the default), 50 in
`make test` and under CI=true (`ci`), 400 in `make soak` (`soak`). A failing example is kept in
Hypothesis's database (.hypothesis/) and tried first on the next run, whatever the profile.
"""

from __future__ import annotations

import json
import math
import os
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import ClientSession
from sqlalchemy import text
from sqlalchemy.orm import Session

from opsdesk.db import table_names

EXAMPLES = {"dev": 15, "ci": 50, "soak": 400}


def examples_per_property(environ: dict[str, str] | os._Environ[str] = os.environ) -> int:
    """The profile's example count: HYPOTHESIS_PROFILE, else `ci` under CI=true, else `dev`."""
    profile = environ.get("HYPOTHESIS_PROFILE") or ("ci" if environ.get("CI") == "true" else "dev")
    if profile not in EXAMPLES:
        raise ValueError(
            f"HYPOTHESIS_PROFILE={profile!r} is not one of {', '.join(EXAMPLES)}; unset it or "
            "pick one"
        )
    return EXAMPLES[profile]


_EXAMPLES = examples_per_property()
HOSTILE = settings(
    max_examples=_EXAMPLES,
    deadline=None,
    derandomize=False,
    # One Session per test on purpose: state piles up across examples, as in a real server.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

NASTY_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\\x00",
    "\u0000drop",
    "'; DROP TABLE finance_accounts; --",
    '" OR 1=1 --',
    "Robert'); DROP TABLE crm_contacts;--",
    "$$; SELECT pg_sleep(10); $$",
    '{"$ne": null}',
    '{"__proto__": {"admin": true}}',
    ']}"',
    "%s%s%s%n",
    "{{7*7}}",
    "${jndi:x}",
    "\u202eevil",
    "e\u0301",
    "🙂" * 300,
    "ß" * 201,
    "x" * 10_001,
    "y" * 300_000,
    "\r\n\t\v\f",
    "null",
    "NaN",
    "Infinity",
    "-0",
    "1e400",
    "-1e-400",
    "0.001",
    "-99999999999999999999.99",
    "e2e:*",
    "*",
    '$.a ? (@ like_regex "(((((a*)*)*)*)*b")',
    "lax $.**",
    "2026-02-30",
]
NASTY_NUMBERS = [
    0,
    -1,
    1,
    2**31 - 1,
    2**31,
    -(2**31),
    2**63,
    2**70,
    -(2**70),
    float("inf"),
    float("-inf"),
    float("nan"),
    -0.0,
    1e-9,
    3.14159,
]

texts = st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=20))
scalars = st.one_of(
    texts,
    st.sampled_from(NASTY_NUMBERS),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=6,
)
amounts = st.one_of(
    st.decimals(
        allow_nan=False,
        allow_infinity=False,
        places=2,
        min_value=Decimal("-1e15"),
        max_value=Decimal("1e15"),
    ).map(str),
    st.sampled_from(
        [
            "NaN",
            "-NaN",
            "Infinity",
            "-Infinity",
            "1e400",
            "0.001",
            "-0.005",
            "1E+2",
            " 10 ",
            "10,00",
            "",
            "0",
            "-0",
            "99999999999999999999",
        ]
    ),
    st.sampled_from(NASTY_NUMBERS),
    st.integers(),
    st.floats(),
    texts,
)


async def _tools(mcp: ClientSession) -> dict[str, dict[str, Any]]:
    listed = await mcp.list_tools()
    return {tool.name: tool.input_schema for tool in listed.tools}


def _counts(session: Session) -> dict[str, int]:
    """Row count of every opsdesk table (in the test's transaction)."""
    query = " UNION ALL ".join(f"SELECT '{name}', count(*) FROM {name}" for name in table_names())
    return {row[0]: int(row[1]) for row in session.execute(text(query))}


def _ledger_problems(session: Session) -> list[Any]:
    """Transactions whose lines do not sum to zero, or that have fewer than two lines."""
    return list(
        session.execute(
            text(
                "SELECT t.id, count(l.id), coalesce(sum(l.amount), 0) FROM ledger_transactions t "
                "LEFT JOIN ledger_lines l ON l.transaction_id = t.id GROUP BY t.id "
                "HAVING count(l.id) < 2 OR coalesce(sum(l.amount), 0) <> 0"
            )
        )
    )


def as_sent(value: Any) -> Any:
    """The value as JSON carries it: no NaN/Infinity (they become null), and numbers compared
    as floats (JSONB stores 5.9e16 as the integer 59201535410471290)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        return {k: as_sent(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_sent(v) for v in value]
    return value


def stale(expected: Any, version: int) -> bool:
    """An in-range version number that is not the current one: must be refused as Conflict."""
    return type(expected) is int and 1 <= expected < 2**31 and expected != version


async def _answered(
    mcp: ClientSession, session: Session, tool: str, arguments: dict[str, Any]
) -> tuple[bool, str]:
    """Call the tool; check it answered and that a refusal wrote nothing. (is_error, text)."""
    before = _counts(session)
    result = await mcp.call_tool(tool, arguments)  # any exception here fails the test
    message = " ".join(getattr(c, "text", "") for c in result.content)
    if result.is_error:
        assert _counts(session) == before, f"{tool} failed but wrote rows: {message[:300]}"
        # InternalError means an exception opsdesk did not expect (NUL bytes were one: BUG-R5).
        assert "InternalError" not in message, f"{tool}({str(arguments)[:300]}) -> {message[:300]}"
    else:
        assert result.structured_content is not None, f"{tool} answered without content"
    assert _ledger_problems(session) == []
    return result.is_error, message


UNKNOWN_TOOLS = ["no_such_tool", "", "crm_create_contact\x00", "../etc/passwd", "CRM_GET_CONTACT"]


# Everything is drawn before the test body runs: a draw inside an async test that overruns
# raises hypothesis's StopTest (a BaseException) through anyio and closes the MCP session.
@pytest.mark.heavy  # 15-400 examples: started first, so no worker ends on it
@HOSTILE
@given(
    tool_pick=st.one_of(st.integers(0, 10_000), st.sampled_from(UNKNOWN_TOOLS)),
    picks=st.lists(st.tuples(st.one_of(st.integers(0, 10_000), texts), values), max_size=5),
)
async def test_any_tool_with_hostile_arguments(
    mcp_service: ClientSession,
    e2e_session: Session,
    tool_pick: int | str,
    picks: list[tuple[int | str, Any]],
) -> None:
    schemas = await _tools(mcp_service)
    tools = sorted(schemas)
    tool = tools[tool_pick % len(tools)] if isinstance(tool_pick, int) else tool_pick
    params = sorted(schemas.get(tool, {}).get("properties", {})) or ["x"]
    arguments = {params[k % len(params)] if isinstance(k, int) else k: v for k, v in picks}
    is_error, message = await _answered(mcp_service, e2e_session, tool, arguments)
    if tool not in schemas:
        assert is_error, f"unknown tool {tool!r} answered {message[:200]}"


@pytest.mark.heavy  # 15-400 examples: started first, so no worker ends on it
@HOSTILE
@given(
    lines=st.lists(
        st.fixed_dictionaries(
            {
                "account_id": st.one_of(st.sampled_from([1, 2, 3]), st.sampled_from(NASTY_NUMBERS)),
                "amount": amounts,
            }
        ),
        max_size=6,
    ),
    memo=texts,
    reference=st.one_of(st.none(), texts),
)
async def test_ledger_posts_stay_balanced(
    mcp_service: ClientSession,
    e2e_session: Session,
    lines: list[dict[str, Any]],
    memo: str,
    reference: str | None,
) -> None:
    existing = e2e_session.execute(text("SELECT count(*) FROM finance_accounts")).scalar_one()
    for code in ("CASH", "BANK", "SALES")[existing:]:
        await _answered(
            mcp_service,
            e2e_session,
            "finance_create_account",
            {"code": code, "name": code.title(), "type": "asset"},
        )
    arguments: dict[str, Any] = {"memo": memo, "lines": lines}
    if reference is not None:
        arguments["reference"] = reference
    before = e2e_session.execute(text("SELECT count(*) FROM ledger_transactions")).scalar_one()
    is_error, message = await _answered(
        mcp_service, e2e_session, "finance_post_transaction", arguments
    )
    after = e2e_session.execute(text("SELECT count(*) FROM ledger_transactions")).scalar_one()
    assert after == before + (0 if is_error else 1), message[:300]


@pytest.mark.heavy  # 15-400 examples: started first, so no worker ends on it
@HOSTILE
@given(
    saves=st.lists(
        st.tuples(
            st.one_of(st.integers(-3, 6), st.sampled_from(NASTY_NUMBERS)),
            st.dictionaries(texts, values, max_size=3),
        ),
        max_size=5,
    )
)
async def test_stale_canvas_versions_change_nothing(
    mcp_service: ClientSession,
    e2e_session: Session,
    saves: list[tuple[Any, dict[str, Any]]],
) -> None:
    _, created = await _answered(
        mcp_service, e2e_session, "canvas_create", {"name": "hostile", "data": {"v": 0}}
    )
    canvas_id = json.loads(created)["id"]
    version, data = 1, {"v": 0}
    for expected, new_data in saves:
        is_error, message = await _answered(
            mcp_service,
            e2e_session,
            "canvas_save",
            {"canvas_id": canvas_id, "data": new_data, "expected_version": expected},
        )
        if not is_error:
            assert expected == version, f"stale version {expected} accepted (current {version})"
            version, data = version + 1, new_data
        elif stale(expected, version):
            # Stale: Conflict, unless the payload itself is refused first (e.g. too large).
            refused = ("Conflict", "InvalidArgument", "validation error")
            assert any(word in message for word in refused), message[:300]
        row = e2e_session.execute(
            text("SELECT version, data FROM canvas_docs WHERE id = :i"), {"i": canvas_id}
        ).one()
        assert row[0] == version
        if is_error:
            assert as_sent(row[1]) == as_sent(data)


def test_the_profile_sets_the_examples_per_property() -> None:
    assert examples_per_property({}) == 15
    assert examples_per_property({"CI": "true"}) == 50
    assert examples_per_property({"CI": "true", "HYPOTHESIS_PROFILE": "soak"}) == 400
    assert examples_per_property({"CI": "1", "HYPOTHESIS_PROFILE": ""}) == 15
    with pytest.raises(ValueError, match="HYPOTHESIS_PROFILE='nightly' is not one of"):
        examples_per_property({"HYPOTHESIS_PROFILE": "nightly"})
