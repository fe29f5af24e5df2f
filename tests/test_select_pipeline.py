"""The selection pipeline end to end: accounting, outputs, budgets, errors, interruption."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from compresslm.errors import DataError, OutputExistsError
from compresslm.select.base import PoolFactory, SelectionMethod
from compresslm.select.methods import make_method
from compresslm.select.pipeline import Outputs, SelectionSpec, load_targets, run_selection
from compresslm.select.pool import ReadOptions
from compresslm.select.zipfit import zipfit_scores

CODE = [
    "def add(a, b):\n    return a + b\n",
    "def mul(x, y):\n    result = x * y\n    return result\n",
    "for i in range(10):\n    print(i * i)\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n        self.items.append(x)\n",
]
PROSE = [
    "The weather in the mountains changed quickly that afternoon, and the hikers turned back.",
    "She read the letter twice before folding it carefully and placing it in the drawer.",
    "Markets opened lower on Monday as investors weighed the latest inflation figures.",
    "The museum's new wing houses a collection of medieval manuscripts and maps.",
]
TARGETS = [
    "def sub(a, b):\n    return a - b\n",
    "def square(x):\n    result = x * x\n    return result\n",
]


def write_jsonl(path: Path, rows: list[dict] | list[str]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


@pytest.fixture
def pool_file(tmp_path: Path) -> Path:
    rows = [{"text": t, "domain": "python"} for t in CODE] + [{"text": t, "domain": "prose"} for t in PROSE]
    return write_jsonl(tmp_path / "pool.jsonl", rows)


def zipfit(compressor: str = "gzip:9") -> SelectionMethod:
    return make_method("zipfit", compressor=compressor, workers=1)


def test_selects_best_first_with_scores_and_ids(tmp_path: Path, pool_file: Path) -> None:
    out = tmp_path / "sel.jsonl"
    scores = tmp_path / "scores.parquet"
    result = run_selection(
        zipfit(),
        TARGETS,
        [str(pool_file)],
        SelectionSpec(k=3),
        read_options=ReadOptions(domain_field="domain"),
        outputs=Outputs(selected=str(out), scores=str(scores)),
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert all(r["record_id"].startswith(str(pool_file) + ":") for r in rows)
    # the scores equal the public API's, and the top 3 are the 3 best of all documents
    expected = zipfit_scores(CODE + PROSE, TARGETS, compressor="gzip:9", workers=1)
    best = np.argsort(-expected, kind="stable")[:3]
    assert [r["text"] for r in rows] == [(CODE + PROSE)[i] for i in best]
    assert [r["score"] for r in rows] == pytest.approx(expected[best].tolist(), abs=0)
    table = pq.read_table(scores).to_pydict()
    assert len(table["record_id"]) == 8
    assert table["score"] == pytest.approx(expected.tolist(), abs=0)
    assert result.precision_at(3, "python") == pytest.approx(sum(r["domain"] == "python" for r in rows) / 3)


def test_every_record_accounted_for(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            json.dumps({"text": CODE[0]}),
            "{not json",
            json.dumps({"text": ""}),
            json.dumps({"other": 1}),
            json.dumps({"text": "x" * 5000}),
            json.dumps({"text": PROSE[0]}),
        ],
    )
    rejects = tmp_path / "rejects.jsonl"
    result = run_selection(
        zipfit(),
        TARGETS,
        [str(src)],
        SelectionSpec(k=1),
        read_options=ReadOptions(on_error="skip", max_bytes=4000),
        outputs=Outputs(rejects=str(rejects)),
    )
    acct = result.accounting
    assert acct["read"] == 6
    assert acct["selected"] == 1 and acct["not_selected"] == 1 and acct["rejected"] == 4
    reasons = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert len(reasons) == 4
    assert {r["record_id"] for r in reasons} == {f"{src}:2", f"{src}:3", f"{src}:4", f"{src}:5"}


def test_malformed_input_fails_with_file_and_line(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "bad.jsonl", [json.dumps({"text": CODE[0]}), "{oops"])
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        run_selection(zipfit(), TARGETS, [str(src)], SelectionSpec(k=1))


def test_refuses_to_overwrite_without_force(tmp_path: Path, pool_file: Path) -> None:
    out = tmp_path / "sel.jsonl"
    out.write_text("keep me\n")
    with pytest.raises(OutputExistsError, match="--force"):
        run_selection(
            zipfit(), TARGETS, [str(pool_file)], SelectionSpec(k=2), outputs=Outputs(selected=str(out))
        )
    assert out.read_text() == "keep me\n"
    run_selection(
        zipfit(),
        TARGETS,
        [str(pool_file)],
        SelectionSpec(k=2),
        outputs=Outputs(selected=str(out), force=True),
    )
    assert len(out.read_text().splitlines()) == 2


def test_k_larger_than_pool_selects_everything(pool_file: Path) -> None:
    result = run_selection(zipfit(), TARGETS, [str(pool_file)], SelectionSpec(k=100))
    assert len(result.selected) == 8
    assert result.accounting["not_selected"] == 0


def test_duplicates_tie_by_document_order(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "dup.jsonl", [{"text": CODE[1]}] * 3 + [{"text": PROSE[1]}])
    result = run_selection(zipfit(), TARGETS, [str(src)], SelectionSpec(k=2))
    assert [s.id for s in result.selected] == [f"{src}:1", f"{src}:2"]
    assert result.selected[0].score == result.selected[1].score


def test_single_target(pool_file: Path) -> None:
    result = run_selection(zipfit("lz4"), TARGETS[:1], [str(pool_file)], SelectionSpec(k=2))
    assert len(result.selected) == 2 and result.n_targets == 1


def test_byte_budget_with_and_without_truncation(tmp_path: Path, pool_file: Path) -> None:
    budget = 150
    result = run_selection(zipfit(), TARGETS, [str(pool_file)], SelectionSpec(budget_bytes=budget))
    sizes = [len(s.text.encode()) for s in result.selected]
    assert sum(sizes) <= budget
    out = tmp_path / "cut.jsonl"
    cut = run_selection(
        zipfit(),
        TARGETS,
        [str(pool_file)],
        SelectionSpec(budget_bytes=budget, truncate_last=True),
        outputs=Outputs(selected=str(out)),
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(len(r["text"].encode()) for r in rows) == budget
    assert rows[-1]["truncated"] is True
    assert [s.id for s in cut.selected[: len(result.selected)]] == [s.id for s in result.selected]


def test_parquet_output(tmp_path: Path, pool_file: Path) -> None:
    out = tmp_path / "sel.parquet"
    run_selection(zipfit(), TARGETS, [str(pool_file)], SelectionSpec(k=4), outputs=Outputs(selected=str(out)))
    table = pq.read_table(out).to_pydict()
    assert len(table["text"]) == 4 and len(table["score"]) == 4


class _Interrupting(SelectionMethod):
    """Scores one batch, then behaves like Ctrl-C."""

    name = "interrupting"

    def score_batches(self, pool: PoolFactory) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for batch in pool():
            idx = np.array([i for i, _ in batch], dtype=np.int64)
            yield idx, np.zeros(len(batch))
            raise KeyboardInterrupt


def test_interrupt_leaves_no_output_that_looks_complete(tmp_path: Path, pool_file: Path) -> None:
    outs = Outputs(
        selected=str(tmp_path / "s.jsonl"),
        scores=str(tmp_path / "s.parquet"),
        report=str(tmp_path / "r.json"),
    )
    with pytest.raises(KeyboardInterrupt):
        run_selection(
            _Interrupting(), TARGETS, [str(pool_file)], SelectionSpec(k=2), outputs=outs, batch_size=2
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.jsonl"]


def test_report_written(tmp_path: Path, pool_file: Path) -> None:
    report = tmp_path / "report.json"
    run_selection(
        zipfit("lz4"),
        TARGETS,
        [str(pool_file)],
        SelectionSpec(k=4),
        read_options=ReadOptions(domain_field="domain"),
        outputs=Outputs(report=str(report)),
    )
    data = json.loads(report.read_text())
    assert data["accounting"]["selected"] == 4
    assert set(data["domains"]) == {"python", "prose"}
    assert (tmp_path / "report.png").stat().st_size > 1000


def test_report_leaves_the_matplotlib_backend_alone(tmp_path: Path, pool_file: Path) -> None:
    """A notebook user's backend survives a selection with a report (no matplotlib.use)."""
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        run_selection(
            zipfit("lz4"),
            TARGETS,
            [str(pool_file)],
            SelectionSpec(k=2),
            outputs=Outputs(report=str(tmp_path / "r.json")),
        )
        assert matplotlib.get_backend() == "svg"
        assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")
    finally:
        matplotlib.use(before)


