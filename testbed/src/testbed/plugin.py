"""testbed's pytest plugin: options, hooks and fixtures for the E2E suite.

One owner for shared resources (as in SQLAlchemy's own plugin): the controller (xdist
master, or the single process) brings the services up once, hands the endpoints, run id
and seed to workers through workerinput, and tears down only what it started. Each worker
makes its own schema and Redis namespace (fixtures in testbed.fixtures).
"""

from __future__ import annotations

import atexit
import functools
import inspect
import json
import os
import signal
import sys
import threading
from typing import Any

import pytest

from testbed import report
from testbed.config import OPTIONS, Settings, find_checkout, load_settings
from testbed.config.parse import parse_bool
from testbed.errors import UsageError
from testbed.isolation.sessions import export_urls
from testbed.isolation.workers import worker_from_input
from testbed.run import breaker, heap, stash
from testbed.run.controller import (
    SKIP_PREFIX,
    Controller,
    RunInfo,
    allocate_redis_db,
    wants_services,
)

pytest_plugins = ["testbed.fixtures"]

SETUP_KEY = "e2e_setup_seconds"
SOURCE_KEY = "e2e_setup_source"
WATCH_KEY = pytest.StashKey[breaker.Watch]()
PREVIOUS_COMMAND = pytest.StashKey[str]()  # an inner pytest run puts the outer run's back
GC_PAUSED = pytest.StashKey[heap.Thresholds | None]()  # the collector's thresholds this run paused
HANDOFF = pytest.StashKey[str]()  # the run for xdist workers, exported to RUN_ENV at configure
PREVIOUS_RUN_ENV = pytest.StashKey[str | None]()  # RUN_ENV as it was before this run set it
EXIT_UNAVAILABLE = 3  # the E2E services were required but could not be started
RUN_ENV = "TESTBED_RUN"  # the controller's run for its xdist workers (they inherit it)


@functools.cache
def _skip_location() -> tuple[str, int]:
    """Where e2e_docker_compose skips: testbed/fixtures.py and the fixture's `def` line."""
    # Looked up when the first skip is reported, not at import: by then pytest_plugins has
    # imported testbed.fixtures with assertion rewriting (importing it here would bypass that).
    fixture = inspect.unwrap(sys.modules["testbed.fixtures"].e2e_docker_compose)
    lines, first = inspect.getsourcelines(fixture)  # first: the decorator's line, 1-based
    offset = next((i for i, text in enumerate(lines) if text.lstrip().startswith("def ")), 0)
    return "testbed/fixtures.py", first + offset


