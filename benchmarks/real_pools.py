"""Selection on real pools: labelled pools of real files from this machine, real targets, every method.

    .venv/bin/python benchmarks/real_pools.py [--pools debian,site,stdlib,man,doc] [--size 4900] [--k 500]
        [--methods zipfit,zipfit:gzip9,zipfit:lz4+nocontrast+all,dsir,random,compel,d4:hashing]
        [--seed 0] [--workers N] [--out bench-out/real_pools]

Why: ``builtin:pool`` is cut from one source (the stdlib) into documents of similar sizes, so a
method can look good there for reasons that do not transfer. These pools are whole files as they
lie on disk -- Debian's Python packages, the interpreter's site-packages and standard library, Perl
modules, C headers, man pages (troff, gunzipped), package documentation, shell scripts, /etc
configuration -- with their real, very unequal lengths (nothing is chunked), mixed in different
proportions, each file labelled with its kind. Targets are real too: HumanEval's halves (prompt +
canonical solution) for the code pools, held-out man pages of one section and held-out package
documentation for the two prose pools. Target files never enter the pool; identical texts are kept
once.

For every pool and method it prints precision@k (the share of the pool's target domain among the k
selected documents), the byte-length distribution of the selection (quartiles) beside the pool's,
and the wall time of the whole selection (prepare + score + collect) with its ratio to DSIR's in
the same run. ``--methods`` takes any method spec; every pool is built with ``--seed``, so a run is
repeatable on one machine, and other machines (other packages installed) give other pools of the same
kinds -- which is the point: choose nothing on one pool. Kinds missing on a machine are dropped
from the mixtures with a note.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import statistics
import sys
import sysconfig
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_METHODS = (
    "zipfit",
    "zipfit:gzip9",
    "zipfit:lz4+nocontrast+all",
    "dsir",
    "random",
    "compel",
    "d4:hashing",
)
#: Files larger than this are skipped (a few multi-megabyte generated headers and changelogs would
#: otherwise dominate every method's time); real documents up to this size are kept whole.
MAX_FILE_BYTES = 256 * 1024
#: Files smaller than this (after stripping whitespace) carry no content: empty ``__init__.py`` etc.
MIN_FILE_BYTES = 16


# -- kinds of files --------------------------------------------------------------------------------


def _walk(roots: list[str], accept: Callable[[str], bool]) -> list[str]:
    out: list[str] = []
    for root in roots:
        if not os.path.isdir(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            out.extend(
                os.path.join(dirpath, f) for f in sorted(filenames) if accept(os.path.join(dirpath, f))
            )
    return out


def _stdlib() -> str:
    return sysconfig.get_paths()["stdlib"]


def _site() -> list[str]:
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


def _is_script(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError:
        return False
    return head.startswith(b"#!") and (b"sh" in head.split(b"\n", 1)[0])


def _man_section(section: str) -> Callable[[], list[str]]:
    return lambda: _walk([f"/usr/share/man/man{section}"], lambda p: p.endswith(".gz"))


KINDS: dict[str, Callable[[], list[str]]] = {
    "python-debian": lambda: _walk(["/usr/lib/python3/dist-packages"], lambda p: p.endswith(".py")),
    "python-site": lambda: _walk(_site(), lambda p: p.endswith(".py")),
    "python-stdlib": lambda: _walk(
        [_stdlib()], lambda p: p.endswith(".py") and "site-packages" not in p and "dist-packages" not in p
    ),
    "perl": lambda: _walk(
        [
            "/usr/share/perl5",
            "/usr/share/perl",
            "/usr/lib/x86_64-linux-gnu/perl5",
            "/usr/lib/x86_64-linux-gnu/perl",
        ],
        lambda p: p.endswith((".pm", ".pl")),
    ),
    "c-header": lambda: _walk(["/usr/include"], lambda p: p.endswith((".h", ".hpp"))),
    "man": lambda: _walk([f"/usr/share/man/man{s}" for s in "12345678"], lambda p: p.endswith(".gz")),
    "doc": lambda: _walk(
        ["/usr/share/doc"], lambda p: not p.endswith((".png", ".jpg", ".svg", ".pdf", ".html"))
    ),
    "shell": lambda: _walk(["/usr/bin", "/usr/sbin", "/usr/lib/dpkg", "/etc/init.d"], _is_script),
    "config": lambda: _walk(["/etc"], lambda p: not p.endswith((".gz", ".db", ".bin"))),
}


def read_text(path: str) -> str | None:
    """The file as UTF-8 text (gunzipped when it ends in .gz), or None if it is not usable text."""
    try:
        if os.path.islink(path) and not os.path.exists(path):
            return None
        if os.path.getsize(path) > MAX_FILE_BYTES:
            return None
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                raw = fh.read(MAX_FILE_BYTES + 1)
        else:
            raw = Path(path).read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, zlib.error):
        return None
    if len(raw) > MAX_FILE_BYTES or "\x00" in text or len(text.strip()) < MIN_FILE_BYTES:
        return None
    return text


class FileSource:
    """Deterministic draws of distinct, readable files of each kind (a seeded shuffle per kind)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._lists: dict[str, list[str]] = {}
        self._seen: set[bytes] = set()  # content hashes already handed out (pool or target)
        self._used: set[str] = set()

    def paths(self, kind: str) -> list[str]:
        if kind not in self._lists:
            paths = KINDS[kind]() if kind in KINDS else _man_section(kind.removeprefix("man"))()
            random.Random(f"real-pools:{self.seed}:{kind}").shuffle(paths)
            self._lists[kind] = paths
        return self._lists[kind]

    def draw(self, kind: str, n: int, exclude: Callable[[str], bool] | None = None) -> list[tuple[str, str]]:
        """Up to ``n`` (path, text) of ``kind`` not drawn before, in the kind's shuffled order."""
        out: list[tuple[str, str]] = []
        for path in self.paths(kind):
            if len(out) == n:
                break
            if path in self._used or (exclude is not None and exclude(path)):
                continue
            self._used.add(path)
            text = read_text(path)
            if text is None:
                continue
            digest = hashlib.sha1(text.encode("utf-8")).digest()
            if digest in self._seen:
                continue
            self._seen.add(digest)
            out.append((path, text))
        return out


