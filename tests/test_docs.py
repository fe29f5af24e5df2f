"""The documentation holds together: every reference resolves inside the repository, and every
command the README shows is one the CLI accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from compresslm.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CODE_DIRS = ("src", "tests", "benchmarks")

# `docs/design.md#the-window-coder` in code comments and docstrings.
DOC_REF = re.compile(r"docs/([\w./-]+\.md)(?:#([\w-]+))?")
# [text](target) in Markdown.
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    out = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            out.add(slug(line.lstrip("#")))
    return out


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def code_files() -> list[Path]:
    return [p for d in CODE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]


def check_target(source: Path, target: Path, anchor: str | None) -> str | None:
    if not target.is_file():
        return f"{source.relative_to(ROOT)}: {target} does not exist"
    if anchor and anchor not in anchors(target):
        return f"{source.relative_to(ROOT)}: no heading #{anchor} in {target.relative_to(ROOT)}"
    return None


def test_slug_matches_githubs_rule() -> None:
    assert slug(" The .clm container") == "the-clm-container"
    assert slug("Neural compression (`benchmarks/compress.py`)") == "neural-compression-benchmarkscompresspy"


def test_references_in_code_resolve() -> None:
    problems = []
    for path in code_files():
        for name, anchor in DOC_REF.findall(path.read_text(encoding="utf-8")):
            problem = check_target(path, DOCS / name, anchor or None)
            if problem:
                problems.append(problem)
    assert not problems, "\n".join(problems)


def test_links_in_markdown_resolve() -> None:
    problems = []
    for path in markdown_files():
        for target in MD_LINK.findall(path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://", target):
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            problem = check_target(path, resolved, anchor or None)
            if problem:
                problems.append(problem)
    assert not problems, "\n".join(problems)


def test_nothing_points_at_the_old_design_file_outside_the_repository() -> None:
    old = "DESIGN" + ".md"  # split so that this file does not match itself
    section = re.compile(r"DESIGN" + r"('s)? ?§?\d")
    hits = [
        str(p.relative_to(ROOT))
        for p in [*code_files(), *markdown_files()]
        if old in (text := p.read_text(encoding="utf-8")) or section.search(text)
    ]
    assert not hits, hits


def readme_commands() -> list[list[str]]:
    """Every `compresslm ...` command of the README's sh blocks (continuation lines joined, pipes and
    `;` split, redirections dropped), as argument lists."""
    commands, in_sh, pending = [], False, ""
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_sh = line.strip() == "```sh"
            continue
        if not in_sh:
            continue
        line = pending + line.split(" #")[0].rstrip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if " ... " in line:
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for word in [*lexer, ";"]:
            if word in ("|", ";", "&&", "||"):
                if words[:1] == ["compresslm"]:
                    commands.append(words)
                words = []
            elif word in (">", "<", ">>"):
                words.append("\0")  # the next word is a redirection target, not an argument
            elif words[-1:] == ["\0"]:
                words.pop()
            else:
                words.append(word)
    return commands


@pytest.mark.parametrize("command", readme_commands(), ids=" ".join)
def test_readme_commands_parse(command: list[str]) -> None:
    args = build_parser().parse_args(command[1:])
    assert getattr(args, "func", None) is not None, command


def test_the_readme_shows_commands() -> None:
    assert len(readme_commands()) >= 10
