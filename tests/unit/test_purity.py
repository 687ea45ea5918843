"""Architecture rules, checked by reading imports (ast; nothing is imported).

PURE modules (the sans-I/O cores, DESIGN.md) must not reach trio, SQLAlchemy,
sockets, ssl or asyncio, directly or through another mailstack module they
import.  Only mailstack/store/ may import SQLAlchemy, and asyncio appears
nowhere.  Imports under ``if TYPE_CHECKING:`` do not run and are ignored.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mailstack"
FORBIDDEN_IN_PURE = {"trio", "sqlalchemy", "socket", "ssl", "asyncio", "alembic", "trio_websocket"}

PURE_FILES = (
    "wire.py",
    "mime.py",
    "secret.py",
    "auth/sasl.py",
    "auth/throttle.py",
    "smtp/faults.py",
    "websocket/summary.py",
    "capture/routing.py",
)
PURE_NAMES = (
    "protocol.py",
    "commands.py",
    "grammar.py",
    "framing.py",
    "responses.py",
    "data.py",
    "replies.py",
    "mailbox_view.py",
    "maildrop.py",
    "sequence.py",
    "search.py",
    "bodystructure.py",
    "client_protocol.py",
    "dsn.py",
    "sort.py",
    "thread.py",
    "base_subject.py",
    "collation.py",
    "sort_keys.py",
    "modseq.py",
)


def pure_modules() -> list[Path]:
    found = {PACKAGE / name for name in PURE_FILES}
    for name in PURE_NAMES:
        found.update(PACKAGE.glob(f"*/{name}"))
    return sorted(path for path in found if path.exists())


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_path(name: str) -> Path | None:
    base = PACKAGE.parent.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(nodes: list[ast.stmt]) -> Iterator[ast.AST]:
    for node in nodes:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _runtime_nodes(node.orelse)
            continue
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                yield from _runtime_nodes([child])
            else:
                yield from ast.walk(child)


def imports_in(source: str, package: str) -> set[str]:
    """Absolute dotted names a module imports at run time; ``package`` is
    the package relative imports are resolved against."""
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(source).body):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            # "from mailstack.auth import sasl" imports the submodule.
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
    return names


def imports_of(path: Path) -> set[str]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    return imports_in(path.read_text(encoding="utf-8"), package)


def reachable_imports(path: Path) -> dict[str, str]:
    """Every top-level package reachable from ``path`` through mailstack
    modules, mapped to the mailstack module that imports it."""
    seen: set[Path] = set()
    found: dict[str, str] = {}
    pending = [path]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imports_of(current):
            top = name.split(".", 1)[0]
            if top == "mailstack":
                target = module_path(name)
                if target is not None:
                    pending.append(target)
            else:
                found.setdefault(top, module_name(current))
    return found


def test_pure_modules_exist() -> None:
    # wire, secret, sasl, throttle, mime are in the skeleton; the rest join as written.
    names = {module_name(p) for p in pure_modules()}
    assert {"mailstack.wire", "mailstack.secret", "mailstack.auth.sasl"} <= names


@pytest.mark.parametrize("path", pure_modules(), ids=module_name)
def test_pure_module_has_no_io_imports(path: Path) -> None:
    reached = reachable_imports(path)
    bad = {name: via for name, via in reached.items() if name in FORBIDDEN_IN_PURE}
    assert not bad, f"{module_name(path)} is PURE but reaches {bad} (package: importing module)"


def all_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", all_modules(), ids=module_name)
def test_only_the_store_imports_sqlalchemy_and_nothing_uses_asyncio(path: Path) -> None:
    tops = {name.split(".", 1)[0] for name in imports_of(path)}
    assert "asyncio" not in tops
    if path.relative_to(PACKAGE).parts[0] != "store":
        assert "sqlalchemy" not in tops, f"{module_name(path)} imports sqlalchemy"


def test_checker_resolves_relative_and_skips_type_checking() -> None:
    source = """
import trio.lowlevel
from . import wire
from ..config import Config
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    import sqlalchemy
def f():
    import socket
"""
    names = imports_in(source, "mailstack.imap")
    assert {"trio.lowlevel", "mailstack.imap.wire", "mailstack.config.Config", "socket"} <= names
    assert "sqlalchemy" not in names


def test_checker_follows_mailstack_imports() -> None:
    reached = reachable_imports(PACKAGE / "service.py")
    assert reached["trio"] == "mailstack.service"
    assert reached["cryptography"] == "mailstack.tls"  # service -> tls -> cryptography
