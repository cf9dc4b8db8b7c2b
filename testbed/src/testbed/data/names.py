"""A factory's fixture name, without importing the factory (or SQLAlchemy) to find it."""

from __future__ import annotations

from typing import Any


def fixture_name(cls: type[Any] | str) -> str:
    """The fixture name for a factory class, or for its "module:Class" path:
    CRMContactFactory -> crm_contact_factory."""
    name = cls.replace(":", ".").rpartition(".")[2] if isinstance(cls, str) else cls.__name__
    out: list[str] = []
    for i, ch in enumerate(name):
        if (
            ch.isupper()
            and i
            and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower()))
        ):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
