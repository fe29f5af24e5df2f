"""The selection study (docs/design.md#the-selection-study): does data selected by ZIP-FIT train faster than DSIR, D4 or
random selections at the same token budget?

For each method and budget: select from the source pool against the target set, fine-tune the same
base model on each selection for the same number of tokens (several seeds), record the test-set
cross-entropy along the way, and report the lowest loss, the tokens needed to reach it, "X% faster
to lowest loss" against every other method, selection wall time and precision@k where the pool has
domain labels. Outputs under ``out/``: ``report/results.json`` (every number and curve),
``report/index.html`` (self-contained), ``report/loss_curves_<budget>.png``,
``report/scores_<method>.png`` and, on request, ``selections/<method>@<budget>.jsonl``.

Choices that a reader of the numbers must know (also written into the report):

* **Units.** With the byte-level base model, budgets and training tokens are UTF-8 bytes and the
  selection uses ``budget_bytes``, so the selection budget and the training tokens agree. With a
  Hugging Face base model they are that model's tokenizer's tokens (``budget_tokens`` counted with
  its ``tokenizer.json``).
* **Budgets as prefixes.** Every method ranks the pool once (at the largest budget); a smaller
  budget takes the best-ranked documents while they fit and cuts the overflowing one to the
  remainder, as the paper's scripts do. This equals running the selection at that budget (the
  budget selector stops at the first overflow) and costs one scoring pass per method.
* **Seeds.** Selection runs once per method with ``selection_seed`` (DSIR's Gumbel noise, D4's
  k-means, random); the study's seeds vary the fine-tuning (batch order). So the spread is the
  training noise on a fixed selection; a random baseline's selection noise is not in it.
* **Fine-tuning** as in :mod:`compresslm.experiments.finetune`: every run trains for exactly the
  budget, evaluating the test set before the first step and ``eval_points`` times after.
* **Default setting** mirrors the paper: HumanEval's first 82 problems are the target and its last
  82 the test set ("{prompt}\\n{canonical_solution}"), the source is the built-in mixed pool.
"""

from __future__ import annotations

import platform
import statistics
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compresslm.errors import ConfigError, DataError
from compresslm.evaluate.curves import LossCurve, curve_summary, faster_summary
from compresslm.experiments.base_model import (
    BaseModel,
    PretrainSettings,
    load_base_model,
    pretrain_base_model,
)
from compresslm.experiments.finetune import FinetuneSettings, RunResult, RunSpec, default_jobs, run_all
from compresslm.experiments.selection_report import slug, write_report
from compresslm.select.pool import ReadOptions

DEFAULT_METHODS = ("zipfit", "zipfit:lz4+nocontrast", "zipfit:gzip9", "dsir", "d4", "random", "compel")
BASELINE_NAMES = ("dsir", "d4", "random", "compel")  # method names (before ":") that count as baselines
HUMANEVAL_TARGET = "builtin:humaneval-target"
HUMANEVAL_TEST = "builtin:humaneval-test"
RESULTS_VERSION = 1


