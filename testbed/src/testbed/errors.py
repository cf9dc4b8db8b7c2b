"""testbed's exceptions: one root, and every message says what to do next."""

from __future__ import annotations


class TestbedError(Exception):
    """Root of every testbed error; the message says what to do next."""

    __test__ = False  # not a pytest test class, despite the name


class UsageError(TestbedError):
    """A setting has a value testbed cannot use; the message lists the valid ones."""


class ServicesUnavailable(TestbedError):
    """The E2E services cannot be reached or started (the only family that may become a skip)."""


class PortConflict(ServicesUnavailable):
    """A port we need is held by a process that is not ours; names the port and the holder."""

    def __init__(self, message: str, *, port: int, holder: str | None = None) -> None:
        super().__init__(message)
        self.port = port
        self.holder = holder


class HealthTimeout(ServicesUnavailable):
    """A service did not answer a real query in time; includes the server log tail."""


class InUse(TestbedError):
    """This checkout's services are running in a way the request cannot share (other ports,
    or unhealthy while a live run uses them); never turned into a skip."""


class ForeignTarget(TestbedError):
    """The guard refused a target that is not an E2E service; never turned into a skip."""


class UnsafePath(UsageError):
    """A directory or file another user could write or swap (state, cache, lock): refused,
    never used; the message says why and what to do."""
