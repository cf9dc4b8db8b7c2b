"""Text filters for search services: what a user types is matched literally, never as a pattern."""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, true
from sqlalchemy.orm import InstrumentedAttribute

from opsdesk.unit_of_work import require_no_nul


def contains_text(
    query: str, *columns: InstrumentedAttribute[str], field: str = "query"
) -> ColumnElement[bool]:
    """Return "any of ``columns`` contains ``query``, ignoring case"; a blank query matches all.

    SQLAlchemy's autoescape escapes LIKE's ``%`` and ``_`` and its own escape character, so
    "Under_score" finds only itself and a backslash is an ordinary character.
    """
    text = require_no_nul(query, field=field).strip()
    if not text:
        return true()
    return or_(*(column.icontains(text, autoescape=True) for column in columns))
