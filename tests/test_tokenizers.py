"""Every tokenizer behind the one interface: exact round trips (listed strings and hypothesis),
special ids above the data ids, save/load, and golden values against reference implementations."""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compresslm.coding.m1 import M1
from compresslm.coding.packing import bytes_to_ids, ids_to_bytes
from compresslm.errors import ConfigError, DataError
from compresslm.models import Transformer, config_for_size
from compresslm.tokenizers import (
    SchemeSpec,
    Tokenizer,
    build_tokenizer,
    load_tokenizer,
    parse_scheme,
    save_tokenizer,
)
from compresslm.tokenizers.equal_info import EqualInfoTokenizer
from compresslm.tokenizers.static_ac import StaticACTokenizer

CORPUS = [
    "def add(a, b):\n    return a + b\n\n\nclass Point:\n    x: int = 0\n",
    "The three currently living species are African savanna elephants and Asian elephants.\n",
    "import os\nfor name in os.listdir('.'):\n    print(name.upper())\n" * 3,
    "Naïve café — 日本語 テキスト, Ελληνικά 🙂 ∑ x² ≤ ∞\n",
]

STRINGS = [
    "",
    "a",
    "hello world",
    "  two  spaces\n\n\ttab and trailing space ",
    "héllo 世界 🙂 \x00 nul and \r\n",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    CORPUS[0],
    "\U0010ffff\ud7ff\ue000",
]

# Small chunks so that short strings already span several independently coded chunks.
CHUNK = 48


def tiny_m1(context: int = 32) -> M1:
    """An untrained (seeded) byte model: near-uniform tables, about 8 bits per byte."""
    model = Transformer(config_for_size("tiny", vocab_size=256, max_seq_len=context), seed=0)
    return M1(model, threads=1)


def _make(label: str) -> Callable[[], Tokenizer]:
    def build() -> Tokenizer:
        spec = parse_scheme(label)
        if spec.scheme in ("gzip", "static-ac", "ac", "equal-info"):
            spec = SchemeSpec(spec.scheme, spec.token_bits, spec.window_bits, chunk_bytes=CHUNK)
        if spec.scheme == "ac":
            from compresslm.tokenizers.ac import ACTokenizer

            return ACTokenizer(tiny_m1(), spec.token_bits, CHUNK, context=16)
        if spec.scheme == "equal-info":  # b = 16, v = 256 also cuts chunks into several coding units
            unit = 16 if label == "eqinfo16-256" else CHUNK
            return EqualInfoTokenizer(
                tiny_m1(), spec.window_bits, spec.token_bits, chunk_bytes=CHUNK, unit_bytes=unit
            )
        return build_tokenizer(spec, texts=lambda: iter(CORPUS * 20))

    return build


LABELS = [
    "bytes",
    "spm-400",
    "gzip",
    "gzip-65k",
    "static-ac",
    "static-ac-65k",
    "ac",
    "ac-65k",
    "eqinfo16-256",
    "eqinfo16-65k",
    "eqinfo24-65k",
    "eqinfo32-256",
]
_CACHE: dict[str, Tokenizer] = {}


@pytest.fixture(params=LABELS)
def tokenizer(request: pytest.FixtureRequest) -> Tokenizer:
    label = request.param
    if label not in _CACHE:
        _CACHE[label] = _make(label)()
    return _CACHE[label]


