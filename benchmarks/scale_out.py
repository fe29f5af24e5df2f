"""Scale-out: documents/s of the local and Ray engines, and a many-shard pool through Ray.

    .venv/bin/python benchmarks/scale_out.py [--docs 20000] [--shards 20] [--method zipfit]
        [--big-docs 2000000] [--big-shards 200] [--big-method random] [--big-engines local,ray] [--out bench-out/scale_out.json]

Part 1 (engines, same run, same generated pool): the in-process pipeline, then the staged pipeline
on the local engine and on Ray Data (a local Ray started by this script), each with 1 and 2
workers. Documents/s is accepted documents over the whole selection's wall time (plan, score,
select, write; Ray's start-up is timed apart). Every row selects the same documents (checked).

Part 2 (scale): the same ``--big-shards`` JSONL shards holding ``--big-docs`` / 10 and then
``--big-docs`` documents, through ``compresslm select`` on each of ``--big-engines`` with the given
method, each run in a process of its own, so the peak memory of the workers (flat: one shard at a
time) and of the driver (bounded by k and the number of shards, not by N) can be compared at
fixed shards. Peak memory is each process's ``ru_maxrss``, as the stages report it.

Generated documents are random "code-like" lines (words of a small vocabulary, lengths drawn
from a log-normal), labelled with a domain; they exist to cost what real documents cost to read,
score and write, not to be selected well.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def generate(folder: Path, docs: int, shards: int, seed: int = 0) -> list[str]:
    """``docs`` JSONL records split evenly over ``shards`` files; returns the paths."""
    from compresslm.data.synthetic import write_word_shards

    return write_word_shards(folder, docs=docs, shards=shards, seed=seed)


TARGETS = [
    "def add(self, value):\n    return self.data + value\n",
    "for index in range(10):\n    if value is None:\n        raise ValueError\n",
    "class Stack:\n    def push(self, x):\n        self.items.append(x)\n",
    "try:\n    import data\nexcept ImportError:\n    data = None\n",
]


def _run(
    method: str, sources: list[str], k: int, engine: str | None, workers: int, work: Path
) -> dict[str, Any]:
    from compresslm.select.methods import make_method
    from compresslm.select.pipeline import Outputs, SelectionSpec, run_selection
    from compresslm.select.stages import StagedOptions, run_staged_selection

    out = work / f"sel-{engine}-{workers}.jsonl"
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    if engine is None:
        result = run_selection(
            make_method(method, workers=workers),
            TARGETS,
            sources,
            SelectionSpec(k=k),
            outputs=Outputs(str(out)),
        )
    else:
        result = run_staged_selection(
            method,
            {},
            TARGETS,
            sources,
            SelectionSpec(k=k),
            outputs=Outputs(str(out)),
            options=StagedOptions(engine=engine, workers=workers),
        )
    wall = time.perf_counter() - t0
    return {
        "engine": engine or "in-process",
        "workers": workers,
        "wall_s": round(wall, 2),
        "docs": result.accounting["accepted"],
        "docs_per_s": round(result.accounting["accepted"] / wall, 1),
        "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
        "selected": [s.id for s in result.selected],
        "engine_info": result.engine,
    }


def part_engines(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    import ray

    sources = generate(root / f"pool-{args.docs}-{args.shards}", args.docs, args.shards)
    rows = []
    for workers in (1, 2):
        rows.append(_run(args.method, sources, args.k, None, workers, root))
        rows.append(_run(args.method, sources, args.k, "local", workers, root))
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_start = time.perf_counter() - t0
    try:
        for workers in (1, 2):
            row = _run(args.method, sources, args.k, "ray", workers, root)
            row["ray_start_s"] = round(ray_start, 2)
            rows.append(row)
    finally:
        ray.shutdown()
    staged = [r for r in rows if r["engine"] != "in-process"]
    same = all(r["selected"] == staged[0]["selected"] for r in staged)
    for r in rows:
        r["same_selection_as_staged"] = same
    return rows


def part_scale(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    """Two pools with the same number of shards, ``--big-docs`` / 10 and ``--big-docs`` documents,
    through ``compresslm select`` on each engine, each run in its own process so its driver's peak
    memory is that run's alone: with the shards fixed, the driver's peak must not grow with N."""
    import subprocess

    (root / "targets.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TARGETS))
    rows = []
    for n_docs in (args.big_docs // 10, args.big_docs):
        sources = generate(root / f"big-{n_docs}-{args.big_shards}", n_docs, args.big_shards)
        for engine in args.big_engines.split(","):
            out = root / f"big-sel-{engine}-{n_docs}.jsonl"
            out.unlink(missing_ok=True)
            cmd = [sys.executable, "-c", "import sys; from compresslm.cli import main; sys.exit(main())"]
            cmd += ["select", "--target", str(root / "targets.jsonl")]
            cmd += ["--source", *sources, "--method", args.big_method, "--k", str(args.k)]
            cmd += ["--engine", engine, "--workers", "2", "-o", str(out), "--json", "--no-progress"]
            t0 = time.perf_counter()
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"}
            )
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-3000:])
            result = json.loads(proc.stdout)
            rows.append(
                {
                    "engine": engine,
                    "shards": len(sources),
                    "docs": result["accounting"]["accepted"],
                    "input_mb": round(sum(os.path.getsize(p) for p in sources) / 2**20, 1),
                    "wall_s": round(wall, 1),
                    "docs_per_s": round(result["accounting"]["accepted"] / wall, 1),
                    "seconds": result["seconds"],
                    "engine_info": result["engine"],
                }
            )
    return rows


#: DSIR's README (data-selection 1.0.3): the full decompressed Pile on one node of 96 cores, 4.47 h
#: in all (fit 59 s, importance weights 4.36 h, resample 354 s). The Pile is 825 GiB.
DSIR_PILE_HOURS = 4.47
PILE_BYTES = 825 * 2**30
NODE_CORES = 96


def part_rates(args: argparse.Namespace) -> list[dict[str, Any]]:
    """CPU seconds per stage for each method on the built-in pool, local engine, one worker (in this
    process): documents and bytes per CPU-second, robust to a loaded machine's wall clock."""
    from compresslm.data.readers import read_records
    from compresslm.select.pipeline import SelectionSpec
    from compresslm.select.stages import StagedOptions, run_staged_selection

    targets = [r.text for r in read_records([args.rates_targets]) if hasattr(r, "text")]
    n_bytes = sum(len(r.data) for r in read_records([args.rates_pool]) if hasattr(r, "text"))
    rows = []
    for method in args.rates_methods.split(","):
        result = run_staged_selection(
            method, {}, targets, [args.rates_pool], SelectionSpec(k=args.k), options=StagedOptions(workers=1)
        )
        cpu = result.engine["worker_cpu_seconds"]
        total = sum(cpu.values())
        docs = result.accounting["accepted"]
        rows.append(
            {
                "method": method,
                "docs": docs,
                "bytes": n_bytes,
                "cpu_seconds": cpu,
                "docs_per_cpu_s": round(docs / total, 1),
                "mb_per_cpu_s": round(n_bytes / total / 1e6, 3),
                "hours_1b_docs_one_node": round(
                    1e9 * n_bytes / docs / (n_bytes / total) / NODE_CORES / 3600, 2
                ),
                "hours_pile_one_node": round(PILE_BYTES / (n_bytes / total) / NODE_CORES / 3600, 2),
            }
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=20_000)
    p.add_argument("--shards", type=int, default=20)
    p.add_argument("--method", default="zipfit")
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--big-docs", type=int, default=2_000_000)
    p.add_argument("--big-shards", type=int, default=200)
    p.add_argument("--big-method", default="random")
    p.add_argument("--big-engines", default="local,ray", help="engines of part 2, comma-separated")
    p.add_argument("--rates-pool", default="builtin:pool")
    p.add_argument("--rates-targets", default="builtin:python-targets")
    p.add_argument("--rates-methods", default="zipfit,dsir,random")
    p.add_argument("--skip-rates", action="store_true")
    p.add_argument("--skip-engines", action="store_true")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--data", default=None, help="folder for the generated pools (default: a temporary one)")
    p.add_argument("--out", default="bench-out/scale_out.json")
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    root = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="scale-out-"))
    root.mkdir(parents=True, exist_ok=True)  # --data may name a folder that does not exist yet
    report: dict[str, Any] = {
        "args": vars(args),
        "cpus": len(os.sched_getaffinity(0)),
        "load": os.getloadavg(),
    }
    if not args.skip_rates:
        report["rates"] = part_rates(args)
        print(
            f"\nper-core rates: {args.rates_pool}, {args.rates_targets}, k = {args.k}, local engine, 1 worker"
        )
        print(
            "| method | CPU s plan / score / write | docs per CPU-s | MB per CPU-s | "
            f"1B docs, one {NODE_CORES}-core node (h) | the Pile, one node (h; DSIR package: {DSIR_PILE_HOURS}) |"
        )
        print("|---|---|---|---|---|---|")
        for r in report["rates"]:
            c = r["cpu_seconds"]
            print(
                f"| {r['method']} | {c['plan']:.1f} / {c['score']:.1f} / {c['write']:.1f} | {r['docs_per_cpu_s']:,.0f} | "
                f"{r['mb_per_cpu_s']:.2f} | {r['hours_1b_docs_one_node']} | {r['hours_pile_one_node']} |"
            )
    if not args.skip_engines:
        report["engines"] = part_engines(args, root)
        print(f"\n{args.docs:,} documents in {args.shards} shards, method {args.method}, k = {args.k}")
        print("| engine | workers | wall s | docs/s | prepare / score / write s | worker peak MiB |")
        print("|---|---|---|---|---|---|")
        for r in report["engines"]:
            s = r["seconds"]
            mem = r["engine_info"].get("worker_peak_rss_mb", "-") if r["engine_info"] else "-"
            print(
                f"| {r['engine']} | {r['workers']} | {r['wall_s']} | {r['docs_per_s']:,.0f} | "
                f"{s.get('prepare', 0):.1f} / {s.get('score', 0):.1f} / {s.get('write', 0):.1f} | {mem} |"
            )
        print(f"same selection on every staged row: {report['engines'][0]['same_selection_as_staged']}")
    if not args.skip_scale:
        report["scale"] = part_scale(args, root)
        print(f"\nmethod {args.big_method}, k = {args.k}, 2 workers")
        print(
            "| engine | shards | documents | input MiB | wall s | docs/s | worker peak MiB | driver peak MiB |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in report["scale"]:
            e = r["engine_info"]
            print(
                f"| {r['engine']} | {r['shards']} | {r['docs']:,} | {r['input_mb']} | {r['wall_s']} | "
                f"{r['docs_per_s']:,.0f} | "
                f"{e['worker_peak_rss_mb']} | {e['driver_peak_rss_mb']} |"
            )
    report["load_after"] = os.getloadavg()
    report["driver_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for r in report.get("engines", []):
        r.pop("selected", None)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}; load average {report['load']} -> {report['load_after']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
