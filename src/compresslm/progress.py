"""Progress bars that suit where stderr goes: a live bar on a terminal, plain lines in a log.

A tqdm bar redraws one line with carriage returns; written to a file or a pipe (a batch job, ``2>
log``, ``| tee``) that is either one endless line or, with the bar switched off, minutes of silence.
:func:`progress_bar` keeps tqdm's bar on a terminal and otherwise prints a complete line (count,
rate, and with a known total the percentage and ETA) every :data:`LINE_INTERVAL` seconds, at the
start and at the end, the way ``rsync --info=progress2`` or ``pv -n`` in a log behave.
"""

from __future__ import annotations

import io
import sys
from typing import IO, Any

from tqdm import tqdm

LINE_INTERVAL = 10.0
"""Seconds between progress lines when stderr is not a terminal."""


class _Discard(io.StringIO):
    """Where tqdm's own writes go (its closing newline); lines go out through ``display``."""

    def write(self, text: str) -> int:
        return len(text)


class LineProgress(tqdm):  # type: ignore[misc]  # tqdm is untyped
    """tqdm that writes whole lines instead of redrawing one (for logs and pipes)."""

    def __init__(self, *args: Any, lines_to: IO[str], **kwargs: Any) -> None:
        self._lines_to, self._last = lines_to, ""
        super().__init__(*args, file=_Discard(), **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        text = (msg if msg is not None else self.__str__()).strip()
        if text and text != self._last:
            self._last = text
            self._lines_to.write(text + "\n")
            self._lines_to.flush()
        return True


def progress_bar(
    *,
    desc: str,
    total: float | None = None,
    disable: bool = False,
    file: IO[str] | None = None,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar on a terminal, a :class:`LineProgress` otherwise; same arguments as ``tqdm``.

    ``disable=True`` gives a bar that shows nothing (callers keep one code path).
    """
    stream = file if file is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if disable or (isatty is not None and isatty()):
        return tqdm(total=total, desc=desc, disable=disable, file=stream, dynamic_ncols=True, **kwargs)
    kwargs.pop("dynamic_ncols", None)
    kwargs.setdefault("mininterval", LINE_INTERVAL)
    kwargs.setdefault("maxinterval", LINE_INTERVAL * 6)
    known = "{percentage:3.0f}% {n_fmt}/{total_fmt} {unit} [{elapsed} elapsed, {remaining} left, {rate_fmt}]"
    fmt = "{desc}: " + (known if total else "{n_fmt} {unit} [{elapsed} elapsed, {rate_fmt}]")
    return LineProgress(total=total, desc=desc, lines_to=stream, bar_format=fmt, **kwargs)
