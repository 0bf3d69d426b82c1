"""A SQLAlchemy Core statement compiled once and run straight on the driver's connection.

The workers' two hottest moves (claim and succeed, one statement each on PostgreSQL) spent
more CPU in SQLAlchemy's per-execution machinery than in psycopg itself: building the cache
key, processing the compiled parameters and setting up the result took ~0.4 ms of a 0.6 ms
statement (bench/overhead.py, py-spy). `Prepared` does that work once: it compiles the
statement for the engine's dialect, keeps the bind and result processors, and then runs it
with `cursor.execute` on the pooled psycopg connection (which psycopg itself prepares on the
server after a few runs). What callers see is unchanged: the same parameters in, rows with
the same attribute names and the same Python types out, and a lost connection raised as
SQLAlchemy's `OperationalError` (so `jobs.outages.ride_out` retries it) with the broken
connection dropped from the pool.

Only for engines whose connections autocommit (`storage.db.make_autocommit_engine`): the
statement commits by itself, there is no transaction to manage.
"""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from sqlalchemy import Engine, exc
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement


class _Compiled(NamedTuple):
    sql: str
    compiled: SQLCompiler
    binds: tuple[tuple[str, Callable[[Any], Any]], ...]
    row: type[tuple[Any, ...]]
    # Filled from the first cursor: a processor may depend on the column's server type.
    results: list[tuple[Callable[[Any], Any] | None, ...]]


class Prepared:
    """`statement`, compiled on first use for the engine it runs on."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[int, _Compiled] = {}
        self._lock = threading.Lock()

    def one_or_none(self, engine: Engine, params: Mapping[str, Any]) -> Any:
        """Run the statement and return its first row (attribute access by column name), or
        None when it returned none."""
        form = self._form(engine)
        values = form.compiled.construct_params(params)  # fills the statement's own literals
        for name, process in form.binds:
            values[name] = process(values[name])
        connection = engine.raw_connection()
        try:
            cursor = connection.driver_connection.execute(form.sql, values)  # type: ignore[union-attr]
            found = cursor.fetchone()  # statements with RETURNING: there is a result
        except Exception as error:
            raise _wrapped(engine, connection, form.sql, values, error) from error
        except BaseException as error:
            connection.invalidate(error)  # interrupted mid-statement: its state is unknown
            raise
        connection.close()  # back to the pool
        if found is None:
            return None
        if not form.results:
            form.results.append(self._result_processors(engine, form, cursor.description))
        return form.row(
            *(raw if f is None else f(raw) for raw, f in zip(found, form.results[0], strict=True))
        )

    def _result_processors(
        self, engine: Engine, form: _Compiled, description: Any
    ) -> tuple[Callable[[Any], Any] | None, ...]:
        columns = form.compiled._result_columns
        return tuple(
            column.type._cached_result_processor(engine.dialect, described.type_code)
            for column, described in zip(columns, description, strict=True)
        )

    def _form(self, engine: Engine) -> _Compiled:
        form = self._compiled.get(id(engine.dialect))
        if form is None:
            with self._lock:
                form = self._compiled.get(id(engine.dialect)) or self._compile(engine)
        return form

    def _compile(self, engine: Engine) -> _Compiled:
        dialect = engine.dialect
        compiled = self.statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        if compiled.post_compile_params or compiled.literal_execute_params:
            raise ValueError("Prepared runs statements without expanding (IN-list) parameters")
        binds = tuple(
            (name, process)
            for bind, name in compiled.bind_names.items()
            if (process := bind.type._cached_bind_processor(dialect)) is not None
        )
        names = [column.keyname for column in compiled._result_columns]
        form = _Compiled(compiled.string, compiled, binds, namedtuple("Row", names), [])
        self._compiled[id(dialect)] = form
        return form


def _wrapped(
    engine: Engine, connection: Any, sql: str, values: Mapping[str, Any], error: Exception
) -> Exception:
    """The driver's error as SQLAlchemy raises it; a connection that broke is discarded."""
    dbapi = engine.dialect.loaded_dbapi
    if not isinstance(error, dbapi.Error):
        connection.invalidate(error)
        return error
    wrapped = exc.DBAPIError.instance(sql, dict(values), error, dbapi.Error)
    if engine.dialect.is_disconnect(error, connection.dbapi_connection, None) or isinstance(
        wrapped, exc.OperationalError | exc.InterfaceError
    ):
        connection.invalidate(error)
    else:
        connection.close()
    return wrapped
