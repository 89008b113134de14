"""Alembic environment: runs on the connection handed over by ``delula.storage.upgrade``."""
from alembic import context

from delula.storage.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # plain `alembic` command line: build an engine from the URL
        from delula.config import Settings
        from delula.storage.db import Store

        store = Store(config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url)
        with store.engine.connect() as connection:
            _run(connection)
            connection.commit()
        return
    _run(connection)


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
