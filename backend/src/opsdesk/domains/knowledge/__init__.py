"""Knowledge base: tagged documents with ranked full-text search."""
