"""Natural documents cut from the running interpreter's standard library, labelled by domain.

This is the raw material of the built-in corpora (:mod:`compresslm.data.builtin`): it exists on
every machine with Python and needs no network. Sources, all under ``sysconfig`` paths (never
site-packages):

- ``python``: top-level functions and classes of the library's ``.py`` files, cut out with ``ast``
  line ranges (a class larger than :data:`MAX_DOC` contributes its methods instead, dedented);
  test folders are not used (their code is atypical and parsing them would double the build time);
- ``prose``: ``pydoc_data.topics`` (the language reference) and docstrings of modules, classes and
  functions, in paragraphs packed into documents;
- ``c``: the C headers of the include folder; ``markup`` (HTML, XML, reStructuredText), ``data``
  (decimal test vectors, JSON, certificates, TOML/INI configuration: too few files for a domain of
  their own), ``email`` (test messages), ``text`` (plain ``.txt`` files: changelogs, licences,
  grammars), split into blocks of paragraphs.

Each part degrades gracefully: a missing ``test/`` folder, ``pydoc_data`` or include folder only
removes what it would have contributed. Documents are :data:`MIN_DOC`..:data:`MAX_DOC` bytes, unique
by text, and every walk is sorted, so the result is the same on every run of one Python build.

Held out: the Python files whose relative path hashes into :data:`HELDOUT_PERCENT` percent
(:func:`is_heldout`) give *only* held-out functions (the Python target set); nothing else from those
files, and no held-out function text, enters the pool.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import os
import random
import sys
import sysconfig
import textwrap
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MIN_DOC = 200
"""Smallest document, in UTF-8 bytes (smaller code snippets are mostly one-liners)."""
MAX_DOC = 4000
"""Largest document, in UTF-8 bytes (the size of a long function)."""
MIN_BLOCK, MAX_BLOCK = 120, 2500
"""Size range of the documents packed from paragraphs (prose, C, data, markup, ...), in bytes."""
HELDOUT_PERCENT = 10
_PIECE = 600

_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "lib-dynload"})
_TEST_DIRS = frozenset({"test", "tests", "idle_test"})
_DOMAIN_BY_EXT = {
    ".html": "markup", ".htm": "markup", ".xml": "markup", ".xsl": "markup", ".rst": "markup",
    ".md": "markup", ".json": "data", ".csv": "data", ".pem": "data", ".dectest": "data",
    ".toml": "data", ".cfg": "data", ".ini": "data", ".conf": "data", ".txt": "text",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Doc:
    """One natural document; ``origin`` says where it was cut from (relative path, name or part)."""

    text: str
    domain: str
    origin: str


@dataclass(frozen=True)
class StdlibCorpus:
    """Pool documents by domain (from non-held-out files) and the held-out Python functions."""

    pool: dict[str, tuple[Doc, ...]]
    heldout_python: tuple[Doc, ...]
    python: str

    def counts(self) -> dict[str, int]:
        return {domain: len(docs) for domain, docs in self.pool.items()}


def is_heldout(relpath: str) -> bool:
    """Whether a stdlib Python file (POSIX path relative to the stdlib folder) is held out.

    A hash of the path, not Python's randomised ``hash()``, so the split is the same on every run.
    """
    digest = hashlib.sha256(relpath.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100 < HELDOUT_PERCENT


@functools.cache
def stdlib_corpus(stdlib: str | None = None, include: str | None = None) -> StdlibCorpus:
    """Build (once per process) the corpus of the running interpreter's standard library."""
    paths = sysconfig.get_paths()
    stdlib = stdlib or paths["stdlib"]
    include = include if include is not None else paths.get("include", "")
    pool: list[Doc] = []
    heldout: list[Doc] = []
    py_files, other_files = _walk_stdlib(stdlib)
    for rel in py_files:
        docs = _python_file(os.path.join(stdlib, rel), rel)
        if is_heldout(rel):
            heldout.extend(doc for doc in docs if doc.domain == "python")
        else:
            pool.extend(docs)
    pool.extend(_topics(stdlib))
    if include and os.path.isdir(include):
        for rel in _sorted_files(include, (".h",)):
            pool.extend(_blocks(_read(os.path.join(include, rel)), "c", f"include/{rel}"))
    for rel in other_files:
        pool.extend(_blocks(_read(os.path.join(stdlib, rel)), _other_domain(rel), rel))

    seen: set[str] = set()
    by_domain: dict[str, list[Doc]] = {}
    for doc in pool:
        if doc.text not in seen:
            seen.add(doc.text)
            by_domain.setdefault(doc.domain, []).append(doc)
    targets = []
    for doc in heldout:  # a held-out function that also occurs in the pool is no target
        if doc.text not in seen:
            seen.add(doc.text)
            targets.append(doc)
    version = f"{sys.implementation.name}-{sys.version.split()[0]}"
    return StdlibCorpus({d: tuple(docs) for d, docs in sorted(by_domain.items())}, tuple(targets), version)


# ---------------------------------------------------------------------------------------- walking


def _walk_stdlib(stdlib: str) -> tuple[list[str], list[str]]:
    """Relative POSIX paths of library ``.py`` files (tests excluded) and of known text files."""
    py_files, other = [], []
    for rel in _sorted_files(stdlib, None):
        parts = rel.split("/")
        ext = os.path.splitext(rel)[1].lower()
        if ext == ".py":
            if not _TEST_DIRS.intersection(parts[:-1]):
                py_files.append(rel)
        elif ext in _DOMAIN_BY_EXT:
            other.append(rel)
    return py_files, other