def test_target_template(tmp_path: Path) -> None:
    tgt = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "def f(x):", "canonical_solution": "    return x"}])
    texts = load_targets([str(tgt)], ReadOptions(template="{prompt}\n{canonical_solution}"))
    assert texts == ["def f(x):\n    return x"]


def test_rejected_targets_are_reported_not_dropped_silently(tmp_path: Path, caplog) -> None:
    tgt = write_jsonl(tmp_path / "t.jsonl", [{"text": "def f(x):"}, {"text": " "}, {"text": ""}])
    assert load_targets([str(tgt)], ReadOptions()) == ["def f(x):"]
    assert f"targets: 2 records rejected (2 empty; first: {tgt}:2: empty" in caplog.text


class _MaskOdd(SelectionMethod):
    """Scores odd documents -inf (ineligible), like DSIR's minimum-length mask."""

    name = "mask-odd"

    def score_batches(self, pool: PoolFactory) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for batch in pool():
            idx = np.array([i for i, _ in batch], dtype=np.int64)
            yield idx, np.where(idx % 2 == 1, -np.inf, -idx.astype(np.float64))


def test_ineligible_documents_are_never_selected(pool_file: Path) -> None:
    result = run_selection(_MaskOdd(), TARGETS, [str(pool_file)], SelectionSpec(k=100))
    assert [s.index for s in result.selected] == [0, 2, 4, 6]
    assert result.accounting["not_selected"] == 4