# -- pools -----------------------------------------------------------------------------------------


@dataclass
class PoolSpec:
    """A labelled pool: a mixture of kinds, a target and the domain precision is measured for."""

    name: str
    mixture: dict[str, float]  # kind -> share of the pool
    positive: str  # the label whose share among the selected is precision@k
    target: str  # "humaneval-target", "humaneval-test", or "held-out:<kind>:<n>"
    labels: dict[str, str] = field(default_factory=dict)  # kind -> label (default: the kind's family)
    note: str = ""


def _family(kind: str) -> str:
    return "python" if kind.startswith("python") else kind


POOLS: dict[str, PoolSpec] = {
    p.name: p
    for p in (
        PoolSpec(
            "debian",
            {"python-debian": 0.20, "perl": 0.18, "c-header": 0.22, "man": 0.20, "doc": 0.20},
            "python",
            "humaneval-target",
            note="Debian's Python packages, 20% Python (the issue's pool)",
        ),
        PoolSpec(
            "site",
            {"python-site": 0.20, "perl": 0.15, "c-header": 0.25, "man": 0.15, "doc": 0.225, "shell": 0.025},
            "python",
            "humaneval-test",
            note="the interpreter's site-packages, 20% Python, shell scripts added",
        ),
        PoolSpec(
            "stdlib",
            {"python-stdlib": 0.10, "c-header": 0.30, "doc": 0.25, "man": 0.15, "perl": 0.10, "config": 0.10},
            "python",
            "humaneval-target",
            note="the standard library, only 10% Python, /etc added",
        ),
        PoolSpec(
            "man",
            {
                "man": 0.15,
                "python-debian": 0.20,
                "c-header": 0.20,
                "doc": 0.20,
                "perl": 0.225,
                "shell": 0.025,
            },
            "man",
            "held-out:man1:100",
            note="target: 100 held-out section-1 man pages; positive: man pages of every section",
        ),
        PoolSpec(
            "doc",
            {"doc": 0.15, "python-stdlib": 0.20, "c-header": 0.20, "man": 0.20, "perl": 0.15, "config": 0.10},
            "doc",
            "held-out:doc:100",
            note="target: 100 held-out package documentation files; positive: other packages' docs",
        ),
    )
}


