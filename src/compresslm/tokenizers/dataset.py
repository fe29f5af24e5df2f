"""Token datasets: a corpus tokenized once into memory-mapped arrays (nanoGPT style) plus metadata.

Layout of a dataset folder::

    tokenizer/            the tokenizer (tokenizer.json + model files): decodes these tokens alone
    train.bin, val.bin    raw token ids (dtype in meta.json), one stream per split
    train.chunks.npy      int64 (n_chunks, 4): token_start, n_tokens, n_bytes, doc (row in docs.npy)
    train.docs.npy        int64 (n_docs, 3): token_start, n_tokens (EOD included), n_bytes
    documents.jsonl       id, split, bytes, tokens of every document, in corpus order
    meta.json             scheme, counts, compression ratios, accounting; written LAST (= complete)

Stream invariants (each split): the stream starts with one ``eod_id``; then every document's ids,
chunk after chunk, each document followed by ``eod_id``. A document's last chunk counts that EOD in
its ``n_tokens``, so chunk token counts sum to ``len(stream) - 1``. Chunks are the scheme's
10,240-byte pieces (a whole document for bytes and SentencePiece).

M2 examples (:meth:`TokenDataset.rows`): consecutive chunks are grouped into packs of at most
10,240 bytes (several short documents, or one piece of a long one: the paper concatenates documents
and cuts 10,240-byte examples), and each pack is cut into blocks of ``seq_len`` predictions, padded
with ``pad_id`` at the pack's end, each preceded by one context id (the stream's previous id: EOD at
a document start). So examples start where a coded stream starts, as in the paper; unlike the paper,
no ids are trimmed away, so evaluation covers every id of the held-out bytes exactly once.

The held-out split is chosen per document from a hash of its stable id, so every scheme holds out the
same bytes. Tokenization runs on all cores in shards of documents; each finished shard is written
atomically under ``shards/``, named by a content hash of its documents, and a rerun with the same
settings skips the shards already there whose documents are unchanged (content, not size).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import cached_property
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np

from compresslm.data.jsonfile import read_versioned_json
from compresslm.data.records import Record, Rejection, reason_kind
from compresslm.data.writers import check_folder_free
from compresslm.errors import ConfigError, DataError, IntegrityError, OutputExistsError
from compresslm.select.parallel import default_workers, ordered_map
from compresslm.tokenizers.base import Tokenizer
from compresslm.tokenizers.registry import load_tokenizer, read_tokenizer_config, save_tokenizer

META_FILE = "meta.json"
PROGRESS_FILE = "progress.json"
TOKENIZER_DIR = "tokenizer"
SHARD_DIR = "shards"
DOCS_FILE = "documents.jsonl"
FORMAT = "compresslm.tokens"
FORMAT_VERSION = 1
SPLITS = ("train", "val")


@dataclass
class TokenizeOptions:
    """How :func:`tokenize_corpus` runs. ``limit_bytes`` keeps the corpus prefix up to that many bytes
    (whole documents), so several schemes tokenized with the same limit cover the same documents."""

    val_fraction: float = 0.05
    workers: int | None = None  # None: all cores
    shard_bytes: int = 2 << 20  # M1 schemes batch every chunk of a shard: ~200 rows per M1 step
    limit_bytes: int | None = None
    force: bool = False
    progress: bool = False
    engine: str = "local"  # "ray": shards are spilled to disk, then tokenized by a Ray Data map
    ray_address: str | None = None
    num_cpus: float = 1

    def __post_init__(self) -> None:
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"--engine must be local or ray, got {self.engine!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.shard_bytes < 1:
            raise ConfigError(f"shard bytes must be positive, got {self.shard_bytes}")
        if self.limit_bytes is not None and self.limit_bytes < 1:
            raise ConfigError(f"--limit-bytes must be positive, got {self.limit_bytes}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")


def split_of(doc_id: str, val_fraction: float) -> str:
    """``"val"`` for a ``val_fraction`` share of ids (by a hash of the id: order- and scheme-free)."""
    h = int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "big")
    return "val" if h < val_fraction * 2.0**64 else "train"


def training_texts(items: Iterable[Record | Rejection], options: TokenizeOptions) -> Iterator[str]:
    """The texts :func:`tokenize_corpus` puts in the training split (same limit, same hash): what
    SentencePiece and StaticAC are estimated on, so the held-out documents stay unseen."""
    total = 0
    for item in items:
        if isinstance(item, Rejection):
            continue
        if options.limit_bytes is not None and total >= options.limit_bytes:
            return
        total += len(item.data)
        if split_of(item.id, options.val_fraction) == "train":
            yield item.text


# ------------------------------------------------------------------------------------------ workers

_WORKER_TOKENIZER: Tokenizer | None = None


def _init_worker(tokenizer_dir: str) -> None:
    """Load the saved tokenizer once per worker (M1 schemes load M1 with one torch thread)."""
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = load_tokenizer(tokenizer_dir)


def _tokenize_shard(task: tuple[str, list[bytes]]) -> int:
    """Tokenize one shard's documents and write its file atomically; runs in a worker."""
    tokenizer = _WORKER_TOKENIZER
    assert tokenizer is not None, "worker not initialised"
    path, docs = task
    _write_shard(Path(path), tokenizer, docs)
    return sum(map(len, docs))