def test_token_budget_counts_only_candidates_and_selects_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token budget counts lazily (only documents that can still enter it); the selection and its
    sizes equal those of counting every document (forced here by asking for a scores file)."""
    from compresslm.select.tokens import WordCounter

    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "def", "return", "x", "self", "the", "value"]
    rows = [
        {"text": " ".join(rng.choice(words, size=int(rng.integers(3, 40)))), "domain": "d"}
        for _ in range(600)
    ]
    pool = write_jsonl(tmp_path / "big.jsonl", rows)
    counted: list[int] = []
    original = WordCounter.count_many

    def spy(self: WordCounter, texts: list[str]) -> np.ndarray:
        counted.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(WordCounter, "count_many", spy)
    spec = SelectionSpec(budget_tokens=400, truncate_last=True)
    method = make_method("zipfit", workers=1, batch_size=32)  # scores in batches of 32, as the pool
    lazy = run_selection(method, TARGETS, [str(pool)], spec, batch_size=32)
    lazy_counted = sum(counted)
    counted.clear()
    eager = run_selection(
        method, TARGETS, [str(pool)], spec, batch_size=32, outputs=Outputs(scores=str(tmp_path / "s.parquet"))
    )
    assert sum(counted) == len(rows)  # every document counted once
    assert lazy_counted < len(rows) // 2
    assert [(s.id, s.size, s.text) for s in lazy.selected] == [(s.id, s.size, s.text) for s in eager.selected]
    assert sum(s.size for s in lazy.selected) == 400
