"""Factories for the tiny app's models, as an adopter would write them."""

from __future__ import annotations

from testbed.data.factory import Factory, Related, field
from tinyapp.models import Member, Team


class TeamFactory(Factory[Team]):
    """teams rows, without a parent team unless `parent=` or `parent_id=` is given."""

    model = Team
    name = field(lambda d, row: d.pick("company"))


class MemberFactory(Factory[Member]):
    """members rows, each in a new team (one INSERT for all the teams of a batch)."""

    model = Member
    name = field(lambda d, row: d.name())
    email = field(lambda d, row: d.email(row["name"]))
    team = Related(TeamFactory, fk="team_id")
    params = ("senior",)


class MentoredMemberFactory(MemberFactory):
    """A member with a mentor made for them (an optional many-to-one filled by the factory)."""

    model = Member
    mentor = Related(MemberFactory, fk="mentor_id", required=True)
