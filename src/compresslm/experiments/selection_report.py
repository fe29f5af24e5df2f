"""The selection study's ``report/``: results.json, loss-curve and score PNGs, index.html.

The PNGs are written beside ``index.html`` and also embedded in it (base64), so the page is
complete on its own and the figures are there for a README or a slide.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compresslm.evaluate.curves import LossCurve
from compresslm.evaluate.html import Figure, Section, Table, write_html
from compresslm.evaluate.plots import render_histograms, render_loss_curves, save_png


def faster_text(f: dict[str, Any]) -> str:
    """ "85.1% (seeds 80.0 ± 5.0%)", "never (3 of 3 seeds never)", ... from a faster_summary dict."""
    head = f["mean_curve"]["text"]
    seeds = len(f["per_seed"])
    parts = []
    s = f["spread"]
    if s is not None and seeds > 1:
        if s["n"] > 1:
            parts.append(
                f"seeds {100 * s['mean']:.1f} ± {100 * s['std']:.1f}%"
                + (f", {s['n']} of {seeds} defined" if s["n"] < seeds else "")
            )
        else:
            parts.append(f"1 of {seeds} seeds: {100 * s['mean']:.1f}%")
    if f["never"]:
        parts.append(f"{f['never']} of {seeds} seeds never")
    return f"{head} ({'; '.join(parts)})" if parts else head


def _join(paths: Any) -> str:
    return ", ".join(paths) if isinstance(paths, list) else str(paths)


def spread_text(s: dict[str, Any], fmt: str = ".4f", scale: float = 1.0) -> str:
    mean, std = s["mean"] * scale, s["std"] * scale
    return f"{mean:{fmt}} ± {std:{fmt}}" if s["n"] > 1 else f"{mean:{fmt}}"


def summary_table(results: dict[str, Any], budget: dict[str, Any]) -> Table:
    """method | lowest loss | tokens to lowest | final | selection s | precision | faster vs each baseline."""
    unit = results["unit"]
    domain = results["config"].get("domain")
    baselines = results["baselines"]
    headers = [
        "method",
        "lowest loss",
        f"{unit} to lowest",
        "final loss",
        "selection s",
        f"{domain} share" if domain else "precision",
    ]
    headers += [f"faster vs {b}" for b in baselines]
    rows = []
    for spec, m in budget["methods"].items():
        s = m["summary"]
        prec = m["selection"]["precision"]
        row: list[object] = [
            spec,
            spread_text(s["lowest"]),
            spread_text(s["tokens_to_lowest"], ",.0f"),
            spread_text(s["final"]),
            f"{m['selection']['seconds']:.1f}",
            "–" if prec is None else f"{prec:.3f}",
        ]
        row += ["–" if b == spec else faster_text(budget["faster"][spec][b]) for b in baselines]
        rows.append(row)
    return Table(
        headers,
        rows,
        f"budget {budget['label']} {unit}, {results['config']['seeds'].__len__()} seeds "
        f"(mean ± sample std over seeds)",
    )


def _curves(budget: dict[str, Any]) -> dict[str, list[LossCurve]]:
    return {
        spec: [LossCurve(tuple(r["curve"]["tokens"]), tuple(r["curve"]["losses"]), spec) for r in m["runs"]]
        for spec, m in budget["methods"].items()
    }


def write_report(
    folder: str | Path, results: dict[str, Any], selections: Mapping[str, Any], *, force: bool
) -> Path:
    """Write every report file into ``folder``; returns the path of index.html."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unit = results["unit"]
    write_json(folder / "results.json", results, force=force)

    sections: list[Section] = []
    for b in results["budgets"]:
        png = render_loss_curves(
            _curves(b),
            title=f"test cross-entropy while fine-tuning, budget {b['label']} {unit}",
            xlabel=f"training {unit}",
            ylabel=f"test cross-entropy (nats / {unit[:-1]})",
            reference=results["base_loss"],
            reference_label="base model",
        )
        save_png(folder / f"loss_curves_{b['label']}.png", png, force=force)
        sections.append(
            Section(
                f"Budget {b['label']} {unit}",
                tables=[summary_table(results, b)],
                figures=[
                    Figure(png, "Mean over seeds (line), lowest to highest seed (band), lowest point (dot).")
                ],
                notes=[
                    "X% faster = 1 − (tokens the method needs to reach the baseline's lowest loss) / (tokens the "
                    "baseline needs to reach it). Headline on the mean curves; per-seed values pair equal seeds. "
                    "'never': the method does not reach the baseline's lowest loss within the budget."
                ],
            )
        )

    sel_rows = []
    figures = []
    for spec, s in selections.items():
        secs = s.seconds
        params = ", ".join(f"{k}={v}" for k, v in s.describe.items() if k != "method")
        sel_rows.append(
            [
                spec,
                f"{secs.get('prepare', 0):.1f}",
                f"{secs.get('score', 0):.1f}",
                f"{secs.get('total', 0):.1f}",
                f"{len(s.texts):,}",
                params,
            ]
        )
        if s.score_samples:
            png = render_histograms(s.score_samples, title=f"{spec}: scores by domain (sample)")
            save_png(folder / f"scores_{slug(spec)}.png", png, force=force)
            figures.append(Figure(png, f"{spec}: score distribution per domain of the pool"))
    sections.append(
        Section(
            "Selection",
            paragraphs=[
                "Each method ranks the pool once; budgets are prefixes of its ranking. Seconds are wall "
                "time of that one run on this machine (prepare = fitting/embedding/background sample)."
            ],
            tables=[
                Table(["method", "prepare s", "score s", "total s", "documents", "parameters"], sel_rows)
            ],
            figures=figures,
        )
    )

    cfg = results["config"]
    ft = cfg["finetune"]
    setting = Table(
        ["setting", "value"],
        [
            [
                "targets",
                f"{results['targets']['documents']} documents from {', '.join(results['targets']['paths'])}",
            ],
            [
                "test set",
                f"{results['test']['documents']} documents ({results['test']['tokens']:,} {unit}) from "
                f"{_join(results['test']['paths'])}",
            ],
            ["sources", ", ".join(cfg["sources"])],
            [
                "base model",
                f"{results['base_model']['kind']} ({results['base_model'].get('n_params', '?'):,} "
                f"parameters) from {results['base_model']['source']}",
            ],
            [
                "base model test loss",
                f"{results['base_loss']:.4f}" if results["base_loss"] is not None else "–",
            ],
            ["unit", f"{unit} (selection budget = training {unit})"],
            [
                "fine-tuning",
                f"AdamW lr {ft['lr']}, warmup {ft['warmup_fraction']:.0%} then cosine to "
                f"{ft['min_lr_ratio']}×, batch {ft['batch_size']} × {ft['seq_len']}, clip {ft['grad_clip']}, "
                f"weight decay {ft['weight_decay']}, {ft['eval_points']} evaluations",
            ],
            ["seeds", ", ".join(map(str, cfg["seeds"])) + f" (selection seed {cfg['selection_seed']})"],
            ["environment", ", ".join(f"{k} {v}" for k, v in results["environment"].items())],
            ["wall time", f"{results.get('seconds', 0):.0f} s"],
        ],
    )
    intro = [
        "Does data selected by ZIP-FIT train faster? Each method selects from the same pool at the same "
        "budget; the same base model is fine-tuned on each selection for the same number of tokens, and "
        "the held-out test cross-entropy is measured along the way."
    ]
    protocol = [
        f"Units: {unit}. "
        + (
            "The base model is byte level, so each selection is cut to a byte budget (the "
            "selection's budget_bytes) and the model trains on that many bytes: the selection "
            "budget and the training tokens agree."
            if unit == "bytes"
            else "Budgets and training tokens are the base model's tokenizer's tokens."
        ),
        "Every run trains for exactly the budget on random blocks of its selection (about one pass; a "
        "selection smaller than the budget is repeated), from the same base weights, with the same "
        "hyper-parameters; only the data differs.",
        "Each method ranks the pool once; a budget takes the best-ranked documents while they fit and cuts "
        "the overflowing one to the remainder (the ZIP-FIT paper's protocol).",
        "Seeds vary the fine-tuning (batch order); each selection is made once with the selection seed, so "
        "the spread does not include the selection noise of random or DSIR's Gumbel sampling.",
    ]
    sections.insert(0, Section("Setting", tables=[setting], notes=protocol))
    return write_html(folder / "index.html", "compresslm selection study", sections, intro=intro, force=force)


def slug(spec: str) -> str:
    """A method spec as a file-name part: ``zipfit:lz4+contrast=16`` -> ``zipfit-lz4-contrast16``."""
    return spec.replace(":", "-").replace("+", "-").replace("=", "")


def write_json(path: str | Path, results: dict[str, Any], *, force: bool) -> None:
    """A study's ``results.json``: strict JSON (no NaN), so any JSON reader can load it."""
    from compresslm.data.jsonfile import write_json as write

    write(path, results, force=force, indent=1, allow_nan=False)
