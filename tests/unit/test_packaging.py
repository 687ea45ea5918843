"""The wheel must carry every subpackage: pyproject lists them by hand
(migrations/ is mapped into the package), so a new folder that is not listed
would import fine from a checkout and be missing from a real install."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "mailstack").rglob("__init__.py")
    }
    assert on_disk, "no packages found under mailstack/"
    assert on_disk - listed == set()


def test_every_third_party_import_is_a_declared_dependency() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = " ".join(config["project"]["dependencies"]).lower()
    # import name -> distribution name where they differ
    distribution = {"argon2": "argon2-cffi", "trio_websocket": "trio-websocket"}
    stdlib = __import__("sys").stdlib_module_names
    for path in (ROOT / "mailstack").rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.strip().split()
            if len(words) < 2 or words[0] not in ("import", "from"):
                continue
            top = words[1].split(".")[0]
            if top in stdlib or top == "mailstack" or top.startswith("_") or not top:
                continue
            if top == "psycopg":  # optional extra, imported only for PostgreSQL URLs
                continue
            assert distribution.get(top, top).lower() in declared, f"{path}: {top}"
