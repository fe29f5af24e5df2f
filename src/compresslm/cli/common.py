"""Pieces every command shares: option types, input options, error reporting, the summary table.

Option types (``positive_int``, ``finite_float``, ``count``, ``template``, ...) validate at parse
time, so a bad value fails before any work with argparse's message naming the option
(``argument --workers: expected a whole number >= 1, got '0'``) and exit code 2.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from compresslm.errors import CompressLMError, ConfigError

if TYPE_CHECKING:
    from compresslm.select.pipeline import Outputs, SelectionResult
    from compresslm.select.pool import ReadOptions


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Shows every option's default in ``--help``: ``(default: X)`` is added to a help text that does
    not already state its default; options without a default (None) or flags say nothing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            action.option_strings
            and action.default is not None
            and action.default is not False
            and action.default != argparse.SUPPRESS
            and "default" not in text
            and "%(default)" not in text
        ):
            text += " (default: %(default)s)"
        return text


def use_defaults_formatter(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every sub-command under it the :class:`DefaultsHelpFormatter`."""
    parser.formatter_class = DefaultsHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                use_defaults_formatter(sub)


def run_guarded(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; a user-caused error becomes one line on stderr and exit code 2."""
    try:
        return func(args)
    except CompressLMError as exc:
        print(f"compresslm: error: {exc}", file=sys.stderr)
        return 2


# -- option types ---------------------------------------------------------------------------------


def _whole(text: str, least: int, what: str) -> int:
    try:
        value = int(text.strip().replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def at_least(least: int, what: str = "a whole number") -> Callable[[str], int]:
    """A whole-number type with a lower bound: ``at_least(2)`` for a context of positions."""

    def check(text: str) -> int:
        return _whole(text, least, f"{what} >= {least}")

    check.__name__ = f"at_least_{least}"
    return check


def model_size(text: str) -> str:
    """``--size``: a model preset name."""
    from compresslm.models.transformer import SIZES

    if text not in SIZES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(SIZES)}, got {text!r}")
    return text


def positive_int(text: str) -> int:
    """A whole number >= 1 (workers, batch sizes, windows, steps)."""
    return _whole(text, 1, "a whole number >= 1")


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (seeds, minimum sizes, counts where 0 means none)."""
    return _whole(text, 0, "a whole number >= 0")


def threads(text: str) -> int:
    """``--threads``: torch CPU threads, >= 1."""
    return _whole(text, 1, "a number of threads >= 1")


def finite_float(text: str, *, low: float = -math.inf, low_ok: bool = True, high: float = math.inf) -> float:
    """A finite float in ``[low, high]`` (``(low, high]`` when not ``low_ok``); nan and inf refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if value < low or (value == low and not low_ok) or value > high:
        lo = f"{'>=' if low_ok else '>'} {low:g}" if math.isfinite(low) else ""
        hi = f"<= {high:g}" if math.isfinite(high) else ""
        raise argparse.ArgumentTypeError(
            f"expected a number {' and '.join(p for p in (lo, hi) if p)}, got {text!r}"
        )
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates)."""
    return finite_float(text, low=0.0, low_ok=False)


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (temperature: 0 is greedy)."""
    return finite_float(text, low=0.0)


def fraction(text: str) -> float:
    """A share in [0, 1) (held-out fractions)."""
    value = finite_float(text, low=0.0)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def count(text: str) -> int:
    """A positive count with an optional k/M/G suffix: ``5000``, ``200k``, ``1.5M``."""
    try:
        return parse_count(text, "")
    except ConfigError:
        raise argparse.ArgumentTypeError(
            f"expected a positive whole number such as 50000, 200k or 1.5M, got {text!r}"
        ) from None


def count_list(text: str) -> list[int]:
    """A comma list of counts: ``200k,500k``."""
    values = [count(part) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected a comma list such as 200k,500k, got {text!r}")
    return values


def size_list(text: str) -> list[str]:
    """A comma list of model presets: ``tiny,small``."""
    values = [model_size(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected a comma list such as tiny,small, got {text!r}")
    return values


def parse_seeds(text: str) -> list[int]:
    """ "3" -> [0, 1, 2]; "0,5,9" -> [0, 5, 9] (:class:`ConfigError` otherwise)."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
            if seeds and min(seeds) >= 0:
                return seeds
            raise ValueError(text)
        n = int(text)
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected a count or a comma list of seeds >= 0") from None
    if n < 1:
        raise ConfigError("--seeds: at least one seed")
    return list(range(n))


def seed_list(text: str) -> list[int]:
    """``--seeds``: :func:`parse_seeds` as an option type."""
    try:
        return parse_seeds(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--seeds ")) from None


def count_or_zero(text: str) -> int:
    """:func:`count`, or ``0`` (meaning: no limit / all)."""
    return 0 if text.strip() == "0" else count(text)


def method_spec(text: str) -> str:
    """``--method``: a selection method spec, built once now so a typo fails before any reading."""
    from compresslm.select.methods import make_method

    try:
        make_method(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def method_list(text: str) -> list[str]:
    """``--methods``: a comma list of method specs, each checked by :func:`method_spec`."""
    specs = [m.strip() for m in text.split(",") if m.strip()]
    if not specs:
        raise argparse.ArgumentTypeError(f"expected a comma list of methods, got {text!r}")
    return [method_spec(m) for m in specs]


def suffix_path(*suffixes: str) -> Callable[[str], str]:
    """An output path type that must end in one of ``suffixes`` (a ``.csv`` would be written as
    something else)."""

    def check(text: str) -> str:
        if not text.lower().endswith(suffixes):
            raise argparse.ArgumentTypeError(
                f"expected a file ending in {' or '.join(suffixes)}, got {text!r}"
            )
        return text

    return check


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str) -> str:
    r"""Turn the escapes ``\n``, ``\t``, ``\r`` and ``\\`` typed in a shell into the characters.

    A shell passes ``"{prompt}\n{canonical_solution}"`` with a backslash and an ``n``; like
    ``printf`` and ``echo -e``, we read it as a newline. Any other backslash stays as typed.
    """
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], text)


