"""The compressor registry: exact container sizes, spec parsing, and NCD sanity for every compressor."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import pickle
import random
import zlib
from pathlib import Path

import brotli
import lz4.block
import lz4.frame
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from compresslm.compressors import (
    Compressor,
    canonical_spec,
    compressor_help,
    get_compressor,
    list_compressors,
    parse_spec,
)
from compresslm.errors import ConfigError

ALL_DEFAULTS = [info.name for info in list_compressors()]
# Fast levels of every compressor plus the non-default modes worth covering (HC, fast zstd).
SPECS = [
    *ALL_DEFAULTS,
    "gzip:1",
    "gzip:6",
    "lz4:9",
    "lz4frame:3",
    "zstd:-3",
    "zstd:19",
    "brotli:4",
    "lzma:0",
    "bz2:1",
]

TEXT = Path(os.__file__).read_bytes()[:3000]
binary_data = st.binary(max_size=3000)
texty_data = st.text(alphabet="abc def\n()=:_", max_size=2000).map(str.encode)


def library_size(spec: str, data: bytes) -> int:
    """The length each library itself produces, called the way the reference zip-fit package does."""
    name, level = parse_spec(spec)
    if name == "gzip":
        return len(gzip.compress(data, compresslevel=level))
    if name == "lz4":
        if level >= 3:
            return len(lz4.block.compress(data, mode="high_compression", compression=level, store_size=False))
        return len(lz4.block.compress(data, store_size=False))
    if name == "lz4frame":
        return len(lz4.frame.compress(data, compression_level=level))
    if name == "zstd":
        return len(zstandard.ZstdCompressor(level=level).compress(data))
    if name == "brotli":
        return len(brotli.compress(data, quality=level))
    if name == "lzma":
        return len(lzma.compress(data, preset=level))
    assert name == "bz2"
    return len(bz2.compress(data, level))


@pytest.mark.parametrize("spec", SPECS)
def test_sizes_match_the_library(spec: str) -> None:
    c = get_compressor(spec)
    assert isinstance(c, Compressor)
    rng = random.Random(spec)
    samples = [b"", b"a", TEXT, TEXT[:700] * 3, bytes(rng.randrange(256) for _ in range(1500))]
    for data in samples:
        assert c.size(data) == len(c.compress(data)) == library_size(spec, data)


@pytest.mark.parametrize("level", range(1, 10))
@settings(max_examples=25, deadline=None)
@given(data=st.one_of(binary_data, texty_data))
def test_gzip_size_is_raw_deflate_plus_18(level: int, data: bytes) -> None:
    c = get_compressor(f"gzip:{level}")
    deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
    raw = deflate.compress(data) + deflate.flush()
    assert c.size(data) == len(raw) + 18 == len(gzip.compress(data, compresslevel=level))
    assert gzip.decompress(c.compress(data)) == data


@pytest.mark.parametrize("spec", SPECS)
@settings(max_examples=15, deadline=None)
@given(prefix=texty_data, suffixes=st.lists(st.one_of(texty_data, binary_data), max_size=5))
def test_concat_sizes_equals_size_of_concatenation(spec: str, prefix: bytes, suffixes: list[bytes]) -> None:
    c = get_compressor(spec)
    got = c.concat_sizes(prefix, suffixes)
    assert got.dtype.kind == "i"
    assert got.tolist() == [c.size(prefix + s) for s in suffixes]


def _similarity(c: Compressor, x: bytes, y: bytes) -> float:
    cx, cy, cxy = c.size(x), c.size(y), c.size(x + y)
    return 1 - (cxy - min(cx, cy)) / max(cx, cy)


@pytest.mark.parametrize("spec", ALL_DEFAULTS)
def test_ncd_properties(spec: str) -> None:
    """A text is far more similar to itself than to random bytes; random bytes share nothing."""
    c = get_compressor(spec)
    rng = random.Random(0)
    noise_a = bytes(rng.randrange(256) for _ in range(2000))
    noise_b = bytes(rng.randrange(256) for _ in range(2000))
    x = TEXT[:2000]
    self_sim = _similarity(c, x, x)
    assert self_sim > 0.75
    assert abs(_similarity(c, noise_a, noise_b)) < 0.2
    assert self_sim - _similarity(c, x, noise_a) > 0.5


def test_defaults_and_canonical_names() -> None:
    assert [get_compressor(n).name for n in ALL_DEFAULTS] == [
        "gzip:9",
        "lz4:0",
        "lz4frame:0",
        "zstd:3",
        "brotli:11",
        "lzma:6",
        "bz2:9",
    ]
    assert canonical_spec(" GZIP:6 ") == "gzip:6"
    assert canonical_spec("zstd:0") == "zstd:3"  # python-zstandard's 0 means its default, 3
    assert get_compressor("lz4:2").size(TEXT) == get_compressor("lz4:0").size(TEXT)  # 0-2: one fast mode
    assert get_compressor("zstd:-3").name == "zstd:-3"


@settings(max_examples=50, deadline=None)
@given(name=st.sampled_from(ALL_DEFAULTS), level=st.integers(-10, 25))
def test_spec_parsing_accepts_exactly_the_documented_range(name: str, level: int) -> None:
    info = {i.name: i for i in list_compressors()}[name]
    spec = f"{name}:{level}"
    valid = info.min_level <= level <= info.max_level and not (name == "gzip" and level == 0)
    if valid:
        c = get_compressor(spec)
        assert get_compressor(c.name) == c  # the canonical name rebuilds an equal compressor
        assert canonical_spec(c.name) == c.name
    else:
        with pytest.raises(ConfigError, match=name):
            get_compressor(spec)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("snappy", "unknown compressor"),
        ("gzip:x", "not an integer"),
        ("gzip:10", "out of range"),
        ("lz4:13", "out of range"),
        ("gzip:0", "stores the data without compressing"),
    ],
)
def test_bad_specs_are_config_errors_that_list_the_choices(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        get_compressor(spec)
    if "unknown" in message:
        assert compressor_help() in str(err.value)
        for name in ALL_DEFAULTS:
            assert name in str(err.value)


@pytest.mark.parametrize("spec", ALL_DEFAULTS)
def test_describe_and_pickle(spec: str) -> None:
    c = get_compressor(spec)
    info = c.describe()
    assert info["compressor"] == c.name
    assert info["zlib_runtime_version"] == zlib.ZLIB_RUNTIME_VERSION
    clone = pickle.loads(pickle.dumps(c))
    assert clone == c and clone.size(TEXT) == c.size(TEXT)