@dataclass
class BuiltPool:
    spec: PoolSpec
    records: list[dict[str, str]]
    targets: list[str]
    notes: list[str]


def _target_texts(spec: PoolSpec, files: FileSource) -> list[str]:
    if spec.target.startswith("humaneval"):
        from compresslm.data.humaneval import humaneval_records

        part = "target" if spec.target == "humaneval-target" else "test"
        return [r.text for r in humaneval_records(part)]
    _, kind, n = spec.target.split(":")
    return [text for _, text in files.draw(kind, int(n))]


def build_pool(spec: PoolSpec, size: int, seed: int) -> BuiltPool:
    """Draw the targets first (so they never enter the pool), then each kind's share of ``size``."""
    files = FileSource(seed)
    notes: list[str] = []
    targets = _target_texts(spec, files)
    records: list[dict[str, str]] = []
    for kind, share in spec.mixture.items():
        want = round(size * share)
        got = files.draw(kind, want)
        if len(got) < want:
            notes.append(f"{kind}: {len(got)} of {want} files available")
        label = spec.labels.get(kind, _family(kind))
        records += [{"text": t, "domain": label, "path": p} for p, t in got]
    random.Random(f"real-pools:{seed}:{spec.name}:order").shuffle(records)
    return BuiltPool(spec, records, targets, notes)


