"""testbed's E2E tests: testbed adopted for the tiny app by configuration alone (the root
pyproject.toml's e2e_* keys name its MetaData and channel format), on running services."""

from __future__ import annotations

from testbed.fixtures import factory_fixture

# By path: the factories (and SQLAlchemy) load when a test first asks for one, never in the
# xdist controller, which runs no test.
team_factory = factory_fixture("tinyapp.factories:TeamFactory")
member_factory = factory_fixture("tinyapp.factories:MemberFactory")
