"""ZIP-FIT selection: compresslm against the reference ``zip-fit`` and ``data-selection`` packages.

One command, everything side by side in one run on the same pool and cores::

    .venv/bin/python benchmarks/select_vs_reference.py [--quick]

Data: the built-in labelled pool (``builtin_pool``, ~20% Python) and held-out Python targets
(``python_targets``), written to JSONL in a temporary folder so the reference packages read them
their usual way. Every measured job runs in its own subprocess; its peak memory is the peak of the
summed RSS of the subprocess and all its children (polled every 20 ms with psutil; forked workers'
shared pages count once per process, for every side alike). Times are the scoring call only
(reading the JSONL, imports and interpreter start excluded), measured inside the subprocess.

Tables: (1) exact gzip-9 parity and speed vs the reference, our default and contrast modes, DSIR;
(2) a compressor sweep; (3) our peak memory as the pool grows; (4) our pairs/s against the bare
compressor loop on the same bytes. All of it also goes to ``bench-out/select_vs_reference*.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PYTHON_DOMAIN = "python"

FULL = {
    "pool": 20_000,
    "targets": 200,
    "precision_at": (1000, 2000),
    "fast_sweep": ["gzip:1", "gzip:6", "lz4frame:0", "zstd:3"],
    "slow_sweep": ["gzip:9", "lz4:0", "zstd:3", "zstd:19", "brotli:11", "lzma:6", "bz2:9"],
    "slow_pool": 2000,
    "slow_targets": 20,
    "memory": [(10_000, 200), (100_000, 20), (1_000_000, 2)],
    "bound_sources": 300,
}
QUICK = {
    "pool": 1000,
    "targets": 30,
    "precision_at": (50, 100),
    "fast_sweep": ["gzip:1", "zstd:3"],
    "slow_sweep": ["gzip:9", "lz4:0", "zstd:19", "brotli:11", "lzma:6", "bz2:9"],
    "slow_pool": 200,
    "slow_targets": 4,
    "memory": [(1_000, 30), (10_000, 3), (30_000, 1)],
    "bound_sources": 60,
}


# --- jobs (each runs in a fresh subprocess: `--job JSON`) --------------------------------------------


def _read_texts(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def _jsonl_pool(path: str, limit: int | None = None, batch: int = 256):
    def factory() -> Iterator[list[tuple[int, str]]]:
        out: list[tuple[int, str]] = []
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if limit is not None and i >= limit:
                    break
                out.append((i, json.loads(line)["text"]))
                if len(out) == batch:
                    yield out
                    out = []
        if out:
            yield out

    return factory


def job_ours(p: dict[str, Any]) -> dict[str, Any]:
    """ZipFit over the JSONL pool (streamed), all cores; scores saved for the parent."""
    from compresslm.select.zipfit import ZipFit

    targets = _read_texts(p["targets"])[: p.get("n_targets")]
    pool = _jsonl_pool(p["pool"], p.get("limit"))
    method = ZipFit(compressor=p["compressor"], contrast=p.get("contrast", "none"))
    t0 = time.perf_counter()
    method.prepare(targets, pool)
    parts = [s for _, s in method.score_batches(pool)]
    seconds = time.perf_counter() - t0
    np.save(p["out"], np.concatenate(parts))
    return {"seconds": seconds, "describe": method.describe()}


def job_reference(p: dict[str, Any]) -> dict[str, Any]:
    """The reference ZIPFIT's ranking of the whole pool (k = N); saves scores by pool position."""
    from zip_fit.zipfit import ZIPFIT

    sources = _read_texts(p["pool"])
    targets = _read_texts(p["targets"])
    ref = ZIPFIT(p["pool"], p["targets"], k=len(sources), compression_algorithm="gzip", compress_level=9)
    t0 = time.perf_counter()
    ranked = ref.rank_sequences_by_alignment(sources, targets)
    seconds = time.perf_counter() - t0
    first = {}
    for i, s in enumerate(sources):
        first.setdefault(s, i)
    score_of = {text: score for text, score in ranked}
    np.save(p["out"], np.array([score_of[s] for s in sources]))
    np.save(p["out_order"], np.array([first[text] for text, _ in ranked], dtype=np.int64))
    return {"seconds": seconds}