def write_jsonl(path: Path, records: list[dict[str, str]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


# -- running the methods ---------------------------------------------------------------------------


def quartiles(values: list[int]) -> tuple[float, float, float]:
    """(25th, 50th, 75th) percentiles (inclusive method), 0s for an empty list."""
    if len(values) < 2:
        v = float(values[0]) if values else 0.0
        return v, v, v
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def run_method(
    spec: str, pool_file: Path, targets: list[str], k: int, workers: int | None, seed: int
) -> dict[str, Any]:
    from compresslm.select.methods import make_method
    from compresslm.select.pipeline import SelectionSpec, run_selection
    from compresslm.select.pool import ReadOptions

    opts: dict[str, Any] = {"workers": workers, "seed": seed}
    with tempfile.TemporaryDirectory() as cache:
        if spec.startswith("d4"):
            opts["cache_dir"] = cache
        method = make_method(spec, **opts)
        t0 = time.perf_counter()
        result = run_selection(
            method,
            targets,
            [str(pool_file)],
            SelectionSpec(k=k),
            read_options=ReadOptions(domain_field="domain"),
        )
        wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "seconds": result.seconds,
        "domains": [s.domain for s in result.selected],
        "sizes": [s.size for s in result.selected],
        "method": result.method_info,
    }


def evaluate(
    pool: BuiltPool,
    pool_file: Path,
    methods: list[str],
    k: int,
    workers: int | None,
    seed: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    sizes = [len(r["text"].encode("utf-8")) for r in pool.records]
    positives = sum(r["domain"] == pool.spec.positive for r in pool.records)
    out: dict[str, Any] = {
        "pool": pool.spec.name,
        "note": pool.spec.note,
        "documents": len(pool.records),
        "positive": pool.spec.positive,
        "positive_share": positives / max(1, len(pool.records)),
        "targets": len(pool.targets),
        "target_spec": pool.spec.target,
        "pool_bytes_quartiles": quartiles(sizes),
        "notes": pool.notes,
        "methods": {},
    }
    for spec in methods:
        try:
            r = run_method(spec, pool_file, pool.targets, k, workers, seed)
        except Exception as exc:  # an optional extra missing: say so, go on
            log(f"  {spec}: skipped ({type(exc).__name__}: {exc})")
            out["methods"][spec] = {"skipped": f"{type(exc).__name__}: {exc}"}
            continue
        top = r["domains"][:k]
        prec = sum(d == pool.spec.positive for d in top) / max(1, len(top))
        pos_sizes = [s for s, d in zip(r["sizes"], r["domains"], strict=True) if d == pool.spec.positive]
        neg_sizes = [s for s, d in zip(r["sizes"], r["domains"], strict=True) if d != pool.spec.positive]
        out["methods"][spec] = {
            "precision": prec,
            "wall_s": r["wall_s"],
            "seconds": r["seconds"],
            "selected_bytes_quartiles": quartiles(r["sizes"]),
            "selected_positive_median_bytes": statistics.median(pos_sizes) if pos_sizes else None,
            "selected_other_median_bytes": statistics.median(neg_sizes) if neg_sizes else None,
            "selected_domains": {d: top.count(d) for d in sorted({str(x) for x in top})},
            "method": r["method"],
        }
        log(
            f"  {spec}: precision@{k} {prec:.3f}, {r['wall_s']:.1f} s, median {quartiles(r['sizes'])[1]:,.0f} B"
        )
    return out


def markdown(results: list[dict[str, Any]], k: int) -> str:
    lines = []
    for res in results:
        q = res["pool_bytes_quartiles"]
        lines.append(
            f"\n**{res['pool']}** ({res['note']}): {res['documents']:,} files, {res['positive_share']:.0%} "
            f"{res['positive']}, target {res['target_spec']} ({res['targets']} documents); pool bytes "
            f"median {q[1]:,.0f} (quartiles {q[0]:,.0f}–{q[2]:,.0f})\n"
        )
        lines.append(f"| method | precision@{k} | selected bytes median (quartiles) | wall s | × DSIR |")
        lines.append("|---|---|---|---|---|")
        dsir = res["methods"].get("dsir", {}).get("wall_s")
        for spec, m in res["methods"].items():
            if "skipped" in m:
                lines.append(f"| {spec} | skipped | | | |")
                continue
            s = m["selected_bytes_quartiles"]
            ratio = f"{m['wall_s'] / dsir:.2f}" if dsir else "–"
            lines.append(
                f"| {spec} | {m['precision']:.3f} | {s[1]:,.0f} ({s[0]:,.0f}–{s[2]:,.0f}) | {m['wall_s']:.1f} | {ratio} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pools", default=",".join(POOLS), help=f"comma-separated, from: {', '.join(POOLS)}")
    ap.add_argument("--size", type=int, default=4900, help="documents per pool")
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    ap.add_argument("--seed", type=int, default=0, help="pool construction and method seed")
    ap.add_argument("--workers", type=int, help="scoring processes (default: all cores)")
    ap.add_argument("--out", default="bench-out/real_pools")
    ap.add_argument("--keep-pools", action="store_true", help="keep the pool JSONL files under --out")
    args = ap.parse_args(argv)

    names = [p.strip() for p in args.pools.split(",") if p.strip()]
    unknown = [p for p in names if p not in POOLS]
    if unknown:
        ap.error(f"unknown pool(s) {', '.join(unknown)} (choose from: {', '.join(POOLS)})")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    log(
        f"{len(names)} pools x {len(methods)} methods, k = {args.k}, {cores} cores, zlib {zlib.ZLIB_RUNTIME_VERSION}"
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            t0 = time.perf_counter()
            pool = build_pool(POOLS[name], args.size, args.seed)
            pool_file = (out if args.keep_pools else Path(tmp)) / f"pool-{name}.jsonl"
            write_jsonl(pool_file, pool.records)
            if args.keep_pools:
                write_jsonl(out / f"targets-{name}.jsonl", [{"text": t} for t in pool.targets])
            log(
                f"pool {name}: {len(pool.records):,} files, {len(pool.targets)} targets ({time.perf_counter() - t0:.1f} s)"
            )
            for note in pool.notes:
                log(f"  note: {note}")
            results.append(evaluate(pool, pool_file, methods, args.k, args.workers, args.seed, log))
    print(markdown(results, args.k))
    (out / "results.json").write_text(
        json.dumps({"k": args.k, "size": args.size, "seed": args.seed, "pools": results}, indent=1) + "\n"
    )
    log(f"\nwrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
