"""The selection and alignment studies end to end at toy scale, and their building blocks.

A tiny randomly initialised byte-level transformer stands in for the base model (saved as a
checkpoint so the studies load it by path, as a user's model would be), on small synthetic Python
and prose files; everything runs in a few seconds per study.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from compresslm.cli import main
from compresslm.errors import ConfigError, DataError
from compresslm.experiments.alignment_study import (
    AlignmentStudyConfig,
    DatasetSpec,
    parse_dataset,
    run_alignment_study,
)
from compresslm.experiments.base_model import PretrainSettings, load_base_model, pretrain_base_model
from compresslm.experiments.finetune import FinetuneSettings, RunSpec, run_all, run_one
from compresslm.experiments.selection_study import (
    MethodSelection,
    StudyConfig,
    budget_prefix,
    format_budget,
    load_target_and_test,
    parse_budget,
    precision,
    sample_target_set,
)
from compresslm.models import Transformer, config_for_size, save_model
from compresslm.select.tokens import get_token_counter
from compresslm.select.topk import cut_to_budget

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEQ = 32
TOY_FT = FinetuneSettings(lr=3e-3, batch_size=2, seq_len=SEQ, eval_points=2, threads=1)

VERBS = ["add", "scale", "merge", "split", "count", "filter", "join", "parse", "clamp", "shift"]
WORDS = [
    "the",
    "river",
    "ran",
    "past",
    "old",
    "mill",
    "where",
    "children",
    "played",
    "in",
    "summer",
    "and",
    "farmers",
    "sold",
    "apples",
    "bread",
    "cheese",
    "honey",
    "at",
    "market",
    "every",
    "morning",
]


def python_doc(i: int) -> str:
    v = VERBS[i % len(VERBS)]
    return (
        f"def {v}_{i}(items, factor={i % 7}):\n    result = []\n    for item in items:\n"
        f"        if item > {i}:\n            result.append(item * factor)\n    return result\n"
    )


def prose_doc(i: int) -> str:
    rng = np.random.default_rng(i)
    return " ".join(WORDS[j] for j in rng.integers(0, len(WORDS), 30)).capitalize() + "."


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("toy")
    model = Transformer(config_for_size("tiny", vocab_size=256, max_seq_len=SEQ), seed=0)
    save_model(root / "base", model)
    pool = [{"text": python_doc(i), "domain": "python"} for i in range(40)]
    pool += [{"text": prose_doc(i), "domain": "prose"} for i in range(40)]
    pool = [pool[i] for i in np.random.default_rng(0).permutation(len(pool))]
    return {
        "base": str(root / "base"),
        "pool": write_jsonl(root / "pool.jsonl", pool),
        "target": write_jsonl(root / "target.jsonl", [{"text": python_doc(100 + i)} for i in range(8)]),
        "test": write_jsonl(root / "test.jsonl", [{"text": python_doc(200 + i)} for i in range(8)]),
        "prose": write_jsonl(root / "prose.jsonl", [{"text": prose_doc(300 + i)} for i in range(20)]),
        "python": write_jsonl(root / "python.jsonl", [{"text": python_doc(400 + i)} for i in range(20)]),
    }


# -- building blocks ----------------------------------------------------------------------------------


def test_budget_parsing_and_labels() -> None:
    assert parse_budget("200k") == 200_000
    assert parse_budget("1.5M") == 1_500_000
    assert parse_budget("5000") == 5000
    for bad in ("", "abc", "-5k", "1.2345k"):
        with pytest.raises(ConfigError):
            parse_budget(bad)
    assert format_budget(200_000) == "200k"
    assert format_budget(1_500_000) == "1.5M"
    assert format_budget(1234) == "1234"


def test_budget_prefix_cuts_the_overflowing_document() -> None:
    sel = MethodSelection(
        "m",
        {},
        {"total": 0.0},
        texts=["aaaa", "bbbbbb", "cc"],
        sizes=[4, 6, 2],
        domains=["x", "y", "x"],
        scores=[3.0, 2.0, 1.0],
        score_samples={},
        accounting={},
    )
    counter = get_token_counter(None, unit="bytes")
    assert budget_prefix(sel, 10, counter) == (["aaaa", "bbbbbb"], ["x", "y"])
    assert budget_prefix(sel, 7, counter) == (["aaaa", "bbb"], ["x", "y"])  # cut to the remainder
    assert budget_prefix(sel, 4, counter) == (["aaaa"], ["x"])
    assert budget_prefix(sel, 100, counter)[0] == ["aaaa", "bbbbbb", "cc"]
    assert precision(["x", "y", "x"], "x") == pytest.approx(2 / 3)
    assert precision([None, None], "x") is None


def test_target_split_into_halves_and_overlap_check(toy: dict[str, str]) -> None:
    targets, test = load_target_and_test(StudyConfig(out="unused", targets=[toy["target"]], test=None))
    assert len(targets) == 4 and len(test) == 4 and not set(targets) & set(test)
    with pytest.raises(DataError):
        load_target_and_test(StudyConfig(out="unused", targets=[toy["target"]], test=[toy["target"]]))


def test_finetuning_is_deterministic_per_seed(toy: dict[str, str]) -> None:
    base = load_base_model(toy["base"])
    train = base.encode([python_doc(i) for i in range(20)])
    test = base.encode([python_doc(200 + i) for i in range(4)])
    a = run_one(base, RunSpec("k", 0, train, 512), test, TOY_FT)
    b = run_one(base, RunSpec("k", 0, train, 512), test, TOY_FT)
    c = run_one(base, RunSpec("k", 1, train, 512), test, TOY_FT)
    assert a.curve == b.curve
    assert a.curve.losses != c.curve.losses
    assert a.curve.tokens == c.curve.tokens  # same evaluation grid for every seed
    assert a.curve.tokens[0] == 0 and a.curve.losses[0] == c.curve.losses[0]  # starts at the base model
    assert a.curve.lowest < a.curve.losses[0]  # it learns
    assert a.tokens == 512


@pytest.mark.slow  # two spawned workers import torch
def test_parallel_runs_come_back_in_order(toy: dict[str, str]) -> None:
    """run_all over worker processes (the one worker pool) gives the sequential results, in order."""
    base = load_base_model(toy["base"])
    train = base.encode([python_doc(i) for i in range(20)])
    test = base.encode([python_doc(200 + i) for i in range(4)])
    specs = [RunSpec("k", seed, train, 256) for seed in (1, 0)]
    logged: list[int] = []
    parallel = run_all(base, specs, test, TOY_FT, workers=2, log=lambda r: logged.append(r.seed))
    assert logged == [1, 0]
    for spec, got in zip(specs, parallel, strict=True):
        want = run_one(base, spec, test, TOY_FT)
        assert got.seed == spec.seed
        assert got.curve.losses == pytest.approx(want.curve.losses, rel=1e-5)


def test_pretrained_base_model_is_cached(tmp_path: Path) -> None:
    # Given texts instead of builtin:mixture, so the test does not build the stdlib corpus.
    texts = [python_doc(i) if i % 2 else prose_doc(i) for i in range(60)]
    settings = PretrainSettings(size="tiny", seq_len=SEQ, tokens=1024, batch_size=4)
    messages: list[str] = []
    first = pretrain_base_model(settings, texts=texts, cache_dir=tmp_path, device="cpu", log=messages.append)
    folders = list((tmp_path / "base-models").iterdir())
    assert len(folders) == 1 and (folders[0] / "model.safetensors").is_file()
    assert not any(f.name.endswith(".tmp") for f in (tmp_path / "base-models").iterdir())
    second = pretrain_base_model(settings, texts=texts, cache_dir=tmp_path, device="cpu", log=messages.append)
    assert "cached" in messages[-1]
    for p, q in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert p.detach().cpu().equal(q)
    other = PretrainSettings(size="tiny", seq_len=SEQ, tokens=1024, batch_size=4, seed=1)
    pretrain_base_model(other, texts=texts, cache_dir=tmp_path, device="cpu")
    pretrain_base_model(settings, texts=texts[:-2], cache_dir=tmp_path, device="cpu")
    assert len(list((tmp_path / "base-models").iterdir())) == 3  # new setting or new data: new entry
    assert first.unit == "bytes" and first.encode(["ab"]).tolist() == [97, 98, 0]


# -- the selection study -----------------------------------------------------------------------------


def test_selection_study_end_to_end_via_cli(toy: dict[str, str], tmp_path: Path, capsys) -> None:
    out = tmp_path / "study"
    argv = [
        "study",
        "select",
        "--target",
        toy["target"],
        "--test",
        toy["test"],
        "--source",
        toy["pool"],
        "--domain-field",
        "domain",
        "--methods",
        "zipfit:lz4,random",
        "--budgets",
        "512,1k",
        "--seeds",
        "2",
        "--base-model",
        toy["base"],
        "--batch-size",
        "2",
        "--seq-len",
        str(SEQ),
        "--eval-points",
        "2",
        "--lr",
        "3e-3",
        "--jobs",
        "1",
        "--workers",
        "1",
        "--keep-selections",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    report = out / "report"
    results = json.loads((report / "results.json").read_text())
    assert results["unit"] == "bytes" and results["baselines"] == ["random"]
    assert [b["budget"] for b in results["budgets"]] == [512, 1000]
    for b in results["budgets"]:
        assert set(b["methods"]) == {"zipfit:lz4", "random"}
        for m in b["methods"].values():
            assert [r["seed"] for r in m["runs"]] == [0, 1]
            for r in m["runs"]:
                assert r["tokens"] == b["budget"] // (2 * SEQ) * (2 * SEQ)
                assert r["curve"]["tokens"][0] == 0 and r["curve"]["losses"][0] == results["base_loss"]
            assert m["summary"]["lowest"]["n"] == 2
            assert m["selection"]["units"] <= b["budget"]
            assert m["selection"]["seconds"] > 0
        fz = b["faster"]["zipfit:lz4"]["random"]
        assert len(fz["per_seed"]) == 2 and "text" in fz["mean_curve"]
        # ZIP-FIT against Python targets picks the Python documents; random does not
        assert b["methods"]["zipfit:lz4"]["selection"]["precision"] >= 0.8
        assert (
            b["methods"]["zipfit:lz4"]["selection"]["precision"]
            > b["methods"]["random"]["selection"]["precision"]
        )
    for name in ("loss_curves_512.png", "loss_curves_1k.png", "scores_zipfit-lz4.png", "scores_random.png"):
        assert (report / name).read_bytes().startswith(PNG_MAGIC)
    html = (report / "index.html").read_text()
    assert "zipfit:lz4" in html and "faster vs random" in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 4 and all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    assert (out / "selections" / "zipfit-lz4@1k.jsonl").is_file()
    printed = capsys.readouterr().out
    assert "zipfit:lz4" in printed and "report:" in printed

    # an existing report is not overwritten without --force, and the refusal comes before any work
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err


def test_target_size_ablation(toy: dict[str, str], tmp_path: Path, capsys) -> None:
    """--target-sizes: per size and seed, a seeded target sample, one selection, one fine-tuning run."""
    out = tmp_path / "ablation"
    argv = ["study", "select", "--target", toy["target"], "--test", toy["test"], "--source", toy["pool"]]
    argv += ["--domain-field", "domain", "--methods", "random", "--budgets", "512", "--seeds", "2"]
    argv += ["--target-sizes", "1,4,all", "--base-model", toy["base"], "--batch-size", "2"]
    argv += ["--seq-len", str(SEQ), "--eval-points", "2", "--jobs", "1", "--workers", "1", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "report" / "results.json").read_text())
    ablation = results["target_sizes"]
    assert ablation["method"] == "zipfit" and ablation["budget"] == 512
    assert [r["n"] for r in ablation["rows"]] == ["1", "4", "all"]
    assert [r["targets"] for r in ablation["rows"]] == [1, 4, 8]
    for row in ablation["rows"]:
        assert [p["seed"] for p in row["per_seed"]] == [0, 1]
        assert row["lowest"]["n"] == 2 and row["lowest"]["mean"] < results["base_loss"] + 1.0
        assert all(0.0 <= p["precision"] <= 1.0 for p in row["per_seed"])
    # Python targets: even one target finds Python far above its 50% share of the pool.
    assert ablation["rows"][-1]["precision"]["mean"] >= 0.8
    assert "target-set size ablation" in capsys.readouterr().out
    assert sample_target_set(list("abcdefgh"), 3, 0) == sample_target_set(list("abcdefgh"), 3, 0)
    assert sample_target_set(list("abcdefgh"), 3, 0) != sample_target_set(list("abcdefgh"), 3, 1)
    assert sample_target_set(list("abc"), 0, 5) == list("abc")


def test_selection_study_rejects_bad_settings(toy: dict[str, str], tmp_path: Path) -> None:
    from compresslm.experiments.selection_study import run_selection_study

    base = {
        "out": str(tmp_path),
        "targets": [toy["target"]],
        "test": [toy["test"]],
        "sources": [toy["pool"]],
        "base_model": toy["base"],
        "finetune": TOY_FT,
    }
    with pytest.raises(ConfigError, match="smaller than one training step"):
        run_selection_study(StudyConfig(methods=["random"], budgets=[10], **base), log=lambda _m: None)
    with pytest.raises(ConfigError, match="twice"):
        run_selection_study(
            StudyConfig(methods=["random", "random"], budgets=[512], **base), log=lambda _m: None
        )
    with pytest.raises(ConfigError, match="max_seq_len"):
        big = FinetuneSettings(batch_size=2, seq_len=SEQ * 2)
        run_selection_study(
            StudyConfig(methods=["random"], budgets=[512], **{**base, "finetune": big}), log=lambda _m: None
        )


# -- the alignment study -----------------------------------------------------------------------------


def test_parse_dataset_and_cut_to_budget() -> None:
    assert parse_dataset("python") == DatasetSpec("python", domains=("python",))
    assert parse_dataset("python+prose").domains == ("python", "prose")
    assert parse_dataset("mine=a.jsonl,b.jsonl").paths == ("a.jsonl", "b.jsonl")
    with pytest.raises(ConfigError):
        parse_dataset("=x")
    counter = get_token_counter(None, unit="bytes")
    assert cut_to_budget(["aaaa", "bbbb", "cccc"], 10, counter) == ["aaaa", "bbbb", "cc"]


def test_alignment_study_end_to_end(toy: dict[str, str], tmp_path: Path) -> None:
    mix = write_jsonl(
        tmp_path / "mix.jsonl",
        [{"text": python_doc(500 + i) if i % 2 else prose_doc(500 + i)} for i in range(20)],
    )
    config = AlignmentStudyConfig(
        out=str(tmp_path / "align"),
        test=[toy["test"]],
        datasets=[
            parse_dataset(f"python={toy['python']}"),
            parse_dataset(f"prose={toy['prose']}"),
            parse_dataset(f"mix={mix}"),
        ],
        budget=1024,
        seeds=[0, 1],
        compressor="lz4",
        max_pairs=None,
        alignment_workers=1,
        base_model=toy["base"],
        finetune=TOY_FT,
        finetune_workers=1,
    )
    results = run_alignment_study(config, log=lambda _m: None)
    d = results["datasets"]
    assert d["python"]["alignment"] > d["mix"]["alignment"] > d["prose"]["alignment"]
    assert all(x["units"] <= 1024 for x in d.values())
    fit = results["fit_final"]
    assert fit["n"] == 3 and 0.0 <= fit["r_squared"] <= 1.0 and 0.0 < fit["p_value"] <= 1.0
    # python-like training data lowers the loss on python test data more than prose does
    assert d["python"]["summary"]["lowest"]["mean"] < d["prose"]["summary"]["lowest"]["mean"]
    report = tmp_path / "align" / "report"
    assert (report / "alignment_vs_loss.png").read_bytes().startswith(PNG_MAGIC)
    assert "R²" in (report / "index.html").read_text()
    on_disk = json.loads((report / "results.json").read_text())
    assert on_disk["fit_final"]["r_squared"] == pytest.approx(fit["r_squared"])
    assert on_disk["fit_lowest"]["n"] == 3


def test_alignment_study_needs_three_datasets(toy: dict[str, str], tmp_path: Path) -> None:
    config = AlignmentStudyConfig(
        out=str(tmp_path),
        test=[toy["test"]],
        datasets=[parse_dataset(f"a={toy['python']}"), parse_dataset(f"b={toy['prose']}")],
        base_model=toy["base"],
        finetune=TOY_FT,
    )
    with pytest.raises(ConfigError, match="at least 3"):
        run_alignment_study(config, log=lambda _m: None)


def test_demo_study_settings_are_valid() -> None:
    from compresslm.demo import demo_study_config
    from compresslm.select.methods import make_method

    config = demo_study_config("unused")
    config.validate()
    assert config.out.endswith("study") and len(config.seeds) >= 3
    for spec in config.methods:
        make_method(spec)  # every method name resolves


def test_seed_option_and_faster_text() -> None:
    from compresslm.cli.common import parse_seeds
    from compresslm.evaluate.curves import LossCurve, faster_summary
    from compresslm.experiments.selection_report import faster_text

    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("0,5,9") == [0, 5, 9]
    for bad in ("0", "x", "1,a"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)

    def c(*losses: float) -> LossCurve:
        return LossCurve(tuple(range(0, 100 * len(losses), 100)), losses)

    base = [c(3.0, 2.5, 2.0), c(3.0, 2.5, 2.1)]
    assert faster_text(faster_summary([c(3.0, 2.0, 1.9), c(3.0, 2.0, 1.9)], base)) == (
        "50.0% (seeds 50.0 ± 0.0%)"
    )
    # the mean curve never reaches the baseline's mean lowest (2.05); one seed does, one does not
    text = faster_text(faster_summary([c(3.0, 2.9, 2.8), c(3.0, 2.0, 1.9)], base))
    assert text == "never (1 of 2 seeds: 50.0%; 1 of 2 seeds never)"
