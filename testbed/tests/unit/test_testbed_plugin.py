"""The testbed plugin's degradation rules, with a fake services layer (no real services)."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

E2E_TEST = """
def test_needs_services(e2e_docker_compose):
    pass

def test_plain():
    pass
"""


def _fake(pytester: pytest.Pytester, body: str) -> None:
    # A plugin (-p fakeservices), not a conftest: the services start before conftests load.
    # It replaces testbed.services.lifecycle.acquire for the inner run and puts it back after.
    pytester.makepyfile(
        fakeservices=f"""
import testbed.services.lifecycle as services
from testbed import errors

REAL = services.acquire

def acquire(settings):
{body}

services.acquire = acquire

def pytest_unconfigure(config):
    services.acquire = REAL
"""
    )
    pytester.syspathinsert()
    pytester.mkdir("e2e")
    (pytester.path / "e2e" / "test_one.py").write_text(E2E_TEST)


@pytest.fixture(autouse=True)
def _inner_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner runs load testbed's plugin alone and see no E2E URLs or CI from outside."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    for name in ("E2E_DATABASE_URL", "E2E_REDIS_URL", "CI", "E2E_REQUIRE_SERVICES"):
        monkeypatch.delenv(name, raising=False)


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "fakeservices", "-p", "testbed.plugin", "-ra", "e2e", *args)


UNAVAILABLE = "        raise errors.PortConflict('port 5433 is held by pid 1 (x)', port=5433)"


def test_unavailable_services_skip_outside_ci_with_one_line(pytester: pytest.Pytester) -> None:
    _fake(pytester, UNAVAILABLE)
    result = _run(pytester)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "testbed: E2E tests will be SKIPPED: E2E services unavailable: port 5433 is held*",
            f"SKIPPED [[]1[]] testbed/fixtures.py:{_fixture_line()}: E2E services unavailable:*",
        ]
    )


def _fixture_line() -> int:
    """The line of `def e2e_docker_compose` in testbed/fixtures.py (1-based)."""
    from testbed import fixtures

    source = Path(fixtures.__file__).read_text().splitlines()
    return next(i for i, text in enumerate(source, 1) if text.startswith("def e2e_docker_compose"))


@pytest.mark.parametrize("how", ["ci", "flag"])
def test_unavailable_services_fail_under_ci_or_when_required(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    _fake(pytester, UNAVAILABLE)
    if how == "ci":
        monkeypatch.setenv("CI", "true")
    result = _run(pytester, *(["--e2e-require-services"] if how == "flag" else []))
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*E2E services unavailable: port 5433*(required: CI=true*"])


def test_required_services_missing_is_exit_3(pytester: pytest.Pytester) -> None:
    _fake(pytester, UNAVAILABLE)
    result = _run(pytester, "--e2e-require-services")
    assert result.ret == 3  # make e2e: "the services could not start", not "a test failed"


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ("        raise RuntimeError('bug in the backend')", "*RuntimeError: bug in the backend*"),
        ("        raise errors.ForeignTarget('refusing port 5432')", "*refusing port 5432*"),
        ("        raise errors.UsageError('bad backend')", "*bad backend*"),
    ],
)
def test_other_failures_are_errors_never_skips(
    pytester: pytest.Pytester, body: str, shown: str
) -> None:
    _fake(pytester, body)
    result = _run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([shown])


def test_unit_paths_do_not_start_services(pytester: pytest.Pytester) -> None:
    _fake(pytester, "        raise AssertionError('services must not be started')")
    pytester.makepyfile(test_unit="def test_x():\n    pass\n")
    result = pytester.runpytest("-p", "fakeservices", "-p", "testbed.plugin", "test_unit.py")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["testbed: services not started*"])


def test_options_are_declared_once_with_ini_flag_and_env(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("-p", "testbed.plugin", "--help")
    result.stdout.fnmatch_lines(
        [
            "*--e2e-backend=E2E_BACKEND*",
            "*--e2e-seed=E2E_SEED*",
            "*--e2e-keep*",
            "*--e2e-require-services*",
            "*e2e_backend (string):*",
        ]
    )


def test_bad_setting_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("-p", "testbed.plugin", "--e2e-backend=podman")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    out = result.stderr if result.stderr.lines else result.stdout
    out.fnmatch_lines(["*unknown E2E backend 'podman'; valid backends: auto*"])


def test_progress_lines_never_run_into_pytest_lines(pytester: pytest.Pytester) -> None:
    """A backend's "stopped valkey" at the end of a run starts a line of its own: written to
    stderr it landed on pytest's progress line (`[100%]stopped valkey (pid …)`). In-process,
    the inner run's terminal is its captured stdout, so a line that bypassed pytest's terminal
    would show up on stderr instead."""
    import inspect

    from testbed.services import native

    say = inspect.signature(native.NativeBackend.__init__).parameters["say"].default
    pytester.makeconftest(f"""
