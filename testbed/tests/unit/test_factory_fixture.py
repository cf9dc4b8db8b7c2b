"""factory_fixture by "module:Class" path: the factory is imported when a test first asks for it,
never when the conftest that declares it loads (the xdist controller runs no test)."""

from __future__ import annotations

import pytest

from testbed.data.names import fixture_name

pytest_plugins = ["pytester"]


def test_fixture_name_from_a_class_or_a_path() -> None:
    class CRMContactFactory:
        pass

    assert fixture_name(CRMContactFactory) == "crm_contact_factory"
    assert fixture_name("app.factories:CRMContactFactory") == "crm_contact_factory"
    assert fixture_name("app.factories.TaskCommentFactory") == "task_comment_factory"


def test_a_factory_by_path_loads_when_a_test_uses_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        lazyfactories="""
        class ThingFactory:
            def __init__(self, session, data):
                self.session, self.data = session, data
        """
    )
    pytester.makeconftest(
        """
        import sys

        import pytest

        from testbed.fixtures import factory_fixture

        thing_factory = factory_fixture("lazyfactories:ThingFactory")
        LOADED_AT_CONFTEST = "lazyfactories" in sys.modules


        @pytest.fixture
        def e2e_session():
            return "session"


        @pytest.fixture
        def e2e_data():
            return "data"
        """
    )
    pytester.makepyfile(
        test_lazy="""
        import conftest

        def test_not_loaded_by_the_conftest():
            assert conftest.LOADED_AT_CONFTEST is False

        def test_bound_to_the_session_and_data(thing_factory):
            assert type(thing_factory).__name__ == "ThingFactory"
            assert (thing_factory.session, thing_factory.data) == ("session", "data")
        """
    )
    pytester.syspathinsert()
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:xdist")
    result.assert_outcomes(passed=2)


def test_a_path_that_does_not_import_says_which(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        from testbed.fixtures import factory_fixture

        thing_factory = factory_fixture("no_such_module_here:ThingFactory")


        @pytest.fixture
        def e2e_session():
            return "session"


        @pytest.fixture
        def e2e_data():
            return "data"
        """
    )
    pytester.makepyfile(test_lazy="def test_it(thing_factory):\n    pass\n")
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:xdist")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*factory_fixture = no_such_module_here:ThingFactory*"])