@dataclass
class StudyConfig:
    """Everything that determines a selection study's results."""

    out: str
    targets: list[str] = field(default_factory=lambda: [HUMANEVAL_TARGET])
    test: list[str] | None = field(default_factory=lambda: [HUMANEVAL_TEST])  # None: second half of targets
    sources: list[str] = field(default_factory=lambda: ["builtin:pool"])
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    budgets: list[int] = field(default_factory=lambda: [200_000])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    read_options: ReadOptions = field(default_factory=ReadOptions)  # for the sources
    target_options: ReadOptions = field(default_factory=ReadOptions)  # for the targets and test set
    domain: str | None = "python"  # precision@k of this domain when the pool is labelled
    selection_seed: int = 0
    selection_workers: int | None = None  # scoring processes (None: all cores)
    base_model: str | None = None  # path; None: pretrain (or reuse) the default base model
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    finetune_workers: int | None = None  # None: all cores on a CPU (one thread per run)
    cache_dir: str | None = None
    keep_selections: bool = False
    force: bool = False
    #: Target-set size ablation: for each n (0 = every target) and each seed, select with
    #: ``ablation_method`` against a seeded sample of n targets and fine-tune once on the result.
    target_sizes: list[int] | None = None
    ablation_method: str = "zipfit"

    def validate(self) -> None:
        if not self.methods:
            raise ConfigError("--methods: give at least one selection method")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"--methods lists a method twice: {', '.join(self.methods)}")
        if not self.budgets or any(b <= 0 for b in self.budgets):
            raise ConfigError("--budgets: give one or more positive budgets")
        if len(set(self.budgets)) != len(self.budgets):
            raise ConfigError("--budgets lists a budget twice")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("--seeds: give one or more distinct seeds")
        if not self.targets or not self.sources:
            raise ConfigError("give a target set (--target) and at least one source (--source)")
        smallest = min(self.budgets)
        if self.target_sizes is not None and (not self.target_sizes or any(n < 0 for n in self.target_sizes)):
            raise ConfigError("--target-sizes: give counts like 1,4,16,64,all")
        if smallest < self.finetune.tokens_per_step:
            raise ConfigError(
                f"budget {smallest:,} is smaller than one training step "
                f"({self.finetune.batch_size} x {self.finetune.seq_len} tokens)"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["read_options"] = asdict(self.read_options)
        d["target_options"] = asdict(self.target_options)
        return d


@dataclass
class MethodSelection:
    """One method's ranked selection at the largest budget (smaller budgets are prefixes)."""

    spec: str
    describe: dict[str, Any]
    seconds: dict[str, float]
    texts: list[str]
    sizes: list[int]  # in budget units
    domains: list[str | None]
    scores: list[float]
    score_samples: dict[str, list[float]]
    accounting: dict[str, Any]


def format_budget(n: int) -> str:
    """200000 -> "200k", 1500000 -> "1.5M" (labels and file names)."""
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= div and n % (div // 10) == 0:
            return f"{n / div:g}{suffix}"
    return str(n)


def parse_budget(text: str) -> int:
    """ "200k" -> 200000, "1.5M" -> 1500000, "5000" -> 5000."""
    t = text.strip().lower().replace("_", "").replace(",", "")
    mult = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(t[-1:], 1)
    num = t[:-1] if mult > 1 else t
    try:
        value = float(num)
    except ValueError:
        raise ConfigError(f"bad budget {text!r} (expected e.g. 200k, 1.5M, 50000)") from None
    if value <= 0 or value * mult != int(value * mult):
        raise ConfigError(f"bad budget {text!r}: must be a positive whole number of tokens")
    return int(value * mult)


# -- data ---------------------------------------------------------------------------------------------


def load_target_and_test(config: StudyConfig) -> tuple[list[str], list[str]]:
    """Target texts (for selection) and test texts (for the loss). Without a test set the targets
    are split in halves in file order: first half target, second half test (the paper's HumanEval
    protocol)."""
    from compresslm.select.pipeline import load_targets

    targets = load_targets(config.targets, config.target_options)
    if config.test is None:
        if len(targets) < 2:
            raise DataError("the target set needs at least 2 documents to split into target and test halves")
        half = len(targets) // 2
        return targets[:half], targets[half:]
    test = load_targets(config.test, config.target_options)
    overlap = set(targets) & set(test)
    if overlap:
        raise DataError(
            f"{len(overlap)} test documents also appear in the target set; the test must be held out"
        )
    return targets, test


def budget_counter(base: BaseModel) -> Any:
    """Counts texts in the base model's unit: bytes, or tokens of its tokenizer.json."""
    from compresslm.select.tokens import get_token_counter

    if base.unit == "bytes":
        return get_token_counter(None, unit="bytes")
    if base.tokenizer is None:
        raise ConfigError(
            f"--base-model {base.source}: no tokenizer.json beside the model to count token budgets"
        )
    return get_token_counter(base.tokenizer)


def select_once(
    spec: str,
    targets: Sequence[str],
    config: StudyConfig,
    base: BaseModel,
    budget: int,
    *,
    seed: int | None = None,
    **options: Any,
) -> MethodSelection:
    """Run ``spec`` at ``budget`` (the largest) through the shared pipeline; keep the ranked texts.

    ``seed`` overrides ``config.selection_seed``; ``options`` go to the method (e.g. max_targets)."""
    from compresslm.select.methods import make_method
    from compresslm.select.pipeline import SelectionSpec, run_selection

    method = make_method(
        spec,
        seed=config.selection_seed if seed is None else seed,
        workers=config.selection_workers,
        **options,
    )
    if base.unit == "bytes":
        sel = SelectionSpec(budget_bytes=budget, truncate_last=True)
    else:
        sel = SelectionSpec(budget_tokens=budget, tokenizer=base.tokenizer, truncate_last=True)
    result = run_selection(method, targets, config.sources, sel, read_options=config.read_options)
    return MethodSelection(
        spec=spec,
        describe=result.method_info,
        seconds=result.seconds,
        texts=[s.text for s in result.selected],
        sizes=[s.size for s in result.selected],
        domains=[s.domain for s in result.selected],
        scores=[s.score for s in result.selected],
        score_samples=result.score_samples,
        accounting=result.accounting,
    )


def budget_prefix(
    selection: MethodSelection, budget: int, counter: Any
) -> tuple[list[str], list[str | None]]:
    """The best-ranked documents while they fit in ``budget``, the overflowing one cut to the rest
    (:func:`compresslm.select.topk.cut_to_budget`), with their domains."""
    from compresslm.select.topk import cut_to_budget

    texts = cut_to_budget(selection.texts, budget, counter, sizes=selection.sizes)
    return texts, list(selection.domains[: len(texts)])


def precision(domains: Sequence[str | None], domain: str | None) -> float | None:
    """Share of ``domain`` among the selected documents; None without labels."""
    if domain is None or not domains or all(d is None for d in domains):
        return None
    return sum(d == domain for d in domains) / len(domains)


# -- the study ----------------------------------------------------------------------------------------


def resolve_base_model(
    path: str | None,
    pretrain: PretrainSettings,
    *,
    cache_dir: str | None,
    device: str,
    log: Callable[[str], None],
) -> BaseModel:
    """The model at ``path``, or the default base model for ``pretrain`` (cached, trained if new)."""
    if path is not None:
        base = load_base_model(path)
        log(f"base model: {base.kind} from {base.source} ({base.unit})")
        return base
    return pretrain_base_model(pretrain, cache_dir=cache_dir, device=device, threads=None, log=log)


def _output_paths(config: StudyConfig) -> list[str]:
    report = Path(config.out) / "report"
    paths = [report / "results.json", report / "index.html"]
    paths += [report / f"loss_curves_{format_budget(b)}.png" for b in config.budgets]
    paths += [report / f"scores_{slug(m)}.png" for m in config.methods]
    if config.keep_selections:
        paths += [
            Path(config.out) / "selections" / f"{slug(m)}@{format_budget(b)}.jsonl"
            for m in config.methods
            for b in config.budgets
        ]
    return [str(p) for p in paths]


def run_selection_study(config: StudyConfig, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole study and write its report; returns the ``results.json`` content.

    With ``finetune_workers != 1`` the runs go to spawned processes, which re-import the calling
    script: call this from under ``if __name__ == "__main__":`` (as with any multiprocessing code).
    """
    from compresslm.data.writers import check_outputs_free

    config.validate()
    check_outputs_free(_output_paths(config), config.force)
    t_start = time.perf_counter()
    base = resolve_base_model(
        config.base_model, config.pretrain, cache_dir=config.cache_dir, device=config.finetune.device, log=log
    )
    if config.finetune.seq_len > base.max_seq_len:
        raise ConfigError(
            f"fine-tuning seq_len {config.finetune.seq_len} exceeds the base model's "
            f"max_seq_len {base.max_seq_len}"
        )
    targets, test_texts = load_target_and_test(config)
    test = base.encode(test_texts)
    log(
        f"targets: {len(targets)} documents; test set: {len(test_texts)} documents, {len(test):,} {base.unit}"
    )

    counter = budget_counter(base)
    largest = max(config.budgets)
    selections: dict[str, MethodSelection] = {}
    for spec in config.methods:
        sel = select_once(spec, targets, config, base, largest)
        selections[spec] = sel
        p = precision(sel.domains, config.domain)
        log(
            f"select {spec}: {len(sel.texts):,} documents in {sel.seconds.get('total', 0):.1f} s"
            + (f", {config.domain} share {p:.3f}" if p is not None else "")
        )

    specs: list[RunSpec] = []
    data: dict[tuple[str, int], dict[str, Any]] = {}
    for budget in config.budgets:
        for spec in config.methods:
            texts, domains = budget_prefix(selections[spec], budget, counter)
            if not texts:
                raise DataError(f"{spec} selected nothing within the budget {budget:,}")
            stream = base.encode(texts)
            data[(spec, budget)] = {
                "documents": len(texts),
                "units": int(sum(counter.count_many(texts))),
                "stream_tokens": int(len(stream)),
                "precision": precision(domains, config.domain),
            }
            specs += [RunSpec(f"{spec}@{budget}", seed, stream, budget) for seed in config.seeds]
            if config.keep_selections:
                _write_selection(config, spec, budget, texts, domains)

    ablation = _ablation_selections(config, targets, base, largest, counter, specs, log)

    workers = config.finetune_workers or default_jobs(config.finetune, len(specs))
    log(
        f"fine-tuning: {len(specs)} runs ({len(config.methods)} methods x {len(config.budgets)} budgets x "
        f"{len(config.seeds)} seeds), {workers} at a time"
    )

    def on_run(r: RunResult) -> None:
        log(
            f"  {r.key} seed {r.seed}: lowest {r.curve.lowest:.4f} at {r.curve.tokens_to_lowest:,} "
            f"(final {r.curve.final:.4f}, {r.elapsed_s:.0f} s)"
        )

    runs = run_all(base, specs, test, config.finetune, workers=workers, log=on_run)
    results = build_results(config, base, targets, test_texts, len(test), selections, data, runs)
    if ablation:
        results["target_sizes"] = ablation_results(config, ablation, runs)
    results["seconds"] = time.perf_counter() - t_start
    write_report(Path(config.out) / "report", results, selections, force=config.force)
    return results


def target_size_label(n: int) -> str:
    """0 -> "all" (every target), else the count."""
    return "all" if n == 0 else str(n)


def sample_target_set(targets: Sequence[str], n: int, seed: int) -> list[str]:
    """A seeded sample of ``n`` targets, in target order (every target for ``n = 0`` or more)."""
    import random

    if n == 0 or n >= len(targets):
        return list(targets)
    keep = sorted(random.Random(f"target-size:{n}:{seed}").sample(range(len(targets)), n))
    return [targets[i] for i in keep]


def _ablation_selections(
    config: StudyConfig,
    targets: Sequence[str],
    base: BaseModel,
    budget: int,
    counter: Any,
    specs: list[RunSpec],
    log: Callable[[str], None],
) -> dict[tuple[int, int], dict[str, Any]]:
    """Selections of the target-size ablation; appends one fine-tuning run per (n, seed) to ``specs``.

    The method scores every target of the sample (``max_targets=0``) so n is the number of targets
    it sees; the seed varies both the target sample and the method's own sampling."""
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for n in config.target_sizes or []:
        for seed in config.seeds:
            subset = sample_target_set(targets, n, seed)
            sel = select_once(config.ablation_method, subset, config, base, budget, seed=seed, max_targets=0)
            texts, domains = budget_prefix(sel, budget, counter)
            if not texts:
                raise DataError(f"{config.ablation_method} with {len(subset)} targets selected nothing")
            key = f"targets={target_size_label(n)}@{budget}"
            specs.append(RunSpec(key, seed, base.encode(texts), budget))
            p = precision(domains, config.domain)
            out[(n, seed)] = {
                "key": key,
                "targets": len(subset),
                "precision": p,
                "documents": len(texts),
                "seconds": sel.seconds.get("total", 0.0),
            }
            log(
                f"ablation {config.ablation_method} with {len(subset)} targets (seed {seed}): "
                f"{len(texts):,} documents" + (f", {config.domain} share {p:.3f}" if p is not None else "")
            )
    return out


def ablation_results(
    config: StudyConfig, ablation: dict[tuple[int, int], dict[str, Any]], runs: Sequence[RunResult]
) -> dict[str, Any]:
    """Precision and target loss against the number of targets, per seed and mean ± std."""
    by_key = {(r.key, r.seed): r for r in runs}
    rows = []
    for n in config.target_sizes or []:
        per_seed = []
        for seed in config.seeds:
            a = ablation[(n, seed)]
            curve = by_key[(a["key"], seed)].curve
            per_seed.append(
                {
                    "seed": seed,
                    "targets": a["targets"],
                    "precision": a["precision"],
                    "lowest": curve.lowest,
                    "final": curve.final,
                    "tokens_to_lowest": curve.tokens_to_lowest,
                    "selection_seconds": a["seconds"],
                }
            )
        rows.append(
            {
                "n": target_size_label(n),
                "targets": per_seed[0]["targets"],
                "precision": _mean_std([r["precision"] for r in per_seed]),
                "lowest": _mean_std([r["lowest"] for r in per_seed]),
                "per_seed": per_seed,
            }
        )
    return {"method": config.ablation_method, "budget": max(config.budgets), "rows": rows}


def _mean_std(values: Sequence[float | None]) -> dict[str, float] | None:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "n": len(vals),
    }


def _write_selection(
    config: StudyConfig, spec: str, budget: int, texts: list[str], domains: list[str | None]
) -> None:
    from compresslm.data.writers import write_records

    path = Path(config.out) / "selections" / f"{slug(spec)}@{format_budget(budget)}.jsonl"
    rows = ({"text": t, "domain": d, "rank": i} for i, (t, d) in enumerate(zip(texts, domains, strict=True)))
    write_records(path, rows, force=config.force)


def build_results(
    config: StudyConfig,
    base: BaseModel,
    targets: Sequence[str],
    test_texts: Sequence[str],
    test_tokens: int,
    selections: dict[str, MethodSelection],
    data: dict[tuple[str, int], dict[str, Any]],
    runs: Sequence[RunResult],
) -> dict[str, Any]:
    """The ``results.json`` content: settings, per-budget per-method numbers, curves, comparisons."""
    import torch

    by_key: dict[str, list[RunResult]] = {}
    for r in runs:
        by_key.setdefault(r.key, []).append(r)
    budgets_out = []
    base_loss = runs[0].curve.losses[0] if runs else None  # every curve starts at the base model's loss
    for budget in config.budgets:
        methods: dict[str, Any] = {}
        curves: dict[str, list[LossCurve]] = {}
        for spec in config.methods:
            rs = sorted(by_key[f"{spec}@{budget}"], key=lambda r: r.seed)
            curves[spec] = [r.curve for r in rs]
            methods[spec] = {
                "selection": {**data[(spec, budget)], "seconds": selections[spec].seconds["total"]},
                "summary": curve_summary(curves[spec]),
                "runs": [r.to_dict() for r in rs],
            }
        faster = {
            ours: {
                other: faster_summary(curves[ours], curves[other])
                for other in config.methods
                if other != ours
            }
            for ours in config.methods
        }
        budgets_out.append(
            {"budget": budget, "label": format_budget(budget), "methods": methods, "faster": faster}
        )
    return {
        "study": "selection",
        "version": RESULTS_VERSION,
        "unit": base.unit,
        "config": config.to_dict(),
        "base_model": base.describe(),
        "base_loss": base_loss,
        "targets": {"documents": len(targets), "paths": config.targets},
        "test": {
            "documents": len(test_texts),
            "tokens": test_tokens,
            "paths": config.test if config.test is not None else "second half of the targets",
        },
        "baselines": [m for m in config.methods if m.partition(":")[0] in BASELINE_NAMES],
        "selection": {
            spec: {
                "method": s.describe,
                "seconds": s.seconds,
                "accounting": s.accounting,
                "documents_at_largest_budget": len(s.texts),
            }
            for spec, s in selections.items()
        },
        "budgets": budgets_out,
        "environment": {
            "zlib": zlib.ZLIB_RUNTIME_VERSION,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
    }


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (budget, method) with the headline numbers, for tables and the CLI."""
    rows = []
    baselines = results["baselines"]
    for b in results["budgets"]:
        for spec, m in b["methods"].items():
            s = m["summary"]
            row = {
                "budget": b["label"],
                "method": spec,
                "lowest": s["lowest"],
                "tokens_to_lowest": s["tokens_to_lowest"],
                "final": s["final"],
                "selection_s": m["selection"]["seconds"],
                "precision": m["selection"]["precision"],
                "faster": {bl: b["faster"][spec][bl] for bl in baselines if bl != spec},
            }
            rows.append(row)
    return rows
