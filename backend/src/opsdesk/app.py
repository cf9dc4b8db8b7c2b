"""What the MCP tools run against: a session scope, the event bus and the idempotency store."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from mcp.server.mcpserver.exceptions import ToolError
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from opsdesk.db import make_session_factory
from opsdesk.errors import InvalidArgument, OpsdeskError
from opsdesk.events import EventBus
from opsdesk.idempotency import DEFAULT_TTL, IdempotencyStore, KeyValueStore, fingerprint

log = logging.getLogger("opsdesk.mcp")
T = TypeVar("T")

# The tool being served on this thread or task; mcp_tools.registry sets it around each call.
_current_tool: ContextVar[str] = ContextVar("opsdesk_current_tool", default="opsdesk")


@contextmanager
def calling_tool(name: str) -> Iterator[None]:
    """Make ``name`` the current tool while the block runs."""
    token = _current_tool.set(name)
    try:
        yield
    finally:
        _current_tool.reset(token)


def current_tool() -> str:
    """Return the name of the tool being served ("opsdesk" outside a tool call)."""
    return _current_tool.get()


@dataclass
class App:
    """Bundles session_scope(), the EventBus and the idempotency store for the tools."""

    session_scope: Callable[[], AbstractContextManager[Session]]
    bus: EventBus
    idempotency: IdempotencyStore | None = None

    @classmethod
    def for_session(
        cls,
        session: Session,
        *,
        redis: Any = None,
        prefix: str = "",
        ttl: int = DEFAULT_TTL,
    ) -> App:
        """Run every tool on ``session`` (a test's Session); it is never closed or replaced."""
        bus = EventBus(redis, prefix=prefix)
        bus.bind(session)
        # Sync tools run on worker threads; one Session must serve one call at a time.
        lock = threading.Lock()

        @contextmanager
        def scope() -> Iterator[Session]:
            with lock:
                try:
                    yield session
                except BaseException:
                    session.rollback()
                    raise

        return cls(scope, bus, _store(redis, prefix, ttl))

    @classmethod
    def for_engine(
        cls, engine: Engine, *, redis: Any = None, prefix: str = "", ttl: int = DEFAULT_TTL
    ) -> App:
        """Run every tool in a fresh Session from ``engine``, closed after the call."""
        bus = EventBus(redis, prefix=prefix)
        factory = make_session_factory(engine)
        bus.bind(factory)

        @contextmanager
        def scope() -> Iterator[Session]:
            with factory() as session:
                try:
                    yield session
                except BaseException:
                    session.rollback()
                    raise

        return cls(scope, bus, _store(redis, prefix, ttl))

    @contextmanager
    def call(self) -> Iterator[Session]:
        """Yield a Session for one tool call; turn every failure into a ToolError (isError)."""
        tool = current_tool()
        try:
            with self.session_scope() as session:
                yield session
        except ToolError:
            raise
        except OpsdeskError as exc:
            raise ToolError(f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            log.exception("tool %s failed unexpectedly; the transaction was rolled back", tool)
            raise ToolError(
                f"InternalError: {tool} failed unexpectedly and changed nothing; "
                "the opsdesk server log has the details"
            ) from exc

    def run(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` as one tool call."""
        with self.call() as session:
            return fn(session)

    def create(
        self,
        *,
        key: str | None,
        arguments: dict[str, Any],
        make: Callable[[Session], int],
        load: Callable[[Session, int], dict[str, Any]],
    ) -> dict[str, Any]:
        """Create once per idempotency key: ``make`` returns the new id, ``load`` renders it."""
        tool = current_tool()
        with self.call() as session:
            if key is None:
                return {**load(session, make(session)), "idempotent_replay": False}
            if self.idempotency is None:
                raise InvalidArgument(
                    "idempotency_key needs Valkey: start the server with REDIS_URL set"
                )
            new_id, replayed = self.idempotency.run(
                tool, key, fingerprint(arguments), lambda: make(session)
            )
            return {**load(session, new_id), "idempotent_replay": replayed}


def _store(redis: KeyValueStore | None, prefix: str, ttl: int) -> IdempotencyStore | None:
    return None if redis is None else IdempotencyStore(redis, prefix=prefix, ttl=ttl)
