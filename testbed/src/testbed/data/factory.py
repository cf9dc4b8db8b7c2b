"""Plain factories over SQLAlchemy models: build, create, and create_batch as one bulk INSERT.

A factory declares one `Field` per column it fills, in order (a later field may read the
row built so far). Definition-time checks name the fix: a field the model does not have,
or a NOT NULL column without default that no field fills. Call-time overrides are checked
against the model's columns and relationships and the factory's parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import Column, inspect
from sqlalchemy.orm import Mapper, Session

from testbed.data.bulk import insert_rows
from testbed.data.context import DataContext
from testbed.data.names import fixture_name

M = TypeVar("M")
Row = dict[str, Any]


class FactoryError(Exception):
    """Root of factory errors; the message says what to change."""


class FactoryDefinitionError(FactoryError):
    """A factory class does not match its model (raised when the class is defined)."""


class UnknownField(FactoryError, TypeError):
    """An override names no column, relationship or parameter of the factory."""


@dataclass(frozen=True)
class Field:
    """Fills one column: fn(data, row_so_far) -> value."""

    fn: Callable[[DataContext, Row], Any]


def field(fn: Callable[[DataContext, Row], Any]) -> Field:
    """Declare a column's generator: `email = field(lambda d, row: d.email(row["name"]))`."""
    return Field(fn)


@dataclass(frozen=True)
class Related:
    """A many-to-one: fills `fk` from a parent made by `factory` unless given.

    Overriding the relationship (`company=obj`) or the column (`company_id=7`) skips it.
    `required=False` leaves the column NULL unless a parent is given.
    """

    factory: type[Factory[Any]]
    fk: str
    required: bool = True
    defaults: Mapping[str, Any] = dataclass_field(default_factory=dict)  # for the parent


def _table_columns(mapper: Mapper[Any]) -> dict[str, Column[Any]]:
    """Attribute key -> Column for the mapped table's own columns (not SQL expressions)."""
    out: dict[str, Column[Any]] = {}
    for prop in mapper.column_attrs:
        col = prop.columns[0]
        if isinstance(col, Column) and col.table is mapper.local_table:
            out[prop.key] = col
    return out


def _model_names(mapper: Mapper[Any]) -> tuple[set[str], set[str]]:
    columns = {attr.key for attr in mapper.column_attrs}
    relationships = {rel.key for rel in mapper.relationships}
    return columns, relationships


def _required_columns(mapper: Mapper[Any]) -> set[str]:
    """Columns an INSERT must set: NOT NULL, no default of any kind, not generated, not an
    autoincrement key."""
    required = set()
    for key, col in _table_columns(mapper).items():
        if (
            col.nullable
            or col.default is not None
            or col.server_default is not None
            or col.computed is not None
            or (col.primary_key and col.autoincrement in (True, "auto"))
        ):
            continue
        required.add(key)
    return required


# session.info key: set while a factory's create runs in that Session.
_CREATING = "testbed.factory.creating"


