"""Token datasets: accounting, exact decoding of every document, the same held-out documents for
every scheme, examples that predict every id once, resuming, refusing to overwrite, workers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compresslm.data.readers import read_records
from compresslm.errors import ConfigError, OutputExistsError
from compresslm.models.data import IGNORE_INDEX
from compresslm.tokenizers import build_tokenizer
from compresslm.tokenizers.dataset import (
    TokenDataset,
    TokenizeOptions,
    split_of,
    tokenize_corpus,
    training_texts,
)

DOCS = ["def f(x):\n    return x * 2\n" * (i % 5 + 1) + f"# doc {i} ünïcode 🙂\n" for i in range(60)] + [
    "x" * 700
]  # one document longer than the test chunk size


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    lines = [json.dumps({"text": t}) for t in DOCS]
    lines.insert(3, json.dumps({"text": ""}))  # rejected: empty
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _tokenize(corpus: Path, out: Path, scheme: str, **options) -> dict:
    opts = TokenizeOptions(**{"val_fraction": 0.2, "workers": 1, **options})
    tok = build_tokenizer(scheme, texts=lambda: training_texts(read_records([corpus]), opts))
    if hasattr(tok, "chunk_bytes"):
        tok.chunk_bytes = 256
    return tokenize_corpus(read_records([corpus]), tok, out, opts, source=str(corpus))


@pytest.mark.parametrize("scheme", ["bytes", "gzip-65k", "static-ac", "spm-300"])
def test_dataset_decodes_and_accounts(corpus: Path, tmp_path: Path, scheme: str) -> None:
    meta = _tokenize(corpus, tmp_path / "ds", scheme)
    assert meta["accounting"]["read"] == len(DOCS) + 1
    assert meta["accounting"]["rejected"] == 1
    assert meta["bytes"] == sum(len(t.encode()) for t in DOCS)
    ds = TokenDataset(tmp_path / "ds")
    expected = {"train": [], "val": []}
    for i, text in enumerate(DOCS):
        line = i + 1 if i < 3 else i + 2  # the empty record sits on line 4
        expected[split_of(f"{corpus}:{line}", 0.2)].append(text)
    for split, texts in expected.items():
        assert ds.split_info(split)["documents"] == len(texts)
        decoded = [ds.tokenizer.decode(ds.document_ids(split, i)) for i in range(len(texts))]
        assert decoded == texts
        stream = np.asarray(ds.stream(split))
        assert stream[0] == ds.eod_id
        assert (stream == ds.eod_id).sum() == len(texts) + 1
        chunks = ds.chunks(split)
        assert chunks[:, 1].sum() == len(stream) - 1
        assert chunks[:, 2].sum() == ds.split_info(split)["bytes"]
        data_ids = stream[stream < ds.data_vocab_size]
        assert ds.split_info(split)["tokens"] == len(data_ids)


@pytest.mark.parametrize("seq_len", [7, 64])
def test_rows_predict_every_id_once(corpus: Path, tmp_path: Path, seq_len: int) -> None:
    _tokenize(corpus, tmp_path / "ds", "gzip")
    ds = TokenDataset(tmp_path / "ds")
    rows = ds.rows("train", seq_len)
    assert rows.shape[1] == seq_len + 1
    stream = np.asarray(ds.stream("train"))
    targets = rows[:, 1:][rows[:, 1:] != ds.pad_id]
    assert len(targets) == len(stream) - 1
    assert sorted(targets.tolist()) == sorted(stream[1:].tolist())
    x, y = next(ds.token_stream("train", seq_len).sequential_batches(10**6, seq_len))
    assert int((y != IGNORE_INDEX).sum()) == len(stream) - 1
    # a pack never holds more than the chunk size: examples start where a coded stream starts
    packs = ds.packs("train")
    assert packs[:, 1].sum() == len(stream) - 1
    chunk_starts = set(ds.chunks("train")[:, 0].tolist())
    assert set(packs[:, 0].tolist()) <= chunk_starts


def test_same_held_out_documents_for_every_scheme(corpus: Path, tmp_path: Path) -> None:
    a = _tokenize(corpus, tmp_path / "a", "bytes")
    b = _tokenize(corpus, tmp_path / "b", "gzip")
    assert a["splits"]["val"]["bytes"] == b["splits"]["val"]["bytes"] > 0
    assert (tmp_path / "a" / "documents.jsonl").read_text() == (
        tmp_path / "b" / "documents.jsonl"
    ).read_text()


def test_existing_dataset_needs_force_and_resume_reuses_shards(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    _tokenize(corpus, out, "gzip", shard_bytes=2000)
    first = np.asarray(TokenDataset(out).stream("train")).copy()
    with pytest.raises(OutputExistsError):
        _tokenize(corpus, out, "gzip", shard_bytes=2000)
    # an interrupted run: shards written, no meta.json yet -> rerun resumes from the shards
    (out / "meta.json").unlink()
    (out / "shards").mkdir()
    (out / "progress.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="other settings"):
        _tokenize(corpus, out, "gzip", shard_bytes=2000)
    meta = _tokenize(corpus, out, "gzip", shard_bytes=2000, force=True)
    assert meta["shards_reused"] == 0
    assert np.array_equal(np.asarray(TokenDataset(out).stream("train")), first)


def test_interrupted_run_resumes(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from compresslm.tokenizers import dataset as dataset_mod

    out = tmp_path / "ds"
    real = dataset_mod._write_shard
    calls = {"n": 0}

    def flaky(path, tokenizer, docs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(path, tokenizer, docs)

    monkeypatch.setattr(dataset_mod, "_write_shard", flaky)
    with pytest.raises(KeyboardInterrupt):
        _tokenize(corpus, out, "bytes", shard_bytes=2000)
    assert not (out / "meta.json").exists()
    with pytest.raises(ConfigError, match="unfinished"):
        TokenDataset(out)
    monkeypatch.setattr(dataset_mod, "_write_shard", real)
    meta = _tokenize(corpus, out, "bytes", shard_bytes=2000)
    assert meta["shards_reused"] == 2
    assert meta["bytes"] == sum(len(t.encode()) for t in DOCS)


def test_resume_reuses_only_shards_whose_documents_are_unchanged(tmp_path: Path, monkeypatch) -> None:
    """A document edited in place without changing its size is tokenized again, not reused."""
    from compresslm.tokenizers import dataset as dataset_mod

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCS), encoding="utf-8")
    out = tmp_path / "ds"
    real = dataset_mod._write_shard
    calls = {"n": 0}

    def interrupted(path, tokenizer, docs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(path, tokenizer, docs)

    monkeypatch.setattr(dataset_mod, "_write_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _tokenize(corpus, out, "bytes", shard_bytes=2000)
    monkeypatch.setattr(dataset_mod, "_write_shard", real)
    edited = corpus.read_text(encoding="utf-8").replace("return x * 2", "return x * 3", 1)  # same size
    corpus.write_text(edited, encoding="utf-8")
    meta = _tokenize(corpus, out, "bytes", shard_bytes=2000)
    assert meta["shards_reused"] == 1  # the first shard holds the edit: tokenized again
    ds = TokenDataset(out)
    texts = [json.loads(line)["text"] for line in edited.splitlines()]
    decoded = {
        ds.tokenizer.decode(ds.document_ids(split, i))
        for split in ("train", "val")
        for i in range(ds.split_info(split)["documents"])
    }
    assert decoded == set(texts)


def test_workers_give_the_same_dataset(corpus: Path, tmp_path: Path) -> None:
    _tokenize(corpus, tmp_path / "one", "gzip", shard_bytes=1500)
    _tokenize(corpus, tmp_path / "two", "gzip", shard_bytes=1500, workers=2)
    one, two = TokenDataset(tmp_path / "one"), TokenDataset(tmp_path / "two")
    for split in ("train", "val"):
        assert np.array_equal(np.asarray(one.stream(split)), np.asarray(two.stream(split)))
        assert np.array_equal(one.chunks(split), two.chunks(split))


def test_limit_bytes_takes_a_prefix_and_empty_val_is_an_error(corpus: Path, tmp_path: Path) -> None:
    # The split hashes ids, and ids hold the (temporary) corpus path: pick the limit from this
    # corpus's own split, as the shortest prefix with a document on each side.
    records = [r for r in read_records([corpus]) if hasattr(r, "text")]
    seen, limit = set(), 0
    for r in records:
        seen.add(split_of(r.id, 0.5))
        limit += len(r.data)
        if len(seen) == 2:
            break
    assert len(seen) == 2 and limit < sum(len(r.data) for r in records), "the corpus needs both splits"
    meta = _tokenize(corpus, tmp_path / "ds", "bytes", limit_bytes=limit, val_fraction=0.5)
    assert limit <= meta["bytes"] < limit + max(len(t.encode()) for t in DOCS)
    acct = meta["accounting"]
    assert acct["beyond --limit-bytes"] > 0
    assert acct["read"] == acct["tokenized"] + acct.get("rejected", 0) + acct["beyond --limit-bytes"]
    with pytest.raises(ConfigError, match="held-out"):
        _tokenize(corpus, tmp_path / "tiny", "bytes", limit_bytes=1, val_fraction=0.01)


def test_equal_info_dataset_with_ids_across_windows(corpus: Path, tmp_path: Path) -> None:
    """b = 24, v = 65k: ids straddle windows and chunk boundaries; every document still decodes."""
    from compresslm.coding.m1 import M1
    from compresslm.models import Transformer, config_for_size
    from compresslm.tokenizers.equal_info import EqualInfoTokenizer

    m1 = M1(Transformer(config_for_size("tiny", vocab_size=256, max_seq_len=32), seed=0), threads=1)
    tok = EqualInfoTokenizer(m1, 24, 16, chunk_bytes=256, unit_bytes=128)
    records = [r for r in read_records([corpus]) if hasattr(r, "text")][:12]
    tokenize_corpus(records, tok, tmp_path / "eq", TokenizeOptions(val_fraction=0.3, workers=1))
    ds = TokenDataset(tmp_path / "eq")
    for split in ("train", "val"):
        n = ds.split_info(split)["documents"]
        texts = [r.text for r in records if split_of(r.id, 0.3) == split]
        assert [ds.tokenizer.decode(ds.document_ids(split, i)) for i in range(n)] == texts
    assert ds.meta["tokenizer"]["uses_m1"] and ds.meta["tokenizer"]["m1_params_non_embedding"] == m1.n_params


def test_cli_tokenize_resumes_with_shard_bytes(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from compresslm.cli import main
    from compresslm.tokenizers import dataset as dataset_mod

    out = tmp_path / "ds"
    args = [
        "tokenize",
        str(corpus),
        "--scheme",
        "bytes",
        "-o",
        str(out),
        "--workers",
        "1",
        "--shard-bytes",
        "2k",
        "--val-fraction",
        "0.2",  # the split hashes ids, which hold the temporary path: 0.05 of 61 can come out empty
    ]
    real = dataset_mod._write_shard
    calls = {"n": 0}

    def flaky(path, tokenizer, docs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(path, tokenizer, docs)

    monkeypatch.setattr(dataset_mod, "_write_shard", flaky)
    assert main(args) == 130  # Ctrl-C: finished shards stay, no meta.json
    assert not (out / "meta.json").exists()
    monkeypatch.setattr(dataset_mod, "_write_shard", real)
    capsys.readouterr()
    assert main(args) == 0
    assert "resumed: 2 finished shards" in capsys.readouterr().out
    assert TokenDataset(out).meta["options"]["shard_bytes"] == 2000


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scheme", "bytes", "--window-bits", "32"], "--window-bits does not apply"),
        (["--scheme", "eqinfo16-65k", "--token-bits", "8"], "--token-bits 8"),
        (["--scheme", "bytes", "--shard-bytes", "0"], "--shard-bytes: expected a positive whole number"),
    ],
)
def test_cli_tokenize_rejects_options_clearly(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    from compresslm.cli import main

    assert main(["tokenize", str(corpus), "-o", str(tmp_path / "ds"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_cli_tokenize_summary_accounts_for_records_past_the_limit(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The printed counts add up: records past --limit-bytes are named, not silently missing."""
    import re

    from compresslm.cli import main

    # The shortest prefix with a document in each split (ids hold the temporary path, see above).
    seen, limit = set(), 0
    for r in (r for r in read_records([corpus]) if hasattr(r, "text")):
        seen.add(split_of(r.id, 0.5))
        limit += len(r.data)
        if len(seen) == 2:
            break
    code = main(
        ["tokenize", str(corpus), "--scheme", "bytes", "-o", str(tmp_path / "ds"), "--workers", "1"]
        + ["--limit-bytes", str(limit), "--val-fraction", "0.5", "--no-progress"]
    )
    assert code == 0
    out = " ".join(capsys.readouterr().out.split())
    counts = dict(re.findall(r"(records read|tokenized|rejected|beyond --limit-bytes) ([\d,]+)", out))
    n = {k: int(v.replace(",", "")) for k, v in counts.items()}
    assert n["beyond --limit-bytes"] > 0
    assert n["records read"] == n["tokenized"] + n["rejected"] + n["beyond --limit-bytes"]
