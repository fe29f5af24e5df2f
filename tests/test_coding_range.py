"""The stream-mode range coder: the vectorized coder against the scalar reference on random tables
and inputs, exact round trips, compression near the tables' cross-entropy."""

from __future__ import annotations

import zlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from compresslm.coding.intervals import quantize
from compresslm.coding.range_coder import (
    MAX_TOTAL,
    RangeDecoder,
    RangeEncoder,
    VectorDecoder,
    VectorEncoder,
)
from compresslm.coding.stream import StreamCoder
from compresslm.coding.window_coder import CallableModel


def random_tables(rng: np.random.Generator, n: int, precision: int, concentration: float) -> np.ndarray:
    """(n, 257) cumulative tables with every frequency >= 1 and a total <= 2**precision."""
    probs = rng.dirichlet(np.full(256, concentration), size=n).astype(np.float32)
    return quantize(probs, precision)  # totals vary a little below 2**precision, as M1's do


def draw(rng: np.random.Generator, cum: np.ndarray) -> np.ndarray:
    """One symbol per table, drawn from the table itself (so peaked tables give likely symbols)."""
    u = rng.integers(0, cum[:, -1])
    return np.count_nonzero(cum[:, 1:] <= u[:, None], axis=1)


def scalar_code(tables: np.ndarray, symbols: np.ndarray) -> bytes:
    enc = RangeEncoder()
    for cum, s in zip(tables, symbols, strict=True):
        enc.encode(cum, int(s))
    return enc.finish()


streams = st.lists(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 300), st.sampled_from([0.01, 0.1, 1.0, 10.0])),
    min_size=1,
    max_size=9,
)


@given(streams, st.sampled_from([9, 14, 16, 24]))
@settings(max_examples=60, deadline=None)
def test_vector_coder_equals_reference(specs: list[tuple[int, int, float]], precision: int) -> None:
    """Several rows of different lengths coded together: each row's code equals the scalar
    encoder's bytes, and both decoders read back every symbol."""
    rows = []
    for seed, n, conc in specs:
        rng = np.random.default_rng(seed)
        tables = random_tables(rng, n, precision, conc)
        rows.append((tables, draw(rng, tables) if n else np.zeros(0, dtype=np.int64)))
    expected = [scalar_code(t, s) for t, s in rows]

    enc = VectorEncoder(len(rows))
    longest = max(len(s) for _, s in rows)
    for t in range(longest):
        at = np.array([i for i, (_, s) in enumerate(rows) if t < len(s)], dtype=np.int64)
        cum = np.stack([rows[i][0][t] for i in at])
        sym = np.array([rows[i][1][t] for i in at])
        k = np.arange(len(at))
        enc.encode(at, cum[k, sym], cum[k, sym + 1] - cum[k, sym], cum[:, 256])
    codes = [enc.finish(i) for i in range(len(rows))]
    assert codes == expected

    for (tables, symbols), code in zip(rows, codes, strict=True):
        dec = RangeDecoder(code)
        assert [dec.decode(c) for c in tables] == symbols.tolist()

    blob = b"".join(codes)
    offsets = np.cumsum([0] + [len(c) for c in codes])
    vdec = VectorDecoder(len(rows), blob)
    for i, code in enumerate(codes):
        vdec.start(i, int(offsets[i]), len(code))
    got: list[list[int]] = [[] for _ in rows]
    for t in range(longest):
        at = np.array([i for i, (_, s) in enumerate(rows) if t < len(s)], dtype=np.int64)
        cum = np.stack([rows[i][0][t] for i in at])
        for i, s in zip(at, vdec.decode(at, cum), strict=True):
            got[i].append(int(s))
    assert got == [s.tolist() for _, s in rows]


