"""The .clm container format alone (version 3): round trips of the tables and the binary header,
and damage always detected with a clear message."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compresslm.coding.binary import Reader
from compresslm.coding.container import Container, DocEntry, read_container, write_container
from compresslm.coding.header import (
    CODES,
    EXTRAS,
    NUMERICS,
    SOURCE_KINDS,
    decode_header,
    encode_header,
)
from compresslm.errors import IntegrityError


def header(mode: str = "windows", segment_bytes: int | None = 32) -> dict[str, Any]:
    """A complete version 3 header (what compress writes, with made-up model hashes)."""
    coder: dict[str, Any] = (
        {"window_bits": 16, "precision": 14, "guard_bits": 16, "max_window_bytes": 64, "code": "straddle"}
        if mode == "windows"
        else {"precision": 14, "context": 64}
    )
    return {
        "mode": mode,
        "coder": coder,
        "segment_bytes": segment_bytes,
        "model": {"sha256": "ab" * 8, "fingerprint": "cd" * 4, "numerics": "int8-exact-v1", "path": None},
        "source": {
            "kind": "file",
            "text_field": "text",
            "skipped": 0,
            "record_lines": 0,
            "whole_lines": 0,
            "rejected": 0,
        },
        "stats": {"backed_off": 0},
    }


def sample(mode: str = "windows") -> Container:
    docs = [DocEntry(12, None, [3]), DocEntry(0, None, []), DocEntry(40, None, [2, 1], [(0, 5), (2, 64)])]
    if mode == "stream":
        docs[2].exceptions = []
    payload = bytes(range(12)) if mode == "windows" else bytes(range(6))
    return Container(header(mode), docs, b"\x00layout bytes", payload, digest=b"digest!!")


def serialise(c: Container) -> bytes:
    buf = io.BytesIO()
    n = write_container(buf, c)
    assert n == len(buf.getvalue())
    return buf.getvalue()


def with_crc(data: bytes) -> bytes:
    """``data`` (a .clm file without its CRC) with a valid CRC appended: what an attacker writes."""
    return data + struct.pack("<I", zlib.crc32(data))


@pytest.mark.parametrize("mode", ["windows", "stream"])
def test_round_trip(mode: str) -> None:
    c = sample(mode)
    data = serialise(c)
    back = read_container(data)
    assert back.header == c.header and back.docs == c.docs and back.version == 3
    assert back.layout == c.layout and back.payload == c.payload and back.digest == c.digest
    assert sum(back.sizes.values()) == len(data) == back.size
    if mode == "stream":
        assert back.docs[2].segment_windows == [2, 1]  # code bytes; the last one implied by the payload


def test_a_small_file_costs_a_few_dozen_bytes() -> None:
    c = Container(
        header("stream", None), [DocEntry(12, None, [7])], b"\x00" + bytes(14), bytes(7), digest=bytes(8)
    )
    assert len(serialise(c)) - 7 < 50


doc_tables = st.lists(st.integers(0, 2**40), max_size=8).flatmap(
    lambda sizes: st.tuples(
        st.just(sizes),
        st.lists(st.integers(1, 2**20), min_size=len(sizes), max_size=len(sizes)),
    )
)


@given(doc_tables, st.sampled_from([None, 1 << 20, 1 << 30]))
@settings(max_examples=150, deadline=None)
def test_doc_table_round_trips(table: tuple[list[int], list[int]], segment_bytes: int | None) -> None:
    """Random document lengths and code sizes (stream mode, bounds off: only the table's coding is
    under test here) come back as written, the last count from the payload's length."""
    sizes, codes = table
    from compresslm.coding.container import _decode_docs, _fill_last_count, encode_docs

    docs = []
    for n, code in zip(sizes, codes, strict=True):
        k = 0 if n == 0 else 1 if segment_bytes is None else -(-n // segment_bytes)
        docs.append(DocEntry(n, None, [code] * k))
    h = header("stream", segment_bytes)
    data = encode_docs(docs, windows=False)
    r = Reader(data, "x")
    back = _decode_docs(r, h, len(data), "x")
    assert r.pos == len(data)
    _fill_last_count(back, h, sum(d.windows for d in docs), "x")
    assert back == docs


texts = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=30)
counts = st.integers(0, 2**48)