@pytest.mark.parametrize("text", STRINGS, ids=range(len(STRINGS)))
def test_round_trip(tokenizer: Tokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    assert all(isinstance(i, int) for i in ids)
    assert all(0 <= i < tokenizer.data_vocab_size for i in ids)
    assert tokenizer.decode(ids) == text


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=60))
def test_round_trip_property(tokenizer: Tokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_special_ids_above_data(tokenizer: Tokenizer) -> None:
    v = tokenizer.data_vocab_size
    assert (tokenizer.eod_id, tokenizer.pad_id, tokenizer.vocab_size) == (v, v + 1, v + 2)
    assert np.iinfo(tokenizer.dtype).max >= tokenizer.pad_id
    ids = tokenizer.encode("some text")
    with pytest.raises(DataError, match="special id"):
        tokenizer.decode([*ids, tokenizer.eod_id])
    assert tokenizer.decode([*ids, tokenizer.eod_id, tokenizer.pad_id], skip_special=True) == "some text"
    with pytest.raises(DataError, match="out of range"):
        tokenizer.decode([tokenizer.vocab_size])


def test_save_load(tokenizer: Tokenizer, tmp_path) -> None:
    save_tokenizer(tokenizer, tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert type(again) is type(tokenizer)
    assert again.config() == tokenizer.config()
    assert again.encode(CORPUS[1]) == tokenizer.encode(CORPUS[1])
    with pytest.raises(Exception, match="exists"):
        save_tokenizer(tokenizer, tmp_path / "tok")


def test_long_text_spans_chunks(tokenizer: Tokenizer) -> None:
    text = CORPUS[2][:200]
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    chunks, sizes = tokenizer.encode_documents([text.encode()])[0]
    assert sum(sizes) == len(text.encode())
    assert np.concatenate(chunks).tolist() == ids


def test_vocabulary_sizes() -> None:
    assert _make("bytes")().vocab_size == 258
    assert _make("gzip-65k")().vocab_size == 65538
    assert _make("eqinfo16-65k")().dtype == np.int32
    assert _make("gzip")().dtype == np.uint16


# -- golden values and references ----------------------------------------------------------------


def test_msb_first_packing_matches_the_paper_figure_9() -> None:
    payload = int("1111000011110011", 2).to_bytes(2, "big")
    assert bytes_to_ids(payload, 8).tolist() == [240, 243]
    assert bytes_to_ids(payload, 16).tolist() == [61683]
    assert ids_to_bytes(np.array([61683]), 16) == payload
    assert bytes_to_ids(b"\x01", 16).tolist() == [256]  # odd byte padded with zero bits


def test_gzip_ids_are_zlib_output() -> None:
    text = CORPUS[0] * 3
    tok = build_tokenizer("gzip")
    assert bytes(tok.encode(text)) == zlib.compress(text.encode())
    tok16 = build_tokenizer("gzip-65k")
    assert ids_to_bytes(np.array(tok16.encode(text)), 16).startswith(zlib.compress(text.encode()))


def test_static_ac_rate_is_the_unigram_entropy() -> None:
    rng = np.random.default_rng(0)
    p = np.array([0.5, 0.25, 0.125, 0.125])
    data = bytes(rng.choice(np.frombuffer(b"abcd", dtype=np.uint8), size=20_000, p=p).tolist())
    tok = StaticACTokenizer.train([data], token_bits=16, chunk_bytes=10_240)
    bits = 16 * len(tok.encode_bytes(data))
    cross_entropy = tok.entropy_bits_per_byte() * len(data)  # under the 14-bit quantised model
    chunks = 2
    assert cross_entropy <= bits <= cross_entropy * 1.001 + chunks * (32 + 64)  # header + termination
    assert tok.entropy_bits_per_byte() >= -(p * np.log2(p)).sum() - 0.01
    assert tok.decode_bytes(tok.encode_bytes(data)) == data


def test_equal_info_windows_are_b_bits() -> None:
    tok = EqualInfoTokenizer(tiny_m1(), 16, 16)
    text = CORPUS[1].encode()
    ids = tok.encode_bytes(text)
    windows = tok.coder.encode(text)
    assert len(ids) == len(windows)  # b = 16, v = 65k: one id per window
    # token -> text is stable: each id decodes alone to its window's bytes
    pieces = [tok.decode_windows(tok.codes([i])) for i in ids]
    assert pieces == [
        text[sum(w.nbytes for w in windows[:k]) :][: windows[k].nbytes] for k in range(len(windows))
    ]
    assert b"".join(pieces) == text


def test_equal_info_recut_avoids_exception_windows() -> None:
    tok = EqualInfoTokenizer(tiny_m1(), 16, 8)
    data = CORPUS[0].encode()
    wins = tok.coder.encode(data)
    k = len(wins) // 2
    marked = [w if i != k else type(w)(w.code, w.nbytes, True) for i, w in enumerate(wins)]
    fixed = tok._recut(data, marked, depth=0)
    assert not any(w.exception for w in fixed)
    assert tok.decode_windows([w.code for w in fixed]) == data


@pytest.mark.parametrize("b", [64, 128])
def test_long_windows(b: int) -> None:
    tok = EqualInfoTokenizer(tiny_m1(), b, 16)
    text = CORPUS[1]
    ids = tok.encode(text)
    assert len(ids) % (b // 16) == 0
    assert tok.decode(ids) == text


def test_corrupt_ids_raise() -> None:
    with pytest.raises(DataError):
        build_tokenizer("gzip").decode([1, 2, 3, 4])
    tok = _make("static-ac")()
    ids = tok.encode(CORPUS[1])
    with pytest.raises(DataError, match="truncated"):
        tok.decode(ids[:-3])
    with pytest.raises(DataError, match="impossible"):  # 65,535 bytes announced: more than a chunk
        tok.decode([255, 255, 0, 1, 7, 7, 7, 7])
    big = StaticACTokenizer(tok.counts, 8, chunk_bytes=10_240)
    with pytest.raises(DataError, match="impossible"):  # 8,192 bytes cannot fit in zero words
        big.decode([0x20, 0, 0, 0])


def test_compression_ratios_order() -> None:
    text = "".join(CORPUS * 30)
    ratio = {
        label: len(text.encode()) / len(build_tokenizer(label, texts=lambda: iter(CORPUS)).encode(text))
        for label in ("bytes", "static-ac", "static-ac-65k", "gzip", "gzip-65k")
    }
    assert ratio["bytes"] == 1
    assert math.isclose(ratio["static-ac-65k"], 2 * ratio["static-ac"], rel_tol=0.01)
    assert math.isclose(ratio["gzip-65k"], 2 * ratio["gzip"], rel_tol=0.01)


# -- scheme specs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scheme", "token_bits", "window_bits"),
    [
        ("bytes", "bytes", 8, 16),
        ("gzip", "gzip", 8, 16),
        ("gzip-65k", "gzip", 16, 16),
        ("static-ac-65k", "static-ac", 16, 16),
        ("ac", "ac", 8, 16),
        ("eqinfo16-256", "equal-info", 8, 16),
        ("eqinfo16-65k", "equal-info", 16, 16),
        ("eqinfo128-65536", "equal-info", 16, 128),
        ("EqInfo32-256", "equal-info", 8, 32),
    ],
)
def test_parse_scheme(text: str, scheme: str, token_bits: int, window_bits: int) -> None:
    spec = parse_scheme(text)
    assert (spec.scheme, spec.token_bits, spec.window_bits) == (scheme, token_bits, window_bits)
    assert parse_scheme(spec.label) == spec


def test_parse_scheme_rejects_nonsense() -> None:
    for bad in ("lz4", "gzip-512", "eqinfo20-256", "bytes-65k"):
        with pytest.raises(ConfigError):
            parse_scheme(bad)
    assert parse_scheme("spm-4096").spm_vocab_size == 4096
    assert parse_scheme("equal-info", token_bits=16, window_bits=24).label == "eqinfo24-65k"
    assert parse_scheme("eqinfo16-65k", token_bits=16, window_bits=16).label == "eqinfo16-65k"


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("bytes", {"window_bits": 32}, "--window-bits does not apply"),
        ("gzip", {"spm_vocab_size": 4096}, "--vocab-size does not apply"),
        ("spm", {"token_bits": 16}, "--token-bits does not apply"),
        ("eqinfo16-65k", {"window_bits": 32}, "sets window bits 16, but --window-bits 32"),
        ("ac-65k", {"token_bits": 8}, "sets token bits 16, but --token-bits 8"),
        ("spm-4096", {"spm_vocab_size": 8192}, "--vocab-size 8192"),
    ],
)
def test_parse_scheme_rejects_options_it_would_ignore(text: str, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_scheme(text, **options)


def test_m1_schemes_without_a_model_use_the_shipped_m1() -> None:
    """Without ``m1``, the M1 schemes take the M1 shipped with the package (its weights' sha256)."""
    from compresslm.coding.default_model import default_m1_path
    from compresslm.models.checkpoint import weights_sha256

    tokenizer = build_tokenizer("eqinfo16-65k")
    assert tokenizer.m1.sha256 == weights_sha256(default_m1_path())
