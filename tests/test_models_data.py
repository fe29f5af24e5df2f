"""Token datasets: random and sequential blocks, 2-D examples with padding, packing, bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from compresslm.errors import ConfigError, DataError
from compresslm.models.data import (
    IGNORE_INDEX,
    TokenStream,
    bytes_to_tokens,
    pack_documents,
)


def stream(n: int = 1000, dtype: type = np.uint16) -> TokenStream:
    return TokenStream(np.arange(n, dtype=dtype) % 997, name="s")


def test_rejects_non_integer_and_bad_shapes() -> None:
    with pytest.raises(ConfigError, match="integer"):
        TokenStream(np.zeros(10, dtype=np.float32))
    with pytest.raises(ConfigError, match="1-D"):
        TokenStream(np.zeros((2, 2, 2), dtype=np.int32))
    with pytest.raises(ConfigError, match="numpy"):
        TokenStream([1, 2, 3])  # type: ignore[arg-type]


def test_sample_batch_is_contiguous_shifted_and_seeded() -> None:
    s = stream()
    x, y = s.sample_batch(8, 32, np.random.default_rng(5))
    assert x.shape == y.shape == (8, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    tokens = torch.from_numpy(s.tokens.astype(np.int64))
    for row in x:
        start = int(np.flatnonzero(s.tokens == int(row[0]))[0])
        assert torch.equal(tokens[start : start + 32], row)
    x2, _ = s.sample_batch(8, 32, np.random.default_rng(5))
    x3, _ = s.sample_batch(8, 32, np.random.default_rng(6))
    assert torch.equal(x, x2) and not torch.equal(x, x3)


def test_sample_batch_reaches_the_last_token() -> None:
    s = TokenStream(np.arange(10, dtype=np.int32))
    rng = np.random.default_rng(0)
    ends = {int(s.sample_batch(1, 4, rng)[1][0, -1]) for _ in range(200)}
    assert ends == set(range(4, 10))


def test_too_short_stream_is_data_error() -> None:
    with pytest.raises(DataError, match="fewer than"):
        TokenStream(np.arange(5, dtype=np.int32), name="short").sample_batch(1, 5, np.random.default_rng(0))


@pytest.mark.parametrize("n,seq_len", [(1000, 32), (33, 32), (34, 32), (100, 7)])
def test_sequential_blocks_predict_every_token_once(n: int, seq_len: int) -> None:
    s = stream(n)
    targets = [y[y != IGNORE_INDEX] for _, y in s.sequential_batches(5, seq_len)]
    assert torch.equal(torch.cat(targets), torch.from_numpy(s.tokens[1:].astype(np.int64)))
    assert s.n_blocks(seq_len) == -(-(n - 1) // seq_len)


def test_eval_block_ids_are_fixed_and_spread() -> None:
    s = stream(10_001)
    ids = s.eval_block_ids(100, max_tokens=1000)
    assert len(ids) == 10 and ids[0] == 0 and ids[-1] >= 90 and np.all(np.diff(ids) > 0)
    assert np.array_equal(ids, s.eval_block_ids(100, max_tokens=1000))
    assert len(s.eval_block_ids(100)) == 100
    assert len(s.eval_block_ids(100, max_tokens=10**9)) == 100


def test_two_d_examples_with_padding() -> None:
    pad = 9
    ex = np.array([[1, 2, 3, pad, pad], [4, 5, 6, 7, 8]], dtype=np.uint8)
    s = TokenStream(ex, pad_id=pad)
    batches = list(s.sequential_batches(2, 4))
    assert len(batches) == 1
    x, y = batches[0]
    assert x.tolist() == [[1, 2, 3, pad], [4, 5, 6, 7]]
    assert y.tolist() == [[2, 3, IGNORE_INDEX, IGNORE_INDEX], [5, 6, 7, 8]]
    x, y = s.sample_batch(16, 4, np.random.default_rng(0))
    assert set(map(tuple, x.tolist())) <= {(1, 2, 3, pad), (4, 5, 6, 7)}  # never crosses examples


def test_from_file_memmaps_and_validates(tmp_path) -> None:
    data = (np.arange(300) * 7 % 65_000).astype(np.uint16)
    path = tmp_path / "train.bin"
    data.tofile(path)
    s = TokenStream.from_file(path, "uint16")
    assert isinstance(s.tokens, np.memmap) and np.array_equal(s.tokens, data) and s.name == "train"
    s2 = TokenStream.from_file(path, "uint16", example_len=30)
    assert s2.tokens.shape == (10, 30)
    with pytest.raises(DataError, match="whole number of examples"):
        TokenStream.from_file(path, "uint16", example_len=7)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\x00" * 601)
    with pytest.raises(DataError, match="whole number of int32"):
        TokenStream.from_file(odd, "int32")
    with pytest.raises(DataError, match="not found"):
        TokenStream.from_file(tmp_path / "missing.bin")


def test_split_is_contiguous_and_disjoint() -> None:
    s = stream(100)
    a, b = s.split(0.9)
    assert len(a) == 90 and len(b) == 10
    assert np.array_equal(np.concatenate([a.tokens, b.tokens]), s.tokens)
    with pytest.raises(ConfigError):
        s.split(1.0)


def test_pack_documents_dtype_and_layout() -> None:
    out = pack_documents([[1, 2], [3], []], eos_id=0)
    assert out.tolist() == [1, 2, 0, 3, 0, 0] and out.dtype == np.uint8
    assert pack_documents([[300]], eos_id=1).dtype == np.uint16
    assert pack_documents([[1]], eos_id=70_000).dtype == np.int32
    with pytest.raises(ConfigError, match="fit"):
        pack_documents([[300]], eos_id=0, dtype=np.uint8)


@given(st.lists(st.lists(st.integers(1, 70_000), max_size=20), max_size=10))
def test_pack_documents_round_trip(docs: list[list[int]]) -> None:
    packed = pack_documents(docs, eos_id=0)
    assert len(packed) == sum(len(d) + 1 for d in docs)
    pieces = np.split(packed, np.flatnonzero(packed == 0) + 1)[:-1] if len(packed) else []
    assert [p[:-1].tolist() for p in pieces] == docs


@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")), max_size=8
    )
)
def test_bytes_to_tokens_round_trip(texts: list[str]) -> None:
    tokens = bytes_to_tokens(texts)
    assert tokens.dtype == np.uint8
    assert tokens.tobytes().split(b"\x00")[:-1] == [t.encode("utf-8") for t in texts]


def test_bytes_to_tokens_custom_separator_and_bytes_input() -> None:
    assert bytes_to_tokens([b"ab", "é"], separator=b"\n\n").tobytes() == b"ab\n\n\xc3\xa9\n\n"
