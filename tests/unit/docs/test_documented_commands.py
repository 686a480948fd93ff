"""Every command in README.md and docs/ still exists: a renamed command, option or target fails here.

Shell blocks (```bash) are read line by line. ``treeserve …`` lines run through the real CLI with
``--help`` appended, so the command path and each option are parsed by click without doing the
work; ``make X`` needs target X; ``python -m M`` needs module M. Commands of other tools
(curl, docker, kubectl, mlflow, locust) are checked by the tests of the pages that own them.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from treeserve_app.cli import app

ROOT = Path(__file__).resolve().parents[3]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```(?:bash|sh)\n(.*?)^```", re.S | re.M)
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
SEPARATORS = {"|", "||", "&&", ";"}


def shell_lines(page: Path) -> list[str]:
    """The logical lines (continuations joined, comments dropped) of a page's shell blocks."""
    lines: list[str] = []
    for block in BLOCK.findall(page.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def commands(line: str) -> list[list[str]]:
    """The simple commands of one line, without leading VAR=value assignments."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    out: list[list[str]] = [[]]
    for w in words:
        if w in SEPARATORS:
            out.append([])
        else:
            out[-1].append(w)
    cleaned = []
    for cmd in out:
        while cmd and ENV_ASSIGNMENT.match(cmd[0]):
            cmd = cmd[1:]
        if cmd:
            cleaned.append(cmd)
    return cleaned


def documented(program: str) -> list[tuple[str, list[str]]]:
    """(page, argv) of every documented invocation of ``program``."""
    found = []
    for page in PAGES:
        for line in shell_lines(page):
            for cmd in commands(line):
                name = Path(cmd[0]).name
                if name == program:
                    found.append((str(page.relative_to(ROOT)), cmd))
    return found


def _without_optional_brackets(argv: list[str]) -> list[str]:
    """``[--customers 20000 --drift]`` in a synopsis: keep the options, drop the brackets."""
    return [w.strip("[]") for w in argv if w.strip("[]")]


def test_pages_have_commands() -> None:
    assert len(documented("treeserve")) >= 25
    assert documented("make")


@pytest.mark.parametrize(
    ("page", "argv"), documented("treeserve"), ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_treeserve_command_is_accepted(page: str, argv: list[str]) -> None:
    args = _without_optional_brackets(argv[1:])
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, f"{page}: `{shlex.join(argv)}` -> {result.output.strip()[-400:]}"


def test_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", makefile, re.M))
    missing = [
        f"{page}: make {t}" for page, argv in documented("make") for t in argv[1:] if not t.startswith("-")
    ]
    assert [m for m in missing if m.split("make ")[1] not in targets] == []


def test_python_modules_exist() -> None:
    missing = []
    for page, argv in documented("python"):
        if "-m" in argv:
            module = argv[argv.index("-m") + 1]
            if importlib.util.find_spec(module) is None:
                missing.append(f"{page}: python -m {module}")
    assert missing == []


def test_no_comment_points_outside_the_repository() -> None:
    """Every capitalised top-level Markdown document that the code names exists in the checkout."""
    root_doc = re.compile(r"(?<![\w/.-])([A-Z][A-Z0-9_]*\.md)\b")
    offenders = [
        f"{p.relative_to(ROOT)}: {name}"
        for folder in (
            "treeserve",
            "treeserve_app",
            "exporter",
            "gateway",
            "training",
            "drift",
            "loadtest",
            "tests",
        )
        for p in (ROOT / folder).rglob("*.py")
        for name in sorted(set(root_doc.findall(p.read_text())))
        if not (ROOT / name).is_file()
    ]
    assert offenders == []


def test_relative_links_resolve() -> None:
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    broken = [
        f"{page.relative_to(ROOT)} -> {target}"
        for page in PAGES
        for target in link.findall(page.read_text())
        if not re.match(r"^[a-z]+:", target) and not (page.parent / target).exists()
    ]
    assert broken == []
