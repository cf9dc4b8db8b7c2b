"""Domain errors raised by opsdesk services; entrypoints (MCP tools) translate them."""


class OpsdeskError(Exception):
    """Root of every opsdesk error; the message says what went wrong and what to do."""


class NotFound(OpsdeskError):
    """The referenced object does not exist."""


class Conflict(OpsdeskError):
    """The change clashes with existing state (duplicate key, stale version)."""


class RuleViolation(OpsdeskError):
    """The change breaks a business rule (forbidden transition, unbalanced ledger)."""


class InvalidArgument(OpsdeskError):
    """An argument is malformed or out of range."""
