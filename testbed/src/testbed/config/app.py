"""What testbed knows of the app under test, loaded from the settings' dotted references."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from testbed.errors import UsageError

if TYPE_CHECKING:
    from sqlalchemy import Engine, MetaData

SchemaSetup = Callable[["Engine"], object]


def load(ref: str, *, setting: str) -> Any:
    """The object a reference names: `pkg.module:attr.path` or `pkg.module.attr`."""
    module_name, sep, attr_path = ref.partition(":")
    if not sep:
        module_name, _, attr_path = ref.rpartition(".")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"{setting} = {ref}: cannot import {module_name!r} ({exc}); check the module path "
            "and that it is importable (pytest's pythonpath ini key, or an installed package)"
        ) from None
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise UsageError(f"{setting} = {ref}: {module_name} has no {attr_path!r}") from None
    return target


def metadata(ref: str | None) -> MetaData | None:
    """The app's MetaData: the object itself, or a declarative Base's `.metadata`."""
    if ref is None:
        return None
    from sqlalchemy import MetaData

    found = load(ref, setting="e2e_metadata")
    found = getattr(found, "metadata", found)
    if not isinstance(found, MetaData):
        raise UsageError(
            f"e2e_metadata = {ref}: expected a SQLAlchemy MetaData or declarative Base, "
            f"got {type(found).__name__}"
        )
    return found


def schema_setup(ref: str | None) -> SchemaSetup | None:
    """The app's setup callable, taking the Engine of the worker schema."""
    if ref is None:
        return None
    found = load(ref, setting="e2e_schema_setup")
    if not callable(found):
        raise UsageError(f"e2e_schema_setup = {ref}: expected a callable, got {found!r}")
    setup: SchemaSetup = found
    return setup


def channel_namer(channel_format: str, prefix: str) -> Callable[[str], str]:
    """name -> the worker's channel for it, by the app's channel format."""

    def channel(name: str) -> str:
        return channel_format.format(prefix=prefix, name=name)

    return channel
