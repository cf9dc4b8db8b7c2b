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
