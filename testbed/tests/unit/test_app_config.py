"""How testbed loads the app's MetaData and setup hook from dotted references."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import MetaData

from testbed.config import app, load_settings
from testbed.errors import UsageError

MODULE = """
from sqlalchemy import Column, Integer, MetaData, Table
from sqlalchemy.orm import DeclarativeBase

metadata = MetaData()
things = Table("things", metadata, Column("id", Integer, primary_key=True))


class Base(DeclarativeBase):
    pass


def setup(engine):
    pass


NOT_CALLABLE = 42
"""


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "shop_models_for_test.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "shop_models_for_test"


def test_metadata_from_a_metadata_or_a_declarative_base(shop: str) -> None:
    found = app.metadata(f"{shop}:metadata")
    assert isinstance(found, MetaData)
    assert list(found.tables) == ["things"]
    assert isinstance(app.metadata(f"{shop}.Base"), MetaData)
    assert app.metadata(None) is None


def test_setup_hook_is_the_callable(shop: str) -> None:
    hook = app.schema_setup(f"{shop}:setup")
    assert callable(hook)
    assert hook.__name__ == "setup"


@pytest.mark.parametrize(
    ("loader", "ref", "message"),
    [
        ("metadata", "no_such_module_xyz:metadata", "cannot import 'no_such_module_xyz'"),
        ("metadata", "{shop}:missing", "has no 'missing'"),
        ("metadata", "{shop}:setup", "expected a SQLAlchemy MetaData or declarative Base"),
        ("schema_setup", "{shop}:NOT_CALLABLE", "expected a callable"),
    ],
)
def test_bad_references_say_what_is_wrong(shop: str, loader: str, ref: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        getattr(app, loader)(ref.format(shop=shop))


def test_channel_names_follow_the_format() -> None:
    channel = app.channel_namer("{prefix}shop.{name}", "e2e:1a2b3c4d:gw0:")
    assert channel("orders") == "e2e:1a2b3c4d:gw0:shop.orders"
    with pytest.raises(UsageError, match="channel format"):
        load_settings({"E2E_CHANNEL_FORMAT": "{prefix}{name.upper}"})
