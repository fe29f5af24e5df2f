"""Selection as stages that both engines execute, resumable from a work directory.

The in-process pipeline (:func:`compresslm.select.pipeline.run_selection`) streams the whole pool
through one process. For pools that outgrow one machine, or runs that must survive being killed,
selection is cut into four stages; each per-shard stage is a pure function of (its input shard,
the broadcast state), runs on either engine (:mod:`compresslm.select.engine`) and leaves its output
plus a completion marker in the work directory:

1. **plan** (driver, plus a map where the method needs the pool): sample the targets, draw ZIP-FIT's
   background sample (each shard keeps its documents with the smallest seeded random keys; the
   driver keeps the smallest overall: a uniform sample, whatever the sharding), sum DSIR's raw
   n-gram counts (one count vector per shard, summed). The method is then prepared exactly as
   its own ``prepare``/``fit`` do and broadcast once per worker.
2. **score** (map per input shard): the method's own ``score_batches`` over the shard; writes
   ``(id, source, score, bytes, size, domain)`` as a Parquet shard, the shard's rejects, and the
   shard's own top candidates (its top k, or its best documents within the budget), then a marker
   holding the shard's content hash, accounting and a bounded score sample.
3. **select** (driver): merges the candidates into the exact global top-k or budget cut with the
   same deterministic ties as the in-process pipeline (score descending, then input order: shard,
   then position in the shard). A shard's top-k holds every global top-k member of that shard,
   and a shard's budget cut every global budget member (their sizes fit the budget by
   themselves), so the merge is exact; a test checks it against one selector over all scores.
4. **write** (map per input shard): re-reads the shard, checks its content hash against the one
   scored (a source rewritten in between is an error, never unscored text in the output), and
   writes the selected records unchanged (plus ``score`` and ``record_id``), best first, in the
   input's format.

The driver then commits every output of the run together (:class:`OutputGroup`): one file, or a
folder with one file per input shard (``--out DIR``), the scores, the rejects and the report.

**Randomness.** Per-document noise (DSIR's Gumbel draws, random selection's uniform scores) is
seeded per shard from ``(seed, shard number)``, so a shard's scores never depend on another
shard (needed both to score shards in parallel and to resume). With noise or background contrast
the staged selection is therefore a different, equally seeded draw than the in-process pipeline's;
without them (``zipfit:lz4+nocontrast``, ``zipfit:gzip9``, ``dsir:topk``) both give identical scores
and selections (tested).

**Resumption.** ``run.json`` holds a fingerprint of every setting and the list of inputs; a rerun
with other settings is refused (``overwrite=True`` starts over). Each shard's markers hold the
SHA-256 of its content (not its size or mtime): a finished shard whose input changed is refused,
an unfinished one is simply done. Markers are written last and atomically, so a SIGKILL at any
point leaves either a finished shard or one that is redone; leftover temporaries are removed.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import heapq
import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compresslm.data.accounting import Accounting
from compresslm.data.readers import BUILTIN_PREFIX, expand_inputs
from compresslm.data.records import Rejection
from compresslm.data.writers import (
    OutputGroup,
    atomic_output,
    check_folder_free,
    check_not_input,
    check_writable_parent,
    write_records,
)
from compresslm.errors import ConfigError, DataError
from compresslm.select.base import SelectionMethod
from compresslm.select.engine import LocalEngine, RayEngine, StageFn
from compresslm.select.pipeline import (
    Outputs,
    Selected,
    SelectionResult,
    SelectionSpec,
    _ranked,
    _selected_row,
    add_selection_columns,
    domain_counts,
    make_selector,
    sample_group,
    scored_batches,
    scores_schema,
    scores_table,
)
from compresslm.select.pool import ReadOptions, SourcePool
from compresslm.select.tokens import ByteCounter, get_token_counter
from compresslm.select.topk import BudgetSelector, TopK

WORK_FORMAT = "compresslm.select-work"
WORK_VERSION = 2  # 2: score samples as .samples.npz (was JSON)
RUN_FILE = "run.json"
#: The file that marks a folder of sharded outputs as ours (``--force`` replaces only such a folder).
MANIFEST = "_SELECTION.json"
#: Shard number and position in the shard, packed into one tie-breaking index (input order).
SHARD_SHIFT = 40
#: Score samples kept per domain/source for the report's histograms (bounded, whatever N is).
SAMPLE_CAP = 5000
#: Methods the staged engines run; D4 clusters every embedding in one process.
STAGED_METHODS = ("zipfit", "dsir", "random", "compel")
#: Texts of the best documents carried back to the driver for the summary table.
SHOW_TEXTS = 10


# --------------------------------------------------------------------------------- content hashes


def content_hash(path: str) -> str:
    """SHA-256 of an input's content: a file's bytes, a folder's files (relative names + bytes, in
    sorted order), or a built-in corpus's name (generated deterministically)."""
    h = hashlib.sha256()
    if path.startswith(BUILTIN_PREFIX):
        h.update(path.encode("utf-8"))
        return h.hexdigest()
    p = Path(path)
    if p.is_dir():
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(str(f.relative_to(p)).encode("utf-8", "surrogateescape") + b"\0")
            h.update(_file_digest(f).encode("ascii"))
        return h.hexdigest()
    return _file_digest(p)


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (MiB; Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def shard_seed(seed: int, shard: int) -> int:
    """The seed of shard ``shard``'s random draws (independent streams per shard)."""
    digest = hashlib.blake2b(f"compresslm-shard:{seed}:{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


# ----------------------------------------------------------------------------------- small files


def _write_json(path: Path, obj: Any) -> None:
    with atomic_output(path, force=True) as f:
        json.dump(obj, f, sort_keys=True)
        f.write("\n")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); rerun with --overwrite to start over") from exc


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _remove_temporaries(folder: Path) -> None:
    """Delete half-written files a killed run left (hidden ``.*.tmp*`` names)."""
    if not folder.is_dir():
        return
    for p in folder.rglob(".*"):
        if ".tmp" in p.name:
            with contextlib.suppress(OSError):
                shutil.rmtree(p) if p.is_dir() else p.unlink()


# ------------------------------------------------------------------------------ bounded samples


class KeyedSample:
    """The ``cap`` items with the smallest keys: mergeable, so a uniform sample can be drawn shard
    by shard (each shard keeps its smallest keys, the driver the smallest of those)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._heap: list[tuple[float, int, Any]] = []  # max-heap by key via negation
        self._n = 0

    def add(self, key: float, value: Any) -> None:
        self._n += 1
        item = (-key, -self._n, value)
        if len(self._heap) < self.cap:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:
            heapq.heapreplace(self._heap, item)

    def items(self) -> list[tuple[float, Any]]:
        """``(key, value)`` sorted by key."""
        return sorted(((-k, v) for k, _, v in self._heap), key=lambda kv: kv[0])


class ArraySample:
    """The ``cap`` (key, score) pairs with the smallest keys, merged shard by shard in numpy arrays.

    The driver merges every shard's score sample (up to ``SAMPLE_CAP`` per label per shard). Kept
    as Python objects, the few survivors of each shard pinned the allocator's arenas of all the
    floats parsed with them, so the driver's resident memory grew by about 0.8 MiB per shard of
    5,000+ documents although the sample itself is capped; two small arrays do not."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.keys = np.empty(0, dtype=np.float64)
        self.values = np.empty(0, dtype=np.float64)

    def extend(self, keys: np.ndarray, values: np.ndarray) -> None:
        k = np.concatenate([self.keys, np.asarray(keys, dtype=np.float64)])
        v = np.concatenate([self.values, np.asarray(values, dtype=np.float64)])
        if len(k) > self.cap:
            keep = np.argsort(k, kind="stable")[: self.cap]  # ties: earlier shard first
            k, v = k[keep], v[keep]
        self.keys, self.values = k, v

    def values_by_key(self) -> list[float]:
        return self.values[np.argsort(self.keys, kind="stable")].tolist()


def _write_samples(path: Path, samples: dict[str, KeyedSample]) -> None:
    """One shard's score samples as arrays: labels, and each label's keys and scores in a run."""
    labels = list(samples)
    items = [samples[g].items() for g in labels]
    counts = np.asarray([len(it) for it in items], dtype=np.int64)
    flat = [kv for it in items for kv in it]
    tmp = _tmp(path)
    with tmp.open("wb") as f:
        np.savez(
            f,
            labels=np.asarray(labels, dtype=np.str_),
            counts=counts,
            keys=np.asarray([k for k, _ in flat], dtype=np.float64),
            values=np.asarray([v for _, v in flat], dtype=np.float64),
        )
    os.replace(tmp, path)


def _read_samples(path: Path) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(label, keys, scores)`` of one shard's sample file."""
    with np.load(path, allow_pickle=False) as z:
        labels, counts, keys, values = z["labels"], z["counts"], z["keys"], z["values"]
    start = 0
    for label, n in zip(labels.tolist(), counts.tolist(), strict=True):
        yield str(label), keys[start : start + n], values[start : start + n]
        start += n


# ------------------------------------------------------------------------------- the broadcast state


@dataclass
class StageContext:
    """What every worker of a stage gets once: the prepared method and the run's settings."""

    method: SelectionMethod
    spec: SelectionSpec
    read_options: ReadOptions
    work_dir: str
    batch_size: int = 256
    seed: int = 0
    part_ext: dict[int, str] = field(default_factory=dict)  # write stage: shard -> output extension

    def pool(self, path: str) -> SourcePool:
        size_of = _size_of(self.spec)
        return SourcePool(
            [path],
            self.read_options,
            batch_size=self.batch_size,
            size_of=size_of,
            min_size=self.spec.min_tokens,
        )

    def method_for(self, shard: int) -> SelectionMethod:
        """The method with its per-document noise seeded for this shard (see the module docstring)."""
        if not hasattr(self.method, "seed"):
            return self.method
        method = copy.copy(self.method)
        method.seed = shard_seed(self.seed, shard)  # type: ignore[attr-defined]
        return method


_COUNTERS: dict[tuple[Any, ...], Any] = {}


def _size_of(spec: SelectionSpec) -> Any:
    """The budget measure (once per process: a tokenizer.json loads once, not once per shard)."""
    if spec.budget_bytes is not None:
        return ByteCounter()  # a counter, not a function: the write stage cuts with its truncate
    if spec.budget_tokens is None and not spec.min_tokens:
        return None
    key = ("tokens", spec.tokenizer)
    if key not in _COUNTERS:
        _COUNTERS[key] = get_token_counter(spec.tokenizer)
    return _COUNTERS[key]


def _check_hash(path: str, expected: str, what: str) -> str:
    digest = content_hash(path)
    if digest != expected:
        raise DataError(
            f"{path} changed {what} (its content hash differs); "
            "rerun with --overwrite to start over on the new content"
        )
    return digest


def _marker(ctx: StageContext, stage: str, shard: int) -> Path:
    return Path(ctx.work_dir) / stage / f"{shard:06d}.json"


def _finished(ctx: StageContext, stage: str, shard: int, path: str, digest: str) -> dict[str, Any] | None:
    marker = _marker(ctx, stage, shard)
    if not marker.is_file():
        return None
    done = _read_json(marker)
    if done.get("hash") != digest:
        raise DataError(
            f"{path} changed since its {stage} stage finished in {ctx.work_dir} (content hash differs); "
            "rerun with --overwrite to start over"
        )
    return done


# ----------------------------------------------------------------------------------- 1. plan (map)


def plan_shard(ctx: StageContext, task: dict[str, Any]) -> dict[str, Any]:
    """What the method needs from one shard before scoring: DSIR's raw counts, ZIP-FIT's sample."""
    shard, path = int(task["shard"]), str(task["path"])
    digest = content_hash(path)
    done = _finished(ctx, "plan", shard, path, digest)
    if done is not None:
        return done
    cpu0 = time.process_time()
    out = Path(ctx.work_dir) / "plan"
    method = ctx.method
    pool = ctx.pool(path)
    result: dict[str, Any] = {"shard": shard, "path": path, "hash": digest}
    if method.name == "dsir":
        from compresslm.select.dsir import _FeaturizeJob, count_features

        job = _FeaturizeJob(method.num_buckets, method.ngrams)  # type: ignore[attr-defined]
        raw, kept = count_features(
            (job(batch) for batch in pool()),
            method.num_buckets,  # type: ignore[attr-defined]
            method.keep_features_mb,  # type: ignore[attr-defined]
        )
        target = out / f"{shard:06d}.counts.npy"
        tmp = _tmp(target)
        with tmp.open("wb") as f:
            np.save(f, raw)
        os.replace(tmp, target)
        result["file"] = target.name
        stored = _features_file(ctx, shard)
        stored.unlink(missing_ok=True)
        if kept:
            lengths = np.concatenate([np.diff(k.offsets) for k in kept])
            tmp = _tmp(stored)
            with tmp.open("wb") as fh:
                np.savez(
                    fh,
                    hash=np.array(digest),
                    indices=np.concatenate([k.indices for k in kept]),
                    ids=np.concatenate([k.ids for k in kept]),
                    offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                )
            os.replace(tmp, stored)
    elif method.name == "zipfit":
        from compresslm.select.zipfit import sample_window

        rng = np.random.default_rng([ctx.seed, shard])
        sample = KeyedSample(method.pool_sample_size())  # type: ignore[attr-defined]
        for batch in pool():
            keys = rng.random(len(batch))
            for key, (i, text) in zip(keys.tolist(), batch, strict=True):
                sample.add(key, (i, text))
        # Texts only for the background's candidates (this shard's smallest keys); the rest of the
        # sample is for the dictionary contrast, which needs one window and a digest of each.
        n_texts = _background_size(method)
        rows = []
        for rank, (k, (i, t)) in enumerate(sample.items()):
            row: dict[str, Any] = {"key": k, "index": i}
            if rank < n_texts:
                row["text"] = t
            if method.dictionary:  # type: ignore[attr-defined]
                h, w = sample_window(t, method.chunk, method.seed)  # type: ignore[attr-defined]
                row["digest"], row["window"] = h.hex(), base64.b64encode(w).decode("ascii")
            rows.append(row)
        target = out / f"{shard:06d}.sample.jsonl"
        write_records(target, rows, force=True)
        result["file"] = target.name
    result["cpu_seconds"] = round(time.process_time() - cpu0, 4)
    _write_json(_marker(ctx, "plan", shard), result)
    return result


def _features_file(ctx: StageContext, shard: int) -> Path:
    """DSIR's bucket ids of one shard, written by its plan task for its score task, which deletes
    it once its scores are written. Why: hashing the n-grams is most of DSIR's time (score stage
    4.3 -> 0.8 CPU s on ``builtin:pool``, docs/scale-out.md); the price is disk, about 0.7 bytes
    per byte of text for the shards planned and not yet scored, up to ``keep_features_mb`` each."""
    return Path(ctx.work_dir) / "plan" / f"{shard:06d}.features.npz"


def _use_stored_features(ctx: StageContext, shard: int, digest: str, method: SelectionMethod) -> None:
    """Hand ``method`` (DSIR) the bucket ids its plan task stored for this shard, when they are of
    this very content; otherwise (none stored: over budget, or a run resumed from an older work
    folder) it featurizes while scoring, with the same scores."""
    path = _features_file(ctx, shard)
    if method.name != "dsir" or not path.is_file():
        return
    from compresslm.select.dsir import Features

    with np.load(path, allow_pickle=False) as z:
        if str(z["hash"]) != digest:
            return
        method.use_features(Features(z["indices"], z["ids"], z["offsets"]))  # type: ignore[attr-defined]


def _background_size(method: SelectionMethod) -> int:
    from compresslm.select.zipfit import DEFAULT_CONTRAST_SIZE

    return int(getattr(method, "contrast_size", None) or DEFAULT_CONTRAST_SIZE)


def _needs_plan_map(method: SelectionMethod) -> bool:
    return method.name == "dsir" or (
        method.name == "zipfit" and getattr(method, "contrast", "") == "background"
    )


def _prepare(
    method: SelectionMethod, targets: Sequence[str], plans: list[dict[str, Any]], work: Path
) -> None:
    """Prepare ``method`` with the plan map's results, through the method's own code."""
    if method.name == "dsir":
        raw: np.ndarray | None = None
        for plan in plans:
            counts = np.load(work / "plan" / plan["file"], allow_pickle=False)
            raw = counts if raw is None else raw + counts
        assert raw is not None
        method.fit(list(targets), raw)  # type: ignore[attr-defined]
        return
    background: list[str] = []
    windows: list[tuple[bytes, bytes]] = []
    if plans:  # ZIP-FIT with background contrast: the smallest keys over all shards
        sample = KeyedSample(method.pool_sample_size())  # type: ignore[attr-defined]
        for plan in plans:
            with (work / "plan" / plan["file"]).open(encoding="utf-8") as f:
                for line in f:
                    row = json.loads(line)
                    sample.add(row["key"], (plan["shard"], row["index"], row))
        merged = sample.items()
        # The background: the smallest keys (each in its shard's smallest, so its text was kept).
        first = sorted((v for _, v in merged[: _background_size(method)]), key=lambda v: v[:2])
        background = [row["text"] for _, _, row in first]
        windows = [
            (bytes.fromhex(row["digest"]), base64.b64decode(row["window"]))
            for _, (_, _, row) in merged
            if "digest" in row
        ]
    if method.name == "zipfit":
        method.prepare_sampled(list(targets), background, windows)  # type: ignore[attr-defined]
    else:  # random, Compel: nothing sampled
        method.prepare(list(targets), lambda: iter([]))


# ---------------------------------------------------------------------------------- 2. score (map)


def score_shard(ctx: StageContext, task: dict[str, Any]) -> dict[str, Any]:
    """Score one shard with the method's own code; see the module docstring for what it writes."""
    import pyarrow.parquet as pq

    shard, path = int(task["shard"]), str(task["path"])
    digest = content_hash(path)
    done = _finished(ctx, "score", shard, path, digest)
    if done is not None:
        return done
    t0, cpu0 = time.perf_counter(), time.process_time()
    out = Path(ctx.work_dir) / "score"
    method = ctx.method_for(shard)
    _use_stored_features(ctx, shard, digest, method)
    pool = ctx.pool(path)
    acct = Accounting()
    pool.begin_scoring_pass(acct)
    selector = make_selector(ctx.spec)
    rng = np.random.default_rng([ctx.seed, shard, 1])
    samples: dict[str, KeyedSample] = {}
    domains: dict[str, int] = {}
    scores_path = out / f"{shard:06d}.scores.parquet"
    n = 0
    tmp_scores = _tmp(scores_path)
    with pq.ParquetWriter(tmp_scores, scores_schema()) as writer:
        for metas, scores, sizes in scored_batches(method, pool, selector):
            keys = rng.random(len(metas)).tolist()
            for m, s, key in zip(metas, scores.tolist(), keys, strict=True):
                label = m.domain if m.domain is not None else m.source
                samples.setdefault(label, KeyedSample(SAMPLE_CAP)).add(key, s)
                if m.domain is not None:
                    domains[m.domain] = domains.get(m.domain, 0) + 1
            writer.write_table(scores_table(metas, scores, sizes))
            n += len(metas)
    os.replace(tmp_scores, scores_path)
    out_sel = selector.result()
    cand_path = out / f"{shard:06d}.candidates.npz"
    sizes_kept = _candidate_sizes(selector, out_sel[0])
    tmp = _tmp(cand_path)
    with tmp.open("wb") as f:
        np.savez(f, index=out_sel[0], score=out_sel[1], size=sizes_kept)
    os.replace(tmp, cand_path)
    rejects_path = out / f"{shard:06d}.rejects.jsonl"
    write_records(rejects_path, acct.iter_rejections(), force=True)
    summary = acct.summary()
    acct.close()
    result = {
        "shard": shard,
        "path": path,
        "hash": digest,
        "scored": n,
        "accepted": summary["accepted"],
        "rejected": summary["rejected"],
        "sources": {s: c["accepted"] for s, c in summary["sources"].items()},
        "domains": domains,
        "seconds": round(time.perf_counter() - t0, 3),
        "cpu_seconds": round(time.process_time() - cpu0, 4),  # this worker's CPU: rates per core
        "worker_peak_rss_mb": peak_rss_mb(),
        "worker_pid": os.getpid(),
    }
    # The score sample goes to a file of its own, read by the driver one shard at a time: results
    # and markers stay small, so the driver's memory does not grow with shards x sample size.
    _write_samples(out / f"{shard:06d}.samples.npz", samples)
    _write_json(_marker(ctx, "score", shard), result)
    _features_file(ctx, shard).unlink(missing_ok=True)  # used: free the disk (a resume skips this shard)
    return result


def _candidate_sizes(selector: TopK | BudgetSelector, indices: np.ndarray) -> np.ndarray:
    """Sizes of the candidates (zeros for top-k, where the merge ignores them)."""
    if isinstance(selector, TopK):
        return np.zeros(len(indices), dtype=np.int64)
    return selector.sizes_of(indices)


# ---------------------------------------------------------------------------------- 3. select (driver)


def merge_candidates(
    spec: SelectionSpec, candidates: Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]
) -> list[tuple[int, float, int | None]]:
    """The exact global selection from per-shard candidates ``(shard, index, score, size)``:
    ``(shard << SHARD_SHIFT | index, score, keep)`` in rank order (ties: input order)."""
    budget = spec.budget_tokens if spec.budget_tokens is not None else spec.budget_bytes
    selector: TopK | BudgetSelector = (
        TopK(spec.k)
        if spec.k is not None
        else BudgetSelector(int(budget or 0), truncate_last=spec.truncate_last)
    )
    for shard, index, score, size in candidates:
        glob = (np.int64(shard) << SHARD_SHIFT) | np.asarray(index, dtype=np.int64)
        if isinstance(selector, TopK):
            selector.push_batch(glob, score)
        else:
            selector.push_batch(glob, score, size)
    return _ranked(selector)