def job_dsir(p: dict[str, Any]) -> dict[str, Any]:
    """data-selection's HashedNgramDSIR, top-k by importance weight; python share of the top k."""
    from data_selection import HashedNgramDSIR

    work = Path(p["workdir"])
    t0 = time.perf_counter()
    dsir = HashedNgramDSIR([p["pool"]], [p["targets"]], cache_dir=str(work / "cache"))
    dsir.fit_importance_estimator(num_tokens_to_fit="auto")
    dsir.compute_importance_weights()
    seconds_weights = time.perf_counter() - t0
    precision = {}
    for k in p["precision_at"]:
        out = work / f"top{k}"
        dsir.resample(out_dir=str(out), num_to_sample=k, cache_dir=str(work / f"resample{k}"), top_k=True)
        domains = [json.loads(line)["domain"] for f in sorted(out.glob("*.jsonl")) for line in f.open()]
        precision[str(k)] = sum(d == PYTHON_DOMAIN for d in domains) / k
    return {"seconds": time.perf_counter() - t0, "seconds_weights": seconds_weights, "precision": precision}


def job_memory(p: dict[str, Any]) -> dict[str, Any]:
    """Stream ``builtin_pool(n)`` straight from its generator into ZipFit + a TopK(1000)."""
    from compresslm.data.builtin import iter_builtin_pool, python_targets
    from compresslm.select.topk import TopK
    from compresslm.select.zipfit import ZipFit

    n, n_targets = p["n"], p["n_targets"]
    targets = [r.text for r in python_targets(n_targets)]

    def pool() -> Iterator[list[tuple[int, str]]]:
        batch: list[tuple[int, str]] = []
        for i, rec in enumerate(iter_builtin_pool(n)):
            batch.append((i, rec.text))
            if len(batch) == 1024:
                yield batch
                batch = []
        if batch:
            yield batch

    method = ZipFit(compressor=p["compressor"])
    top = TopK(1000)
    t0 = time.perf_counter()
    method.prepare(targets, pool)
    count = 0
    for idx, scores in method.score_batches(pool):
        top.push_batch(idx, scores)
        count += len(idx)
    return {"seconds": time.perf_counter() - t0, "documents": count}


def job_bound(p: dict[str, Any]) -> dict[str, Any]:
    """Single core: our scorer (workers=1) against the bare C-level compressor loop on the same bytes."""
    import lz4.block

    from compresslm.select.parallel import tune_malloc
    from compresslm.select.zipfit import zipfit_scores

    tune_malloc()
    sources = _read_texts(p["pool"])[: p["n_sources"]]
    targets = _read_texts(p["targets"])
    sb = [s.encode() for s in sources]
    tb = [t.encode() for t in targets]
    n = len(tb)
    raw = {
        "gzip:9": lambda x: list(
            map(len, map(zlib.compress, map(x.__add__, tb), repeat(9, n), repeat(-15, n)))
        ),
        "lz4:0": lambda x: list(
            map(len, map(lz4.block.compress, map(x.__add__, tb), repeat("default", n), repeat(False, n)))
        ),
    }
    out = {}
    for spec, loop in raw.items():
        best_raw = best_ours = float("inf")
        for _ in range(p["repeats"]):  # interleaved, best of: the machine is shared and noisy
            t0 = time.perf_counter()
            for x in sb:
                loop(x)
            best_raw = min(best_raw, time.perf_counter() - t0)
            t0 = time.perf_counter()
            zipfit_scores(sources, targets, compressor=spec, workers=1)
            best_ours = min(best_ours, time.perf_counter() - t0)
        pairs = len(sb) * n
        out[spec] = {"raw_pairs_s": pairs / best_raw, "ours_pairs_s": pairs / best_ours}
    return out