_LOADED: dict[str, Tokenizer] = {}


def _tokenize_spilled(tokenizer_dir: str, task: dict[str, Any]) -> dict[str, Any]:
    """Ray stage: tokenize one spilled shard (its documents in ``task["input"]``) into
    ``task["output"]``; the tokenizer loads once per worker process."""
    if tokenizer_dir not in _LOADED:
        _LOADED[tokenizer_dir] = load_tokenizer(tokenizer_dir)
    src = Path(task["input"])
    with np.load(src, allow_pickle=False) as z:
        data, offsets = z["data"].tobytes(), z["offsets"]
    docs = [data[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]
    _write_shard(Path(task["output"]), _LOADED[tokenizer_dir], docs)
    src.unlink(missing_ok=True)
    return {"output": task["output"], "bytes": len(data)}


def _spill(path: Path, docs: list[bytes]) -> None:
    """Write a shard's documents for a Ray worker to read (no pickle: bytes plus offsets)."""
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(d) for d in docs])
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, data=np.frombuffer(b"".join(docs), dtype=np.uint8), offsets=offsets)
    os.replace(tmp, path)


def _write_shard(path: Path, tokenizer: Tokenizer, docs: list[bytes]) -> None:
    parts: list[np.ndarray] = []
    chunk_rows: list[tuple[int, int, int, int]] = []  # doc, token offset in doc, n_tokens, n_bytes
    doc_tokens: list[int] = []
    eod = np.array([tokenizer.eod_id], dtype=tokenizer.dtype)
    for d, (chunks, sizes) in enumerate(tokenizer.encode_documents(docs)):
        offset = 0
        for ids, size in zip(chunks, sizes, strict=True):
            chunk_rows.append((d, offset, len(ids), size))
            parts.append(ids.astype(tokenizer.dtype))
            offset += len(ids)
        if not chunks:  # an empty document: one chunk holding only its EOD
            chunk_rows.append((d, 0, 0, 0))
        parts.append(eod)
        last = chunk_rows[-1]
        chunk_rows[-1] = (last[0], last[1], last[2] + 1, last[3])  # the EOD belongs to the last chunk
        doc_tokens.append(offset + 1)
    tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=tokenizer.dtype)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(
        tmp,
        tokens=tokens,
        chunks=np.asarray(chunk_rows, dtype=np.int64).reshape(-1, 4),
        doc_tokens=np.asarray(doc_tokens, dtype=np.int64),
        doc_bytes=np.asarray([len(d) for d in docs], dtype=np.int64),
    )
    os.replace(tmp, path)


def _load_shard(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in ("tokens", "chunks", "doc_tokens", "doc_bytes")}
    except (OSError, ValueError, KeyError) as exc:
        raise IntegrityError(f"{path}: unreadable shard ({exc}); delete it to tokenize it again") from exc


# -------------------------------------------------------------------------------------- the writer


@dataclass
class _Doc:
    id: str
    split: str
    n_bytes: int


