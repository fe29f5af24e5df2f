"""Built-in corpora: deterministic, exactly sized, labelled, and targets disjoint from the pool."""

from __future__ import annotations

import collections
import hashlib
import os
import subprocess
import sys
import textwrap

import pytest

from compresslm.data import stdlib_corpus as sc
from compresslm.data.builtin import (
    PYTHON_SHARE,
    builtin_pool,
    generic_mixture,
    iter_builtin_pool,
    parse_builtin,
    pool_weights,
    python_targets,
)
from compresslm.data.humaneval import HUMANEVAL_SIZE, humaneval_records, humaneval_split
from compresslm.errors import ConfigError, DataError

POOL_N = 20_000


@pytest.fixture(scope="module")
def pool():
    return builtin_pool(POOL_N)


def fingerprint(records) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r.id}\0{r.domain}\0{r.text}\0".encode())
    return h.hexdigest()


def test_pool_has_exactly_n_unique_ids_and_several_domains(pool):
    assert len(pool) == POOL_N
    assert [r.id for r in pool] == [f"builtin:pool:{i}" for i in range(POOL_N)]
    assert [r.index for r in pool] == list(range(POOL_N))
    domains = collections.Counter(r.domain for r in pool)
    assert {"python", "prose", "c", "data"} <= set(domains) and len(domains) >= 5
    assert abs(domains["python"] / POOL_N - PYTHON_SHARE) < 0.02
    assert all(len(r.text.encode()) >= sc.MIN_BLOCK for r in pool)
    assert max(len(r.text.encode()) for r in pool) <= sc.MAX_DOC


def test_python_documents_are_functions_or_classes_that_parse(pool):
    python = [r for r in pool if r.domain == "python"][:200]
    for r in python:
        compile(r.text, r.id, "exec")
        first = next(line for line in r.text.splitlines() if not line.startswith("@"))
        assert first.startswith(("def ", "async def ", "class "))


def test_pool_is_deterministic_and_any_prefix_is_the_smaller_pool(pool):
    assert fingerprint(builtin_pool(500)) == fingerprint(pool[:500])
    assert fingerprint(builtin_pool(500, seed=1)) != fingerprint(pool[:500])


def test_pool_is_identical_in_a_fresh_interpreter_with_another_hash_seed(pool):
    code = textwrap.dedent(
        """
        import hashlib
        from compresslm.data.builtin import builtin_pool
        h = hashlib.sha256()
        for r in builtin_pool(3000):
            h.update(f"{r.id}\\0{r.domain}\\0{r.text}\\0".encode())
        print(h.hexdigest())
        """
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == fingerprint(pool[:3000])


def test_large_pools_repeat_texts_but_keep_ids_unique():
    n = 60_000
    ids, texts = set(), set()
    for r in iter_builtin_pool(n):
        ids.add(r.id)
        texts.add(r.text)
    assert len(ids) == n
    assert len(texts) < n  # more than the stdlib holds: sampled with replacement


def test_python_targets_never_appear_in_the_pool_or_the_mixture(pool):
    targets = python_targets()
    assert len(targets) == 200 and len({t.text for t in targets}) == 200
    assert all(t.domain == "python" and t.id == f"builtin:python-targets:{t.index}" for t in targets)
    # Stronger than a substring test and much faster: a target found in a document (even re-indented,
    # e.g. as a method) would have every one of its stripped lines among the document's lines.
    seen_lines = {line.strip() for r in [*pool, *generic_mixture(5000)] for line in r.text.splitlines()}
    leaked = [t.id for t in targets if {line.strip() for line in t.text.splitlines()} <= seen_lines]
    assert leaked == []


def test_held_out_split_is_by_file_and_about_ten_percent():
    corpus = sc.stdlib_corpus()
    assert corpus.heldout_python and all(sc.is_heldout(d.origin.split(":")[0]) for d in corpus.heldout_python)
    pool_files = {d.origin.split(":")[0] for d in corpus.pool["python"]}
    assert not any(sc.is_heldout(f) for f in pool_files)
    share = sum(sc.is_heldout(f"mod{i}.py") for i in range(5000)) / 5000
    assert abs(share - sc.HELDOUT_PERCENT / 100) < 0.02


def test_too_many_targets_is_a_config_error():
    with pytest.raises(ConfigError, match="held-out functions"):
        python_targets(10**6)


def test_mixture_covers_every_domain_in_natural_proportion():
    mix = generic_mixture(4000)
    counts = collections.Counter(r.domain for r in mix)
    natural = sc.stdlib_corpus().counts()
    assert set(counts) <= set(natural) and len(counts) >= 5
    assert counts.most_common(1)[0][0] == max(natural, key=natural.get)


def test_weights_sum_to_one_with_the_python_share():
    weights = pool_weights()
    assert weights["python"] == PYTHON_SHARE and abs(sum(weights.values()) - 1) < 1e-12


def test_builtin_names_parse():
    assert parse_builtin("builtin:pool") == ("pool", None)
    assert parse_builtin("builtin:pool:50000") == ("pool", 50000)
    for bad in ("builtin:humaneval:3", "builtin:pools", "builtin:pool:x"):
        with pytest.raises(DataError):
            parse_builtin(bad)


def test_stdlib_corpus_degrades_gracefully_without_tests_topics_or_headers(tmp_path):
    lib = tmp_path / "lib"
    (lib / "pkg").mkdir(parents=True)
    body = "\n".join(
        f"    x{i} = {i} * 2  # a line of code to make the function long enough" for i in range(6)
    )
    (lib / "pkg" / "mod.py").write_text(f'"""Module."""\n\n\ndef useful(a, b):\n{body}\n    return a\n')
    (lib / "broken.py").write_text("def (:\n")
    (lib / "notes.txt").write_text(
        ("A paragraph of plain text that is long enough to keep. " * 4 + "\n\n") * 3
    )
    corpus = sc.stdlib_corpus.__wrapped__(str(lib), str(tmp_path / "no-include"))
    everything = [*corpus.heldout_python, *(d for docs in corpus.pool.values() for d in docs)]
    assert {d.domain for d in everything} == {"python", "text"}
    assert [d.origin for d in everything if d.domain == "python"] == ["pkg/mod.py:useful"]


def test_humaneval_split_sizes_and_text():
    target, test = humaneval_split()
    assert (len(target), len(test)) == (82, 82) and len(humaneval_records()) == HUMANEVAL_SIZE == 164
    assert target[0].id == "builtin:humaneval:HumanEval/0" and test[0].id == "builtin:humaneval:HumanEval/82"
    assert {r.id for r in target}.isdisjoint(r.id for r in test)
    problem = target[5].raw
    assert target[5].text == problem["prompt"] + "\n" + problem["canonical_solution"]