# ---------------------------------------------------------------------------------- 4. write (map)


def write_shard(ctx: StageContext, task: dict[str, Any]) -> dict[str, Any]:
    """Write one shard's selected records, unchanged, best first, in the output format."""
    shard, path = int(task["shard"]), str(task["path"])
    picks: list[list[Any]] = task["picks"]  # [index in shard, rank, score, keep]
    ext = str(task["ext"])
    key = hashlib.sha256(json.dumps([picks, ext]).encode()).hexdigest()
    marker = _marker(ctx, "write", shard)
    if marker.is_file():
        done = _read_json(marker)
        if done.get("picks") == key and done.get("hash") == task["hash"]:
            _check_hash(path, task["hash"], "since it was scored")
            return done
    cpu0 = time.process_time()
    _check_hash(path, task["hash"], "between scoring and writing")
    by_index = {int(p[0]): p for p in picks}
    chosen: dict[int, tuple[Selected, dict[str, Any]]] = {}
    size_of = _size_of(ctx.spec)
    if by_index:
        for rec in ctx.pool(path).accepted():
            p = by_index.get(rec.index)
            if p is None:
                continue
            keep = None if p[3] is None else int(p[3])
            chosen[int(p[1])] = _selected_row(rec, int(p[1]), float(p[2]), keep, ctx.read_options, size_of)
            if len(chosen) == len(by_index):
                break
    if len(chosen) != len(by_index):
        raise DataError(
            f"{path}: the input changed while selecting (a selected record is gone on re-reading)"
        )
    ranks = sorted(chosen)
    target = Path(ctx.work_dir) / "write" / f"{shard:06d}{ext}"
    write_records(target, (chosen[r][1] for r in ranks), force=True)
    result = {
        "shard": shard,
        "hash": task["hash"],
        "picks": key,
        "file": target.name,
        "selected": [
            [
                r,
                sel.id,
                sel.source,
                sel.size,
                sel.domain,
                sel.text if r < SHOW_TEXTS else "",
                sel.truncated_to,
            ]
            for r in ranks
            for sel in (chosen[r][0],)
        ],
        "cpu_seconds": round(time.process_time() - cpu0, 4),
        "worker_peak_rss_mb": peak_rss_mb(),
        "worker_pid": os.getpid(),
    }
    _write_json(marker, result)
    return result