def template(text: str) -> str:
    """``--template``: escapes interpreted (:func:`unescape`), the format checked now
    (:func:`compresslm.data.readers.check_template`)."""
    from compresslm.data.readers import check_template

    value = unescape(text)
    try:
        check_template(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--template ")) from None
    return value


def add_device_option(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--device``, with the same default on every command that runs a model."""
    p.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when available, else CPU), cpu, cuda, cuda:N (default: auto)",
    )


def add_threads_option(
    p: argparse.ArgumentParser | argparse._ArgumentGroup, what: str = "torch CPU threads"
) -> None:
    """``--threads`` for commands that train or run our small models, with the measured default."""
    p.add_argument(
        "--threads",
        type=threads,
        default=1,  # compresslm.models.train.DEFAULT_THREADS (importing it would load torch here)
        help=f"{what} (default: 1; measured 3-30x faster than torch's all-cores default on a shared "
        "2-core machine; more threads can help a large model on idle cores)",
    )


def add_progress_option(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--no-progress``; progress is on by default: a live bar on a terminal, a line every few
    seconds (with total and ETA where the size is known) when stderr is a file or a pipe."""
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress report (default: a bar on a terminal, a line every 10 s in a log)",
    )


def set_threads(n: int | None) -> None:
    """Apply ``--threads`` to torch (``None``: leave torch's default)."""
    if n is None:
        return
    import torch

    torch.set_num_threads(n)


def add_read_options(p: argparse.ArgumentParser, *, domain: bool = False) -> None:
    """The input options; ``--domain-field`` only for commands that report per domain (``domain``)."""
    from compresslm.data.readers import DEFAULT_MAX_BYTES

    g = p.add_argument_group("input")
    g.add_argument("--text-field", default="text", help="field holding the text (default: text)")
    g.add_argument(
        "--template",
        type=template,
        help='build the text from fields, e.g. "{prompt}\\n{canonical_solution}" (\\n, \\t, \\\\ are '
        "read as newline, tab, backslash; default: the --text-field)",
    )
    g.add_argument(
        "--on-error",
        choices=["fail", "skip"],
        default="fail",
        help="malformed records: stop with file:line (fail, default) or reject and go on (skip)",
    )
    g.add_argument(
        "--max-bytes",
        type=count,
        default=DEFAULT_MAX_BYTES,
        help=f"reject documents larger than this many bytes, e.g. 1M (default {DEFAULT_MAX_BYTES:,})",
    )
    g.add_argument(
        "--min-bytes", type=positive_int, default=1, help="reject documents smaller than this (default 1)"
    )
    if domain:
        g.add_argument(
            "--domain-field", help="field holding a domain label (enables precision@k; default: none)"
        )


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
        domain_field=getattr(args, "domain_field", None),
    )


def outputs_dict(outputs: Outputs) -> dict[str, str | None]:
    """The files a selection wrote, by role (None: not asked for)."""
    return {
        "out": outputs.selected,
        "scores": outputs.scores,
        "rejects": outputs.rejects,
        "report": outputs.report,
    }


def _snippet(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


_INTERNAL_METHOD_KEYS = ("batch_size", "workers")  # how it ran, not what it computed (in --json)


def print_selection_summary(result: SelectionResult, *, outputs: Outputs | None = None, top: int = 5) -> None:
    """The final summary: accounting, time, precision where labels exist, the best examples."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    acct = result.accounting
    t = Table(title=f"selection: {result.method_info.get('method')}", show_header=True)
    t.add_column("what")
    t.add_column("value", justify="right")
    scored = result.method_info.get("targets_scored")
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
    sources = acct.get("sources", {})
    if len(sources) > 1:
        for name, c in sources.items():
            picked = "?" if c.get("selected") is None else f"{c['selected']:,}"
            t.add_row(
                f"  from {name}", f"{picked} selected of {c['read']:,} read ({c['rejected']:,} rejected)"
            )
    size = result.size_selected()
    used = f" of {size['budget']:,} ({size['budget_used']:.1%} of the budget)" if size["budget"] else ""
    t.add_row("selected size", f"{size['total']:,} {size['unit']}{used}")
    for key, value in result.method_info.items():
        if key not in ("method", *_INTERNAL_METHOD_KEYS) and value is not None:
            t.add_row(f"method.{key}", str(value))
    secs = result.seconds
    rate = acct["accepted"] / secs["score"] if secs.get("score") else 0.0
    t.add_row(
        "time (prepare / score / write)",
        f"{secs.get('prepare', 0):.1f} / {secs.get('score', 0):.1f} / {secs.get('write', 0):.1f} s",
    )
    t.add_row("scoring rate", f"{rate:,.0f} docs/s")
    if result.engine:
        e = result.engine
        t.add_row(
            "engine",
            f"{e['name']}, {e['workers']} workers, {e['shards']} shards; peak memory: worker "
            f"{e['worker_peak_rss_mb']:,.0f} MiB, driver {e['driver_peak_rss_mb']:,.0f} MiB",
        )
    k = len(result.selected)
    for domain, counts in sorted(result.domains.items(), key=lambda kv: -kv[1]["selected"]):
        share = counts["selected"] / max(1, k)
        t.add_row(
            f"domain {domain}",
            f"{counts['selected']:,} of {counts['pool']:,} in the pool (precision@{k:,} {share:.3f})",
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
        ex.add_column("record_id")
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