class Factory(Generic[M]):
    """Base class: set `model`, declare Field/Related attributes, optional `params`."""

    model: ClassVar[type[Any]]
    params: ClassVar[tuple[str, ...]] = ()  # extra keywords the factory understands
    # Commit after create: a test Session joined with create_savepoint then keeps the rows
    # when code under test rolls back its own failed unit of work (as apps often do), and in
    # committed mode other connections see them. False: flush only.
    commit: ClassVar[bool] = True
    _fields: ClassVar[dict[str, Field | Related]]
    _valid: ClassVar[frozenset[str]]
    _insertable: ClassVar[frozenset[str]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "model" not in cls.__dict__:
            raise FactoryDefinitionError(f"{cls.__name__} must set `model = <SQLAlchemy model>`")
        declared: dict[str, Field | Related] = {}
        for klass in reversed(cls.__mro__):
            for key, value in vars(klass).items():
                if isinstance(value, Field | Related):
                    declared[key] = value
        mapper: Mapper[Any] = inspect(cls.model)
        columns, relationships = _model_names(mapper)
        table_columns = _table_columns(mapper)
        computed = {k for k, c in table_columns.items() if c.computed is not None}
        insertable = set(table_columns) - computed
        valid = columns | relationships | set(cls.params)
        for key, decl in declared.items():
            if key not in relationships | columns and not isinstance(decl, Related):
                raise FactoryDefinitionError(
                    f"{cls.__name__}.{key}: {cls.model.__name__} has no column {key!r}; "
                    f"columns: {', '.join(sorted(columns))}"
                )
            if isinstance(decl, Related):
                if key not in relationships or decl.fk not in columns:
                    raise FactoryDefinitionError(
                        f"{cls.__name__}.{key}: Related needs a relationship {key!r} and a "
                        f"column {decl.fk!r} on {cls.model.__name__}; relationships: "
                        f"{', '.join(sorted(relationships)) or 'none'}"
                    )
            elif key in computed:
                raise FactoryDefinitionError(
                    f"{cls.__name__}.{key}: {cls.model.__name__}.{key} is generated by "
                    "PostgreSQL; remove the field"
                )
        filled = set(declared) | {d.fk for d in declared.values() if isinstance(d, Related)}
        missing = _required_columns(mapper) - filled
        if missing:
            raise FactoryDefinitionError(
                f"{cls.__name__} does not fill {', '.join(sorted(missing))} of "
                f"{cls.model.__name__} (NOT NULL, no default): declare a field for each"
            )
        cls._fields = declared
        cls._valid = frozenset(valid)
        cls._insertable = frozenset(insertable)

    def __init__(self, session: Session | None, data: DataContext) -> None:
        self.session = session
        self.data = data

    # Public API ---------------------------------------------------------------------------
    def build(self, **overrides: Any) -> M:
        """An unsaved instance; related parents are built too, unsaved."""
        return self.build_batch(1, **overrides)[0]

    def build_batch(self, n: int, **overrides: Any) -> list[M]:
        """n unsaved instances."""
        overrides = dict(overrides)
        self._check(overrides)
        params = {k: overrides.pop(k) for k in self.params if k in overrides}
        rows = self.rows(n, overrides, persist=False)
        objs = [self.model(**row) for row in rows]
        self.after_build(objs, params)
        return objs

    def create(self, **overrides: Any) -> M:
        """One saved instance (inserted and committed, see `commit`)."""
        return self.create_batch(1, **overrides)[0]

    def create_batch(self, n: int, **overrides: Any) -> list[M]:
        """n saved instances with ONE INSERT ... RETURNING per model (parents first), then
        commit (see `commit`). A factory used inside another's create (in `after_create`, say)
        leaves the commit to the outermost one: a commit in the middle would expire the outer
        batch's objects, and reading their ids back costs a SELECT each. The outermost commits
        when it or any factory inside it has `commit` set."""
        session = self._session()
        outermost = _CREATING not in session.info
        if outermost:
            session.info[_CREATING] = False  # True once a nested create wants its commit
        try:
            objs = self._create(n, overrides)
        finally:
            nested_commit = session.info.pop(_CREATING, False) if outermost else False
        if not outermost:
            if self.commit:
                session.info[_CREATING] = True
        elif self.commit or nested_commit:
            session.commit()
        return objs

    # Extension points ---------------------------------------------------------------------
    def rows(self, n: int, overrides: Row, *, persist: bool) -> list[Row]:
        """Column dicts for n rows; related parents are made in one batch per relationship."""
        parents: dict[str, Sequence[Any] | None] = {}
        for key, decl in self._fields.items():
            if isinstance(decl, Related) and key not in overrides and decl.fk not in overrides:
                parents[key] = self._parents(decl, n, persist) if decl.required else None
        out: list[Row] = []
        gens = [(k, d.fn) for k, d in self._fields.items() if isinstance(d, Field)]
        for i in range(n):
            row: Row = {}
            for key, fn in gens:
                row[key] = overrides[key] if key in overrides else fn(self.data, row)
            for key, decl in self._fields.items():
                if isinstance(decl, Related):
                    self._fill_related(row, key, decl, overrides, parents.get(key), i, persist)
            for key, value in overrides.items():
                if key not in row and key in self._insertable:
                    row[key] = value
            out.append(row)
        return out

    def after_build(self, objs: list[M], params: Row) -> None:
        """Hook for children of built objects (e.g. invoice lines); params are the factory's."""

    def after_create(self, objs: list[M], params: Row) -> None:
        """Hook for children of created objects, one batch per child model."""

    # Internals ----------------------------------------------------------------------------
    def _create(self, n: int, overrides: Row) -> list[M]:
        session = self._session()
        overrides = dict(overrides)
        self._check(overrides)
        params = {k: overrides.pop(k) for k in self.params if k in overrides}
        if n <= 0:
            return []
        rows = self.rows(n, overrides, persist=True)
        objs: list[M] = insert_rows(session, self.model, rows)
        self.after_create(objs, params)
        return objs

    def _session(self) -> Session:
        if self.session is None:
            raise FactoryError(
                f"{type(self).__name__} has no Session: request its fixture (e.g. "
                f"{fixture_name(type(self))}) or pass a Session; build() works without one"
            )
        return self.session

    def _check(self, overrides: Row) -> None:
        unknown = sorted(set(overrides) - self._valid)
        if unknown:
            raise UnknownField(
                f"{type(self).__name__} has no field {', '.join(map(repr, unknown))}; "
                f"valid fields: {', '.join(sorted(self._valid))}"
            )

    def _parents(self, decl: Related, n: int, persist: bool) -> Sequence[Any]:
        sub = decl.factory(self.session, self.data)
        kwargs = dict(decl.defaults)
        return sub._create(n, kwargs) if persist else sub.build_batch(n, **kwargs)

    @staticmethod
    def _fill_related(
        row: Row,
        key: str,
        decl: Related,
        overrides: Row,
        parents: Sequence[Any] | None,
        i: int,
        persist: bool,
    ) -> None:
        if decl.fk in overrides:
            row[decl.fk] = overrides[decl.fk]
            return
        parent = overrides[key] if key in overrides else (parents[i] if parents else None)
        if persist:
            # Bulk INSERT takes column values, not objects: use the parent's key.
            row[decl.fk] = None if parent is None else parent.id
        else:
            row[key] = parent
