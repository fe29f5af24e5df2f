"""The .clm container format alone: round trip, and damage always detected with a clear message."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compresslm.coding.container import (
    Container,
    DocEntry,
    decode_docs,
    encode_docs,
    read_container,
    write_container,
)
from compresslm.errors import IntegrityError


def header(docs: list[DocEntry], segment_bytes: int | None = 32) -> dict:
    """A complete header for ``docs`` (what compress writes, with made-up model hashes)."""
    return {
        "format": "compresslm.clm",
        "created_by": "compresslm test",
        "coder": {
            "window_bits": 16,
            "precision": 14,
            "guard_bits": 16,
            "max_window_bytes": 64,
            "code": "straddle",
        },
        "segment_bytes": segment_bytes,
        "model": {"sha256": "ab" * 32, "fingerprint": "cd" * 32, "path": None, "n_params": 10, "context": 64},
        "source": {
            "kind": "file",
            "name": "x.txt",
            "text_field": "text",
            "files": 1,
            "folders": 0,
            "skipped": 0,
            "input_bytes": 52,
            "record_lines": 0,
            "whole_lines": 0,
            "rejected": 0,
        },
        "documents": len(docs),
        "windows": sum(d.windows for d in docs),
        "document_bytes": sum(d.nbytes for d in docs),
        "layout_bytes": 12,
        "layout_sha256": "ef" * 32,
        "stats": {"exceptions": 2, "backed_off": 0, "positions": 52},
    }


def sample() -> Container:
    docs = [DocEntry(12, 0xDEADBEEF, [3]), DocEntry(0, 0, []), DocEntry(40, 7, [2, 1], [(0, 5), (2, 64)])]
    return Container(header(docs), docs, b"layout bytes", bytes(range(12)))


def serialise(c: Container) -> bytes:
    buf = io.BytesIO()
    n = write_container(buf, c)
    assert n == len(buf.getvalue())
    return buf.getvalue()


def test_round_trip() -> None:
    c = sample()
    back = read_container(serialise(c))
    assert back.header == c.header and back.docs == c.docs
    assert back.layout == c.layout and back.payload == c.payload


doc_entries = st.lists(
    st.builds(
        DocEntry,
        st.integers(0, 2**40),
        st.integers(0, 2**32 - 1),
        st.lists(st.integers(0, 2**20), max_size=4),
        st.lists(st.tuples(st.integers(0, 2**20), st.integers(1, 2**10)), max_size=3),
    ),
    max_size=8,
)


@given(doc_entries)
@settings(max_examples=200, deadline=None)
def test_doc_table_round_trips(docs: list[DocEntry]) -> None:
    assert decode_docs(encode_docs(docs), "x") == docs


def test_every_truncation_is_reported() -> None:
    data = serialise(sample())
    for cut in range(len(data)):
        with pytest.raises(IntegrityError, match="truncated|not a .clm|ends|missing|CRC"):
            read_container(data[:cut], "out.clm")


def test_every_single_bit_flip_is_reported() -> None:
    data = serialise(sample())
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
    with pytest.raises(IntegrityError, match="version 3"):
        read_container(data[:8] + b"\x03\x00" + data[10:], "a.clm")
    flipped = bytearray(data)
    flipped[-20] ^= 0x10  # inside the WIND payload
    with pytest.raises(IntegrityError, match="section WIND fails its CRC32"):
        read_container(bytes(flipped), "a.clm")
    with pytest.raises(IntegrityError, match="unexpected bytes after the end marker"):
        read_container(data + b"\x00", "a.clm")


def test_counts_must_agree() -> None:
    c = sample()
    c.payload = c.payload[:-2]
    with pytest.raises(IntegrityError, match="WIND holds 10 bytes"):
        read_container(serialise(c), "a.clm")
    c = sample()
    c.docs[0].exceptions = [(3, 1)]
    with pytest.raises(IntegrityError, match="out of range"):
        read_container(serialise(c), "a.clm")
