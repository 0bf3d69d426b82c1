"""`storage.prepared.Prepared` against a real PostgreSQL: same rows as SQLAlchemy, same errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy import exc

from storage.db import make_autocommit_engine
from storage.prepared import Prepared

pytestmark = pytest.mark.integration

META = sa.MetaData()
THINGS = sa.Table(
    "things",
    META,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("meta", sa.JSON, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ratio", sa.Numeric(6, 3), nullable=True),
)
RENAME = (
    sa.update(THINGS)
    .where(THINGS.c.id == sa.bindparam("thing"), THINGS.c.name != "fixed")
    .values(name=sa.bindparam("new_name"), meta=sa.bindparam("new_meta", type_=sa.JSON))
    .returning(
        THINGS.c.id, THINGS.c.name.label("called"), THINGS.c.meta, THINGS.c.at, THINGS.c.ratio
    )
)
BACKEND = sa.select(sa.func.pg_backend_pid().label("pid"))


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = make_autocommit_engine(pg_url, pool_size=1)
    assert engine is not None
    META.create_all(engine)
    with engine.connect() as c:
        at = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
        c.execute(
            THINGS.insert(),
            [{"id": n, "name": f"t{n}", "meta": {"n": n}, "at": at, "ratio": 1.25} for n in (1, 2)],
        )
    yield engine
    engine.dispose()


def test_rows_are_those_sqlalchemy_returns(engine: sa.Engine) -> None:
    """A prepared UPDATE … RETURNING gives the same values and Python types, under the same
    column names, as SQLAlchemy's own execution of the statement, and None when no row moved."""
    prepared = Prepared(RENAME)
    ours = prepared.one_or_none(engine, {"thing": 1, "new_name": "fixed", "new_meta": {"a": [1]}})
    with engine.connect() as c:
        theirs = c.execute(RENAME, {"thing": 2, "new_name": "fixed", "new_meta": {"a": [1]}}).one()
    assert ours._asdict() | {"id": 2} == theirs._asdict()
    assert [type(v) for v in ours] == [type(v) for v in theirs]
    assert prepared.one_or_none(engine, {"thing": 1, "new_name": "x", "new_meta": {}}) is None


def test_a_lost_connection_is_sqlalchemys_operational_error_and_is_dropped(
    engine: sa.Engine, postgres_admin_url: str
) -> None:
    """When the server ends the pooled connection, the next run raises SQLAlchemy's
    OperationalError (what the ledger's outage retry catches) and the run after it gets a
    new connection instead of the broken one."""
    backend = Prepared(BACKEND)
    first = backend.one_or_none(engine, {}).pid
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    admin.dispose()
    with pytest.raises(exc.OperationalError):
        backend.one_or_none(engine, {})
    assert backend.one_or_none(engine, {}).pid != first


def test_statements_with_expanding_parameters_are_refused(engine: sa.Engine) -> None:
    """An IN-list parameter would need SQLAlchemy's per-run rendering, so it is refused
    when first run rather than sent wrong."""
    listed = sa.select(THINGS.c.id).where(THINGS.c.id.in_(sa.bindparam("ids", expanding=True)))
    with pytest.raises(ValueError, match="expanding"):
        Prepared(listed).one_or_none(engine, {"ids": [1]})
