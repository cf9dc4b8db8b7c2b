"""Knowledge rules: normalized tags, ranked full-text search over the generated tsvector."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.orm import Session

from opsdesk import events
from opsdesk.db import utcnow
from opsdesk.domains.knowledge.models import KnowledgeDoc
from opsdesk.errors import InvalidArgument
from opsdesk.unit_of_work import get_or_raise, require_text, unit_of_work

_TAG_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,49}$")
MAX_TAGS = 20


@dataclass(frozen=True)
class SearchHit:
    """A document and its ts_rank score for a query."""

    doc: KnowledgeDoc
    rank: float


def normalize_tags(tags: Iterable[str]) -> list[str]:
    """Return tags lower-cased, stripped, de-duplicated in order; raise on malformed ones."""
    out: list[str] = []
    for raw in tags:
        tag = raw.strip().lower()
        if not _TAG_RE.fullmatch(tag):
            raise InvalidArgument(
                f"tag {raw!r} is not valid: use 1-50 of a-z, 0-9, '_', '.', '-', "
                "starting with a letter or digit"
            )
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise InvalidArgument(f"{len(out)} tags given; the limit is {MAX_TAGS}")
    return out


def create_doc(
    session: Session, *, title: str, body: str, tags: Sequence[str] = ()
) -> KnowledgeDoc:
    """Create a document; PostgreSQL computes its search vector."""
    doc = KnowledgeDoc(
        title=require_text(title, field="title", max_length=300),
        body=require_text(body, field="body", max_length=200_000),
        tags=normalize_tags(tags),
    )
    with unit_of_work(session, what=f"document {title!r}"):
        session.add(doc)
        session.flush()
        events.record(session, "knowledge", "doc.created", doc.id, title=doc.title, tags=doc.tags)
    return doc


def get_doc(session: Session, *, doc_id: int) -> KnowledgeDoc:
    """Return a document or raise NotFound."""
    return get_or_raise(session, KnowledgeDoc, doc_id, what="document")


def update_doc(
    session: Session,
    *,
    doc_id: int,
    title: str | None = None,
    body: str | None = None,
    tags: Sequence[str] | None = None,
) -> KnowledgeDoc:
    """Change a document's title, body or tags; the search vector follows."""
    with unit_of_work(session, what=f"document {doc_id}"):
        doc = get_or_raise(session, KnowledgeDoc, doc_id, what="document", lock=True)
        if title is not None:
            doc.title = require_text(title, field="title", max_length=300)
        if body is not None:
            doc.body = require_text(body, field="body", max_length=200_000)
        if tags is not None:
            doc.tags = normalize_tags(tags)
        doc.updated_at = utcnow()
        events.record(session, "knowledge", "doc.updated", doc.id, title=doc.title, tags=doc.tags)
    return doc


def search_docs(
    session: Session, *, query: str, tags: Sequence[str] = (), limit: int = 10
) -> list[SearchHit]:
    """Return documents matching ``query`` (web-search syntax), best ts_rank first."""
    text = require_text(query, field="query", max_length=500)
    tsquery = func.websearch_to_tsquery("english", text)
    rank = func.ts_rank(KnowledgeDoc.search_vector, tsquery).label("rank")
    stmt = (
        select(KnowledgeDoc, rank)
        .where(KnowledgeDoc.search_vector.op("@@")(tsquery))
        .order_by(rank.desc(), KnowledgeDoc.id)
        .limit(limit)
    )
    wanted = normalize_tags(tags)
    if wanted:
        stmt = stmt.where(KnowledgeDoc.tags.contains(array(wanted)))
    return [SearchHit(doc, float(score)) for doc, score in session.execute(stmt)]


def docs_with_tag(session: Session, *, tag: str, limit: int = 50) -> list[KnowledgeDoc]:
    """Return documents carrying ``tag``."""
    (wanted,) = normalize_tags([tag])
    stmt = (
        select(KnowledgeDoc)
        .where(KnowledgeDoc.tags.contains(array([wanted])))
        .order_by(KnowledgeDoc.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))