import pytest
from {say.__module__} import {say.__name__} as say

@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    say("stopped valkey (pid 1)")
""")
    pytester.makepyfile(test_one="def test_x():\n    pass\n")
    result = pytester.runpytest_inprocess("-q", "-p", "testbed.plugin")
    assert result.ret == 0, result.outlines
    assert "stopped valkey (pid 1)" in result.outlines, result.outlines
    assert "stopped valkey" not in result.stderr.str()


def test_the_summary_names_the_schemas_made() -> None:
    """One summary line names every worker schema the run made (and its setup time)."""
    from testbed.config import load_settings
    from testbed.run.controller import Controller

    controller = Controller(load_settings(env={}))
    controller.worker_setup.update({"gw1": 0.25, "gw0": 0.5})
    run = controller.info.run_id
    [line] = [x for x in controller.summary() if "schemas" in x]
    assert f"e2e_{run}_gw0 0.50s, e2e_{run}_gw1 0.25s" in line


def test_the_summary_marks_schemas_restored_from_the_cache() -> None:
    """A worker schema restored from the schema cache says so; one built by the setup does not."""
    from testbed.config import load_settings
    from testbed.run.controller import Controller

    controller = Controller(load_settings(env={}))
    controller.worker_setup.update({"gw0": 3.1, "gw1": 0.08})
    controller.worker_setup_source.update({"gw0": "built", "gw1": "restored"})
    run = controller.info.run_id
    [line] = [x for x in controller.summary() if "schemas" in x]
    assert line.endswith(f"e2e_{run}_gw0 3.10s, e2e_{run}_gw1 0.08s restored")


def test_committed_by_directory_or_marker_from_the_ini(pytester: pytest.Pytester) -> None:
    """e2e_committed_dirs and e2e_committed_markers make tests committed without a hook (read
    after collection, with the services faked away: no real service is started)."""
    import json

    _fake(pytester, UNAVAILABLE)
    pytester.makeini(
        "[pytest]\ne2e_committed_dirs = concurrency\ne2e_committed_markers = transactional\n"
        "markers = transactional: needs real commits\n"
    )
    pytester.makeconftest(
        "import json\n\n"
        "def pytest_collection_finish(session):\n"
        "    marked = {\n"
        "        i.name: i.get_closest_marker('committed') is not None for i in session.items\n"
        "    }\n"
        "    (session.config.rootpath / 'marked.json').write_text(json.dumps(marked))\n"
    )
    pytester.mkdir("concurrency")
    (pytester.path / "concurrency" / "test_c.py").write_text("def test_dir():\n    pass\n")
    pytester.mkdir("unit")
    (pytester.path / "unit" / "test_u.py").write_text(
        "import pytest\n\n@pytest.mark.transactional\ndef test_marker():\n    pass\n\n"
        "def test_plain():\n    pass\n"
    )
    result = pytester.runpytest("-p", "fakeservices", "-p", "testbed.plugin", "concurrency", "unit")
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED), result.stdout
    marked = json.loads((pytester.path / "marked.json").read_text())
    assert marked == {"test_dir": True, "test_marker": True, "test_plain": False}


@pytest.mark.parametrize(("ini", "shown"), [("", "python -m testbed up"), ("make", "make up")])
def test_messages_name_the_adopters_command(
    pytester: pytest.Pytester, ini: str, shown: str
) -> None:
    """A skip says what to run in the adopter's words: `python -m testbed up`, or the command
    the repository configures (e2e_command); never `make up` where there is no Makefile."""
    _fake(pytester, UNAVAILABLE)
    if ini:
        pytester.makeini(f"[pytest]\ne2e_command = {ini}\n")
    result = _run(pytester)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines([f"*E2E services unavailable:*(run `{shown}` to see why*"])


@pytest.mark.parametrize("before", [None, "the outer run's handoff"])
def test_a_finished_run_hands_nothing_on(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, before: str | None
) -> None:
    """The controller hands its run to xdist workers in TESTBED_RUN (naming its pid) and takes it
    back at the end: left set, a pytest this process spawns later with PYTEST_XDIST_WORKER set
    (a test in an xdist worker running pytest) took the finished run for its own controller's."""
    from testbed.plugin import RUN_ENV

    _fake(pytester, UNAVAILABLE)
    pytester.makeconftest(
        "import os, pathlib\n\ndef pytest_sessionstart(session):\n"
        f"    pathlib.Path('handoff.json').write_text(os.environ[{RUN_ENV!r}])\n"
    )
    if before is None:
        monkeypatch.delenv(RUN_ENV, raising=False)
    else:
        monkeypatch.setenv(RUN_ENV, before)
    result = _run(pytester)
    result.assert_outcomes(passed=1, skipped=1)
    handed = json.loads((pytester.path / "handoff.json").read_text())
    assert handed["controller_pid"] == os.getpid()  # during the run: the handoff, in-process
    assert os.environ.get(RUN_ENV) == before


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param("conftest", id="a conftest that fails at import"),
        pytest.param("--no-such-option", id="an argument pytest refuses"),
    ],
)
def test_a_run_that_never_configures_hands_nothing_on(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    """A run that pytest ends before configuring it (a conftest that fails at import, an unknown
    option) never reaches unconfigure: the handoff must not be left in the environment then
    either, or a pytest this process starts later takes the dead run for its controller's."""
    import testbed.services.lifecycle as services
    from testbed.plugin import RUN_ENV

    _fake(pytester, UNAVAILABLE)
    # The stand-in's own unconfigure, which puts acquire back, does not run either.
    monkeypatch.setattr(services, "acquire", services.acquire)
    args: tuple[str, ...] = ()
    if broken == "conftest":
        (pytester.path / "e2e" / "conftest.py").write_text("raise RuntimeError('hostile')\n")
    else:
        args = (broken,)
    monkeypatch.delenv(RUN_ENV, raising=False)
    result = _run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert os.environ.get(RUN_ENV) is None
    assert gc.isenabled()  # the collector the run paused for its start-up runs again


def test_the_collector_pauses_while_the_suite_starts_then_freezes_what_it_built(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start-up's objects (the app's modules, the collected suite) live to the end: the
    collector is off while they load, and what survives is frozen, so no later collection
    (pytest runs five at the end of every run) walks them again. A process of its own: only
    a process's outermost run pauses and freezes."""
    _fake(pytester, UNAVAILABLE)
    (pytester.path / "e2e" / "conftest.py").write_text(
        "import gc\n\nAT_IMPORT = gc.get_threshold()[0]\n"
    )
    (pytester.path / "e2e" / "test_gc.py").write_text(
        "import gc\nimport conftest\n\n"
        "def test_start_up_paused_the_collector():\n    assert conftest.AT_IMPORT == 0\n\n"
        "def test_the_tests_run_with_it_on_over_a_frozen_start_up():\n"
        "    assert gc.isenabled() and gc.get_threshold()[0] > 0\n"
        "    assert gc.get_freeze_count() > 0\n"
    )
    monkeypatch.delenv("PYTEST_CURRENT_TEST")  # the child is an outermost run
    result = pytester.runpytest_subprocess(
        "-p", "fakeservices", "-p", "testbed.plugin", "-p", "no:randomly", "-ra", "e2e"
    )
    result.assert_outcomes(passed=3, skipped=1)


def test_a_suite_that_turns_the_collector_off_at_start_up_keeps_it_off(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pause is not gc.disable(): a conftest's own gc.disable() outlives it."""
    _fake(pytester, UNAVAILABLE)
    (pytester.path / "e2e" / "conftest.py").write_text("import gc\n\ngc.disable()\n")
    (pytester.path / "e2e" / "test_gc.py").write_text(
        "import gc\n\ndef test_the_suite_s_choice_holds():\n    assert not gc.isenabled()\n"
    )
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    result = pytester.runpytest_subprocess(
        "-p", "fakeservices", "-p", "testbed.plugin", "-p", "no:randomly", "-ra", "e2e"
    )
    result.assert_outcomes(passed=2, skipped=1)


def test_a_run_inside_a_test_freezes_nothing(pytester: pytest.Pytester) -> None:
    """An inner run's modules and suite die with it (pytester, pytest.main from a test):
    frozen, they would stay in memory to the end of the outer run."""
    _fake(pytester, UNAVAILABLE)
    (pytester.path / "e2e" / "test_big.py").write_text(
        "BUILT_AT_COLLECTION = [[n] for n in range(1000)]\n\ndef test_x():\n    pass\n"
    )
    frozen, thresholds = gc.get_freeze_count(), gc.get_threshold()
    result = _run(pytester, "-p", "no:randomly")
    result.assert_outcomes(passed=2, skipped=1)
    assert gc.get_freeze_count() <= frozen  # frozen objects still die by reference count
    assert gc.get_threshold() == thresholds
    assert gc.isenabled()
