"""Migrations build the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import upgrade

from app.extensions import db
from tests.conftest import make_app


def drop_everything() -> None:
    db.drop_all()
    with db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")


def test_upgrade_from_empty_builds_exactly_what_the_models_describe(database, tmp_path, smtp_server):
    app = make_app(database, tmp_path, smtp_server.port)
    with app.app_context():
        drop_everything()
        upgrade()
        tables = set(sa.inspect(db.engine).get_table_names())
        assert {table.name for table in db.metadata.sorted_tables} <= tables
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, db.metadata) == []
        drop_everything()
        db.engine.dispose()