@st.composite
def headers(draw: st.DrawFn) -> dict[str, Any]:
    mode = draw(st.sampled_from(["stream", "windows"]))
    h = header(mode, draw(st.none() | st.integers(1, 1 << 30)))
    if mode == "windows":
        h["coder"] = {
            "window_bits": 8 * draw(st.integers(2, 32)),
            "precision": draw(st.integers(9, 24)),
            "guard_bits": draw(st.integers(1, 32)),
            "max_window_bytes": draw(st.integers(1, 4096)),
            "code": draw(st.sampled_from(CODES)),
        }
    else:
        h["coder"] = {"precision": draw(st.integers(9, 24)), "context": draw(st.integers(1, 1 << 20))}
    h["model"] = {
        "sha256": draw(st.binary(min_size=8, max_size=8)).hex(),
        "fingerprint": draw(st.binary(min_size=4, max_size=4)).hex(),
        "numerics": draw(st.sampled_from(NUMERICS)),
        "path": draw(st.none() | texts),
    }
    h["source"]["kind"] = draw(st.sampled_from(SOURCE_KINDS))
    for group, name, _, default in EXTRAS:
        h[group][name] = draw(texts if isinstance(default, str) else counts | st.just(default))
    return h


@given(headers())
@settings(max_examples=300, deadline=None)
def test_header_round_trips(h: dict[str, Any]) -> None:
    data = encode_header(h)
    r = Reader(data, "x")
    assert decode_header(r) == h and r.pos == len(data)


@given(headers(), st.data())
@settings(max_examples=300, deadline=None)
def test_any_damaged_header_is_read_or_a_clear_error(h: dict[str, Any], data: st.DataObject) -> None:
    """Header bytes changed anywhere (a CRC recomputed by an attacker cannot help): the reader
    returns a header that passes the schema, or raises IntegrityError."""
    raw = bytearray(encode_header(h))
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos : pos + data.draw(st.integers(0, 3))] = data.draw(st.binary(max_size=4))
    try:
        decode_header(Reader(bytes(raw), "x"))
    except IntegrityError as exc:
        assert str(exc).startswith("x")


def test_every_truncation_is_reported() -> None:
    data = serialise(sample())
    for cut in range(len(data)):
        with pytest.raises(IntegrityError, match="truncated|not a .clm|version"):
            read_container(data[:cut], "out.clm")


def test_every_single_bit_flip_is_reported() -> None:
    for mode in ("windows", "stream"):
        data = serialise(sample(mode))
        for pos in range(len(data)):
            for bit in (0, 5):
                damaged = bytearray(data)
                damaged[pos] ^= 1 << bit
                with pytest.raises(IntegrityError) as info:
                    read_container(bytes(damaged), "out.clm")
                assert str(info.value).startswith("out.clm: ")


def test_messages_name_the_problem() -> None:
    data = serialise(sample())
    with pytest.raises(IntegrityError, match="bad magic"):
        read_container(b"PK\x03\x04" + data[4:], "a.clm")
    with pytest.raises(IntegrityError, match="version 5"):
        read_container(data[:4] + b"\x05" + data[5:], "a.clm")
    with pytest.raises(IntegrityError, match="version 1 "):
        read_container(b"\x89CLM\r\n\x1a\n\x01\x00" + bytes(40), "a.clm")
    flipped = bytearray(data)
    flipped[-20] ^= 0x10  # inside the payload
    with pytest.raises(IntegrityError, match="fails its CRC32 check"):
        read_container(bytes(flipped), "a.clm")
    with pytest.raises(IntegrityError, match="fails its CRC32 check"):
        read_container(data + b"\x00", "a.clm")


def test_counts_must_agree_even_with_a_valid_crc() -> None:
    body = serialise(sample())[:-4]
    with pytest.raises(IntegrityError, match="not whole 2-byte windows"):
        read_container(with_crc(body[:-9] + body[-8:]), "a.clm")  # one payload byte less
    with pytest.raises(IntegrityError, match="counts 5 coded units, the payload holds 4"):
        read_container(with_crc(body[:-12] + body[-8:]), "a.clm")  # the listed counts are 3 and 2
    with pytest.raises(IntegrityError, match="exception window 5 lies beyond every document"):
        read_container(with_crc(body[:-10] + body[-8:]), "a.clm")  # the last segment now empty
    c = sample()
    c.docs[0].exceptions = [(1, 65)]  # more than max_window_bytes
    with pytest.raises(IntegrityError, match="out of range"):
        read_container(serialise(c), "a.clm")
    c = Container(header("windows", None), [DocEntry(2**40, None, [3])], b"\x00", bytes(6), digest=bytes(8))
    with pytest.raises(IntegrityError, match="3 windows cannot code"):
        read_container(serialise(c), "a.clm")
