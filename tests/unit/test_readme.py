"""The README is part of the contract (DESIGN.md): it opens with the install
and test commands, CI runs that same test command, and every CLI command and
config section it documents exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from mailstack.cli import build_parser
from mailstack.config import SECTIONS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    first, second = shell_blocks(README)[:2]
    assert "mailstack dev" in first
    test_command = next(line for line in second.splitlines() if "pytest" in line)
    assert test_command.strip() in (ROOT / ".ci" / "run").read_text()


def test_every_config_section_is_in_the_readme_table() -> None:
    for name in SECTIONS:
        assert f"`[{name}]`" in README, name


def test_every_mailstack_command_in_the_readme_parses() -> None:
    parser = build_parser()
    commands = [
        line.strip()
        for block in shell_blocks(README)
        for line in block.splitlines()
        if line.strip().startswith("mailstack ")
    ]
    assert len(commands) > 10
    for line in commands:
        words = line.split("#")[0].split()[1:]
        words = [w.replace('"$NEWPASS"', "x") for w in words if not w.startswith(("<", "|"))]
        parser.parse_args(words)  # SystemExit (a test failure) if unknown


def test_contents_lists_every_section() -> None:
    sections = re.findall(r"^## (.+)$", README, flags=re.M)
    contents = README.split("## Contents", 1)[1].split("\n## ", 1)[0]
    for title in sections:
        if title != "Contents":
            assert f"[{title}]" in contents, title


def test_command_reference_names_every_command() -> None:
    reference = README.split("### Command reference", 1)[1].split("\n## ", 1)[0]

    def leaves(parser: argparse.ArgumentParser, prefix: str) -> list[tuple[str, str]]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    below = leaves(sub, f"{prefix} {name}")
                    found += below or [(prefix, name)]
        return found

    for prefix, name in leaves(build_parser(), "mailstack"):
        # "mailstack user passwd" is written "mailstack user add\|passwd\|...".
        assert re.search(rf"`{prefix} [^`]*\b{name}\b", reference), f"{prefix} {name}"
