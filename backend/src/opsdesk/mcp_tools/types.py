"""Validated argument types shared by the tools, and JSON rendering of ORM rows."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError
from sqlalchemy import inspect

from opsdesk.idempotency import KEY_PATTERN
from opsdesk.unit_of_work import NUL_MESSAGE, find_nul


def _no_nul(value: Any) -> Any:
    # PostgreSQL cannot store NUL in text or JSONB: refuse it here, naming the argument, instead
    # of letting the database fail the call later.
    where = find_nul(value)
    if where is None:
        return value
    if where == "$":
        raise PydanticCustomError("nul_character", NUL_MESSAGE)
    raise PydanticCustomError("nul_character", NUL_MESSAGE + " (at {where})", {"where": where})


NoNul = AfterValidator(_no_nul)

Id = Annotated[int, Field(ge=1, le=2**31 - 1, description="Object id (positive integer)")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NoNul]
Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300), NoNul
]
Text = Annotated[str, StringConstraints(max_length=10_000), NoNul]
LongText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200_000), NoNul
]
Query = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500), NoNul]
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
    ),
    NoNul,
]
Actor = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NoNul
]
Money = Annotated[
    Decimal, Field(max_digits=18, decimal_places=2, description="Decimal string, 2 places max")
]
NonNegativeMoney = Annotated[
    Decimal, Field(ge=0, max_digits=18, decimal_places=2, description="Decimal string, >= 0")
]
Quantity = Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=3)]
Limit = Annotated[int, Field(ge=1, le=200, description="Maximum number of results")]
# Bounded like the PostgreSQL integer column: a version that cannot exist is a bad argument.
Version = Annotated[
    int, Field(ge=1, le=2**31 - 1, description="The version you last read (1 to 2147483647)")
]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50), NoNul]
Reference = Annotated[str, Field(min_length=1, max_length=100), NoNul]
JsonObject = Annotated[
    dict[str, Any], NoNul, Field(description="A JSON object; no NUL (\\u0000) in keys or strings")
]
IdempotencyKey = Annotated[
    str | None,
    Field(
        default=None,
        pattern=KEY_PATTERN,
        description="Retry-safe key: a repeated call with it returns the same object",
    ),
]


class LedgerLineIn(BaseModel):
    """A ledger line: a positive amount debits the account, a negative one credits it."""

    model_config = ConfigDict(extra="forbid")
    account_id: Id
    amount: Money


class InvoiceLineIn(BaseModel):
    """An invoice line; its total is quantity x unit_price, rounded to cents by PostgreSQL."""

    model_config = ConfigDict(extra="forbid")
    description: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), NoNul
    ]
    quantity: Quantity
    unit_price: NonNegativeMoney


def jsonable(value: Any) -> Any:
    """Return ``value`` with Decimal as string and dates as ISO 8601 (exact, JSON-safe)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def dump(obj: Any, **extra: Any) -> dict[str, Any]:
    """Render an ORM object's loaded column attributes (deferred ones skipped) as JSON-safe."""
    state = inspect(obj)
    out = {
        attr.key: jsonable(getattr(obj, attr.key))
        for attr in state.mapper.column_attrs
        if attr.key not in state.unloaded
    }
    out.update({k: jsonable(v) for k, v in extra.items()})
    return out
