"""The public coder: ``EqualInfoCoder(model, window_bits=16).encode(data) -> windows`` and back.

``model`` is an :class:`~compresslm.coding.m1.M1`, a trained ``Transformer`` (wrapped in M1), or
any :class:`~compresslm.coding.window_coder.FrequencyModel`. Many inputs are coded together by
:meth:`EqualInfoCoder.encode_many`, one model step for up to ``batch_size`` windows at a time.

Example::

    coder = EqualInfoCoder(M1.load("m1/"), window_bits=16)
    windows = coder.encode(b"hello world")
    tokens = coder.tokens(windows, token_bits=16)      # M2's input: one token per window at b=16
    assert coder.decode(windows) == b"hello world"
    assert coder.decode(coder.codes_from_tokens(tokens, 16), exceptions=exception_table(windows)) == b"hello world"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from compresslm.coding.intervals import CoderParams
from compresslm.coding.m1 import M1
from compresslm.coding.packing import from_tokens, to_tokens
from compresslm.coding.window_coder import (
    DEFAULT_BATCH_ROWS,
    EncodeStats,
    FrequencyModel,
    StepTrace,
    Window,
    decode_units,
    encode_units,
    exception_table,
)
from compresslm.errors import ConfigError
from compresslm.models.transformer import Transformer


def default_max_window_bytes(window_bits: int) -> int:
    """4 bytes per window bit: 64 at b = 16. A window at the cap spends at least
    log2(2**P / (2**P - 255)) ~ 0.023 bits per byte, so b = 16 could in principle hold ~700 bytes of a
    long run; the cap bounds M1's row length (the cost of every decode step) instead."""
    return 4 * window_bits


class EqualInfoCoder:
    """Equal-Info windows of ``window_bits`` bits driven by ``model`` (see docs/design.md#the-window-coder).

    ``code``: ``"straddle"`` (ours: every window decodes from its bits alone but for rare
    pathological ones) or ``"zeros"`` (the paper's zero-padded shortest code, with exceptions).
    ``max_window_bytes`` defaults to :func:`default_max_window_bytes` capped by the model's context.
    ``vectorized`` picks the numpy coder (:mod:`.window_vector`, the default) or the per-row
    reference; both write the same windows, so it only changes speed (benchmarks compare them).
    """

    vectorized: bool = True

    def __init__(
        self,
        model: FrequencyModel | Transformer,
        window_bits: int = 16,
        *,
        code: str = "straddle",
        max_window_bytes: int | None = None,
        precision: int | None = None,
        guard_bits: int = 16,
        batch_size: int = DEFAULT_BATCH_ROWS,
    ) -> None:
        if isinstance(model, Transformer):
            model = M1(model, precision=precision or 14)
        if precision is not None and precision != model.precision:
            raise ConfigError(f"precision {precision} differs from the model's {model.precision}")
        if max_window_bytes is None:
            max_window_bytes = default_max_window_bytes(window_bits)
            if isinstance(model, M1):
                max_window_bytes = min(max_window_bytes, model.max_context)
        if isinstance(model, M1) and max_window_bytes > model.max_context:
            raise ConfigError(
                f"--max-window-bytes {max_window_bytes} exceeds M1's context of {model.max_context} positions"
            )
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
        self.model = model
        self.params = CoderParams(
            window_bits=window_bits,
            precision=model.precision,
            guard_bits=guard_bits,
            max_window_bytes=max_window_bytes,
            code=code,
        )
        self.batch_size = batch_size
        self.stats = EncodeStats()

    def encode(self, data: bytes) -> list[Window]:
        """The windows of ``data``; they cover it exactly, in order."""
        return self.encode_many([data])[0]

    def encode_many(
        self,
        items: Sequence[bytes],
        on_bytes: Callable[[int], None] | None = None,
        trace: StepTrace | None = None,
    ) -> list[list[Window]]:
        """Windows of each item, coded independently; ``self.stats`` accumulates what was done.
        ``trace`` (optional) receives ``(busy rows, lane rows, end time)`` per model step."""
        return encode_units(
            items,
            self.model,
            self.params,
            batch_size=self.batch_size,
            on_bytes=on_bytes,
            stats=self.stats,
            trace=trace,
            vectorized=self.vectorized,
        )

    def decode(
        self,
        windows: Sequence[Window] | Sequence[int],
        exceptions: Mapping[int, int] | None = None,
        length: int | None = None,
    ) -> bytes:
        """Bytes from :class:`Window` objects, or from bare codes plus the exception table."""
        return self.decode_many([windows], [exceptions or {}], None if length is None else [length])[0]

    def decode_many(
        self,
        items: Sequence[Sequence[Window] | Sequence[int]],
        exceptions: Sequence[Mapping[int, int]] | None = None,
        lengths: Sequence[int] | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> list[bytes]:
        units = []
        for i, item in enumerate(items):
            exc = dict(exceptions[i]) if exceptions is not None else {}
            if item and isinstance(item[0], Window):
                wins: Sequence[Window] = item  # type: ignore[assignment]
                units.append(([w.code for w in wins], {**exception_table(wins), **exc}))
            else:
                units.append(([int(c) for c in item], exc))  # type: ignore[union-attr]
        return decode_units(
            units,
            self.model,
            self.params,
            lengths=lengths,
            batch_size=self.batch_size,
            on_bytes=on_bytes,
            vectorized=self.vectorized,
        )

    def tokens(self, windows: Sequence[Window], token_bits: int = 16) -> np.ndarray:
        """M2 tokens: the windows' bits MSB-first in ``token_bits``-bit ids."""
        return to_tokens([w.code for w in windows], self.params.window_bits, token_bits)

    def codes_from_tokens(self, tokens: Sequence[int] | np.ndarray, token_bits: int = 16) -> list[int]:
        return from_tokens(tokens, self.params.window_bits, token_bits)
