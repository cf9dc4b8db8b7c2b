"""Isolation: the worker's schema, per-test sessions (sync and async), Redis namespaces, pub/sub."""
