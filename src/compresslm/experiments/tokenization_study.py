"""The tokenization study (Lester et al. 2024 at small scale): train M2 over each scheme's tokens and
compare bits/byte against inference FLOPs/byte on the same held-out bytes.

Steps, each resumable (finished outputs are reused unless ``force``):

1. read the corpus (a deterministic prefix of ``limit_bytes``) and split it by document-id hash;
2. train M1 on the training split (or use ``m1``): M2's held-out bytes stay unseen by M1, as in the paper;
3. tokenize the corpus with every scheme (``tokens/<label>/``);
4. train M2 of every size for every seed (``runs/<label>/<size>-s<seed>/eval.json``; ``key_schemes``
   get every seed, the others the first), in ``jobs`` processes;
5. sample a few ids from M2 per scheme and decode them (steps/s, bytes/step);
6. write ``report/``: results.json, report.md, index.html and the bits/byte-vs-FLOPs/byte plot.

The claims under test: plain AC (and StaticAC) sit at the uniform bound log2(v)/ratio (unlearnable),
EqualInfoAC is learnable, EqualInfoAC[b=16, v=65k] needs fewer generation steps per byte than
SentencePiece and beats Bytes at equal inference FLOPs once M2 is large next to M1.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from compresslm.data.jsonfile import write_json
from compresslm.data.records import Record
from compresslm.errors import ConfigError, DataError
from compresslm.select.parallel import default_workers
from compresslm.tokenizers.dataset import (
    TokenDataset,
    TokenizeOptions,
    split_of,
    tokenize_corpus,
)
from compresslm.tokenizers.registry import SchemeSpec, build_tokenizer, parse_scheme

DEFAULT_SCHEMES = ("bytes", "spm", "gzip", "static-ac", "ac", "eqinfo16-256", "eqinfo16-65k", "eqinfo32-256")
KEY_SCHEMES = ("bytes", "spm", "eqinfo16-256", "eqinfo16-65k")

#: Token compression ratios of the paper on C4 (Table 12, App. A.1 for b = 24): what ours sit beside.
PAPER_RATIOS: dict[str, float] = {
    "bytes": 1.0,
    "spm": 4.28,
    "gzip": 2.23,
    "gzip-65k": 4.47,
    "static-ac": 1.73,
    "static-ac-65k": 3.46,
    "ac": 5.49,
    "ac-65k": 10.98,
    "eqinfo16-256": 2.66,
    "eqinfo16-65k": 5.31,
    "eqinfo24-256": 3.15,
    "eqinfo24-65k": 6.30,
    "eqinfo32-256": 3.49,
    "eqinfo32-65k": 6.97,
    "eqinfo64-256": 4.16,
    "eqinfo64-65k": 8.33,
    "eqinfo128-256": 4.61,
    "eqinfo128-65k": 9.22,
}
#: The paper's 25m bits/byte (Table 15/16), for orientation only: its M2 is 25M parameters on 26B tokens.
PAPER_BPB_25M: dict[str, float] = {
    "bytes": 1.29,
    "spm": 1.12,
    "ac": 1.46,
    "ac-65k": 1.46,
    "static-ac": 4.61,
    "static-ac-65k": 4.60,
    "eqinfo16-256": 1.47,
    "eqinfo16-65k": 1.25,
    "eqinfo32-256": 2.05,
    "eqinfo32-65k": 1.95,
    "gzip": 2.34,
    "gzip-65k": 2.92,
    "eqinfo64-256": 1.85,
    "eqinfo64-65k": 1.82,
    "eqinfo128-256": 1.71,
    "eqinfo128-65k": 1.70,
}
PROMPT = "def "
SIZE_COST = {
    "tiny": 1,
    "small": 2,
    "3m": 4,
    "base": 6,
    "25m": 8,
}  # relative cost of the output layer (d_model)


@dataclass
class TokenizationStudySettings:
    corpus: list[str] = field(default_factory=lambda: ["builtin:mixture"])
    schemes: list[str] = field(default_factory=lambda: list(DEFAULT_SCHEMES))
    sizes: list[str] = field(default_factory=lambda: ["tiny", "small"])
    seeds: list[int] = field(default_factory=lambda: [0])
    key_schemes: list[str] | None = None  # schemes run with every seed (None: KEY_SCHEMES)
    m1: str | None = None  # an M1 folder; None: train one on the training split
    m1_size: str = "tiny"
    m1_context: int = 64
    m1_tokens: int = 1_000_000
    limit_bytes: int | None = 1_000_000
    val_fraction: float = 0.1
    spm_vocab_size: int = 4096
    chunk_bytes: int = 10_240
    train_tokens: int = 200_000
    seq_len: int = 128
    batch_size: int = 16
    lr: float = 1e-3
    eval_points: int = 4
    workers: int | None = None
    jobs: int | None = None
    threads: int | None = 1  # torch threads for M1's training (models.train.DEFAULT_THREADS)
    device: str = "auto"
    out: str = "tokenization-study"
    force: bool = False
    progress: bool = False
    generate_steps: int = 32

    def __post_init__(self) -> None:
        self.specs = [
            parse_scheme(
                s,
                chunk_bytes=self.chunk_bytes,
                spm_vocab_size=self.spm_vocab_size if s.strip() == "spm" else None,
            )
            for s in self.schemes
        ]
        labels = [s.label for s in self.specs]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"--schemes lists a scheme twice: {', '.join(labels)}")
        if not self.sizes or not self.seeds:
            raise ConfigError("the study needs at least one size and one seed")
        from compresslm.models.transformer import SIZES

        for size in (*self.sizes, self.m1_size):
            if size not in SIZES:
                raise ConfigError(f"unknown model size {size!r}; choose from {', '.join(SIZES)}")

    def seeds_for(self, label: str) -> list[int]:
        """Every seed for the key schemes (default :data:`KEY_SCHEMES`; ``spm`` covers ``spm-N``), the
        first seed for the others."""
        keys = KEY_SCHEMES if self.key_schemes is None else self.key_schemes
        family = "spm" if label.startswith("spm") else label
        return list(self.seeds) if label in keys or family in keys else self.seeds[:1]


def _paths(out: Path) -> dict[str, Path]:
    return {"m1": out / "m1", "tokens": out / "tokens", "runs": out / "runs", "report": out / "report"}


def load_corpus(settings: TokenizationStudySettings) -> list[Record]:
    """The accepted records of the corpus, up to ``limit_bytes`` (whole documents, in order);
    rejected records are reported as a warning (:func:`~compresslm.data.readers.read_accepted`)."""
    from compresslm.data.readers import read_accepted

    out: list[Record] = []
    total = 0
    for item in read_accepted(settings.corpus, what="corpus"):
        if settings.limit_bytes is not None and total >= settings.limit_bytes:
            break
        out.append(item)
        total += len(item.data)
    if not out:
        raise DataError(f"{' '.join(settings.corpus)}: no usable documents")
    return out


def _train_texts(records: Sequence[Record], val_fraction: float) -> list[str]:
    return [r.text for r in records if split_of(r.id, val_fraction) == "train"]


def ensure_m1(
    settings: TokenizationStudySettings, records: Sequence[Record], log: Callable[[str], None]
) -> str:
    if settings.m1 is not None:
        return settings.m1
    path = _paths(Path(settings.out))["m1"]
    if (path / "config.json").is_file() and not settings.force:
        log(f"M1: reusing {path}")
        return str(path)
    from compresslm.coding.m1_train import train_m1

    t0 = time.perf_counter()
    _, report = train_m1(
        _train_texts(records, settings.val_fraction),
        size=settings.m1_size,
        context=settings.m1_context,
        max_tokens=settings.m1_tokens,
        threads=settings.threads,
        progress=settings.progress,
        out=path,
        force=True,
    )
    log(
        f"M1: trained {settings.m1_size} ({report.n_params:,} non-embedding parameters) in "
        f"{time.perf_counter() - t0:.0f} s, held-out {report.heldout_bits_per_byte:.3f} bits/byte"
    )
    return str(path)


def ensure_tokens(
    settings: TokenizationStudySettings,
    spec: SchemeSpec,
    records: Sequence[Record],
    m1: str | None,
    log: Callable[[str], None],
) -> TokenDataset:
    path = _paths(Path(settings.out))["tokens"] / spec.label
    if (path / "meta.json").is_file() and not settings.force:
        return TokenDataset(path)
    options = TokenizeOptions(
        val_fraction=settings.val_fraction, workers=settings.workers, force=True, progress=settings.progress
    )
    tokenizer = build_tokenizer(
        spec,
        texts=lambda: iter(_train_texts(records, settings.val_fraction)),
        m1=m1 if spec.uses_m1 else None,
    )
    meta = tokenize_corpus(records, tokenizer, path, options, source=" ".join(settings.corpus))
    log(
        f"tokens: {meta['tokenizer']['name']:<26} ratio {meta['compression_ratio']:.3f}  "
        f"{meta['bytes_per_second']:>10,.0f} bytes/s"
    )
    return TokenDataset(path)


# -- M2 runs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    label: str
    size: str
    seed: int
    dataset: str
    out: str
    save_model: bool


def _run(run: Run, settings: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """Train and evaluate one M2 (in a worker process); writes and returns eval.json's content."""
    from compresslm.m2 import M2Config, evaluate_m2, train_m2

    config = M2Config(
        size=run.size,
        seq_len=settings["seq_len"],
        batch_size=settings["batch_size"],
        max_tokens=settings["train_tokens"],
        lr=settings["lr"],
        seed=run.seed,
        device=settings["device"],
        threads=threads,
        eval_every_tokens=max(1, settings["train_tokens"] // max(1, settings["eval_points"])),
    )
    out = Path(run.out)
    model, summary = train_m2(run.dataset, config, out if run.save_model else None, force=True)
    result = evaluate_m2(model.to("cpu"), run.dataset)
    record = {
        **result.to_dict(),
        "label": run.label,
        "size": run.size,
        "seed": run.seed,
        "train_seconds": summary["train_seconds"],
        "curve": summary["curve"],
    }
    write_json(out / "eval.json", record, force=True)
    return record


def run_all(
    runs: Sequence[Run], settings: TokenizationStudySettings, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    from compresslm.models.train import resolve_device

    done: list[dict[str, Any]] = []
    todo: list[Run] = []
    for run in runs:
        path = Path(run.out) / "eval.json"
        if path.is_file() and not settings.force:
            done.append(json.loads(path.read_text(encoding="utf-8")))
        else:
            todo.append(run)
    # Longest first (the 65,538-way softmax dominates a small M2), so parallel jobs finish together.
    todo.sort(key=lambda r: -TokenDataset(r.dataset).vocab_size * SIZE_COST.get(r.size, 1))
    on_gpu = resolve_device(settings.device).type == "cuda"
    jobs = settings.jobs or (1 if on_gpu else default_workers())
    jobs = max(1, min(jobs, len(todo) or 1))
    threads = None if jobs == 1 else max(1, default_workers() // jobs)
    plain = {
        k: getattr(settings, k)
        for k in ("seq_len", "batch_size", "train_tokens", "lr", "device", "eval_points")
    }

    def report(rec: dict[str, Any]) -> None:
        log(
            f"M2 {rec['label']:<14} {rec['size']:<6} seed {rec['seed']}: {rec['bits_per_byte']:.3f} bits/byte "
            f"(uniform {rec['uniform_bits_per_byte']:.3f}), {rec['train_seconds']:.0f} s"
        )

    if jobs == 1:
        for run in todo:
            rec = _run(run, plain, threads)
            report(rec)
            done.append(rec)
        return done
    from compresslm.select.parallel import ordered_map

    # spawn, not fork: forking a process that has run torch can deadlock its thread pools.
    for rec in ordered_map(
        partial(_run, settings=plain, threads=threads), todo, workers=jobs, start_method="spawn"
    ):
        report(rec)
        done.append(rec)
    return done


# -- the study ------------------------------------------------------------------------------------


def run_tokenization_study(
    settings: TokenizationStudySettings, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the study end to end (see the module docstring); returns the results written to
    ``report/results.json``."""
    out = Path(settings.out)
    paths = _paths(out)
    if (paths["report"] / "results.json").is_file() and not settings.force:
        log(f"{paths['report']}: an earlier report is there; finished parts are reused and it is rewritten")
    t0 = time.perf_counter()
    records = load_corpus(settings)
    n_bytes = sum(len(r.data) for r in records)
    log(f"corpus: {len(records):,} documents, {n_bytes:,} bytes from {' '.join(settings.corpus)}")
    m1 = ensure_m1(settings, records, log) if any(s.uses_m1 for s in settings.specs) else None
    datasets = {spec.label: ensure_tokens(settings, spec, records, m1, log) for spec in settings.specs}
    runs = [
        Run(
            spec.label,
            size,
            seed,
            str(datasets[spec.label].directory),
            str(paths["runs"] / spec.label / f"{size}-s{seed}"),
            save_model=seed == settings.seeds[0],
        )
        for spec in settings.specs
        for size in settings.sizes
        for seed in settings.seeds_for(spec.label)
    ]
    records_out = run_all(runs, settings, log)
    samples = _samples(settings, runs, datasets)
    results = summarize(settings, datasets, records_out, samples, m1)
    results["seconds"] = time.perf_counter() - t0
    write_report(results, paths["report"])
    return results


def _samples(
    settings: TokenizationStudySettings, runs: Sequence[Run], datasets: dict[str, TokenDataset]
) -> dict[str, Any]:
    """One sample per scheme from its first saved model: steps/s, bytes/step, decodes or not."""
    from compresslm.m2 import generate, load_m2

    out: dict[str, Any] = {}
    for run in runs:
        if run.label in out or not run.save_model or run.size != settings.sizes[0]:
            continue
        model, _ = load_m2(run.out)
        g = generate(
            model,
            datasets[run.label].tokenizer,
            PROMPT,
            max_steps=settings.generate_steps,
            temperature=0.8,
            seed=0,
        )
        out[run.label] = {
            "text": g.text,
            "steps": g.steps,
            "bytes": g.bytes,
            "bytes_per_step": g.bytes_per_step,
            "steps_per_second": g.steps_per_second,
            "decode_seconds": g.decode_seconds,
            "error": g.error,
        }
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(
    settings: TokenizationStudySettings,
    datasets: dict[str, TokenDataset],
    runs: Sequence[dict[str, Any]],
    samples: dict[str, Any],
    m1: str | None,
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for spec in settings.specs:
        ds = datasets[spec.label]
        for size in settings.sizes:
            group = [r for r in runs if r["label"] == spec.label and r["size"] == size]
            if not group:
                continue
            bpb, bpb_sd = _mean_std([r["bits_per_byte"] for r in group])
            bpt, _ = _mean_std([r["bits_per_token"] for r in group])
            first = group[0]
            rows.append(
                {
                    "label": spec.label,
                    "name": ds.name,
                    "size": size,
                    "seeds": len(group),
                    "bits_per_byte": bpb,
                    "bits_per_byte_std": bpb_sd,
                    "bits_per_token": bpt,
                    "compression_ratio": first["compression_ratio"],
                    "paper_ratio": PAPER_RATIOS.get(spec.label if spec.scheme != "spm" else "spm"),
                    "paper_bits_per_byte_25m": PAPER_BPB_25M.get(
                        spec.label if spec.scheme != "spm" else "spm"
                    ),
                    "uniform_bits_per_byte": first["uniform_bits_per_byte"],
                    "unigram_bits_per_byte": first["unigram_bits_per_byte"],
                    "flops_per_byte": first["flops_per_byte"],
                    "bytes_per_step": first["compression_ratio"],
                    "params_non_embedding": first["params_non_embedding"],
                    "params_total": first["params_total"],
                    "train_seconds": statistics.fmean(r["train_seconds"] for r in group),
                    "eval_targets_per_second": statistics.fmean(r["targets_per_second"] for r in group),
                    "tokenize_bytes_per_second": ds.meta.get("bytes_per_second"),
                    "learned": bpb < first["uniform_bits_per_byte"] - 0.02,
                }
            )
    return {
        "settings": {k: v for k, v in asdict(settings).items()},
        "m1": m1,
        "m1_params_non_embedding": next(
            (r["m1_params_non_embedding"] for r in runs if r["m1_params_non_embedding"]), 0
        ),
        "datasets": {
            label: {
                k: ds.meta[k]
                for k in ("compression_ratio", "bytes", "tokens", "splits", "bytes_per_second", "tokenizer")
            }
            for label, ds in datasets.items()
        },
        "rows": rows,
        "runs": [{k: v for k, v in r.items() if k != "curve"} for r in runs],
        "curves": {f"{r['label']}/{r['size']}/s{r['seed']}": r.get("curve", []) for r in runs},
        "samples": samples,
    }


# -- report ---------------------------------------------------------------------------------------

# Two tables, quality and cost, so each fits a page or a terminal (one of 14 columns did not).
QUALITY_HEADERS = ("scheme", "M2", "seeds", "bits/byte", "uniform", "unigram", "bits/token")
COST_HEADERS = ("scheme", "M2", "ratio", "paper ratio", "FLOPs/byte", "bytes/step", "train s", "tokenize B/s")


def _bpb_cell(r: dict[str, Any]) -> str:
    """Mean bits/byte, with ± the standard deviation only when there is more than one seed."""
    text = f"{r['bits_per_byte']:.3f}"
    return f"{text} ± {r['bits_per_byte_std']:.3f}" if r["seeds"] > 1 else text


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    """Rows of the quality table (:data:`QUALITY_HEADERS`)."""
    return [
        [
            r["name"],
            r["size"],
            str(r["seeds"]),
            _bpb_cell(r),
            f"{r['uniform_bits_per_byte']:.3f}",
            f"{r['unigram_bits_per_byte']:.3f}",
            f"{r['bits_per_token']:.3f}",
        ]
        for r in results["rows"]
    ]


def cost_rows(results: dict[str, Any]) -> list[list[str]]:
    """Rows of the cost table (:data:`COST_HEADERS`)."""
    out = []
    for r in results["rows"]:
        paper = r["paper_ratio"]
        out.append(
            [
                r["name"],
                r["size"],
                f"{r['compression_ratio']:.2f}",
                "-" if paper is None else f"{paper:.2f}",
                f"{r['flops_per_byte'] / 1e3:,.0f}k",
                f"{r['bytes_per_step']:.2f}",
                f"{r['train_seconds']:.0f}",
                f"{r['tokenize_bytes_per_second'] or 0:,.0f}",
            ]
        )
    return out


def _markdown(headers: Sequence[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def markdown_table(results: dict[str, Any]) -> str:
    """The quality table, then the cost table, in Markdown."""
    return (
        _markdown(QUALITY_HEADERS, table_rows(results)) + "\n\n" + _markdown(COST_HEADERS, cost_rows(results))
    )


_SETTINGS_SHOWN = (
    ("corpus", "corpus"),
    ("limit_bytes", "corpus prefix (bytes)"),
    ("val_fraction", "held-out share of documents"),
    ("schemes", "schemes"),
    ("sizes", "M2 sizes"),
    ("seeds", "seeds"),
    ("train_tokens", "M2 training positions per run"),
    ("seq_len", "M2 sequence length"),
    ("batch_size", "M2 batch size"),
    ("lr", "M2 peak learning rate"),
    ("m1", "M1 (given)"),
    ("m1_size", "M1 size (trained here)"),
    ("m1_context", "M1 context (max window bytes)"),
    ("m1_tokens", "M1 training bytes"),
    ("spm_vocab_size", "SentencePiece vocabulary"),
    ("device", "device"),
    ("threads", "torch threads (M1 training)"),
)


def settings_rows(results: dict[str, Any]) -> list[list[str]]:
    """What the study ran with, as (setting, value) rows: a reader can rerun it from the report."""
    settings = results.get("settings", {})
    rows = []
    for key, label in _SETTINGS_SHOWN:
        if key not in settings or settings[key] is None:
            continue
        value = settings[key]
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        rows.append([label, str(value)])
    return rows


def render_plot(results: dict[str, Any]) -> bytes:
    """Bits/byte against FLOPs/byte (log x), one line per scheme across M2 sizes, uniform bounds dotted."""
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    labels = list(dict.fromkeys(r["label"] for r in results["rows"]))
    for i, label in enumerate(labels):
        pts = sorted(
            (
                r["flops_per_byte"],
                r["bits_per_byte"],
                r["bits_per_byte_std"],
                r["name"],
                r["uniform_bits_per_byte"],
            )
            for r in results["rows"]
            if r["label"] == label
        )
        color = f"C{i % 10}"
        xs, ys, sds = [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]
        ax.errorbar(xs, ys, yerr=sds, marker="o", color=color, label=pts[0][3], capsize=3)
        ax.hlines(pts[0][4], min(xs) * 0.9, max(xs) * 1.1, colors=color, linestyles=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("inference FLOPs/byte (2N/ratio + 2N_M1)")
    ax.set_ylabel("held-out bits/byte")
    ax.set_title("M2 over each tokenization (dotted: uniform bound log2(v)/ratio)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def sample_bytes_per_step(sample: dict[str, Any]) -> str:
    """A sample's decoded bytes per step, or ``n/a`` when its ids do not decode: a stream scheme's
    sample (GZip, StaticAC, AC) is not a valid stream unless M2 learned the stream format, so there
    are no bytes to count (the scheme's expected bytes/step is its compression ratio)."""
    bps = sample.get("bytes_per_step")
    return "n/a" if sample.get("text") is None or bps is None else f"{bps:.2f}"


def write_report(results: dict[str, Any], folder: Path) -> None:
    from compresslm.data.writers import atomic_output
    from compresslm.evaluate.html import Figure, Section, Table, write_html
    from compresslm.evaluate.plots import save_png

    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "results.json", results, force=True)
    png = render_plot(results)
    save_png(folder / "bits_per_byte_vs_flops.png", png)
    notes = findings(results)
    settings_md = _markdown(("setting", "value"), settings_rows(results))
    md = ["# Tokenization study", "", markdown_table(results), "", *[f"- {n}" for n in notes], ""]
    md += ["## Settings", "", settings_md, ""]
    samples = results.get("samples", {})
    if samples:
        md += ['## Samples (prompt "def ")', ""]
        for label, s in samples.items():
            text = f"does not decode ({s['error']})" if s["text"] is None else repr(s["text"][:120])
            md.append(
                f"- {label}: {sample_bytes_per_step(s)} bytes/step, {s['steps_per_second']:.1f} steps/s, "
                f"decode {s['decode_seconds'] * 1000:.0f} ms: {text}"
            )
    with atomic_output(folder / "report.md", force=True) as f:
        f.write("\n".join(md) + "\n")
    sample_rows = [
        [
            label,
            sample_bytes_per_step(s),
            f"{s['steps_per_second']:.1f}",
            f"{s['decode_seconds'] * 1000:.0f}",
            f"(does not decode: {s['error']})" if s["text"] is None else s["text"][:80],
        ]
        for label, s in samples.items()
    ]
    sections = [
        Section(
            "Results",
            tables=[
                Table(
                    QUALITY_HEADERS, table_rows(results), caption="held-out bits/byte (mean ± sd over seeds)"
                ),
                Table(COST_HEADERS, cost_rows(results), caption="costs: compression, FLOPs, wall time"),
            ],
            figures=[Figure(png, "bits/byte against FLOPs/byte")],
            notes=notes,
        ),
        Section("Settings", tables=[Table(("setting", "value"), settings_rows(results))]),
        Section(
            "Generation",
            tables=[Table(("scheme", "bytes/step", "steps/s", "decode ms", "sample"), sample_rows)],
        ),
    ]
    write_html(folder / "index.html", "Tokenization study", sections, force=True)


def findings(results: dict[str, Any]) -> list[str]:
    """Plain-language checks of the paper's claims on these results."""
    rows = results["rows"]
    notes = []
    for r in rows:
        gap = r["uniform_bits_per_byte"] - r["bits_per_byte"]
        if gap < 0.02:
            notes.append(
                f"{r['name']} ({r['size']}): {r['bits_per_byte']:.3f} bits/byte, at the uniform bound "
                f"{r['uniform_bits_per_byte']:.3f} ({-gap:+.3f}): learned nothing"
            )
        elif r["bits_per_byte"] > r["unigram_bits_per_byte"]:
            notes.append(
                f"{r['name']} ({r['size']}): {gap:.3f} bits/byte below the uniform bound but "
                f"{r['bits_per_byte'] - r['unigram_bits_per_byte']:.3f} above the unigram bound "
                f"{r['unigram_bits_per_byte']:.3f}: not even the id frequencies are learned yet (undertrained)"
            )
    for size in dict.fromkeys(r["size"] for r in rows):
        here = {r["label"]: r for r in rows if r["size"] == size}
        eq, by_ = here.get("eqinfo16-65k"), here.get("bytes")
        sp = next((r for label, r in here.items() if label == "spm" or label.startswith("spm-")), None)
        if eq and sp:
            notes.append(
                f"{size}: EqualInfoAC[b=16, v=65k] makes {eq['bytes_per_step']:.2f} bytes per generation "
                f"step, {sp['name']} {sp['bytes_per_step']:.2f} "
                f"({100 * (1 - sp['bytes_per_step'] / eq['bytes_per_step']):+.0f}% fewer steps)"
            )
        if eq and by_:
            better = eq["bits_per_byte"] < by_["bits_per_byte"]
            notes.append(
                f"{size}: EqualInfoAC[b=16, v=65k] {eq['bits_per_byte']:.3f} vs Bytes "
                f"{by_['bits_per_byte']:.3f} bits/byte ({'better' if better else 'worse'}) at "
                f"{eq['flops_per_byte'] / by_['flops_per_byte']:.2f}x the FLOPs/byte"
            )
    m1 = results.get("m1_params_non_embedding") or 0
    if m1:
        notes.append(
            f"M1 adds 2 x {m1:,} = {2 * m1:,} FLOPs/byte to AC and EqualInfoAC; the paper's M1 (3M) is 8x "
            "smaller than its smallest M2, so compare FLOPs/byte only where M2 is large next to M1"
        )
    return notes


def parse_list(text: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ConfigError(f"empty list {text!r}")
    return items


#: `make demo` step 3: the study at demo scale (about 5 minutes on 2 loaded CPU cores; M2's time is
#: bounded by the 65,538-way softmax of EqualInfoAC[16, 65k]).
#: M1 and M2 are tiny, the corpus a 300 kB prefix of the built-in mixture; the schemes show the
#: paper's message (AC, StaticAC and GZip stay at the uniform bound, EqualInfoAC is learnable and
#: EqualInfoAC[16, 65k] beats Bytes); benchmarks/tokenization.py runs the full study (b = 32 too).
DEMO_CORPUS = "builtin:mixture:3000"
DEMO_LIMIT_BYTES = 300_000
DEMO_SCHEMES = ("bytes", "spm", "gzip", "static-ac", "ac", "eqinfo16-256", "eqinfo16-65k")


def demo_settings(
    out_dir: str | Path, *, force: bool = False, workers: int | None = None
) -> TokenizationStudySettings:
    return TokenizationStudySettings(
        corpus=[DEMO_CORPUS],
        schemes=list(DEMO_SCHEMES),
        sizes=["tiny"],
        seeds=[0],
        m1_size="tiny",
        m1_context=64,
        m1_tokens=600_000,
        limit_bytes=DEMO_LIMIT_BYTES,
        val_fraction=0.1,
        spm_vocab_size=2048,
        train_tokens=48_000,
        seq_len=128,
        batch_size=4,  # 94 optimizer steps rather than 23: the same compute, far more learning
        lr=3e-3,
        eval_points=1,  # the demo prints the final evaluation only; curve points cost M2 forwards
        workers=workers,
        # One torch thread: a tiny model's matmuls gain little from a second thread, and on a busy
        # 2-core machine two threads made M1's training 12x slower (50 s against 4.3 s, 100k bytes).
        threads=1,
        device="cpu",
        out=str(Path(out_dir) / "tokenization"),
        force=force,
        generate_steps=24,
    )
