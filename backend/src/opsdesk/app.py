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

from opsdesk.creation import Creation, commits
from opsdesk.db import make_session_factory
from opsdesk.errors import InvalidArgument, OpsdeskError
from opsdesk.events import EventBus
from opsdesk.idempotency import LEASE_SECONDS, IdempotencyStore, KeyValueStore, fingerprint
from opsdesk.unit_of_work import rollback

log = logging.getLogger("opsdesk.mcp")
T = TypeVar("T")

# The tool being served on this thread or task; mcp_tools.registry sets it around each call.
_current_tool: ContextVar[str | None] = ContextVar("opsdesk_current_tool", default=None)


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
    return _current_tool.get() or "opsdesk"


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
        lease: float = LEASE_SECONDS,
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
                    rollback(session)
                    raise

        return cls(scope, bus, _store(redis, prefix, lease))

    @classmethod
    def for_engine(
        cls, engine: Engine, *, redis: Any = None, prefix: str = "", lease: float = LEASE_SECONDS
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
                    rollback(session)
                    raise

        return cls(scope, bus, _store(redis, prefix, lease))

    @contextmanager
    def call(self) -> Iterator[Session]:
        """Yield a Session for one tool call; turn every failure into a ToolError (isError)."""
        tool = current_tool()
        session: Session | None = None
        commits_before = 0
        try:
            with self.session_scope() as session:
                commits_before = commits(session)
                yield session
        except ToolError:
            raise
        except OpsdeskError as exc:
            raise ToolError(f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            if session is not None and commits(session) > commits_before:
                log.exception("tool %s failed after its change was committed", tool)
                raise ToolError(
                    f"InternalError: {tool} committed its change, then failed; the change is "
                    "saved, so read it back before retrying; the opsdesk server log has the "
                    "details"
                ) from exc
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
        model: type[Any],
        make: Callable[[Session], int],
        load: Callable[[Session, int], dict[str, Any]],
    ) -> dict[str, Any]:
        """Create one ``model`` row, once per idempotency key: ``make`` returns the new id,
        ``load`` renders it. A failure after the COMMIT names the row that was created."""
        tool = _current_tool.get()
        if tool is None:
            # The tool's name keys its idempotency records: without it, two tools would share.
            raise RuntimeError("App.create must run inside a tool added by tool_registrar")
        creation = Creation(tool, model, key=key, fingerprint=fingerprint(arguments))
        with self.call() as session:
            try:
                new_id, replayed = self._create(session, creation, lambda: make(session))
                return {**load(session, new_id), "idempotent_replay": replayed}
            except Exception as exc:
                if not creation.committed:
                    raise
                raise _created_then_failed(creation, exc) from exc

    def _create(
        self, session: Session, creation: Creation, make: Callable[[], int]
    ) -> tuple[int, bool]:
        def watched_make() -> int:
            new_id = make()
            if new_id != creation.object_id:
                # The tool named the wrong model: the id recorded for the key would be wrong.
                raise RuntimeError(
                    f"{creation.tool} made id {new_id} but watched {creation.model.__name__} "
                    f"{creation.object_id}"
                )
            return new_id

        if creation.key is None:
            with creation.watch(session):
                return watched_make(), False
        if self.idempotency is None:
            raise InvalidArgument(
                "idempotency_key needs Valkey: start the server with REDIS_URL set"
            )
        return self.idempotency.run(session, creation, watched_make)


def _created_then_failed(creation: Creation, exc: Exception) -> ToolError:
    what = f"{creation.model.__name__} id {creation.object_id}"
    log.exception("%s created %s, then failed", creation.tool, what)
    retry = (
        "call again with the same idempotency_key to get it"
        if creation.key is not None
        else "fetch it by its id rather than creating it again"
    )
    return ToolError(
        f"InternalError: {creation.tool} created {what} (committed), then failed "
        f"({type(exc).__name__}); it exists: {retry}; the opsdesk server log has the details"
    )


def _store(redis: KeyValueStore | None, prefix: str, lease: float) -> IdempotencyStore | None:
    return None if redis is None else IdempotencyStore(redis, prefix=prefix, lease=lease)