def carry_tables(n: int, total: int) -> np.ndarray:
    """(n, 257) tables in which symbol 255 takes almost all of ``total``: coding it again and again
    drives ``low`` to the top of the interval, so carries run through 0xff bytes."""
    cum = np.zeros(257, dtype=np.int64)
    cum[1:] = np.arange(1, 257)
    cum[256] = total
    return np.tile(cum, (n, 1))


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**32 - 1),
            st.integers(0, 400),
            st.sampled_from([0.01, 1.0, 10.0, "carry"]),
            st.sampled_from([9, 14, 24]),
        ),
        min_size=1,
        max_size=6,
    ),
    st.integers(1, 130),
)
@settings(max_examples=60, deadline=None)
def test_encode_runs_equals_reference(specs: list[tuple[int, int, object, int]], run: int) -> None:
    """Rows coded in runs of up to ``run`` symbols per call (as stream mode codes whole chunks),
    mixing tables of tiny (precision 9) and huge (2**24) totals and tables that force carries:
    every row's code equals the scalar encoder's, and the vectorized decoder reads it back."""
    rows = []
    for seed, n, kind, precision in specs:
        rng = np.random.default_rng(seed)
        if kind == "carry":
            tables = carry_tables(n, 1 << precision)
            symbols = np.where(rng.random(n) < 0.97, 255, rng.integers(0, 255, n))
        else:
            tables = random_tables(rng, n, precision, float(kind))  # type: ignore[arg-type]
            symbols = draw(rng, tables) if n else np.zeros(0, dtype=np.int64)
        rows.append((tables, symbols))
    enc = VectorEncoder(len(rows) + 1)  # an unused row stays untouched
    ids = np.arange(len(rows), dtype=np.int64)[::-1].copy()  # rows in any order
    done = np.zeros(len(rows), dtype=np.int64)
    bits = 0.0
    while True:
        left = np.array([len(rows[i][1]) - done[i] for i in ids])
        if not left.any():
            break
        count = np.minimum(left, run)
        start, freq, total = (np.zeros((len(ids), run), dtype=np.int64) for _ in range(3))
        for k, i in enumerate(ids):
            tables, symbols = rows[i]
            t = np.arange(done[i], done[i] + count[k])
            start[k, : count[k]] = tables[t, symbols[t]]
            freq[k, : count[k]] = tables[t, symbols[t] + 1] - tables[t, symbols[t]]
            total[k, : count[k]] = tables[t, 256]
        bits += enc.encode_runs(ids, start, freq, total, count)
        done[ids] += count
    codes = [enc.finish(i) for i in range(len(rows))]
    assert codes == [scalar_code(t, s) for t, s in rows]
    assert enc.finish(len(rows)) == b""
    expected_bits = sum(
        float(
            np.log2(t[np.arange(len(s)), 256] / (t[np.arange(len(s)), s + 1] - t[np.arange(len(s)), s])).sum()
        )
        for t, s in rows
    )
    assert abs(bits - expected_bits) <= 1e-9 * max(1.0, expected_bits)

    blob = b"".join(codes)
    offsets = np.cumsum([0] + [len(c) for c in codes])
    vdec = VectorDecoder(len(rows), blob)
    for i, code in enumerate(codes):
        vdec.start(i, int(offsets[i]), len(code))
    for t in range(max(len(s) for _, s in rows)):
        at = np.array([i for i, (_, s) in enumerate(rows) if t < len(s)], dtype=np.int64)
        got = vdec.decode(at, np.stack([rows[i][0][t] for i in at]))
        assert got.tolist() == [int(rows[i][1][t]) for i in at]


def test_row_reuse_after_finish() -> None:
    """A finished row starts a fresh stream: its second code equals a fresh encoder's."""
    rng = np.random.default_rng(3)
    a, b = random_tables(rng, 50, 14, 0.1), random_tables(rng, 70, 14, 0.1)
    sa, sb = draw(rng, a), draw(rng, b)
    enc = VectorEncoder(1)
    row = np.array([0])
    for tables, symbols in ((a, sa), (b, sb)):
        for cum, s in zip(tables, symbols, strict=True):
            enc.encode(row, cum[None, s], cum[None, s + 1] - cum[None, s], cum[None, 256])
        assert enc.finish(0) == scalar_code(tables, symbols)


def test_carries_through_ff_runs() -> None:
    """Tables that put the coded symbols at the top of the interval force carries; the code still
    decodes (a wrong carry would change the decoded symbols)."""
    cum = np.zeros(257, dtype=np.int64)
    cum[1:] = np.arange(1, 257)
    cum[256] = 2**14  # the last symbol takes almost everything: low climbs to the top of the interval
    rng = np.random.default_rng(0)
    symbols = np.where(rng.random(5000) < 0.97, 255, rng.integers(0, 255, 5000))
    tables = np.tile(cum, (len(symbols), 1))
    code = scalar_code(tables, symbols)
    dec = RangeDecoder(code)
    assert [dec.decode(cum) for _ in symbols] == symbols.tolist()
    enc = VectorEncoder(2)
    rows = np.array([1])
    for s in symbols:
        enc.encode(rows, cum[None, s], cum[None, s + 1] - cum[None, s], cum[None, 256])
    assert enc.finish(1) == code


def test_size_close_to_cross_entropy() -> None:
    """The code spends the tables' information plus at most a few bytes."""
    rng = np.random.default_rng(1)
    tables = random_tables(rng, 4000, 14, 0.05)
    symbols = draw(rng, tables)
    k = np.arange(len(symbols))
    bits = float(np.sum(np.log2(tables[:, 256] / (tables[k, symbols + 1] - tables[k, symbols]))))
    code = scalar_code(tables, symbols)
    assert 8 * len(code) <= bits * (1 + 2**-9) + 40
    assert 8 * len(code) >= bits - 8


