"""Where healthy E2E services answer: what every backend returns and isolation connects to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoints:
    """Where the healthy E2E services answer."""

    backend: str
    database_url: str
    redis_url: str
    pg_version: str
    redis_version: str
    redis_databases: int
