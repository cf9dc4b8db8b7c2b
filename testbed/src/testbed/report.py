"""Where testbed's progress lines go: stderr, or during a pytest run pytest's terminal, so a
line never lands on the end of pytest's own (`[100%]stopped valkey`, `passed in 4sstopped`)."""

from __future__ import annotations

import sys
from collections.abc import Callable

Say = Callable[[str], None]

_sink: Say | None = None


def say(message: str) -> None:
    """Tell the user one line: through the sink when one is set, else on stderr."""
    if _sink is not None:
        _sink(message)
        return
    print(message, file=sys.stderr, flush=True)


def set_sink(sink: Say | None) -> Say | None:
    """Send say() to sink (None: back to stderr); returns the previous sink."""
    global _sink
    previous, _sink = _sink, sink
    return previous


# How messages name testbed's commands: `python -m testbed down`, or the command a repository
# wraps it in (e2e_command, e.g. "make": `make down`). Set once from the settings.
DEFAULT_COMMAND = "python -m testbed"
_command = DEFAULT_COMMAND


def set_command(prefix: str) -> str:
    """Name testbed's commands in messages with prefix (e.g. "make"); returns the previous."""
    global _command
    previous, _command = _command, prefix
    return previous


def command(verb: str) -> str:
    """The command the user runs for verb (up, down, status, env, reap), in backquotes."""
    return f"`{_command} {verb}`"
