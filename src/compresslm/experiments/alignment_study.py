"""Alignment predicts loss (the ZIP-FIT paper's §4): fine-tune on datasets of differing alignment
with the test target and correlate ZIP-FIT alignment with the resulting test loss.

Datasets: by default one per domain of the built-in pool (python, prose, c, markup, data, config,
text, email — whichever exist on this machine) plus 50/50 mixtures of Python with prose and with C,
each cut to the same token budget; or the user's own (``name=path``). For each dataset:

* **alignment** with the test set: the mean ``1 − NCD`` over (dataset document, test document)
  pairs (:func:`compresslm.select.zipfit.alignment`, dataset first, as the paper computes it against
  the test set), over all pairs or a seeded sample of ``max_pairs``;
* **loss**: the base model fine-tuned on the dataset for exactly ``budget`` tokens (several seeds,
  the protocol of :mod:`compresslm.experiments.finetune`); final and lowest test cross-entropy
  (the lowest is the base model's own loss when fine-tuning never helps, so the final loss is the
  primary fit and the lowest a secondary one).

Then a least-squares line of the final loss (the loss after fine-tuning, what the paper measured)
on alignment, its R² and a permutation p-value, and a
scatter plot. The paper found R² = 0.90 (GPT-2, 7 datasets) with the loss falling as alignment rises;
a negative slope is the expected sign.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compresslm.errors import ConfigError, DataError
from compresslm.evaluate.curves import curve_summary
from compresslm.evaluate.html import Figure, Section, Table, write_html
from compresslm.evaluate.plots import render_loss_curves, render_scatter_fit, save_png
from compresslm.evaluate.stats import linear_fit
from compresslm.experiments.base_model import PretrainSettings
from compresslm.experiments.finetune import FinetuneSettings, RunResult, RunSpec, default_jobs, run_all
from compresslm.experiments.selection_report import write_json
from compresslm.experiments.selection_study import (
    HUMANEVAL_TEST,
    budget_counter,
    format_budget,
    resolve_base_model,
)
from compresslm.select.pool import ReadOptions
from compresslm.select.topk import cut_to_budget

_log = logging.getLogger(__name__)
BUILTIN_DOMAINS = ("python", "prose", "c", "markup", "data", "config", "text", "email")
BUILTIN_MIXTURES = (("python", "prose"), ("python", "c"))
BUILTIN_POOL = "builtin:pool"


@dataclass
class DatasetSpec:
    """A named dataset: a built-in domain (``domains``: one, or several mixed in equal shares) or
    files (``paths``)."""

    name: str
    domains: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if bool(self.domains) == bool(self.paths):
            raise ConfigError(f"dataset {self.name!r}: give built-in domains or paths, not both or neither")


def parse_dataset(text: str) -> DatasetSpec:
    """``python`` / ``python+prose`` (built-in domains) or ``NAME=PATH[,PATH...]`` (files)."""
    if "=" in text:
        name, _, paths = text.partition("=")
        if not name or not paths:
            raise ConfigError(f"--dataset {text!r}: expected NAME=PATH")
        return DatasetSpec(name, paths=tuple(p for p in paths.split(",") if p))
    domains = tuple(d for d in text.split("+") if d)
    if not domains:
        raise ConfigError(f"--dataset {text!r}: empty")
    return DatasetSpec(text, domains=domains)


def default_datasets() -> list[DatasetSpec]:
    """One dataset per domain of :data:`BUILTIN_DOMAINS` that the built-in pool has on this machine
    (a stdlib without, e.g., config files has no ``config`` domain), plus the 50/50 mixtures."""
    from compresslm.data.builtin import pool_weights

    present = set(pool_weights())
    singles = [DatasetSpec(d, domains=(d,)) for d in BUILTIN_DOMAINS if d in present]
    mixes = [DatasetSpec("+".join(m), domains=m) for m in BUILTIN_MIXTURES if set(m) <= present]
    return singles + mixes


@dataclass
class AlignmentStudyConfig:
    out: str
    test: list[str] = field(default_factory=lambda: [HUMANEVAL_TEST])
    test_options: ReadOptions = field(default_factory=ReadOptions)
    datasets: list[DatasetSpec] = field(default_factory=default_datasets)
    pool: str = BUILTIN_POOL  # where built-in domain datasets come from
    read_options: ReadOptions = field(default_factory=ReadOptions)  # for file datasets
    budget: int = 100_000  # training tokens per dataset (and the dataset's size)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    compressor: str | None = None  # ZIP-FIT's default when None
    max_pairs: int | None = 20_000
    alignment_workers: int | None = None
    base_model: str | None = None
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    finetune_workers: int | None = None
    cache_dir: str | None = None
    force: bool = False

    def validate(self) -> None:
        if len(self.datasets) < 3:
            raise ConfigError(
                f"the alignment study needs at least 3 datasets for a fit, got {len(self.datasets)}"
            )
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ConfigError(f"dataset names must be unique: {', '.join(names)}")
        if self.budget < self.finetune.tokens_per_step:
            raise ConfigError(f"budget {self.budget:,} is smaller than one training step")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("--seeds: give one or more distinct seeds")


def _domain_texts(pool: str, domains: Sequence[str], budget: int, size_of: Callable[[str], int]) -> list[str]:
    """Documents of ``domains`` in pool order, taken round-robin (equal shares) until ``budget``."""
    from compresslm.data.readers import describe_rejections, read_records
    from compresslm.data.records import Rejection

    per_domain: dict[str, list[str]] = {d: [] for d in domains}
    filled = {d: 0 for d in domains}
    share = budget / len(domains)
    rejected: list[Rejection] = []
    for rec in read_records([pool]):
        if isinstance(rec, Rejection):
            rejected.append(rec)
        elif rec.domain in per_domain and filled[rec.domain] < share:
            per_domain[rec.domain].append(rec.text)
            filled[rec.domain] += size_of(rec.text)
            if all(filled[d] >= share for d in domains):
                break
    if rejected:
        _log.warning("%s: %s", pool, describe_rejections(rejected))
    missing = [d for d in domains if not per_domain[d]]
    if missing:
        raise DataError(f"{pool} has no documents of domain {', '.join(missing)}")
    out = []
    for group in zip(*[iter(per_domain[d]) for d in domains], strict=False):  # interleave
        out.extend(group)
    for d in domains:  # the leftovers of longer lists
        out.extend(per_domain[d][min(len(per_domain[x]) for x in domains) :])
    return out


def load_dataset(spec: DatasetSpec, config: AlignmentStudyConfig, size_of: Callable[[str], int]) -> list[str]:

    if spec.domains:
        return _domain_texts(config.pool, spec.domains, config.budget, size_of)
    records = config.read_options.accepted(list(spec.paths), what=f"dataset {spec.name}")
    texts = [r.text for r in records]
    if not texts:
        raise DataError(f"dataset {spec.name}: no usable documents in {', '.join(spec.paths)}")
    return texts


def run_alignment_study(
    config: AlignmentStudyConfig, *, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the study and write ``out/report/{results.json,index.html,alignment_vs_loss.png,...}``."""
    from compresslm.data.writers import check_outputs_free
    from compresslm.select.pipeline import load_targets
    from compresslm.select.zipfit import DEFAULT_COMPRESSOR, alignment

    config.validate()
    report = Path(config.out) / "report"
    check_outputs_free(
        [report / n for n in ("results.json", "index.html", "alignment_vs_loss.png", "loss_curves.png")],
        config.force,
    )
    t0 = time.perf_counter()
    base = resolve_base_model(
        config.base_model, config.pretrain, cache_dir=config.cache_dir, device=config.finetune.device, log=log
    )
    counter = budget_counter(base)
    test_texts = load_targets(config.test, config.test_options)
    test = base.encode(test_texts)
    compressor = config.compressor or DEFAULT_COMPRESSOR
    log(f"test set: {len(test_texts)} documents, {len(test):,} {base.unit}; alignment with {compressor}")

    datasets: dict[str, list[str]] = {}
    aligns: dict[str, float] = {}
    align_s: dict[str, float] = {}
    specs: list[RunSpec] = []
    for ds in config.datasets:
        texts = cut_to_budget(load_dataset(ds, config, counter), config.budget, counter)
        if not texts:
            raise DataError(f"dataset {ds.name}: nothing fits in the budget")
        t = time.perf_counter()
        aligns[ds.name] = alignment(
            texts,
            test_texts,
            compressor=compressor,
            max_pairs=config.max_pairs,
            workers=config.alignment_workers,
        )
        align_s[ds.name] = time.perf_counter() - t
        datasets[ds.name] = texts
        log(f"dataset {ds.name}: {len(texts):,} documents, alignment {aligns[ds.name]:.4f}")
        stream = base.encode(texts)
        specs += [RunSpec(ds.name, seed, stream, config.budget) for seed in config.seeds]

    workers = config.finetune_workers or default_jobs(config.finetune, len(specs))
    log(f"fine-tuning: {len(specs)} runs, {workers} at a time")

    def on_run(r: RunResult) -> None:
        log(f"  {r.key} seed {r.seed}: lowest {r.curve.lowest:.4f}, final {r.curve.final:.4f}")

    runs = run_all(base, specs, test, config.finetune, workers=workers, log=on_run)
    by_name: dict[str, list[RunResult]] = {}
    for r in runs:
        by_name.setdefault(r.key, []).append(r)

    names = [d.name for d in config.datasets]
    x = [aligns[n] for n in names]
    rows = {}
    for n in names:
        rows[n] = {
            "alignment": aligns[n],
            "alignment_s": align_s[n],
            "documents": len(datasets[n]),
            "units": int(sum(counter.count_many(datasets[n]))),
            "summary": curve_summary([r.curve for r in by_name[n]]),
            "runs": [r.to_dict() for r in sorted(by_name[n], key=lambda r: r.seed)],
        }
    fit_lowest = linear_fit(x, [rows[n]["summary"]["lowest"]["mean"] for n in names])
    fit_final = linear_fit(x, [rows[n]["summary"]["final"]["mean"] for n in names])
    results = {
        "study": "alignment",
        "version": 1,
        "config": config_dict(config),
        "unit": base.unit,
        "compressor": compressor,
        "max_pairs": config.max_pairs,
        "budget": config.budget,
        "seeds": config.seeds,
        "base_model": base.describe(),
        "base_loss": runs[0].curve.losses[0],
        "test": {"documents": len(test_texts), "tokens": int(len(test)), "paths": config.test},
        "finetune": config.finetune.to_dict(),
        "datasets": rows,
        "fit_lowest": fit_lowest.to_dict(),
        "fit_final": fit_final.to_dict(),
        "seconds": time.perf_counter() - t0,
    }
    _write_report(report, results, {n: [r.curve for r in by_name[n]] for n in names}, force=config.force)
    return results


