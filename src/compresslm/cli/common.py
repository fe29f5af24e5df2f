"""Pieces every command shares: input options, error reporting, the summary table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from compresslm.errors import CompressLMError, ConfigError

if TYPE_CHECKING:
    from compresslm.select.pipeline import Outputs, SelectionResult
    from compresslm.select.pool import ReadOptions


def run_guarded(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; a user-caused error becomes one line on stderr and exit code 2."""
    try:
        return func(args)
    except CompressLMError as exc:
        print(f"compresslm: error: {exc}", file=sys.stderr)
        return 2


def add_read_options(p: argparse.ArgumentParser) -> None:
    from compresslm.data.readers import DEFAULT_MAX_BYTES

    g = p.add_argument_group("input")
    g.add_argument("--text-field", default="text", help="field holding the text (default: text)")
    g.add_argument("--template", help='build the text from fields, e.g. "{prompt}\\n{canonical_solution}"')
    g.add_argument(
        "--on-error",
        choices=["fail", "skip"],
        default="fail",
        help="malformed records: stop with file:line (fail, default) or reject and go on (skip)",
    )
    g.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help=f"reject documents larger than this (default {DEFAULT_MAX_BYTES:,} bytes)",
    )
    g.add_argument("--min-bytes", type=int, default=1, help="reject documents smaller than this")
    g.add_argument("--domain-field", help="field holding a domain label (enables precision@k)")


def read_options_from(
    args: argparse.Namespace, *, field: str | None = None, template: str | None = None
) -> ReadOptions:
    from compresslm.select.pool import ReadOptions

    return ReadOptions(
        text_field=field or args.text_field,
        template=template if template is not None else args.template,
        on_error=args.on_error,
        max_bytes=args.max_bytes,
        min_bytes=args.min_bytes,
        domain_field=args.domain_field,
    )


def _snippet(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def print_selection_summary(result: SelectionResult, *, outputs: Outputs | None = None, top: int = 5) -> None:
    """The final summary: accounting, time, precision where labels exist, the best examples."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    acct = result.accounting
    t = Table(title=f"selection: {result.method.get('method')}", show_header=True)
    t.add_column("what")
    t.add_column("value", justify="right")
    scored = result.method.get("targets_scored")
    if isinstance(scored, int) and scored < result.n_targets:
        t.add_row(
            "targets",
            f"{result.n_targets:,} ({scored:,} scored: seeded sample, --max-targets all for every one)",
        )
    else:
        t.add_row("targets", f"{result.n_targets:,}")
    t.add_row("records read", f"{acct['read']:,}")
    t.add_row("selected", f"{acct['selected']:,}")
    t.add_row("not selected", f"{acct['not_selected']:,}")
    t.add_row("rejected", f"{acct['rejected']:,}")
    for reason, n in sorted(acct.get("rejected_by_reason", {}).items()):
        t.add_row(f"  {reason}", f"{n:,}")
    for key, value in result.method.items():
        if key != "method":
            t.add_row(f"method.{key}", str(value))
    secs = result.seconds
    rate = acct["accepted"] / secs["score"] if secs.get("score") else 0.0
    t.add_row(
        "time (prepare / score / write)",
        f"{secs.get('prepare', 0):.1f} / {secs.get('score', 0):.1f} / {secs.get('write', 0):.1f} s",
    )
    t.add_row("scoring rate", f"{rate:,.0f} docs/s")
    for domain, counts in sorted(result.domains.items()):
        if counts["selected"]:
            share = counts["selected"] / max(1, len(result.selected))
            t.add_row(
                f"domain {domain}", f"{counts['selected']:,} of {counts['pool']:,} ({share:.1%} of selection)"
            )
    if outputs is not None:
        for label, path in (
            ("out", outputs.selected),
            ("scores", outputs.scores),
            ("rejects", outputs.rejects),
            ("report", outputs.report),
        ):
            if path:
                t.add_row(f"wrote {label}", path)
    console.print(t)
    if result.selected:
        ex = Table(title=f"top {min(top, len(result.selected))} documents")
        ex.add_column("rank", justify="right")
        ex.add_column("score", justify="right")
        ex.add_column("id")
        ex.add_column("text")
        for s in result.selected[:top]:
            ex.add_row(str(s.rank + 1), f"{s.score:.5f}", s.id, _snippet(s.text))
        console.print(ex)


def parse_count(text: str, flag: str) -> int:
    """``"200k"`` -> 200000 for option ``flag``; a clear error naming the option otherwise."""
    from compresslm.experiments.selection_study import parse_budget

    try:
        return parse_budget(text)
    except ConfigError:
        raise ConfigError(
            f"{flag}: expected a positive whole number such as 50000, 200k or 1.5M, got {text!r}"
        ) from None


def rich_console() -> Any:
    """A rich console that does not squeeze wide tables when the output is a file or a pipe."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)