JOBS = {
    "ours": job_ours,
    "reference": job_reference,
    "dsir": job_dsir,
    "memory": job_memory,
    "bound": job_bound,
}


# --- the parent: run jobs in subprocesses, poll memory, build tables ---------------------------------------


#: Where finished jobs' results are kept, so ``--resume`` can skip them after a crash or Ctrl-C.
RESULTS_DIR: Path | None = None


def run_job(kind: str, name: str, **params: Any) -> dict[str, Any]:
    """Run one job in a fresh interpreter; returns its result plus ``peak_mb`` of its process tree.

    The result is saved as ``RESULTS_DIR/name.json`` (job outputs such as score arrays live beside
    it); a saved result is reused instead of running the job again (``--resume``).
    """
    import psutil

    saved = RESULTS_DIR / f"{name}.json" if RESULTS_DIR is not None else None
    if saved is not None and saved.exists():
        return json.loads(saved.read_text())

    spec = json.dumps({"kind": kind, **params})
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    proc = subprocess.Popen(
        [sys.executable, __file__, "--job", spec],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    peak = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                total = 0
                for q in procs:
                    with contextlib.suppress(psutil.Error):  # a worker may exit between the two calls
                        total += q.memory_info().rss
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    stdout, stderr = proc.communicate()
    done.set()
    poller.join()
    if proc.returncode != 0:
        raise RuntimeError(f"job {kind} failed ({proc.returncode}):\n{stderr[-3000:]}")
    line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT ") :])
    result["peak_mb"] = peak / 2**20
    # The 1-minute load average around the job: this machine may be shared, so say how busy it was.
    result["load"] = [load_before, os.getloadavg()[0] if hasattr(os, "getloadavg") else None]
    if saved is not None:
        saved.write_text(json.dumps(result))
    return result


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties (hand-written: scipy is not a dependency)."""

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        sorted_x = x[order]
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=np.float64)
        _, inverse, counts = np.unique(sorted_x, return_inverse=True, return_counts=True)
        starts = np.cumsum(counts) - counts
        avg = starts + (counts - 1) / 2.0
        r[order] = avg[inverse]
        return r

    ra, rb = ranks(np.asarray(a, float)), ranks(np.asarray(b, float))
    return float(np.corrcoef(ra, rb)[0, 1])


class Pool:
    """The benchmark pool on disk plus what the parent needs to evaluate rankings."""

    def __init__(self, work: Path, n: int, n_targets: int) -> None:
        from compresslm.data.builtin import builtin_pool, python_targets

        records = builtin_pool(n)
        targets = python_targets(n_targets)
        self.path = work / "pool.jsonl"
        self.targets_path = work / "targets.jsonl"
        with self.path.open("w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps({"text": r.text, "domain": r.domain}) + "\n")
        with self.targets_path.open("w", encoding="utf-8") as f:
            for r in targets:
                f.write(json.dumps({"text": r.text, "domain": r.domain}) + "\n")
        self.domains = np.array([r.domain for r in records])
        self.lengths = np.array([len(r.data) for r in records])
        first: dict[str, int] = {}
        self.canonical = np.array([first.setdefault(r.text, i) for i, r in enumerate(records)])
        self.n, self.n_targets = len(records), len(targets)

    def precision(self, scores: np.ndarray, k: int, limit: int | None = None) -> float:
        from compresslm.select.topk import select_top_k

        domains = self.domains[: limit or self.n]
        return float(np.mean(domains[select_top_k(scores, k)] == PYTHON_DOMAIN))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="scaled-down run (~1-2 minutes)")
    parser.add_argument("--out", default=str(ROOT / "bench-out"), help="folder for the JSON results")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the results of jobs that finished in an interrupted earlier run",
    )
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        spec = json.loads(args.job)
        result = JOBS[spec.pop("kind")](spec)
        print("RESULT " + json.dumps(result))
        return 0

    cfg = QUICK if args.quick else FULL
    started = time.perf_counter()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    report: dict[str, Any] = {
        "command": "benchmarks/select_vs_reference.py" + (" --quick" if args.quick else ""),
        "cores": cores,
        "cpu_count": os.cpu_count(),
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "python": sys.version.split()[0],
        "load_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    global RESULTS_DIR
    work = Path(args.out) / ("work-quick" if args.quick else "work-full")
    if work.exists() and not args.resume:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    RESULTS_DIR = work
    pool = Pool(work, cfg["pool"], cfg["targets"])
    k1, k2 = cfg["precision_at"]
    report.update(
        pool=pool.n, targets=pool.n_targets, python_share=float(np.mean(pool.domains == PYTHON_DOMAIN))
    )
    print(
        f"pool {pool.n} docs ({report['python_share']:.1%} python), {pool.n_targets} python targets, "
        f"{cores} cores, zlib {zlib.ZLIB_RUNTIME_VERSION}",
        flush=True,
    )
    common = {"pool": str(pool.path), "targets": str(pool.targets_path)}
    scores: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []

    def ours(name: str, compressor: str, contrast: str = "none", **extra: Any) -> dict[str, Any]:
        out = work / f"{name}.npy"
        res = run_job("ours", name, **common, compressor=compressor, contrast=contrast, out=str(out), **extra)
        scores[name] = np.load(out)
        print(f"  {name}: {res['seconds']:.1f} s, peak {res['peak_mb']:.0f} MB", flush=True)
        return res

    # (1) exact parity + methods ----------------------------------------------------------------------
    ref = run_job(
        "reference", "reference", **common, out=str(work / "ref.npy"), out_order=str(work / "ref_order.npy")
    )
    scores["reference gzip-9"] = np.load(work / "ref.npy")
    ref_order = np.load(work / "ref_order.npy")
    print(f"  reference: {ref['seconds']:.1f} s, peak {ref['peak_mb']:.0f} MB", flush=True)
    exact = ours("ours gzip:9", "gzip:9")
    default = ours("ours lz4 (default)", "lz4:0")
    contrast_gzip = ours("ours gzip:9 +contrast", "gzip:9", "background")
    contrast_lz4 = ours("ours lz4 +contrast", "lz4:0", "background")
    if not (work / "dsir.json").exists():
        shutil.rmtree(work / "dsir", ignore_errors=True)  # a half-written cache from an interrupted run
    dsir = run_job(
        "dsir", "dsir", **common, workdir=str(work / "dsir"), precision_at=list(cfg["precision_at"])
    )
    print(f"  DSIR: {dsir['seconds']:.1f} s, peak {dsir['peak_mb']:.0f} MB", flush=True)

    from compresslm.select.topk import select_top_k

    ours_order = pool.canonical[select_top_k(scores["ours gzip:9"], pool.n)]
    ranking_identical = bool(np.array_equal(ours_order, ref_order))
    max_diff = float(np.max(np.abs(scores["ours gzip:9"] - scores["reference gzip-9"])))
    pairs = pool.n * pool.n_targets

    def row(name: str, res: dict[str, Any], n_pairs: int, **more: Any) -> dict[str, Any]:
        r = {
            "method": name,
            "seconds": res["seconds"],
            "vs_ref_time": res["seconds"] / ref["seconds"],
            "peak_mb": res["peak_mb"],
            "vs_ref_mem": res["peak_mb"] / ref["peak_mb"],
            "pairs_s": n_pairs / res["seconds"] if n_pairs else None,
            "load": res.get("load"),
        }
        if name in scores:
            r[f"p@{k1}"] = pool.precision(scores[name], k1)
            r[f"p@{k2}"] = pool.precision(scores[name], k2)
            r["spearman_len"] = spearman(scores[name], pool.lengths)
        r.update(more)
        rows.append(r)
        return r

    row("reference gzip-9", ref, pairs)
    row("ours gzip:9", exact, pairs, max_abs_diff=max_diff, ranking_identical=ranking_identical)
    row("ours lz4 (default)", default, pairs)
    row("ours gzip:9 +contrast", contrast_gzip, 2 * pairs)
    row("ours lz4 +contrast", contrast_lz4, 2 * pairs)
    row(
        "DSIR (data-selection, top-k)",
        dsir,
        0,
        **{f"p@{k1}": dsir["precision"][str(k1)], f"p@{k2}": dsir["precision"][str(k2)]},
    )
    report["methods"] = rows

    # (2) compressor sweep ----------------------------------------------------------------------------------
    sweep: list[dict[str, Any]] = []
    for name, spec_name, res in (("ours gzip:9", "gzip:9", exact), ("ours lz4 (default)", "lz4:0", default)):
        sweep.append(_sweep_row(spec_name, pool.n, pool.n_targets, res, scores[name], pool, (k1, k2)))
    for spec_name in cfg["fast_sweep"]:
        res = ours(f"sweep {spec_name}", spec_name)
        sweep.append(
            _sweep_row(spec_name, pool.n, pool.n_targets, res, scores[f"sweep {spec_name}"], pool, (k1, k2))
        )
    small_n, small_t = cfg["slow_pool"], cfg["slow_targets"]
    sk1, sk2 = small_n // 20, small_n // 10
    for spec_name in cfg["slow_sweep"]:
        name = f"small {spec_name}"
        res = ours(name, spec_name, limit=small_n, n_targets=small_t)
        sweep.append(
            _sweep_row(spec_name, small_n, small_t, res, scores[name], pool, (sk1, sk2), limit=small_n)
        )
    report["sweep"] = sweep

    # (3) memory as N grows -----------------------------------------------------------------------------------
    memory = []
    for n, n_targets in cfg["memory"]:
        res = run_job("memory", f"memory-{n}", n=n, n_targets=n_targets, compressor="lz4:0")
        memory.append(
            {"documents": n, "targets": n_targets, "seconds": res["seconds"], "peak_mb": res["peak_mb"]}
        )
        print(f"  memory N={n}: {res['peak_mb']:.0f} MB, {res['seconds']:.1f} s", flush=True)
    report["memory"] = memory

    # (4) against the bare compressor loop ----------------------------------------------------------------------
    bound = run_job("bound", "bound", **common, n_sources=cfg["bound_sources"], repeats=3)
    bound = {spec_name: b for spec_name, b in bound.items() if spec_name not in ("peak_mb", "load")}
    for spec_name, b in bound.items():
        parallel = next(
            r
            for r in rows
            if r["method"] == ("ours gzip:9" if spec_name == "gzip:9" else "ours lz4 (default)")
        )
        b["ours_parallel_pairs_s"] = parallel["pairs_s"]
        b["fraction_single_core"] = b["ours_pairs_s"] / b["raw_pairs_s"]
        b["fraction_all_cores"] = parallel["pairs_s"] / (b["raw_pairs_s"] * cores)
    report["bound"] = bound

    report["total_seconds"] = time.perf_counter() - started
    report["load_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print_tables(report, (k1, k2))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / ("select_vs_reference-quick.json" if args.quick else "select_vs_reference.json")
    tmp_path = out_path.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(report, indent=2) + "\n")
    tmp_path.replace(out_path)
    print(f"\nwritten {out_path} ({report['total_seconds']:.0f} s in all)")
    return 0


def _sweep_row(
    spec: str,
    n: int,
    n_targets: int,
    res: dict[str, Any],
    scores: np.ndarray,
    pool: Pool,
    ks: tuple[int, int],
    limit: int | None = None,
) -> dict[str, Any]:
    lengths = pool.lengths[: limit or pool.n]
    return {
        "compressor": spec,
        "documents": n,
        "targets": n_targets,
        "seconds": res["seconds"],
        "pairs_s": n * n_targets / res["seconds"],
        "k": list(ks),
        "p@k1": pool.precision(scores, ks[0], limit),
        "p@k2": pool.precision(scores, ks[1], limit),
        "spearman_len": spearman(scores, lengths),
    }


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec)


def print_tables(r: dict[str, Any], ks: tuple[int, int]) -> None:
    k1, k2 = ks
    print(
        f"\n## ZIP-FIT vs reference: {r['pool']} docs ({r['python_share']:.1%} python), {r['targets']} python "
        f"targets, {r['cores']} cores, zlib {r['zlib']}, Python {r['python']}"
    )
    print(
        f"{'method':32} {'time s':>8} {'x ref':>6} {'peak MB':>8} {'x ref':>6} {'pairs/s':>9} "
        f"{'p@' + str(k1):>7} {'p@' + str(k2):>7} {'rho len':>8}  parity"
    )
    for m in r["methods"]:
        parity = ""
        if "max_abs_diff" in m:
            parity = f"max|d|={m['max_abs_diff']:.1e}, ranking identical: {_fmt(m['ranking_identical'])}"
        print(
            f"{m['method']:32} {m['seconds']:8.1f} {m['vs_ref_time']:6.2f} {m['peak_mb']:8.0f} {m['vs_ref_mem']:6.2f} "
            f"{_fmt(m['pairs_s'], ',.0f'):>9} {_fmt(m.get(f'p@{k1}')):>7} {_fmt(m.get(f'p@{k2}')):>7} "
            f"{_fmt(m.get('spearman_len'), '+.2f'):>8}  {parity}"
        )
    print(
        f"random selection: p@k = {r['python_share']:.3f} in expectation; DSIR drops documents under 100 words"
    )
    loads = [x for m in r["methods"] for x in (m.get("load") or []) if x is not None]
    if loads:
        print(
            f"1-minute load average during these jobs: {min(loads):.1f}-{max(loads):.1f} on {r['cpu_count']} CPUs"
        )

    print("\n## Compressor sweep (ours, all cores; p@5%/p@10% of the pool = p@k1/p@k2)")
    print(
        f"{'compressor':12} {'docs':>7} {'targets':>7} {'pairs/s':>10} {'p@5%':>7} {'p@10%':>7} {'rho len':>8}"
    )
    for s in r["sweep"]:
        print(
            f"{s['compressor']:12} {s['documents']:7d} {s['targets']:7d} {s['pairs_s']:10,.0f} {s['p@k1']:7.3f} "
            f"{s['p@k2']:7.3f} {s['spearman_len']:+8.2f}"
        )

    print("\n## Our peak memory as the pool grows (lz4, streamed from the generator into a top-1000 heap;")
    print("   targets chosen so every row scores ~the same number of pairs)")
    print(f"{'documents':>10} {'targets':>8} {'time s':>8} {'peak MB':>8}")
    for m in r["memory"]:
        print(f"{m['documents']:10,d} {m['targets']:8d} {m['seconds']:8.1f} {m['peak_mb']:8.0f}")

    print("\n## Pairs/s against the bare compressor loop on the same bytes (best of 3, interleaved)")
    print(
        f"{'compressor':10} {'bare 1 core':>12} {'ours 1 core':>12} {'fraction':>9} {'ours all cores':>15} "
        f"{'fraction of cores x bare':>25}"
    )
    for spec, b in r["bound"].items():
        print(
            f"{spec:10} {b['raw_pairs_s']:12,.0f} {b['ours_pairs_s']:12,.0f} {b['fraction_single_core']:9.2f} "
            f"{b['ours_parallel_pairs_s']:15,.0f} {b['fraction_all_cores']:25.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
