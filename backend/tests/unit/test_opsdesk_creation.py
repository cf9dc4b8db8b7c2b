"""Watching a create through Session events, and naming its row when it fails after COMMIT
(SQLite in memory stands in for PostgreSQL: only the Session's events matter here)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from mcp.server.mcpserver.exceptions import ToolError
from sqlalchemy import create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from opsdesk.app import App, calling_tool
from opsdesk.creation import Creation, commits
from opsdesk.events import EventBus
from opsdesk.unit_of_work import rollback


class Base(DeclarativeBase):
    """A metadata of its own: only these two tables."""


class Widget(Base):
    """The row a create makes."""

    __tablename__ = "widgets"
    id: Mapped[int] = mapped_column(primary_key=True)


class Part(Base):
    """Another row the same create makes."""

    __tablename__ = "parts"
    id: Mapped[int] = mapped_column(primary_key=True)


@pytest.fixture
def session() -> Iterator[Session]:
    """A Session on an empty in-memory SQLite database."""
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine, expire_on_commit=False) as session:
        yield session
    engine.dispose()  # its pooled connection closed now, not by the GC (ResourceWarning on 3.13)


def make_widget(session: Session) -> int:
    """A service: a part, then the widget, one commit; returns the widget's id."""
    session.add(Part())
    session.flush()
    widget = Widget()
    session.add(widget)
    session.commit()
    return widget.id


def fail_after_next_commit(session: Session) -> None:
    """Make the next COMMIT raise after it has happened."""

    def explode(committed: Session) -> None:
        raise RuntimeError("after commit")

    event.listen(session, "after_commit", explode, once=True)


def test_watch_notes_the_id_of_the_watched_model_and_the_commit(session: Session) -> None:
    creation = Creation("t", Widget)
    with creation.watch(session):
        new_id = make_widget(session)
    assert (creation.object_id, creation.committed) == (new_id, True)
    assert "opsdesk.creation" not in session.info


def test_a_rolled_back_row_is_forgotten(session: Session) -> None:
    creation = Creation("t", Widget)
    with creation.watch(session):
        session.add(Widget())
        session.flush()
        assert creation.object_id is not None
        session.rollback()
    assert (creation.object_id, creation.committed) == (None, False)


def test_commits_are_counted_per_session(session: Session) -> None:
    before = commits(session)
    make_widget(session)
    make_widget(session)
    assert commits(session) == before + 2


def test_rollback_recovers_a_session_stuck_by_a_failing_after_commit_hook(
    session: Session,
) -> None:
    fail_after_next_commit(session)
    with pytest.raises(RuntimeError):
        make_widget(session)
    rollback(session)  # session.rollback() alone raises InvalidRequestError here
    assert make_widget(session) > 0


def app_over(session: Session) -> App:
    """An App whose calls all run on ``session``, without Valkey."""

    @contextmanager
    def scope() -> Iterator[Session]:
        try:
            yield session
        except BaseException:
            rollback(session)
            raise

    return App(session_scope=scope, bus=EventBus(None))


def create_widget(app: App) -> dict[str, object]:
    """What a create tool does, named like one."""
    with calling_tool("widgets_create"):
        return app.create(
            key=None,
            arguments={},
            model=Widget,
            make=make_widget,
            load=lambda s, i: {"id": i},
        )


def test_create_returns_the_new_row(session: Session) -> None:
    out = create_widget(app_over(session))
    assert out == {"id": session.query(Widget.id).scalar(), "idempotent_replay": False}


def test_a_failure_after_the_commit_names_the_created_row(session: Session) -> None:
    fail_after_next_commit(session)
    with pytest.raises(ToolError) as raised:
        create_widget(app_over(session))
    (widget_id,) = session.query(Widget.id).one()
    message = str(raised.value)
    assert message.startswith(f"InternalError: widgets_create created Widget id {widget_id} ")
    assert "fetch it by its id" in message


def test_a_failure_before_the_commit_says_nothing_changed(session: Session) -> None:
    def fail(session: Session) -> None:
        raise RuntimeError("before commit")

    event.listen(session, "before_commit", fail, once=True)
    with pytest.raises(ToolError, match="failed unexpectedly and changed nothing"):
        create_widget(app_over(session))
    assert session.query(Widget).count() == 0


def test_a_tool_naming_the_wrong_model_is_caught(session: Session) -> None:
    session.add(Part())
    session.commit()  # so the create's part and widget get different ids
    app = app_over(session)
    with calling_tool("widgets_create"), pytest.raises(ToolError, match="created Part id 2"):
        # The id the key would record must be the object's: a mismatch fails loudly.
        app.create(key=None, arguments={}, model=Part, make=make_widget, load=lambda s, i: {})


def test_create_outside_a_registered_tool_is_refused(session: Session) -> None:
    # Its idempotency records would have no tool name to keep them apart from other tools'.
    with pytest.raises(RuntimeError, match="tool_registrar"):
        app_over(session).create(
            key=None, arguments={}, model=Widget, make=make_widget, load=lambda s, i: {}
        )
    assert session.query(Widget).count() == 0