MARKERS = (
    "e2e: needs the E2E services (PostgreSQL 16, Valkey 8); added to tests using E2E fixtures",
    "committed: the test's code must see real commits; tables are truncated afterwards",
    "heavy: a long test (a subprocess, 10k rows); runs first so no xdist worker ends on it",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Declare every testbed setting once: ini key + --flag (+ env var) sharing one help."""
    group = parser.getgroup("testbed", "testbed: E2E services and isolation")
    for opt in OPTIONS:
        text = f"{opt.help} [env {opt.env}, ini {opt.ini}]"
        parser.addini(opt.ini, help=text, default="")
        kwargs: dict[str, Any] = {"dest": f"e2e_{opt.name}", "default": None, "help": text}
        if opt.parse is parse_bool:
            # `--e2e-keep` alone means true; `--e2e-keep=false` spells the opposite.
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        group.addoption(opt.flag, **kwargs)


def _settings(config: pytest.Config) -> Settings:
    cli = {opt.name: config.getoption(f"e2e_{opt.name}") for opt in OPTIONS}
    return _load(config, cli)


def _load(config: pytest.Config, cli: dict[str, Any]) -> Settings:
    ini = {opt.name: (config.getini(opt.ini) or None) for opt in OPTIONS}
    try:  # keyed on pytest's rootdir, as `python -m testbed` finds it from the ini file
        return load_settings(ini=ini, checkout=find_checkout(config.rootpath), **cli)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None


_claimed_run = False  # this process's first pytest run took the run its controller handed on


def _inherited_run() -> RunInfo | None:
    """In an xdist worker: the run its controller put in RUN_ENV before spawning it (not in a
    pytest that a test starts: its parent is not the controller)."""
    global _claimed_run
    raw, worker = os.environ.get(RUN_ENV), os.environ.get("PYTEST_XDIST_WORKER")
    if not raw or not worker or _claimed_run:
        return None
    try:
        data = json.loads(raw)
        if data.pop("controller_pid") != os.getppid():
            return None
        info = RunInfo.from_input(data)
    except (ValueError, TypeError, KeyError):
        return None
    _claimed_run = True
    return info


def _test_paths(config: pytest.Config) -> list[str]:
    """The paths this run collects, as pytest will find them (args, else testpaths, else .)."""
    paths = [str(p) for p in (getattr(config.known_args_namespace, "file_or_dir", None) or [])]
    if not paths and config.invocation_params.dir == config.rootpath:
        paths = [str(config.rootpath / p) for p in config.getini("testpaths")]
    return paths or [str(config.invocation_params.dir)]


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Start the services and export the URLs before pytest imports the initial conftests: a
    conftest may read DATABASE_URL (e2e_database_url_env) at import. An xdist worker exports
    its own URLs from the run its controller handed on."""
    config = early_config
    ns = config.known_args_namespace
    if getattr(ns, "help", False) or getattr(ns, "version", False):
        return
    # Until the suite is collected (the conftests and test modules import the app): see heap.
    if (thresholds := heap.pause()) is not None:
        config.stash[GC_PAUSED] = thresholds
        config.add_cleanup(functools.partial(_restart_gc, config, freeze=False))
    cli = {opt.name: getattr(ns, f"e2e_{opt.name}", None) for opt in OPTIONS}
    settings = config.stash[stash.SETTINGS] = _load(config, cli)
    config.stash[PREVIOUS_COMMAND] = report.set_command(settings.command)
    info = _inherited_run()
    if info is not None:
        worker = os.environ["PYTEST_XDIST_WORKER"]
        info.redis_db = None  # the controller's; the worker's own comes next
        if info.endpoints is not None and not info.error:
            try:
                info.redis_db = allocate_redis_db(info, worker)
            except Exception as exc:
                info.error = f"E2E Valkey database allocation failed: {exc}"
        config.stash[stash.RUN] = info
        _export_urls(config, info, worker={"workerid": worker})
        return
    controller = Controller(settings)
    numprocesses = getattr(ns, "numprocesses", None)
    controller.distributed = bool(numprocesses) and config.pluginmanager.hasplugin("xdist")
    config.stash[stash.CONTROLLER] = controller
    config.stash[stash.RUN] = controller.info
    _stop_like_ctrl_c()
    if not getattr(ns, "collectonly", False) and wants_services(
        _test_paths(config), config.rootpath, settings.dirs
    ):
        atexit.register(controller.finish)  # a run that ends before its session (bad args)
        controller.start()
        _export_urls(config, controller.info)
    config.stash[HANDOFF] = json.dumps(
        {**controller.info.to_input(), "controller_pid": os.getpid()}
    )


def pytest_configure(config: pytest.Config) -> None:
    """Controller: resolve settings and make the run; worker: receive it from the controller."""
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    settings = config.stash.get(stash.SETTINGS, None) or _settings(config)
    config.stash[stash.SETTINGS] = settings
    previous = report.set_command(settings.command)
    config.stash.setdefault(PREVIOUS_COMMAND, previous)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        if stash.RUN not in config.stash:  # not handed on before the conftests: a remote worker
            info = config.stash[stash.RUN] = RunInfo.from_input(workerinput["e2e_run"])
            _export_urls(config, info)
        return
    if HANDOFF in config.stash:
        # Set here, not where the run started: pytest may end a run before configuring it (a
        # conftest that fails at import, an unknown option), and then never unconfigures it.
        config.stash[PREVIOUS_RUN_ENV] = os.environ.get(RUN_ENV)
        os.environ[RUN_ENV] = config.stash[HANDOFF]
    report.set_sink(_terminal_sink(config))
    controller = config.stash.get(stash.CONTROLLER, None)
    if controller is None:
        controller = config.stash[stash.CONTROLLER] = Controller(settings)
        config.stash[stash.RUN] = controller.info
        _stop_like_ctrl_c()
    numprocesses = getattr(config.option, "numprocesses", None)
    controller.distributed = bool(numprocesses) and getattr(config.option, "dist", "no") != "no"
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(controller), "testbed.xdist")