def _fingerprint(tokenizer_config: dict[str, Any], options: TokenizeOptions, source: str) -> str:
    keep = {
        "val_fraction": options.val_fraction,
        "shard_bytes": options.shard_bytes,
        "limit_bytes": options.limit_bytes,
    }
    blob = json.dumps({"tokenizer": tokenizer_config, "options": keep, "source": source}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def is_token_dataset(folder: Path) -> bool:
    """Whether ``folder`` is (or is becoming) a dataset written by :func:`tokenize_corpus`: the only
    kind of folder ``--force`` may replace."""
    if (folder / PROGRESS_FILE).is_file():
        return True
    try:
        return json.loads((folder / META_FILE).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _prepare_output(out: Path, tokenizer: Tokenizer, options: TokenizeOptions, source: str) -> str:
    """Create or reuse ``out``; returns the run fingerprint. A complete dataset is only replaced with
    force; an unfinished one with the same fingerprint is resumed."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a folder")
    if (out / META_FILE).exists() and not options.force:
        raise OutputExistsError(f"{out / META_FILE} exists; pass --force to overwrite the dataset")
    fingerprint = _fingerprint(tokenizer.config(), options, source)
    progress = out / PROGRESS_FILE
    resumable = False
    if progress.is_file():
        try:
            resumable = json.loads(progress.read_text(encoding="utf-8")).get("fingerprint") == fingerprint
        except (json.JSONDecodeError, UnicodeDecodeError):
            resumable = False
    if (options.force or not resumable) and out.exists() and any(out.iterdir()):
        what = f"a token dataset (no {META_FILE} or {PROGRESS_FILE} from `compresslm tokenize`)"
        if not is_token_dataset(out):
            raise ConfigError(
                f"{out} is not {what}; --force only replaces a dataset, so choose a new or empty folder"
            )
        if not options.force:
            raise OutputExistsError(
                f"{out} holds an unfinished dataset made with other settings; pass --force to replace it"
            )
        check_folder_free(out, options.force, is_token_dataset, what)  # never the current folder
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    if not (out / TOKENIZER_DIR / "tokenizer.json").is_file():
        save_tokenizer(tokenizer, out / TOKENIZER_DIR, force=True)
    elif read_tokenizer_config(out / TOKENIZER_DIR).get("scheme") != tokenizer.scheme:
        raise IntegrityError(f"{out / TOKENIZER_DIR}: a different tokenizer is saved there")
    progress.write_text(json.dumps({"fingerprint": fingerprint}) + "\n", encoding="utf-8")
    return fingerprint


def _shards(
    items: Iterable[Record | Rejection],
    options: TokenizeOptions,
    accounting: Counter[str],
    docs: list[_Doc],
) -> Iterator[list[bytes]]:
    """Group accepted documents into shards of about ``shard_bytes``; count everything read."""
    shard: list[bytes] = []
    size = total = 0
    for item in items:
        accounting["read"] += 1
        if isinstance(item, Rejection):
            accounting["rejected"] += 1
            accounting[f"rejected: {reason_kind(item.reason)}"] += 1
            continue
        if options.limit_bytes is not None and total >= options.limit_bytes:
            accounting["beyond --limit-bytes"] += 1
            continue
        data = item.data
        accounting["tokenized"] += 1
        docs.append(_Doc(item.id, split_of(item.id, options.val_fraction), len(data)))
        shard.append(data)
        size += len(data)
        total += len(data)
        if size >= options.shard_bytes:
            yield shard
            shard, size = [], 0
    if shard:
        yield shard


def shard_digest(docs: list[bytes]) -> str:
    """A content hash of a shard's documents (each length-prefixed, so boundaries count too)."""
    h = hashlib.blake2b(digest_size=16)
    for d in docs:
        h.update(len(d).to_bytes(8, "little"))
        h.update(d)
    return h.hexdigest()


def tokenize_corpus(
    items: Iterable[Record | Rejection],
    tokenizer: Tokenizer,
    out_dir: str | Path,
    options: TokenizeOptions | None = None,
    *,
    source: str = "",
) -> dict[str, Any]:
    """Tokenize every accepted record of ``items`` into a dataset folder; returns its metadata.

    ``source`` names the corpus in the metadata and the resume fingerprint (e.g. the input paths).
    """
    options = options or TokenizeOptions()
    out = Path(out_dir)
    t0 = time.perf_counter()
    fingerprint = _prepare_output(out, tokenizer, options, source)
    accounting: Counter[str] = Counter()
    docs: list[_Doc] = []
    shard_paths: list[Path] = []
    shard_counts: list[int] = []
    workers = options.workers or default_workers()
    reused = 0
    bar = _progress_bar(options.progress, tokenizer.name, options.limit_bytes)

    def shard_path(i: int, shard: list[bytes]) -> Path:
        # Named by its documents' content hash: a rerun reuses a finished shard only when its
        # documents are byte-for-byte the same (an edit that keeps the size is not reused).
        return out / SHARD_DIR / f"{i:06d}-{shard_digest(shard)}.npz"

    spilled: list[dict[str, Any]] = []

    def to_tokenize() -> Iterator[tuple[str, list[bytes]]]:
        """Shards still to tokenize, in order; finished ones are reused, Ray's are spilled."""
        nonlocal reused
        for i, shard in enumerate(_shards(items, options, accounting, docs)):
            path = shard_path(i, shard)
            shard_paths.append(path)
            shard_counts.append(len(shard))
            if path.is_file():
                reused += 1
                bar.update(sum(map(len, shard)))
            elif options.engine == "ray":  # map-only: spill now, tokenize every shard in one Ray map
                spill = path.with_name(path.stem + ".in.npz")
                _spill(spill, shard)
                spilled.append({"input": str(spill.resolve()), "output": str(path.resolve())})
            else:
                yield str(path), shard

    tasks = to_tokenize()
    first = list(islice(tasks, 2))
    if workers == 1 or len(first) < 2:  # one shard is done inline: a process pool costs seconds to start
        for p, shard in chain(first, tasks):
            _write_shard(Path(p), tokenizer, shard)
            bar.update(sum(map(len, shard)))
    else:
        # The shared hardened pool (bounded in flight, in order, Ctrl-C and dead workers handled).
        # Workers load the saved tokenizer once each (M1 included) with one torch thread; ``spawn``:
        # forking a process whose torch already started its thread pools can deadlock.
        for n_bytes in ordered_map(
            _tokenize_shard,
            chain(first, tasks),
            workers=workers,
            initializer=_init_worker,
            initargs=(str(out / TOKENIZER_DIR),),
            start_method="spawn",
        ):
            bar.update(n_bytes)
    if spilled:
        from compresslm.select.engine import RayEngine

        engine = RayEngine(options.workers, address=options.ray_address, num_cpus=options.num_cpus)
        try:
            for done in engine.map(
                _tokenize_spilled, str((out / TOKENIZER_DIR).resolve()), spilled, stage="tokenize"
            ):
                bar.update(done["bytes"])
        finally:
            engine.close()
    bar.close()
    t_tokenize = time.perf_counter() - t0
    if not docs:
        raise DataError(f"{source or 'input'}: no usable documents to tokenize")
    meta = _merge(out, tokenizer, docs, shard_paths, shard_counts, options)
    meta.update(
        {
            "source": source,
            "fingerprint": fingerprint,
            "accounting": dict(accounting),
            "options": asdict(options) | {"workers": workers, "engine": options.engine},
            "shards_reused": reused,
            "seconds": {"tokenize": round(t_tokenize, 3), "total": round(time.perf_counter() - t0, 3)},
            "bytes_per_second": round(sum(d.n_bytes for d in docs) / max(t_tokenize, 1e-9), 1),
        }
    )
    _write_json(out / META_FILE, meta)
    shutil.rmtree(out / SHARD_DIR, ignore_errors=True)
    (out / PROGRESS_FILE).unlink(missing_ok=True)
    return meta


def _progress_bar(enabled: bool, desc: str, total: int | None = None) -> Any:
    """Bytes tokenized; with ``--limit-bytes`` the total is known, so the report has an ETA."""
    from compresslm.progress import progress_bar

    return progress_bar(total=total, unit="B", unit_scale=True, disable=not enabled, desc=f"tokenize {desc}")


def _merge(
    out: Path,
    tokenizer: Tokenizer,
    docs: list[_Doc],
    shard_paths: list[Path],
    shard_counts: list[int],
    options: TokenizeOptions,
) -> dict[str, Any]:
    """Concatenate the shards into one stream per split with its chunk and document tables."""
    from compresslm.data.writers import atomic_output, json_line

    dtype = tokenizer.dtype
    splits: dict[str, Any] = {}
    for split in SPLITS:
        chunk_table: list[np.ndarray] = []
        doc_table: list[tuple[int, int, int]] = []
        pos = 1  # after the leading EOD
        n_bytes = 0
        with atomic_output(out / f"{split}.bin", mode="wb", force=True) as f:
            f.write(np.array([tokenizer.eod_id], dtype=dtype).tobytes())
            d0 = 0
            for path, expected in zip(shard_paths, shard_counts, strict=True):
                shard = _load_shard(path)
                n_docs = len(shard["doc_tokens"])
                if n_docs != expected:
                    raise IntegrityError(
                        f"{path} holds {n_docs} documents where this run has {expected}: the corpus changed "
                        "since the interrupted run; pass --force to start over"
                    )
                starts = np.concatenate([[0], np.cumsum(shard["doc_tokens"])])
                chunks = shard["chunks"]
                for d in range(n_docs):
                    if docs[d0 + d].split != split:
                        continue
                    ids = shard["tokens"][starts[d] : starts[d + 1]]
                    f.write(ids.astype(dtype).tobytes())
                    rows = chunks[chunks[:, 0] == d]
                    table = np.empty((len(rows), 4), dtype=np.int64)
                    table[:, 0] = pos + rows[:, 1]
                    table[:, 1] = rows[:, 2]
                    table[:, 2] = rows[:, 3]
                    table[:, 3] = len(doc_table)
                    chunk_table.append(table)
                    doc_table.append((pos, len(ids), int(shard["doc_bytes"][d])))
                    pos += len(ids)
                    n_bytes += int(shard["doc_bytes"][d])
                d0 += n_docs
        chunks_arr = np.concatenate(chunk_table) if chunk_table else np.zeros((0, 4), dtype=np.int64)
        _save_npy(out / f"{split}.chunks.npy", chunks_arr)
        _save_npy(out / f"{split}.docs.npy", np.asarray(doc_table, dtype=np.int64).reshape(-1, 3))
        n_docs = len(doc_table)
        data_tokens = pos - 1 - n_docs
        splits[split] = {
            "documents": n_docs,
            "chunks": len(chunks_arr),
            "bytes": n_bytes,
            "tokens": data_tokens,  # data ids only (no EOD, no padding)
            "stream_tokens": pos,  # the .bin file's length: leading EOD + data + one EOD per document
            "compression_ratio": n_bytes / data_tokens if data_tokens else None,
        }
    if options.val_fraction > 0 and splits["val"]["documents"] == 0:
        raise ConfigError(
            f"no document fell into the held-out split ({len(docs)} documents, --val-fraction "
            f"{options.val_fraction}); use a larger corpus or fraction"
        )
    with atomic_output(out / DOCS_FILE, mode="wb", force=True) as f:
        for d in docs:
            f.write(json_line({"id": d.id, "split": d.split, "bytes": d.n_bytes}))
    total_bytes = sum(s["bytes"] for s in splits.values())
    total_tokens = sum(s["tokens"] for s in splits.values())
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "scheme": tokenizer.scheme,
        "tokenizer": tokenizer.describe(),
        "dtype": np.dtype(dtype).name,
        "eod_id": tokenizer.eod_id,
        "pad_id": tokenizer.pad_id,
        "chunk_bytes": getattr(tokenizer, "chunk_bytes", None),
        "bytes": total_bytes,
        "tokens": total_tokens,
        "compression_ratio": total_bytes / total_tokens if total_tokens else None,
        "splits": splits,
    }


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, arr, allow_pickle=False)
    os.replace(tmp, path)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    from compresslm.data.jsonfile import write_json

    write_json(path, obj, force=True, sort_keys=True)


