"""Canvas rules: optimistic versioning (atomic compare-and-set) and JSON path queries."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import cast, func, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB, JSONPATH
from sqlalchemy.orm import Session

from opsdesk import events
from opsdesk.db import utcnow
from opsdesk.domains.canvas.models import CanvasDoc
from opsdesk.errors import Conflict, InvalidArgument
from opsdesk.unit_of_work import get_or_raise, require_no_nul, require_text, unit_of_work

MAX_DOC_BYTES = 1_000_000
MAX_VERSION = 2**31 - 1  # the version column is a PostgreSQL integer


def check_data(data: Any) -> dict[str, Any]:
    """Return ``data`` if it is a JSON object within the size limit, without NUL, else raise."""
    if not isinstance(data, dict):
        raise InvalidArgument(f"canvas data must be a JSON object, got {type(data).__name__}")
    require_no_nul(data, field="canvas data")
    size = len(json.dumps(data))
    if size > MAX_DOC_BYTES:
        raise InvalidArgument(f"canvas data is {size} bytes; the limit is {MAX_DOC_BYTES}")
    return data


def create_canvas(session: Session, *, name: str, data: dict[str, Any] | None = None) -> CanvasDoc:
    """Create a canvas document at version 1."""
    doc = CanvasDoc(
        name=require_text(name, field="name", max_length=200),
        data=check_data(data or {}),
        version=1,
    )
    with unit_of_work(session, what=f"canvas {name!r}"):
        session.add(doc)
        session.flush()
        events.record(session, "canvas", "canvas.created", doc.id, name=doc.name, version=1)
    return doc


def get_canvas(session: Session, *, canvas_id: int) -> CanvasDoc:
    """Return a canvas document or raise NotFound."""
    return get_or_raise(session, CanvasDoc, canvas_id, what="canvas")


def save_canvas(
    session: Session, *, canvas_id: int, data: dict[str, Any], expected_version: int
) -> CanvasDoc:
    """Replace the data if the stored version is ``expected_version``; a stale one is Conflict.

    A version that cannot exist (outside 1..2**31-1) is InvalidArgument, like a bad payload:
    both are refused before the version is compared.
    """
    check_data(data)
    if not 1 <= expected_version <= MAX_VERSION:
        raise InvalidArgument(
            f"expected_version {expected_version} cannot exist (versions are 1 to {MAX_VERSION}); "
            "pass the version you read"
        )
    # One UPDATE ... WHERE version = :expected is the compare-and-set: of two racing writers
    # with the same expected version, PostgreSQL lets exactly one match the row.
    stmt = (
        update(CanvasDoc)
        .where(CanvasDoc.id == canvas_id, CanvasDoc.version == expected_version)
        .values(data=data, version=CanvasDoc.version + 1, updated_at=utcnow())
        .returning(CanvasDoc.version)
        .execution_options(synchronize_session=False)
    )
    with unit_of_work(session, what=f"canvas {canvas_id}"):
        new_version = session.execute(stmt).scalar_one_or_none()
        if new_version is None:
            current = session.scalar(select(CanvasDoc.version).where(CanvasDoc.id == canvas_id))
            if current is None:
                get_or_raise(session, CanvasDoc, canvas_id, what="canvas")
            raise Conflict(
                f"canvas {canvas_id} is at version {current}, not {expected_version}: "
                "someone saved first; reload it and apply your change again"
            )
        events.record(session, "canvas", "canvas.saved", canvas_id, version=new_version)
    doc = session.get(CanvasDoc, canvas_id, populate_existing=True)
    assert doc is not None
    return doc


def _jsonpath(path: str) -> Any:
    return cast(require_text(path, field="path", max_length=1000), JSONPATH)


def query_canvases(
    session: Session, *, path: str, variables: dict[str, Any] | None = None, limit: int = 50
) -> list[CanvasDoc]:
    """Return documents where the SQL/JSON path ``path`` matches (jsonb_path_exists)."""
    vars_json = literal(require_no_nul(variables or {}, field="variables"), JSONB)
    stmt = (
        select(CanvasDoc)
        .where(func.jsonb_path_exists(CanvasDoc.data, _jsonpath(path), vars_json))
        .order_by(CanvasDoc.id)
        .limit(limit)
    )
    try:
        with unit_of_work(session, what=f"JSON path {path!r}", commit=False):
            return list(session.scalars(stmt))
    except InvalidArgument as exc:
        raise InvalidArgument(
            f"{exc}; see PostgreSQL's SQL/JSON path syntax, e.g. $.a ? (@ > 1)"
        ) from exc


def path_values(session: Session, *, canvas_id: int, path: str) -> list[Any]:
    """Return the values ``path`` selects in one document (jsonb_path_query)."""
    get_canvas(session, canvas_id=canvas_id)
    stmt = select(func.jsonb_path_query(CanvasDoc.data, _jsonpath(path))).where(
        CanvasDoc.id == canvas_id
    )
    with unit_of_work(session, what=f"JSON path {path!r}", commit=False):
        return list(session.scalars(stmt))
