"""Alembic revisions against the models, upgrade paths and idempotence."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from mailstack.config import Config
from mailstack.store import migrate
from mailstack.store.engine import create_engine
from mailstack.store.models import Base


def test_migrations_match_models(config: Config) -> None:
    migrate.upgrade(config.database_url)
    engine = create_engine(config.database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_upgrade_from_first_revision_and_idempotent(config: Config) -> None:
    url = config.database_url
    assert migrate.current_revision(url) is None
    assert not migrate.is_at_head(url)
    migrate.upgrade(url, "0001")
    assert migrate.current_revision(url) == "0001"
    migrate.upgrade(url)
    assert migrate.is_at_head(url)
    migrate.upgrade(url)  # again: nothing to do, no error
    assert migrate.current_revision(url) == migrate.head_revision()


def test_migrations_directory_is_found() -> None:
    directory = migrate.migrations_dir()
    assert (directory / "env.py").is_file()
    assert (directory / "script.py.mako").is_file()
    assert any(directory.joinpath("versions").glob("0001_*.py"))