def _terminal_sink(config: pytest.Config) -> report.Say:
    """testbed's progress lines through pytest's terminal: each on a line of its own, never
    glued to the end of pytest's progress or summary line (which stderr writes were)."""

    def sink(message: str) -> None:
        if config.pluginmanager.get_plugin("terminalreporter") is None:  # -p no:terminal
            print(message, file=sys.stderr, flush=True)
            return
        writer = config.get_terminal_writer()
        if writer.width_of_current_line:  # pytest's progress line is still open
            writer.line()
        writer.line(message)
        writer.flush()

    return sink


def pytest_unconfigure(config: pytest.Config) -> None:
    """Progress lines go back to stderr once pytest's terminal is gone (and messages to
    testbed's own command names: a pytest run inside a test configures its own)."""
    if config.stash.get(stash.CONTROLLER, None) is not None:
        report.set_sink(None)
    report.set_command(config.stash.get(PREVIOUS_COMMAND, report.DEFAULT_COMMAND))
    if PREVIOUS_RUN_ENV in config.stash:
        # The handoff ends with the run. Left behind, it named this process as a controller, so
        # a pytest this process started later (an xdist worker's test running pytest) took the
        # finished run for its controller's: a controller that looked like a worker.
        previous = config.stash[PREVIOUS_RUN_ENV]
        if previous is None:
            os.environ.pop(RUN_ENV, None)
        else:
            os.environ[RUN_ENV] = previous


def _export_urls(
    config: pytest.Config, info: RunInfo, worker: dict[str, Any] | None = None
) -> None:
    """Hand the worker's URLs to an app that reads them from the environment."""
    if info.endpoints is None:
        return
    workerinput = worker or getattr(config, "workerinput", None)
    who = worker_from_input(workerinput, run_id=info.run_id, redis_db=info.redis_db)
    export_urls(config.stash[stash.SETTINGS], info.endpoints, who)


def _stop_like_ctrl_c() -> None:
    """Controller: SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does.

    Python's default action for them ends the process at once, skipping pytest_sessionfinish,
    so the servers, schemas and keys of a `kill`ed or hung-up run were left behind.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, signal.default_int_handler)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Controller: bring services up before the header is printed and workers start."""
    config = session.config
    controller = config.stash.get(stash.CONTROLLER, None)
    if controller is None or config.option.collectonly or config.option.help:
        return
    if wants_services(config.args, config.rootpath, config.stash[stash.SETTINGS].dirs):
        controller.start()
        if config.getoption("dist", "no") == "no":  # xdist workers export their own
            _export_urls(config, controller.info)


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Any:
    """Start-up ends with the collection (an xdist controller's, which collects nothing, too):
    collect its garbage once and freeze the rest (see testbed.run.heap)."""
    try:
        return (yield)
    finally:
        _restart_gc(session.config, freeze=True)