def _sorted_files(root: str, exts: tuple[str, ...] | None) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and (exts is None or name.lower().endswith(exts)):
                found.append(Path(os.path.relpath(os.path.join(folder, name), root)).as_posix())
    return sorted(found)


def _other_domain(rel: str) -> str:
    if "/test_email/data/" in f"/{rel}":
        return "email"
    return _DOMAIN_BY_EXT[os.path.splitext(rel)[1].lower()]


def _read(path: str) -> str:
    """A file's text, or '' if it is not UTF-8 (some test files are deliberately in other codecs)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


# ----------------------------------------------------------------------------------------- python


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _python_file(path: str, rel: str) -> list[Doc]:
    """Functions/classes (``python``) and docstrings (``prose``) of one module; [] if it won't parse."""
    source = _read(path)
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.splitlines(keepends=True)
    docs: list[Doc] = []

    def cut(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, dedent: bool) -> str:
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        text = "".join(lines[start - 1 : node.end_lineno])
        return textwrap.dedent(text) if dedent else text

    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for node in tree.body:
        if not isinstance(node, defs):
            continue
        text = cut(node, dedent=False)
        if MIN_DOC <= _size(text) <= MAX_DOC:
            docs.append(Doc(text, "python", f"{rel}:{node.name}"))
        elif isinstance(node, ast.ClassDef) and _size(text) > MAX_DOC:
            for member in node.body:
                if isinstance(member, defs):
                    text = cut(member, dedent=True)
                    if MIN_DOC <= _size(text) <= MAX_DOC:
                        docs.append(Doc(text, "python", f"{rel}:{node.name}.{member.name}"))
    # Docstrings of one module, in source order, packed together: most are a paragraph or two.
    strings = [ast.get_docstring(node, clean=True) for node in _documented(tree)]
    prose = "\n\n".join(doc for doc in strings if doc and len(doc) >= MIN_BLOCK)
    docs.extend(_blocks(prose + "\n", "prose", f"{rel}:__doc__"))
    return docs


def _documented(node: ast.AST) -> Iterator[ast.AST]:
    """The module and every function/class in it, in source order, visiting statements only.

    ``ast.walk`` would visit every expression node too: five times slower on the whole stdlib.
    """
    if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        yield node
    for field in ("body", "orelse", "handlers", "finalbody"):
        for child in getattr(node, field, ()):
            if isinstance(child, (ast.stmt, ast.excepthandler)):
                yield from _documented(child)


# ------------------------------------------------------------------------------------------ prose


def _topics(stdlib: str) -> Iterator[Doc]:
    """The language reference shipped as ``pydoc_data/topics.py`` (loaded from the stdlib folder)."""
    path = os.path.join(stdlib, "pydoc_data", "topics.py")
    if not os.path.isfile(path):
        return
    spec = importlib.util.spec_from_file_location("_compresslm_pydoc_topics", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        topics = dict(module.topics)
    except Exception:  # noqa: BLE001 - a broken optional file only removes documents
        return
    for name in sorted(topics):
        if isinstance(topics[name], str):
            yield from _blocks(topics[name], "prose", f"pydoc_data/topics.py:{name}")


# ----------------------------------------------------------------------------------------- blocks


def _blocks(text: str, domain: str, origin: str) -> Iterator[Doc]:
    """Split ``text`` into paragraphs and pack consecutive ones into documents of varied size.

    Each document aims at a size drawn log-uniformly from [MIN_BLOCK, MAX_BLOCK] by a generator
    seeded from ``origin`` (deterministic, and realistic: corpora mix short and long documents), and
    never exceeds MAX_DOC. A paragraph longer than MAX_DOC is cut at line ends (and an overlong line
    at MAX_DOC/4 characters).
    """
    rng = random.Random(zlib.crc32(origin.encode("utf-8")))
    part, size, n = [], 0, 0
    target = _target(rng)
    for para in _paragraphs(text):
        para_size = _size(para)
        if part and size + para_size > MAX_DOC:
            if size >= MIN_BLOCK:
                yield Doc("".join(part), domain, f"{origin}#{n}")
                n += 1
            part, size, target = [], 0, _target(rng)
        part.append(para)
        size += para_size
        if size >= target:
            if size >= MIN_BLOCK:
                yield Doc("".join(part), domain, f"{origin}#{n}")
                n += 1
            part, size, target = [], 0, _target(rng)
    if size >= MIN_BLOCK and "".join(part).strip():
        yield Doc("".join(part), domain, f"{origin}#{n}")


def _target(rng: random.Random) -> float:
    return MIN_BLOCK * (MAX_BLOCK / MIN_BLOCK) ** rng.random()


def _paragraphs(text: str) -> Iterator[str]:
    """Paragraphs (each with its trailing blank line); long ones cut at line ends into _PIECE-byte
    pieces, so that packing can land near its target size even in text with few blank lines."""
    para: list[str] = []
    for line in text.splitlines(keepends=True):
        if not line.strip() and para and para[-1].strip():
            para.append(line)
            yield from _split_long("".join(para))
            para = []
        else:
            para.append(line)
    if para:
        yield from _split_long("".join(para))


def _split_long(para: str) -> Iterator[str]:
    if _size(para) <= _PIECE:
        yield para
        return
    chunk: list[str] = []
    size = 0
    for line in para.splitlines(keepends=True):
        while _size(line) > MAX_DOC:  # e.g. a one-line JSON file
            head, line = line[: MAX_DOC // 4], line[MAX_DOC // 4 :]
            if chunk:
                yield "".join(chunk)
                chunk, size = [], 0
            yield head
        if size + _size(line) > _PIECE and chunk:
            yield "".join(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += _size(line)
    if chunk:
        yield "".join(chunk)
