"""Run the Alembic migrations from code (``mailstack db upgrade``, tests).

The revisions live in the top-level ``migrations/`` directory of a source
checkout; a wheel ships the same directory as the package
``mailstack._migrations`` (see pyproject.toml), so both places are looked up.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from mailstack.store.engine import create_engine


def migrations_dir() -> Path:
    """Where env.py and versions/ are, installed or in a checkout."""
    spec = importlib.util.find_spec("mailstack._migrations")
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations)))
        if (installed / "env.py").is_file():
            return installed
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if (checkout / "env.py").is_file():
        return checkout
    raise RuntimeError("mailstack's migrations directory is missing from this installation")


def _alembic_config() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Create or migrate the schema to ``revision``; a no-op when already there."""
    engine = create_engine(url, foreign_keys=False)
    try:
        with engine.connect() as connection:
            config = _alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            connection.commit()
    finally:
        engine.dispose()


def current_revision_of(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def current_revision(url: str | URL) -> str | None:
    """The revision the database is at (None for an empty database)."""
    engine = create_engine(url)
    try:
        return current_revision_of(engine)
    finally:
        engine.dispose()


def is_at_head(url: str | URL) -> bool:
    return current_revision(url) == head_revision()
