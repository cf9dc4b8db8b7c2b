"""Factories without a database: definition-time checks, build, overrides, related parents,
and what create hands to the one-statement insert (a fake insert_rows and Session)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from testbed.data import factory as factory_module
from testbed.data.context import DataContext
from testbed.data.factory import (
    Factory,
    FactoryDefinitionError,
    FactoryError,
    Related,
    UnknownField,
    field,
    fixture_name,
)
from tinyapp.factories import MemberFactory, MentoredMemberFactory, TeamFactory
from tinyapp.models import Member, Team


def _data() -> DataContext:
    return DataContext(1234, "test_data_factory.py::t")


class Session:
    """What a factory uses of a Session: it is handed to insert_rows, and committed."""

    def __init__(self) -> None:
        self.commits = 0
        self.info: dict[str, Any] = {}

    def commit(self) -> None:
        self.commits += 1


@pytest.fixture
def inserted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[type[Any], list[dict[str, Any]]]]:
    """Record every insert_rows call; the "rows" come back as objects with ids from 1."""
    calls: list[tuple[type[Any], list[dict[str, Any]]]] = []
    ids = itertools.count(1)

    def insert_rows(session: Any, model: type[Any], rows: list[dict[str, Any]]) -> list[Any]:
        assert isinstance(session, Session)
        calls.append((model, [dict(r) for r in rows]))
        return [model(id=next(ids), **row) for row in rows]

    monkeypatch.setattr(factory_module, "insert_rows", insert_rows)
    return calls


# -- build --------------------------------------------------------------------------------------
def test_build_fills_fields_in_order_and_builds_parents_unsaved() -> None:
    member = MemberFactory(None, _data()).build()
    assert isinstance(member, Member)
    assert member.id is None
    local = member.email.split("@")[0]
    assert local.split(".")[0] == member.name.split()[0].lower()  # a later field read the row
    assert member.email.endswith("@example.test")
    assert isinstance(member.team, Team)
    assert member.team.id is None


def test_build_is_replayable_from_the_seed_and_unique_per_call() -> None:
    one = MemberFactory(None, _data()).build_batch(3)
    two = MemberFactory(None, _data()).build_batch(3)
    assert [m.name for m in one] == [m.name for m in two]
    assert [m.email for m in one] == [m.email for m in two]
    assert len({m.email for m in one}) == 3
    assert [m.team.name for m in one] == [m.team.name for m in two]


def test_overrides_win_over_fields_and_relationships_skip_the_parent() -> None:
    team = Team(name="Given")
    member = MemberFactory(None, _data()).build(name="Ada", team=team, level=3)
    assert (member.name, member.team, member.level) == ("Ada", team, 3)
    assert member.email.startswith("ada.")
    by_id = MemberFactory(None, _data()).build(team_id=7)
    assert by_id.team_id == 7
    assert by_id.team is None


def test_unknown_overrides_name_the_valid_fields() -> None:
    with pytest.raises(UnknownField, match=r"has no field 'nmae', 'x'; valid fields: .*email"):
        MemberFactory(None, _data()).build(nmae="Ada", x=1)
    with pytest.raises(TypeError):  # an UnknownField is a TypeError, as for a bad keyword
        MemberFactory(None, _data()).build_batch(2, nope=1)


def test_params_reach_the_hooks_and_not_the_model() -> None:
    seen: list[tuple[int, dict[str, Any]]] = []

    class Hooked(MemberFactory):
        model = Member

        def after_build(self, objs: list[Member], params: dict[str, Any]) -> None:
            seen.append((len(objs), params))

    Hooked(None, _data()).build_batch(2, senior=True)
    Hooked(None, _data()).build()
    assert seen == [(2, {"senior": True}), (1, {})]


def test_build_batch_of_nothing() -> None:
    assert MemberFactory(None, _data()).build_batch(0) == []


# -- create -------------------------------------------------------------------------------------
def test_create_batch_inserts_parents_first_in_one_batch_then_commits(
    inserted: list[tuple[type[Any], list[dict[str, Any]]]],
) -> None:
    session = Session()
    members = MemberFactory(session, _data()).create_batch(3)  # type: ignore[arg-type]
    assert [model for model, _ in inserted] == [Team, Member]
    assert [len(rows) for _, rows in inserted] == [3, 3]
    assert [row["team_id"] for row in inserted[1][1]] == [1, 2, 3]  # the parents' keys
    assert "team" not in inserted[1][1][0]  # bulk INSERT takes column values, not objects
    assert [m.id for m in members] == [4, 5, 6]
    assert session.commits == 1


def test_create_with_a_given_parent_or_key_makes_no_parent(
    inserted: list[tuple[type[Any], list[dict[str, Any]]]],
) -> None:
    session = Session()
    team = Team(id=41, name="Given")
    made = MemberFactory(session, _data())  # type: ignore[arg-type]
    made.create(team=team)
    made.create(team_id=42, level=2)
    assert [model for model, _ in inserted] == [Member, Member]
    assert inserted[0][1][0]["team_id"] == 41
    assert (inserted[1][1][0]["team_id"], inserted[1][1][0]["level"]) == (42, 2)
    assert session.commits == 2


def test_an_optional_parent_stays_null_and_a_required_one_is_made(
    inserted: list[tuple[type[Any], list[dict[str, Any]]]],
) -> None:
    session = Session()
    TeamFactory(session, _data()).create()  # type: ignore[arg-type]
    assert inserted[-1][1][0].get("parent_id") is None
    MentoredMemberFactory(session, _data()).create()  # type: ignore[arg-type]
    models = [model for model, _ in inserted[1:]]
    # Parents in the order of the fields: the member's team, the mentor (with its own team).
    assert models == [Team, Team, Member, Member]
    assert (inserted[-1][1][0]["team_id"], inserted[-1][1][0]["mentor_id"]) == (2, 4)


def test_create_without_commit_only_flushes(
    inserted: list[tuple[type[Any], list[dict[str, Any]]]],
) -> None:
    class Flushing(TeamFactory):
        model = Team
        commit = False

    session = Session()
    Flushing(session, _data()).create()  # type: ignore[arg-type]
    assert session.commits == 0
    assert Flushing(session, _data()).create_batch(0) == []  # type: ignore[arg-type]
    assert len(inserted) == 1


def test_a_factory_inside_another_leaves_the_commit_to_the_outermost(
    inserted: list[tuple[type[Any], list[dict[str, Any]]]],
) -> None:
    # A commit inside after_create would expire the outer batch's objects (a SELECT each).
    commits_seen: list[int] = []

    class WithTeams(MemberFactory):
        model = Member

        def after_create(self, objs: list[Member], params: dict[str, Any]) -> None:
            TeamFactory(self._session(), self.data).create()
            TeamFactory(self._session(), self.data).create_batch(2)
            commits_seen.append(session.commits)

    session = Session()
    WithTeams(session, _data()).create_batch(2)  # type: ignore[arg-type]
    assert commits_seen == [0]  # none while the outer create ran
    assert session.commits == 1  # once, at the end
    assert session.info == {}  # the next create commits again
    TeamFactory(session, _data()).create()  # type: ignore[arg-type]
    assert session.commits == 2


def test_a_committing_factory_inside_a_flush_only_one_still_gets_its_commit(
    inserted: list[tuple[type[Any], list[dict[str, Any]]]],
) -> None:
    # Left to the outermost, the inner factory's commit must not be dropped by an outer
    # factory that only flushes (committed mode: other connections must see the rows).
    class FlushOnly(MemberFactory):
        model = Member
        commit = False

        def after_create(self, objs: list[Member], params: dict[str, Any]) -> None:
            TeamFactory(self._session(), self.data).create()

    session = Session()
    FlushOnly(session, _data()).create()  # type: ignore[arg-type]
    assert session.commits == 1
    assert session.info == {}

    class FlushOnlyTeams(TeamFactory):
        model = Team
        commit = False

    class FlushOnlyInside(MemberFactory):
        model = Member
        commit = False

        def after_create(self, objs: list[Member], params: dict[str, Any]) -> None:
            FlushOnlyTeams(self._session(), self.data).create()

    FlushOnlyInside(session, _data()).create()  # type: ignore[arg-type]
    assert session.commits == 1  # nobody asked for one


def test_a_failed_create_still_lets_the_next_one_commit(
    inserted: list[tuple[type[Any], list[dict[str, Any]]]],
) -> None:
    class Failing(TeamFactory):
        model = Team

        def after_create(self, objs: list[Team], params: dict[str, Any]) -> None:
            raise RuntimeError("hook failed")

    session = Session()
    with pytest.raises(RuntimeError, match="hook failed"):
        Failing(session, _data()).create()  # type: ignore[arg-type]
    assert session.commits == 0
    TeamFactory(session, _data()).create()  # type: ignore[arg-type]
    assert session.commits == 1


def test_create_without_a_session_names_the_fixture() -> None:
    with pytest.raises(FactoryError, match=r"MemberFactory has no Session: .*member_factory"):
        MemberFactory(None, _data()).create()


# -- definition-time checks ----------------------------------------------------------------------
class _Base(DeclarativeBase):
    pass


class Thing(_Base):
    __tablename__ = "things"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(String(20))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("things.id"))


def test_a_factory_must_name_its_model() -> None:
    with pytest.raises(FactoryDefinitionError, match="NoModel must set `model = "):

        class NoModel(Factory[Thing]):
            label = field(lambda d, row: "x")


def test_a_field_the_model_lacks_is_named_with_the_columns() -> None:
    with pytest.raises(FactoryDefinitionError, match=r"has no column 'lable'; columns: id, label"):

        class Typo(Factory[Thing]):
            model = Thing
            label = field(lambda d, row: "x")
            lable = field(lambda d, row: "x")


def test_a_required_column_left_unfilled_is_named() -> None:
    with pytest.raises(FactoryDefinitionError, match=r"does not fill label of Thing"):

        class Missing(Factory[Thing]):
            model = Thing
            note = field(lambda d, row: "x")


def test_related_needs_a_relationship_and_a_column() -> None:
    with pytest.raises(FactoryDefinitionError, match=r"Related needs a relationship 'team'"):

        class Broken(Factory[Thing]):
            model = Thing
            label = field(lambda d, row: "x")
            team = Related(TeamFactory, fk="team_id")


def test_a_generated_column_cannot_have_a_field() -> None:
    with pytest.raises(FactoryDefinitionError, match="is generated by PostgreSQL"):

        class Generated(MemberFactory):
            model = Member
            name_length = field(lambda d, row: 3)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("MemberFactory", "member_factory"),
        ("CRMContactFactory", "crm_contact_factory"),
        ("HTTPServer", "http_server"),
        ("A", "a"),
        ("ABC", "abc"),
    ],
)
def test_fixture_name(name: str, expected: str) -> None:
    assert fixture_name(type(name, (), {})) == expected