def _restart_gc(config: pytest.Config, *, freeze: bool) -> None:
    """Restart the collector this run paused, once: frozen after a collection, else (a run
    that ended before collecting: a usage error, a conftest that failed) as it was."""
    thresholds = config.stash.get(GC_PAUSED, None)
    if thresholds is not None:
        config.stash[GC_PAUSED] = None
        if freeze:
            heap.settle(thresholds)
        else:
            heap.resume(thresholds)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests under e2e_committed_dirs or with e2e_committed_markers `committed`; every test
    that uses an E2E fixture (or commits) `e2e` (for -m "not e2e"); `heavy` first."""
    settings = config.stash.get(stash.SETTINGS, None)
    if settings is not None and (settings.committed_dirs or settings.committed_markers):
        dirs = set(settings.committed_dirs)
        for item in items:
            if item.get_closest_marker("committed") is not None:
                continue
            in_dir = bool(dirs & set(item.path.parent.parts))
            if in_dir or any(item.get_closest_marker(m) for m in settings.committed_markers):
                item.add_marker(pytest.mark.committed)
    for item in items:
        uses = "e2e_docker_compose" in getattr(item, "fixturenames", ())
        if uses or item.get_closest_marker("committed") is not None:
            item.add_marker(pytest.mark.e2e)
    # Longest first (after pytest-randomly's shuffle, which stays in force within each group):
    # xdist hands tests out in this order, so the long ones overlap instead of being the tail.
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


def _watch(config: pytest.Config) -> breaker.Watch | None:
    """This process's breaker watch (started on first use when the run has services)."""
    watch = config.stash.get(WATCH_KEY, None)
    run = config.stash.get(stash.RUN, None)
    if watch is None and run is not None and run.run_dir:
        watch = config.stash[WATCH_KEY] = breaker.Watch(run.run_dir)
        watch.start()
    return watch


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail an E2E test at once when the breaker tripped: a service stopped answering."""
    watch = _watch(item.config)
    if watch is not None and watch.trip is not None and _uses_services(item):
        pytest.fail(watch.trip.message(), pytrace=False)


def _uses_services(item: pytest.Item) -> bool:
    return "e2e_docker_compose" in getattr(item, "fixturenames", ())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Report every "services unavailable" skip at one location, so -ra shows ONE line; after
    a trip, a failure is one line naming the service instead of a timeout's traceback."""
    report = yield
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and SKIP_PREFIX in str(longrepr[2]):
        report.longrepr = (*_skip_location(), longrepr[2])
    watch = item.config.stash.get(WATCH_KEY, None)
    if report.failed and watch is not None and watch.trip is not None and call.excinfo:
        first = call.excinfo.exconly().strip().splitlines()
        cause = f"\n  (here: {first[0][:200]})" if first and call.when != "setup" else ""
        report.longrepr = f"{watch.trip.message()}{cause}"
    return report


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """Backend, versions, redacted URLs, seed and how long the services took."""
    controller = config.stash.get(stash.CONTROLLER, None)
    return controller.header() if controller is not None else None


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Worker: report setup time; controller: clean up after the run (after workers end)."""
    config = session.config
    workeroutput = getattr(config, "workeroutput", None)
    seconds = config.stash.get(stash.SETUP_SECONDS, None)
    source = config.stash.get(stash.SETUP_SOURCE, "")
    if workeroutput is not None:
        if seconds is not None:
            workeroutput[SETUP_KEY] = seconds
            workeroutput[SOURCE_KEY] = source
            workerinput = getattr(config, "workerinput", {})
            workeroutput["e2e_worker"] = workerinput.get("workerid", "?")
        return
    controller = config.stash.get(stash.CONTROLLER, None)
    if controller is None:
        return
    if seconds is not None:
        controller.worker_setup["main"] = seconds
        controller.worker_setup_source["main"] = source
    controller.finish()
    if controller.info.unavailable and controller.info.error:
        session.exitstatus = EXIT_UNAVAILABLE  # required services missing: not a test failure


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Timings: services, per-worker schema setup; and the seed to replay the run."""
    controller = config.stash.get(stash.CONTROLLER, None)
    if controller is None or not controller.info.attempted:
        return
    terminalreporter.write_sep("-", "testbed")
    for line in controller.summary():
        terminalreporter.write_line(line)


class XdistHooks:
    """Hooks that exist only when pytest-xdist is installed."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def pytest_configure_node(self, node: Any) -> None:
        """Hand each worker the run (id, seed, endpoints or the reason there are none) and a
        Valkey database of its own, allocated through the instance."""
        info = self.controller.info.to_input()
        if self.controller.info.endpoints is not None and not info["error"]:
            try:
                info["redis_db"] = self.controller.allocate_redis_db(str(node.gateway.id))
            except Exception as exc:
                info["error"] = f"E2E Valkey database allocation failed: {exc}"
        node.workerinput["e2e_run"] = info

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """Collect the worker's schema setup time for the summary."""
        output = getattr(node, "workeroutput", {}) or {}
        if SETUP_KEY in output:
            worker = output.get("e2e_worker") or getattr(node.gateway, "id", "?")
            self.controller.worker_setup[str(worker)] = output[SETUP_KEY]
            self.controller.worker_setup_source[str(worker)] = output.get(SOURCE_KEY, "")