def test_empty_and_single_symbol_streams() -> None:
    assert RangeEncoder().finish() == b""
    cum = np.arange(257, dtype=np.int64)
    enc = RangeEncoder()
    enc.encode(cum, 0)
    code = enc.finish()
    assert RangeDecoder(code).decode(cum) == 0
    assert len(code) <= 1


def test_max_total_supported() -> None:
    """A table of total 2**24 (precision 24) still codes: r >= 1 at the smallest range."""
    rng = np.random.default_rng(5)
    freqs = rng.integers(1, 2**16, 256)
    freqs[0] += MAX_TOTAL - freqs.sum()
    cum = np.concatenate([[0], np.cumsum(freqs)])
    symbols = rng.integers(0, 256, 300)
    code = scalar_code(np.tile(cum, (300, 1)), symbols)
    dec = RangeDecoder(code)
    assert [dec.decode(cum) for _ in symbols] == symbols.tolist()


# ------------------------------------------------------------------------------ stream mode, no M1


def prefix_model(seed: int, concentration: float, start_table: bool = False) -> CallableModel:
    """Tables that depend on the last two bytes since the row's START and on its length."""
    rng = np.random.default_rng(seed)
    tables = random_tables(rng, 16, 14, concentration)
    return CallableModel(
        lambda prefix: tables[zlib.crc32(prefix[-2:] + bytes([len(prefix) % 5])) % 16],
        start_table=start_table,
    )


def reference_stream(model: CallableModel, data: bytes, context: int) -> bytes:
    """The scalar coder with the table of every byte computed from its chunk's prefix."""
    enc = RangeEncoder()
    for i, b in enumerate(data):
        enc.encode(model.table(data[i - i % context : i]), b)
    return enc.finish()


@given(
    st.lists(st.binary(min_size=0, max_size=90), min_size=1, max_size=7),
    st.integers(1, 9),
    st.integers(1, 4),
    st.sampled_from([0.02, 0.5, 5.0]),
    st.booleans(),
)
@settings(max_examples=40, deadline=None)
def test_stream_coder_equals_reference(
    segments: list[bytes], context: int, batch: int, concentration: float, start_table: bool
) -> None:
    """Segments coded as rows of a batch (rows taking new segments as they finish) give each
    segment the reference code, and decode back; with a start table (M1's sessions: chunk openings
    cost no step) and without."""
    model = prefix_model(11, concentration, start_table)
    coder = StreamCoder(model, context=context, batch_size=batch)
    codes = coder.encode_many(segments)
    assert codes == [reference_stream(model, s, context) for s in segments]
    assert coder.decode_many(codes, [len(s) for s in segments]) == segments
    assert coder.stats.bytes == sum(len(s) for s in segments)


def test_stream_decoder_with_damaged_code_returns_wrong_bytes_not_crash() -> None:
    model = prefix_model(2, 0.5)
    coder = StreamCoder(model, context=8, batch_size=2)
    data = [bytes(range(40)) * 3, b"hello world" * 9]
    codes = coder.encode_many(data)
    bad = [bytes([codes[0][0] ^ 0x40]) + codes[0][1:], codes[1]]
    out = coder.decode_many(bad, [len(d) for d in data])
    assert [len(o) for o in out] == [len(d) for d in data]
    assert out[0] != data[0] and out[1] == data[1]


def test_stream_coder_with_m1_equals_per_chunk_reference() -> None:
    """Stream mode over M1's session (float path, untrained tiny model, context 16): rows restart
    at every chunk of 16 bytes, and each segment's code equals the scalar coder fed the tables of
    each chunk computed alone."""
    import torch

    from compresslm.coding.m1 import M1, session_tables
    from compresslm.models import Transformer, config_for_size

    torch.manual_seed(0)
    m1 = M1(Transformer(config_for_size("tiny", vocab_size=256, max_seq_len=16), seed=3), threads=1)
    rng = np.random.default_rng(4)
    segments = [bytes(rng.integers(97, 105, n, dtype=np.uint8)) for n in (1, 15, 16, 17, 40, 3)]
    coder = StreamCoder(m1, batch_size=4)
    codes = coder.encode_many(segments)
    for seg, code in zip(segments, codes, strict=True):
        enc = RangeEncoder()
        for start in range(0, len(seg), 16):
            chunk = seg[start : start + 16]
            tables = session_tables(m1, [chunk[:-1]], 16)[0]
            for t, b in enumerate(chunk):
                enc.encode(tables[t], b)
        assert enc.finish() == code
    assert coder.decode_many(codes, [len(s) for s in segments]) == segments