def part_extension(path: str, output: str | None = None) -> str:
    """The extension of an output part: the output file's, else the input's record format."""
    from compresslm.data.writers import _jsonl_kind

    name = (output or path).lower()
    if name.endswith(".parquet"):
        return ".parquet"
    kind = _jsonl_kind(Path(name))
    if kind is not None:
        return ".jsonl" + ("" if kind == "plain" else kind)
    return ".jsonl"  # text files, JSON arrays, folders and built-in corpora: one JSON record per line


def _read_part(path: Path) -> Iterator[dict[str, Any]]:
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
        return
    from compresslm.data.formats import iter_jsonl

    for _, payload in iter_jsonl(str(path)):
        assert isinstance(payload, dict), f"{path}: not a record"
        yield payload


# ------------------------------------------------------------------------------------- the driver


@dataclass
class StagedOptions:
    """How the staged run executes (none of these change the selection)."""

    engine: str = "local"
    workers: int | None = None
    num_cpus: float = 1
    ray_address: str | None = None
    work_dir: str | None = None
    overwrite: bool = False
    out_dir: str | None = None  # sharded outputs: one file per input shard in this folder
    progress: bool = False  # one bar per stage, counting finished shards (stderr)


def run_staged_selection(
    method_spec: str,
    method_options: dict[str, Any],
    targets: Sequence[str],
    sources: Sequence[str | Path],
    spec: SelectionSpec,
    *,
    read_options: ReadOptions | None = None,
    outputs: Outputs | None = None,
    options: StagedOptions | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> SelectionResult:
    """Select with the four stages on the engine ``options.engine``; see the module docstring.

    ``method_spec``/``method_options`` as :func:`compresslm.select.methods.make_method` takes them
    (each worker scores in one thread: the engine is the parallelism).
    """
    from compresslm.select.methods import make_method

    spec.validate()
    read_options = read_options or ReadOptions()
    outputs = outputs or Outputs()
    options = options or StagedOptions()
    name = method_spec.partition(":")[0]
    if name not in STAGED_METHODS:
        raise ConfigError(
            f"--method {name} runs in one process only (D4 clusters every embedding together); "
            f"the staged engines run {', '.join(STAGED_METHODS)}: drop --engine, --work-dir and a folder --out"
        )
    if not targets:
        raise ConfigError("the target set is empty")
    method = make_method(method_spec, **{**method_options, "workers": 1, "seed": seed})
    inputs = expand_inputs(sources)
    if outputs.selected and options.out_dir:
        raise ConfigError("give either --out FILE or --out-dir DIR for the selected records, not both")
    outputs.check()
    check_not_input([*outputs.paths(), options.out_dir, options.work_dir], inputs)
    if options.out_dir:
        check_folder_free(options.out_dir, outputs.force, lambda p: (p / MANIFEST).is_file(), "a selection")
        check_writable_parent(options.out_dir)
    settings = {
        "format": WORK_FORMAT,
        "version": WORK_VERSION,
        "method": method_spec,
        "method_options": {
            k: v for k, v in sorted(method_options.items()) if v is not None and k != "workers"
        },
        "describe": {k: v for k, v in method.describe().items() if k not in ("workers", "batch_size")},
        "spec": asdict(spec),
        "read": asdict(read_options),
        "inputs": inputs,
        "targets": hashlib.sha256(json.dumps(list(targets)).encode("utf-8", "surrogatepass")).hexdigest(),
        "batch_size": batch_size,
        "seed": seed,
    }
    t0 = time.perf_counter()
    temporary = options.work_dir is None
    work = Path(options.work_dir) if options.work_dir else Path(tempfile.mkdtemp(prefix="compresslm-select-"))
    engine: LocalEngine | RayEngine | None = None
    try:
        _open_work_dir(work, settings, options.overwrite and not temporary)
        from compresslm.select.engine import make_engine

        engine = make_engine(
            options.engine, options.workers, address=options.ray_address, num_cpus=options.num_cpus
        )
        return _run(
            method, targets, inputs, spec, read_options, outputs, options, work, engine, batch_size, seed, t0
        )
    finally:
        if engine is not None:
            engine.close()
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
        else:
            _remove_temporaries(work)


def _open_work_dir(work: Path, settings: dict[str, Any], overwrite: bool) -> None:
    run = work / RUN_FILE
    if work.exists() and not work.is_dir():
        raise ConfigError(f"--work-dir {work} is a file")
    if run.is_file():
        old = _read_json(run)
        if old.get("format") != WORK_FORMAT:
            raise ConfigError(f"--work-dir {work}: {run} is not a compresslm selection work file")
        if old != settings and not overwrite:
            changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ConfigError(
                f"--work-dir {work} holds a run with other settings or inputs (differs in: "
                f"{', '.join(changed)}); pass --overwrite to start over, or use another --work-dir"
            )
        if overwrite:
            shutil.rmtree(work)
    elif work.is_dir() and any(work.iterdir()):
        raise ConfigError(f"--work-dir {work} is not empty and not a selection work folder; not using it")
    for stage in ("plan", "score", "write"):
        (work / stage).mkdir(parents=True, exist_ok=True)
    _remove_temporaries(work)
    _write_json(run, settings)


def _stage(
    engine: LocalEngine | RayEngine,
    fn: StageFn,
    ctx: StageContext,
    tasks: list[dict[str, Any]],
    stage: str,
    progress: bool,
) -> list[dict[str, Any]]:
    """Every task's result of one stage, in task order; with ``progress``, a bar of finished shards.

    A staged run can take hours with nothing else on stderr; the unit is the shard because that is
    what the engines hand back (the local engine as each finishes, in order; Ray at the end).
    """
    from compresslm.progress import progress_bar

    results: list[dict[str, Any]] = []
    bar = progress_bar(total=len(tasks), unit="shard", desc=stage, disable=not progress or not tasks)
    try:
        for result in engine.map(fn, ctx, tasks, stage=stage):
            results.append(result)
            bar.update(1)
    finally:
        bar.close()
    return results


def _run(
    method: SelectionMethod,
    targets: Sequence[str],
    inputs: list[str],
    spec: SelectionSpec,
    read_options: ReadOptions,
    outputs: Outputs,
    options: StagedOptions,
    work: Path,
    engine: LocalEngine | RayEngine,
    batch_size: int,
    seed: int,
    t0: float,
) -> SelectionResult:
    seconds: dict[str, float] = {}
    ctx = StageContext(method, spec, read_options, str(work), batch_size, seed)
    tasks = [{"shard": i, "path": p} for i, p in enumerate(inputs)]

    # 1. plan
    plans = (
        _stage(engine, plan_shard, ctx, tasks, "plan", options.progress) if _needs_plan_map(method) else []
    )
    _prepare(method, targets, plans, work)
    seconds["prepare"] = time.perf_counter() - t0

    # 2. score
    t1 = time.perf_counter()
    ctx = StageContext(method, spec, read_options, str(work), batch_size, seed)
    scored = _stage(engine, score_shard, ctx, tasks, "score", options.progress)
    seconds["score"] = time.perf_counter() - t1

    # 3. select
    acct = Accounting()
    domain_pool: dict[str, int] = defaultdict(int)
    merged: dict[str, ArraySample] = {}

    def candidates() -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        for s in scored:
            with np.load(work / "score" / f"{s['shard']:06d}.candidates.npz", allow_pickle=False) as z:
                yield s["shard"], z["index"], z["score"], z["size"]

    ranked = merge_candidates(spec, candidates())
    for s in scored:
        for source, n in s["sources"].items():
            acct.add_read(source, n)
        from compresslm.data.formats import iter_jsonl

        for _, row in iter_jsonl(str(work / "score" / f"{s['shard']:06d}.rejects.jsonl")):
            assert isinstance(row, dict)
            acct.add_rejection(Rejection(row["id"], row["source"], 0, row["reason"]))
        for d, n in s["domains"].items():
            domain_pool[d] += n
        for label, keys, values in _read_samples(work / "score" / f"{s['shard']:06d}.samples.npz"):
            group = sample_group(label, merged, len(merged))
            merged.setdefault(group, ArraySample(SAMPLE_CAP)).extend(keys, values)

    # 4. write
    t2 = time.perf_counter()
    picks: dict[int, list[list[Any]]] = defaultdict(list)
    for rank, (glob, score, keep) in enumerate(ranked):
        picks[glob >> SHARD_SHIFT].append([glob & ((1 << SHARD_SHIFT) - 1), rank, score, keep])
    write_tasks = [
        {
            "shard": s["shard"],
            "path": s["path"],
            "hash": s["hash"],
            "picks": picks[s["shard"]],
            "ext": part_extension(s["path"], outputs.selected),
        }
        for s in scored
        if picks.get(s["shard"])
    ]
    written = _stage(engine, write_shard, ctx, write_tasks, "write", options.progress)
    selected: list[Selected | None] = [None] * len(ranked)
    by_source: dict[str, int] = defaultdict(int)
    for w in written:
        for rank, rid, source, size, domain, text, truncated in w["selected"]:
            glob, score, _ = ranked[rank]
            selected[rank] = Selected(rank, glob, rid, source, score, size, domain, text, truncated)
            by_source[source] += 1
    if None in selected:
        raise DataError("a selected record was not written (a bug, please report)")
    final = [s for s in selected if s is not None]
    acct.set_selected(len(final), by_source)
    acct.check(scored=sum(s["scored"] for s in scored))

    result = SelectionResult(
        method_info=method.describe(),
        selected=final,
        accounting=acct.summary(),
        seconds=seconds,
        spec={**spec.__dict__, "unit": spec.unit},
        n_targets=len(targets),
        domains=domain_counts(dict(domain_pool), acct.accepted, final),
        score_samples={g: s.values_by_key() for g, s in merged.items()},
    )
    result.engine = {
        "name": engine.name,
        "workers": engine.workers,
        "shards": len(scored),
        "worker_peak_rss_mb": max(
            [s.get("worker_peak_rss_mb", 0.0) for s in scored]
            + [w.get("worker_peak_rss_mb", 0.0) for w in written]
        ),
        "driver_peak_rss_mb": peak_rss_mb(),
        "worker_cpu_seconds": {
            stage: round(sum(r.get("cpu_seconds", 0.0) for r in results), 3)
            for stage, results in (("plan", plans), ("score", scored), ("write", written))
        },
        "driver_cpu_seconds": round(time.process_time(), 3),
    }
    _commit(result, outputs, options, work, scored, written, acct)
    seconds["write"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    acct.close()
    return result


def _commit(
    result: SelectionResult,
    outputs: Outputs,
    options: StagedOptions,
    work: Path,
    scored: list[dict[str, Any]],
    written: list[dict[str, Any]],
    acct: Accounting,
) -> None:
    """Write every output to a temporary beside its destination, then publish them together."""
    with OutputGroup(force=outputs.force, marker=MANIFEST) as group:
        if outputs.selected:
            rows: list[dict[str, Any] | None] = [None] * len(result.selected)
            for w in written:
                ranks = [entry[0] for entry in w["selected"]]
                for rank, row in zip(ranks, _read_part(work / "write" / w["file"]), strict=True):
                    rows[rank] = row
            write_records(group.reserve(outputs.selected), (r for r in rows if r is not None), force=True)
        if options.out_dir:
            folder = group.reserve(options.out_dir)
            folder.mkdir()
            parts = []
            for w in written:
                src = work / "write" / w["file"]
                stem = Path(str(scored[w["shard"]]["path"])).name.split(".")[0] or "part"
                name = f"part-{w['shard']:06d}-{stem}{''.join(Path(w['file']).suffixes)}"
                try:
                    os.link(src, folder / name)
                except OSError:
                    shutil.copyfile(src, folder / name)
                parts.append(
                    {"file": name, "input": scored[w["shard"]]["path"], "records": len(w["selected"])}
                )
            manifest = {"format": "compresslm.selection", "parts": parts, "selected": len(result.selected)}
            (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if outputs.scores:
            import pyarrow.parquet as pq

            writer = None
            rank_of = {sel.id: sel.rank for sel in result.selected}
            with atomic_output(group.reserve(outputs.scores), force=True, mode="wb") as f:
                for s in scored:
                    table = pq.read_table(work / "score" / f"{s['shard']:06d}.scores.parquet")
                    table = add_selection_columns(table, rank_of)
                    if writer is None:
                        writer = pq.ParquetWriter(f, table.schema)
                    writer.write_table(table)
                if writer is not None:
                    writer.close()
        if outputs.rejects:
            acct.write_rejects(group.reserve(outputs.rejects), force=True)
        if outputs.report:
            from compresslm.select.report import histogram_path, write_selection_report

            report = group.reserve(outputs.report)
            group.reserve(histogram_path(outputs.report))
            write_selection_report(report, result, force=True)
