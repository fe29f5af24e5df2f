"""Selection as stages: exact merge, same selection on both engines, resumption, changed inputs."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from compresslm.data.synthetic import write_word_shards
from compresslm.errors import ConfigError, DataError
from compresslm.select.methods import make_method
from compresslm.select.pipeline import Outputs, SelectionSpec, run_selection
from compresslm.select.pool import ReadOptions
from compresslm.select.stages import (
    SHARD_SHIFT,
    StageContext,
    StagedOptions,
    content_hash,
    merge_candidates,
    run_staged_selection,
    write_shard,
)
from compresslm.select.topk import BudgetSelector, TopK

TARGETS = ["def f(self):\n    return self.x\n" * (i + 1) for i in range(4)]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def make_pool(folder: Path, shards: int = 4, docs: int = 40, seed: int = 1) -> list[str]:
    """``shards`` files of ``docs`` word-salad records each (domains "a" and "b")."""
    return write_word_shards(
        folder,
        docs=shards * docs,
        shards=shards,
        seed=seed,
        name="shard{:02d}.jsonl",
        domain=lambda i: "a" if i % 3 else "b",
        mean_log_words=3.2,
    )


def staged(tmp: Path, method: str, sources: list[str], name: str, *, engine: str = "local", **kw):
    outputs = Outputs(selected=str(tmp / f"{name}.jsonl"), scores=str(tmp / f"{name}.parquet"))
    spec = kw.pop("spec", None) or SelectionSpec(k=12)
    options = StagedOptions(engine=engine, workers=kw.pop("workers", 2), **kw)
    result = run_staged_selection(
        method,
        {},
        TARGETS,
        sources,
        spec,
        read_options=ReadOptions(domain_field="domain"),
        outputs=outputs,
        options=options,
    )
    return result, (tmp / f"{name}.jsonl").read_bytes(), pq.read_table(tmp / f"{name}.parquet")


# ----------------------------------------------------------------------------- the merge is exact


@pytest.mark.parametrize("mode", ["k", "budget", "budget-truncate"])
def test_merging_shard_candidates_equals_one_selector_over_all_scores(mode: str) -> None:
    rng = np.random.default_rng(3)
    shards = []
    for _ in range(7):
        n = int(rng.integers(0, 60))
        scores = rng.integers(0, 6, n).astype(np.float64)  # many ties
        scores[rng.random(n) < 0.05] = np.nan
        shards.append((scores, rng.integers(0, 30, n)))
    spec = (
        SelectionSpec(k=25)
        if mode == "k"
        else SelectionSpec(budget_bytes=300, truncate_last=mode.endswith("truncate"))
    )

    def selector():
        return TopK(25) if mode == "k" else BudgetSelector(300, truncate_last=spec.truncate_last)

    whole = selector()
    cands = []
    for s, (scores, sizes) in enumerate(shards):
        glob = (s << SHARD_SHIFT) + np.arange(len(scores))
        if mode == "k":
            whole.push_batch(glob, scores)
        else:
            whole.push_batch(glob, scores, sizes)
        local = selector()
        if mode == "k":
            local.push_batch(np.arange(len(scores)), scores)
        else:
            local.push_batch(np.arange(len(scores)), scores, sizes)
        idx = local.result()[0]
        cands.append((s, idx, scores[idx], sizes[idx]))
    merged = merge_candidates(spec, iter(cands))
    expected = whole.result()
    assert [g for g, _, _ in merged] == expected[0].tolist()
    np.testing.assert_array_equal([sc for _, sc, _ in merged], expected[1])
    if mode == "budget-truncate":
        assert merged[-1][2] == expected[2]


@pytest.mark.parametrize(
    ("method", "spec"),
    [
        ("zipfit:gzip9", SelectionSpec(k=12)),
        ("zipfit:lz4+nocontrast", SelectionSpec(budget_bytes=2500, truncate_last=True)),
        ("dsir:topk", SelectionSpec(budget_tokens=700)),
    ],
)
def test_staged_equals_in_process_pipeline_for_deterministic_methods(
    tmp_path: Path, method: str, spec: SelectionSpec
) -> None:
    sources = make_pool(tmp_path)
    out = tmp_path / "one.jsonl"
    expected = run_selection(
        make_method(method, workers=1), TARGETS, sources, spec, outputs=Outputs(selected=str(out))
    )
    result, data, _ = staged(tmp_path, method, sources, "staged", spec=spec)
    assert len(result.selected) > 3
    assert [s.id for s in result.selected] == [s.id for s in expected.selected]
    assert [s.score for s in result.selected] == [s.score for s in expected.selected]
    assert [s.truncated_to for s in result.selected] == [s.truncated_to for s in expected.selected]
    assert data == out.read_bytes()
    assert result.accounting["read"] == expected.accounting["read"] == 160


def test_sharded_output_holds_each_shards_selection_in_its_format(tmp_path: Path) -> None:
    sources = make_pool(tmp_path)
    run_staged_selection(
        "zipfit:gzip9",
        {},
        TARGETS,
        sources,
        SelectionSpec(k=12),
        outputs=Outputs(selected=str(tmp_path / "one.jsonl")),
        options=StagedOptions(workers=1),
    )
    result = run_staged_selection(
        "zipfit:gzip9",
        {},
        TARGETS,
        sources,
        SelectionSpec(k=12),
        options=StagedOptions(workers=1, out_dir=str(tmp_path / "parts")),
    )
    manifest = json.loads((tmp_path / "parts" / "_SELECTION.json").read_text())
    rows = []
    for part in manifest["parts"]:
        lines = (tmp_path / "parts" / part["file"]).read_text().splitlines()
        assert all(json.loads(x)["record_id"].startswith(part["input"] + ":") for x in lines)
        rows += [json.loads(x) for x in lines]
    single = [json.loads(x) for x in (tmp_path / "one.jsonl").read_text().splitlines()]
    assert sorted(r["record_id"] for r in rows) == sorted(r["record_id"] for r in single)
    assert sum(result.accounting["sources"][s]["selected"] for s in sources) == 12


@pytest.mark.parametrize("keep_mb", [1024.0, 0.0])
def test_staged_dsir_hashes_each_document_once_when_its_ids_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_mb: float
) -> None:
    """The plan task stores a shard's bucket ids for its score task (within ``keep_features_mb``);
    over budget the score task hashes again. Same scores either way, as in one process."""
    from compresslm.select import dsir

    sources = make_pool(tmp_path)
    spec = SelectionSpec(k=12)
    expected = run_selection(make_method("dsir:topk", workers=1), TARGETS, sources, spec)
    hashed: list[int] = []
    call = dsir._FeaturizeJob.__call__
    monkeypatch.setattr(
        dsir._FeaturizeJob, "__call__", lambda self, batch: hashed.append(len(batch)) or call(self, batch)
    )
    result = run_staged_selection(
        "dsir:topk", {"keep_features_mb": keep_mb}, TARGETS, sources, spec, options=StagedOptions(workers=1)
    )
    assert [(s.id, s.score) for s in result.selected] == [(s.id, s.score) for s in expected.selected]
    pool_docs = result.accounting["read"]
    assert sum(hashed) - len(TARGETS) == (pool_docs if keep_mb else 2 * pool_docs)


def test_progress_counts_the_shards_of_every_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = make_pool(tmp_path, shards=3)
    quiet = run_staged_selection(
        "dsir", {}, TARGETS, sources, SelectionSpec(k=12), options=StagedOptions(workers=1)
    )
    assert capsys.readouterr().err == ""
    shown = run_staged_selection(
        "dsir", {}, TARGETS, sources, SelectionSpec(k=12), options=StagedOptions(workers=1, progress=True)
    )
    err = capsys.readouterr().err  # not a terminal: whole lines, the last one of each stage at 3/3
    for stage in ("plan", "score"):
        assert f"{stage}: 100%" in err and "3/3" in err
    assert "write:" in err
    assert [(s.id, s.score) for s in shown.selected] == [(s.id, s.score) for s in quiet.selected]


def test_d4_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="d4 runs in one process"):
        run_staged_selection("d4", {}, TARGETS, make_pool(tmp_path, 1), SelectionSpec(k=2))


# ------------------------------------------------------------------------ resumption and changes


def test_changed_input_or_setting_is_refused_and_overwrite_starts_over(tmp_path: Path) -> None:
    sources = make_pool(tmp_path, shards=2)
    work = str(tmp_path / "work")
    staged(tmp_path, "random", sources, "a", work_dir=work)
    with pytest.raises(ConfigError, match="other settings"):
        staged(tmp_path, "dsir", sources, "b", work_dir=work)
    # same size, different content: a content hash, not a size, notices
    path = Path(sources[1])
    data = path.read_bytes()
    i = data.index(b"return")
    path.write_bytes(data[:i] + b"retrun" + data[i + 6 :])
    with pytest.raises(DataError, match="changed since"):
        staged(tmp_path, "random", sources, "c", work_dir=work)
    result, _, _ = staged(tmp_path, "random", sources, "d", work_dir=work, overwrite=True)
    assert result.accounting["read"] == 80


def test_a_source_rewritten_between_scoring_and_writing_fails(tmp_path: Path) -> None:
    sources = make_pool(tmp_path, shards=1)
    digest = content_hash(sources[0])
    Path(sources[0]).write_text(Path(sources[0]).read_text().replace("the", "teh"))
    ctx = StageContext(make_method("random"), SelectionSpec(k=2), ReadOptions(), str(tmp_path))
    (tmp_path / "write").mkdir()
    task = {"shard": 0, "path": sources[0], "hash": digest, "picks": [[0, 0, 1.0, None]], "ext": ".jsonl"}
    with pytest.raises(DataError, match="between scoring and writing"):
        write_shard(ctx, task)


def _cli(args: list[str]) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from compresslm.cli import main; sys.exit(main())",
        "select",
        *args,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}


def _kill_after_first_marker(cmd: list[str], work: Path, cwd: Path) -> None:
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list((work / "score").glob("*[0-9].json")):
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "no shard finished in time"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((work / "score").glob("*[0-9].json")))
    assert 0 < done < 6, f"{done} shards were finished when the run was killed"


def _killed_and_resumed(tmp_path: Path, engine_args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill a run (SIGKILL) once a shard is scored, rerun it: the outputs equal an uninterrupted run's."""
    from compresslm.cli import main

    make_pool(tmp_path, shards=6, docs=40)
    with (tmp_path / "tgt.jsonl").open("w") as f:
        for t in TARGETS * 2:
            f.write(json.dumps({"text": t}) + "\n")
    common = ["--target", "tgt.jsonl", "--source", "shard*.jsonl", "--method", "zipfit:gzip9", "--k", "25"]
    resumed = [*common, "--workers", "1", *engine_args, "-o", "res.jsonl", "--scores", "res.parquet"]
    resumed += ["--work-dir", "work", "--no-progress"]
    _kill_after_first_marker(_cli(resumed), tmp_path / "work", tmp_path)
    assert not (tmp_path / "res.jsonl").exists()
    monkeypatch.chdir(tmp_path)
    if "ray" in engine_args:  # a Ray driver in its own process: Ray trouble cannot take pytest down
        again = subprocess.run(_cli(resumed), cwd=tmp_path, env=_env(), capture_output=True, text=True)
        assert again.returncode == 0, again.stderr[-3000:]
    else:
        assert main(["select", *resumed]) == 0
    assert main(["select", *common, "-o", "ref.jsonl", "--scores", "ref.parquet", "--no-progress"]) == 0
    assert (tmp_path / "res.jsonl").read_bytes() == (tmp_path / "ref.jsonl").read_bytes()
    res, ref = pq.read_table(tmp_path / "res.parquet"), pq.read_table(tmp_path / "ref.parquet")
    assert res.equals(ref)
    assert not [p for p in tmp_path.rglob(".*") if ".tmp" in p.name or ".pending" in p.name]


