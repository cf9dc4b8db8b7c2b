"""Canvas: JSONB documents with optimistic versioning and JSON path queries."""