# -------------------------------------------------------------------------------------- the reader


class TokenDataset:
    """A dataset folder written by :func:`tokenize_corpus` (read-only, memory-mapped)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        path = self.directory / META_FILE
        if not path.is_file():
            hint = (
                " (unfinished: rerun the same tokenize command to resume)"
                if (self.directory / PROGRESS_FILE).exists()
                else ""
            )
            raise ConfigError(f"{path}: not a token dataset{hint}")
        self.meta: dict[str, Any] = read_versioned_json(path, FORMAT, FORMAT_VERSION)
        self.dtype = np.dtype(self.meta["dtype"])
        self.eod_id = int(self.meta["eod_id"])
        self.pad_id = int(self.meta["pad_id"])

    def __repr__(self) -> str:
        return f"TokenDataset({str(self.directory)!r}, {self.name})"

    @property
    def name(self) -> str:
        return str(self.meta["tokenizer"]["name"])

    @property
    def vocab_size(self) -> int:
        return int(self.meta["tokenizer"]["vocab_size"])

    @property
    def data_vocab_size(self) -> int:
        return int(self.meta["tokenizer"]["data_vocab_size"])

    @property
    def uses_m1(self) -> bool:
        return bool(self.meta["tokenizer"]["uses_m1"])

    @cached_property
    def tokenizer(self) -> Tokenizer:
        return load_tokenizer(self.directory / TOKENIZER_DIR)

    def split_info(self, split: str) -> dict[str, Any]:
        if split not in self.meta["splits"]:
            raise ConfigError(f"{self.directory}: no split {split!r}")
        return dict(self.meta["splits"][split])

    def stream(self, split: str) -> np.ndarray:
        """The split's whole token stream (memory-mapped)."""
        path = self.directory / f"{split}.bin"
        expected = self.split_info(split)["stream_tokens"]
        if not path.is_file() or path.stat().st_size != expected * self.dtype.itemsize:
            raise IntegrityError(f"{path}: missing or not {expected} tokens of {self.dtype}")
        return np.memmap(path, dtype=self.dtype, mode="r", shape=(expected,))

    def chunks(self, split: str) -> np.ndarray:
        return np.load(self.directory / f"{split}.chunks.npy", allow_pickle=False)

    def docs(self, split: str) -> np.ndarray:
        return np.load(self.directory / f"{split}.docs.npy", allow_pickle=False)

    def document_ids(self, split: str, index: int) -> np.ndarray:
        """Ids of document ``index`` of ``split`` (its EOD left out)."""
        start, n, _ = self.docs(split)[index]
        return np.asarray(self.stream(split)[start : start + n - 1])

    def packs(self, split: str, pack_bytes: int | None = None) -> np.ndarray:
        """(n_packs, 2) token start and length of each pack: consecutive chunks of whole documents
        holding at most ``pack_bytes`` bytes together (default: the scheme's chunk size, 10,240), the
        paper's "documents concatenated, then cut into 10,240-byte examples". A chunk never splits."""
        limit = pack_bytes or self.meta.get("chunk_bytes") or 10_240
        packs: list[tuple[int, int]] = []
        start = n_tok = n_bytes = 0
        for c_start, c_tokens, c_bytes, _ in self.chunks(split).tolist():
            if n_tok and n_bytes + c_bytes > limit:
                packs.append((start, n_tok))
                n_tok = n_bytes = 0
            if n_tok == 0:
                start = c_start
            n_tok += c_tokens
            n_bytes += c_bytes
        if n_tok:
            packs.append((start, n_tok))
        return np.asarray(packs, dtype=np.int64).reshape(-1, 2)

    def rows(self, split: str, seq_len: int, pack_bytes: int | None = None) -> np.ndarray:
        """M2 examples: (n_rows, seq_len + 1) ids. Each pack (see :meth:`packs`) is cut into blocks
        of ``seq_len`` targets, padded at the pack's end, each preceded by one context id (the
        stream's previous id). Every id of the split after the leading EOD is a target in exactly
        one row."""
        if seq_len < 1:
            raise ConfigError(f"seq_len must be positive, got {seq_len}")
        stream = np.asarray(self.stream(split))
        packs = self.packs(split, pack_bytes)
        packs = packs[packs[:, 1] > 0]
        if not len(packs):
            raise DataError(f"{self.directory}: split {split!r} has no tokens")
        per_pack = -(-packs[:, 1] // seq_len)
        starts = np.repeat(packs[:, 0], per_pack) + seq_len * (
            np.arange(per_pack.sum()) - np.repeat(np.cumsum(per_pack) - per_pack, per_pack)
        )
        ends = np.repeat(packs[:, 0] + packs[:, 1], per_pack)
        idx = starts[:, None] - 1 + np.arange(seq_len + 1, dtype=np.int64)[None, :]
        valid = idx < ends[:, None]
        out = np.where(valid, stream[np.minimum(idx, len(stream) - 1)], self.pad_id)
        return out.astype(self.dtype)

    def token_stream(self, split: str, seq_len: int) -> Any:
        """The split's rows as a :class:`compresslm.models.TokenStream` (padding masked out)."""
        from compresslm.models import TokenStream

        return TokenStream(self.rows(split, seq_len), pad_id=self.pad_id, name=f"{self.name}:{split}")

    def unigram_counts(self, split: str = "train") -> np.ndarray:
        """Occurrences of each data id in ``split`` (int64, data_vocab_size)."""
        s = np.asarray(self.stream(split))
        s = s[s < self.data_vocab_size]
        return np.bincount(s.astype(np.int64), minlength=self.data_vocab_size)