def test_killed_local_run_resumes_to_identical_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _killed_and_resumed(tmp_path, ["--engine", "local"], monkeypatch)


def test_sigterm_leaves_no_temporaries(tmp_path: Path) -> None:
    make_pool(tmp_path, shards=3, docs=400)
    with (tmp_path / "tgt.jsonl").open("w") as f:
        for t in TARGETS * 10:
            f.write(json.dumps({"text": t}) + "\n")
    cmd = _cli(
        [
            "--target",
            "tgt.jsonl",
            "--source",
            "shard*.jsonl",
            "--method",
            "zipfit:gzip9",
            "--k",
            "5",
            "--workers",
            "1",
            "--out",
            "o.jsonl",
            "--scores",
            "s.parquet",
            "--batch-size",
            "8",
        ]
    )
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not [p for p in tmp_path.iterdir() if p.name.startswith(".")]:  # scoring has begun writing
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "shard00.jsonl",
        "shard01.jsonl",
        "shard02.jsonl",
        "tgt.jsonl",
    ]


def test_a_late_error_leaves_no_output_at_all(tmp_path: Path) -> None:
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": t, "score": 1}) + "\n" for t in TARGETS))
    outputs = Outputs(selected=str(tmp_path / "o.jsonl"), scores=str(tmp_path / "s.parquet"))
    with pytest.raises(DataError, match="already has a field 'score'"):
        run_selection(make_method("random"), TARGETS, [str(pool)], SelectionSpec(k=2), outputs=outputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.jsonl"]


# ---------------------------------------------------------------------------------------- Ray


# Ray runs in subprocesses only: a Ray driver whose raylet dies (a heavily loaded machine can miss
# Ray's start-up and heartbeat deadlines) may end its whole process, which must not be pytest.
RAY_SCRIPT = """
import json, sys
from pathlib import Path
from compresslm.data.readers import read_records
from compresslm.select.pipeline import Outputs, SelectionSpec
from compresslm.select.pool import ReadOptions
from compresslm.select.stages import StagedOptions, run_staged_selection
from compresslm.tokenizers import build_tokenizer
from compresslm.tokenizers.dataset import TokenizeOptions, tokenize_corpus

tmp, targets, sources = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
accounting = {}
for method in ("zipfit", "dsir", "random", "compel"):
    outputs = Outputs(selected=str(tmp / f"ray-{method}.jsonl"), scores=str(tmp / f"ray-{method}.parquet"))
    result = run_staged_selection(method, {}, targets, sources, SelectionSpec(k=12),
        read_options=ReadOptions(domain_field="domain"), outputs=outputs,
        options=StagedOptions(engine="ray", workers=2))
    assert result.engine["name"] == "ray"
    accounting[method] = result.accounting
options = TokenizeOptions(val_fraction=0.2, workers=2, shard_bytes=1500, engine="ray")
tokenize_corpus(read_records(sources), build_tokenizer("gzip"), tmp / "tok-ray", options, source="pool")
(tmp / "accounting.json").write_text(json.dumps(accounting))
"""


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray[data] (the test extra)")
def test_every_method_and_tokenize_give_the_same_results_on_both_engines(tmp_path: Path) -> None:
    from compresslm.data.readers import read_records
    from compresslm.tokenizers import build_tokenizer
    from compresslm.tokenizers.dataset import TokenDataset, TokenizeOptions, tokenize_corpus

    sources = make_pool(tmp_path, shards=3)
    env = {**_env(), "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, "-c", RAY_SCRIPT, str(tmp_path), json.dumps(TARGETS), json.dumps(sources)]
    ray_run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert ray_run.returncode == 0, ray_run.stderr[-3000:]
    accounting = json.loads((tmp_path / "accounting.json").read_text())
    for method in ("zipfit", "dsir", "random", "compel"):
        local, local_rows, local_scores = staged(tmp_path, method, sources, f"local-{method}")
        assert local_rows == (tmp_path / f"ray-{method}.jsonl").read_bytes(), method
        assert local_scores.equals(pq.read_table(tmp_path / f"ray-{method}.parquet")), method
        assert json.loads(json.dumps(local.accounting)) == accounting[method]
    options = TokenizeOptions(val_fraction=0.2, workers=2, shard_bytes=1500)
    tokenize_corpus(
        read_records(sources), build_tokenizer("gzip"), tmp_path / "tok-local", options, source="pool"
    )
    local_ds, ray_ds = TokenDataset(tmp_path / "tok-local"), TokenDataset(tmp_path / "tok-ray")
    for split in ("train", "val"):
        assert np.array_equal(np.asarray(local_ds.stream(split)), np.asarray(ray_ds.stream(split)))
        assert np.array_equal(local_ds.chunks(split), ray_ds.chunks(split))
    assert not (tmp_path / "tok-ray" / "shards").exists()


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray[data] (the test extra)")
def test_killed_ray_run_resumes_to_identical_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    _killed_and_resumed(tmp_path, ["--engine", "ray", "--workers", "2"], monkeypatch)


def test_array_sample_keeps_the_smallest_keys_like_keyed_sample() -> None:
    """The driver's array merge of per-shard samples keeps what one KeyedSample over all would."""
    from compresslm.select.stages import ArraySample, KeyedSample

    rng = np.random.default_rng(3)
    whole, merged = KeyedSample(50), ArraySample(50)
    for _ in range(7):  # seven "shards"
        keys, values = rng.random(40), rng.random(40)
        part = KeyedSample(50)
        for k, v in zip(keys.tolist(), values.tolist(), strict=True):
            whole.add(k, v)
            part.add(k, v)
        kept = part.items()
        merged.extend(np.array([k for k, _ in kept]), np.array([v for _, v in kept]))
    assert merged.values_by_key() == [v for _, v in whole.items()]
    assert len(merged.keys) == 50


def test_staged_score_samples_have_a_bounded_number_of_groups(tmp_path: Path) -> None:
    """Unlabelled shards are sampled per source file, but past SAMPLE_GROUPS files they share one
    group: the driver's samples do not grow with the number of files."""
    from compresslm.select.pipeline import OTHER_GROUP, SAMPLE_GROUPS

    sources = []
    for s in range(SAMPLE_GROUPS + 5):
        p = tmp_path / f"s{s:02d}.jsonl"
        p.write_text("".join(json.dumps({"text": f"doc {s} {i} " * 3}) + "\n" for i in range(4)))
        sources.append(str(p))
    result = run_staged_selection(
        "random", {}, ["doc"], sources, SelectionSpec(k=3), options=StagedOptions(workers=1)
    )
    groups = result.score_samples
    assert len(groups) == SAMPLE_GROUPS + 1
    assert len(groups[OTHER_GROUP]) == 5 * 4
    assert sum(len(v) for v in groups.values()) == len(sources) * 4


def test_staged_zipfit_fits_the_dictionary_contrast_from_plan_windows(tmp_path: Path) -> None:
    """The plan map keeps texts only for the background's candidates and a digest and window of
    every other sampled document; the driver fits the dictionary contrast from those, and the
    staged selection finds what the in-process one finds (another, equally seeded draw)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_zipfit import _dictionary_case

    sources, targets, positive = _dictionary_case()
    paths = []
    for shard in range(3):
        path = tmp_path / f"pool{shard}.jsonl"
        path.write_text(
            "".join(
                json.dumps({"text": t, "domain": "pos" if positive[i] else "neg"}) + "\n"
                for i, t in enumerate(sources)
                if i % 3 == shard
            )
        )
        paths.append(str(path))
    spec = SelectionSpec(k=int(positive.sum()))
    outputs = Outputs(selected=str(tmp_path / "staged.jsonl"))
    options = StagedOptions(engine="local", workers=2, work_dir=str(tmp_path / "work"))
    read = ReadOptions(domain_field="domain")
    result = run_staged_selection(
        "zipfit", {}, targets, paths, spec, read_options=read, outputs=outputs, options=options
    )
    plan = sorted((tmp_path / "work" / "plan").glob("*.sample.jsonl"))
    rows = [json.loads(line) for f in plan for line in f.read_text().splitlines()]
    assert rows and all("digest" in r and "window" in r for r in rows)
    assert 0 < sum("text" in r for r in rows) <= 3 * 64 < len(rows)
    info = result.method_info["dictionary"]
    assert isinstance(info, dict) and info["weight"] > 0
    in_process = run_selection(make_method("zipfit", workers=1), targets, paths, spec, read_options=read)
    assert in_process.method_info["dictionary"]["weight"] > 0  # type: ignore[index]
    for r in (result, in_process):
        assert sum(s.domain == "pos" for s in r.selected) >= 0.9 * spec.k
