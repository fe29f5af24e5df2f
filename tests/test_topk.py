"""Top-k and budget selection against a brute-force sort, and the budget token counters."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compresslm.errors import ConfigError
from compresslm.select.tokens import ByteCounter, TokenCounter, WordCounter, get_token_counter
from compresslm.select.topk import BudgetSelector, TopK, cut_to_budget, select_top_k

# Few distinct values so ties (and NaN, infinities, signed zeros) are common.
score_values = st.sampled_from([0.0, -0.0, 0.25, 0.5, -1.0, math.nan, math.inf, -math.inf, 0.1 + 0.2, 0.3])
documents = st.lists(st.tuples(score_values, st.integers(0, 12)), max_size=60)  # (score, size)


def rank_key(item: tuple[int, float]) -> tuple[bool, float, int]:
    index, score = item
    return (math.isnan(score), 0.0 if math.isnan(score) else -score, index)


def brute_force_ranking(scores: list[float]) -> list[int]:
    return [i for i, _ in sorted(enumerate(scores), key=rank_key)]


def batches(data: st.DataObject, n: int) -> list[tuple[int, int]]:
    """Random split of range(n) into consecutive batches, pushed in a random order."""
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, n - 1)), max_size=6))) if n > 1 else []
    bounds = list(zip([0, *cuts], [*cuts, n], strict=True))
    return data.draw(st.permutations(bounds)) if n else []


def same_scores(a: np.ndarray, b: list[float]) -> bool:
    return len(a) == len(b) and all(
        (x == y) or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True)
    )


@settings(max_examples=200, deadline=None)
@given(docs=documents, k=st.integers(1, 70), data=st.data())
def test_topk_equals_brute_force(docs: list[tuple[float, int]], k: int, data: st.DataObject) -> None:
    scores = [s for s, _ in docs]
    top = TopK(k)
    for lo, hi in batches(data, len(docs)):
        top.push_batch(np.arange(lo, hi), np.array(scores[lo:hi]))
    indices, got_scores = top.result()
    expected = brute_force_ranking(scores)[:k]
    assert indices.tolist() == expected
    assert same_scores(got_scores, [scores[i] for i in expected])
    assert select_top_k(np.array(scores, dtype=np.float64), k).tolist() == expected


def brute_force_budget(
    docs: list[tuple[float, int]], budget: int, truncate: bool
) -> tuple[list[int], int | None]:
    chosen: list[int] = []
    total = 0
    for i in brute_force_ranking([s for s, _ in docs]):
        size = docs[i][1]
        if total + size <= budget:
            chosen.append(i)
            total += size
            continue
        if truncate and total < budget:
            chosen.append(i)
            return chosen, budget - total
        break
    return chosen, None


@settings(max_examples=300, deadline=None)
@given(docs=documents, budget=st.integers(1, 80), truncate=st.booleans(), data=st.data())
def test_budget_equals_brute_force(
    docs: list[tuple[float, int]], budget: int, truncate: bool, data: st.DataObject
) -> None:
    sel = BudgetSelector(budget, truncate_last=truncate)
    for lo, hi in batches(data, len(docs)):
        sel.push_batch(np.arange(lo, hi), np.array([s for s, _ in docs[lo:hi]]), [n for _, n in docs[lo:hi]])
    indices, scores, truncated = sel.result()
    expected, expected_cut = brute_force_budget(docs, budget, truncate)
    assert indices.tolist() == expected
    assert truncated == expected_cut
    assert same_scores(scores, [docs[i][0] for i in expected])
    whole = sum(docs[i][1] for i in expected) - (docs[expected[-1]][1] - expected_cut if expected_cut else 0)
    assert whole <= budget
    # Memory bound: the kept documents never sum to more than the budget plus one document.
    assert sum(item[3] for item in sel._heap) <= budget + max((n for _, n in docs), default=0)


def test_budget_semantics_by_example() -> None:
    # Ranked: A(size 5), O(6), Q(1). Budget 10: A fits, O overflows and ends the selection, so Q
    # is NOT taken even though it would fit -- the selection is a prefix of the ranking.
    sel = BudgetSelector(10)
    sel.push_batch([1], [0.5], [6])  # O arrives first
    sel.push_batch([0], [0.9], [5])  # A
    sel.push_batch([2], [0.1], [1])  # Q
    assert sel.result()[0].tolist() == [0]
    cut = BudgetSelector(10, truncate_last=True)
    cut.push_batch([0, 1, 2], [0.9, 0.5, 0.1], [5, 6, 1])
    indices, _, truncated = cut.result()
    assert indices.tolist() == [0, 1] and truncated == 5


def test_k_larger_than_the_pool_selects_everything_and_bad_sizes_fail() -> None:
    top = TopK(100)
    top.push_batch([0, 1, 2], [0.1, 0.3, 0.2])
    assert top.result()[0].tolist() == [1, 2, 0]
    assert select_top_k(np.array([0.1, 0.3]), 5).tolist() == [1, 0]
    for bad in (0, -3):
        with pytest.raises(ConfigError):
            TopK(bad)
        with pytest.raises(ConfigError):
            BudgetSelector(bad)
        with pytest.raises(ConfigError):
            select_top_k(np.zeros(3), bad)
    with pytest.raises(ValueError):
        BudgetSelector(5).push_batch([0], [0.1], [-1])


def test_topk_memory_is_bounded_by_k() -> None:
    top = TopK(5)
    rng = np.random.default_rng(0)
    for start in range(0, 10_000, 1000):
        top.push_batch(np.arange(start, start + 1000), rng.random(1000))
        assert len(top) <= 5
    assert top.seen == 10_000


# --- token counters --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny BPE tokenizer.json trained offline on a few sentences."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["[UNK]", "[BOS]"], show_progress=False)
    corpus = ["def add(a, b):\n    return a + b", "the quick brown fox jumps over the lazy dog"] * 20
    tok.train_from_iterator(corpus, trainer=trainer)
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 1)])
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return str(path)


def test_hf_tokenizer_counts_tokens_without_special_tokens(tokenizer_json: str) -> None:
    from tokenizers import Tokenizer

    counter = get_token_counter(tokenizer_json)
    assert isinstance(counter, TokenCounter) and counter.unit == "tokens"
    reference = Tokenizer.from_file(tokenizer_json)
    texts = ["def add(a, b): return a + b", "the lazy fox", "", "zebra!"]
    expected = [len(reference.encode(t, add_special_tokens=False).ids) for t in texts]
    assert [counter(t) for t in texts] == expected
    assert counter.count_many(texts).tolist() == expected
    assert len(reference.encode(texts[0]).ids) == expected[0] + 1  # the [BOS] we do not count
    for n in range(expected[0] + 2):
        cut = counter.truncate(texts[0], n)
        assert texts[0].startswith(cut) and counter(cut) <= n
    assert counter.truncate(texts[0], expected[0]) == texts[0]


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab é字\n\t🙂")), max_size=40), n=st.integers(0, 50))
def test_word_and_byte_truncation(text: str, n: int) -> None:
    words = WordCounter()
    cut = words.truncate(text, n)
    assert text.startswith(cut) and words(cut) == min(n, words(text))
    nbytes = ByteCounter()
    cut = nbytes.truncate(text, n)
    assert text.startswith(cut) and nbytes(cut) <= n
    # The longest such prefix: either everything, or one more character would not fit.
    assert cut == text or nbytes(text[: len(cut) + 1]) > n


def test_get_token_counter_choices(tmp_path) -> None:
    assert isinstance(get_token_counter(None), WordCounter)
    assert get_token_counter(None)("two  words\n") == 2
    assert isinstance(get_token_counter(None, unit="bytes"), ByteCounter)
    assert get_token_counter(None, unit="bytes")("é") == 2
    with pytest.raises(ConfigError, match="no such file"):
        get_token_counter(str(tmp_path / "missing.json"))
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="tokenizer"):
        get_token_counter(str(tmp_path))  # a folder holding a (broken) tokenizer.json
    with pytest.raises(ConfigError):
        get_token_counter("x.json", unit="bytes")
    with pytest.raises(ConfigError):
        get_token_counter(None, unit="lines")


def non_monotone_tokenizer(path: Path) -> Path:
    """A BPE whose merges make "abc" one token while its prefix "ab" is two: token counts do not
    grow with the prefix length."""
    from tokenizers import Tokenizer, models

    vocab = {"a": 0, "b": 1, "c": 2, "bc": 3, "abc": 4}
    Tokenizer(models.BPE(vocab, [("b", "c"), ("a", "bc")])).save(str(path))
    return path


def test_budget_cut_where_counts_are_not_monotone(tmp_path: Path) -> None:
    counter = get_token_counter(non_monotone_tokenizer(tmp_path / "tokenizer.json"))
    assert [counter(t) for t in ("ab", "abc", "abca", "abcabc")] == [2, 1, 2, 2]
    # "abcabcabc" keeps 2 tokens: "abcabc", not the "abca" a search over prefix lengths stops at.
    assert cut_to_budget(["abcabc", "abcabcabc"], 4, counter) == ["abcabc", "abcabc"]
    assert cut_to_budget(["abcabc", "abcabcabc"], 2, counter) == ["abcabc"]  # nothing left to cut
    assert cut_to_budget(["abc", "abc"], 10, counter) == ["abc", "abc"]


def test_the_pipeline_cuts_with_the_counter(tmp_path: Path) -> None:
    from compresslm.select.methods import make_method
    from compresslm.select.pipeline import SelectionSpec, run_selection

    tokenizer = non_monotone_tokenizer(tmp_path / "tokenizer.json")
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"text": "abcabcabc"}) + "\n")
    spec = SelectionSpec(budget_tokens=2, tokenizer=str(tokenizer), truncate_last=True)
    result = run_selection(make_method("random"), ["abc"], [str(pool)], spec)
    assert [s.text for s in result.selected] == ["abcabc"]