def _write_report(folder: Path, results: dict[str, Any], curves: dict[str, Any], *, force: bool) -> None:
    unit = results["unit"]
    write_json(folder / "results.json", results, force=force)
    names = list(results["datasets"])
    x = [results["datasets"][n]["alignment"] for n in names]
    y = [results["datasets"][n]["summary"]["final"]["mean"] for n in names]
    fit = results["fit_final"]
    from compresslm.evaluate.stats import LinearFit

    scatter = render_scatter_fit(
        x,
        y,
        names,
        LinearFit(**fit),
        title=f"alignment with the test set vs test loss after fine-tuning ({unit})",
        xlabel=f"ZIP-FIT alignment ({results['compressor']})",
        ylabel=f"final test cross-entropy (nats / {unit[:-1]})",
    )
    save_png(folder / "alignment_vs_loss.png", scatter, force=force)
    lc = render_loss_curves(
        curves,
        title=f"fine-tuning on each dataset ({format_budget(results['budget'])} {unit})",
        xlabel=f"training {unit}",
        reference=results["base_loss"],
        reference_label="base model",
    )
    save_png(folder / "loss_curves.png", lc, force=force)
    rows = []
    for n in sorted(names, key=lambda k: -results["datasets"][k]["alignment"]):
        d = results["datasets"][n]
        s = d["summary"]
        rows.append(
            [
                n,
                f"{d['alignment']:.4f}",
                f"{s['lowest']['mean']:.4f} ± {s['lowest']['std']:.4f}",
                f"{s['final']['mean']:.4f} ± {s['final']['std']:.4f}",
                f"{d['documents']:,}",
            ]
        )
    fl, ff = results["fit_lowest"], results["fit_final"]
    pairs = (
        "all pairs"
        if results["max_pairs"] is None
        else f"a seeded sample of up to {results['max_pairs']:,} pairs"
    )
    sections = [
        Section(
            "Fit",
            paragraphs=[
                f"Final loss on alignment: R² = {ff['r_squared']:.3f} (r = {ff['r']:.3f}, slope "
                f"{ff['slope']:.3f}, permutation p = {ff['p_value']:.3g}, n = {ff['n']}). Lowest loss: "
                f"R² = {fl['r_squared']:.3f} (r = {fl['r']:.3f}, p = {fl['p_value']:.3g}).",
                "A negative slope means better-aligned data gives lower test loss (the paper's claim).",
            ],
            figures=[Figure(scatter, "Each point: one dataset, mean over seeds.")],
        ),
        Section(
            "Datasets",
            tables=[
                Table(
                    ["dataset", "alignment", "lowest loss", "final loss", "documents"],
                    rows,
                    f"{len(results['seeds'])} seeds, {results['budget']:,} {unit} each",
                )
            ],
            figures=[Figure(lc, "Test loss while fine-tuning.")],
        ),
        Section(
            "Setting",
            tables=[
                Table(
                    ["setting", "value"],
                    [
                        [
                            "test set",
                            f"{results['test']['documents']} documents from {', '.join(results['test']['paths'])}",
                        ],
                        [
                            "base model",
                            f"{results['base_model']['kind']} from {results['base_model']['source']}",
                        ],
                        ["base model test loss", f"{results['base_loss']:.4f}"],
                        ["alignment", f"{results['compressor']}, {pairs}"],
                        ["wall time", f"{results['seconds']:.0f} s"],
                    ],
                )
            ],
        ),
    ]
    write_html(folder / "index.html", "compresslm alignment study", sections, force=force)


def config_dict(config: AlignmentStudyConfig) -> dict[str, Any]:
    d = asdict(config)
    d["datasets"] = [asdict(x) for x in config.datasets]
    return d
