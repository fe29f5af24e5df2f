"""One streaming iterator per input format, each yielding ``(id, payload)`` in file order.

The payload is what the file holds for that record, before any text is extracted:

- a ``dict``: a parsed record (JSON object, Parquet/Arrow row) from which the reader takes the text;
- a ``str``: a whole text document (a ``.txt`` file, a file in a folder);
- :class:`Malformed`: input that is broken (bad JSON, not UTF-8); ``--on-error`` decides;
- :class:`Refused`: a record the format layer already knows to reject by policy (a blank JSONL line,
  a file or line larger than the limit, which is skipped without being loaded).

Invariants: every iterator streams (memory is bounded by one record or one batch, never a file), ids
are stable (``path:LINE`` 1-based for JSON Lines, ``path:ROW`` 0-based for JSON arrays, Parquet and
Arrow, the file path for text documents), and a truncated or corrupt stream raises
:class:`~compresslm.errors.DataError` naming the file instead of ending early as if complete.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import os
import stat
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from compresslm.data.records import BAD_JSON, EMPTY, NOT_UTF8, TOO_LARGE
from compresslm.errors import DataError

_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 16
DEFAULT_MAX_LINE_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class Malformed:
    """Broken input for one record; fatal under ``on_error="fail"``, a rejection under ``"skip"``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A record rejected by policy before its text was extracted (always a rejection, never fatal)."""

    reason: str


Payload = dict[str, Any] | str | Malformed | Refused
Item = tuple[str, Payload]


def utf8_error(exc: UnicodeError) -> str:
    """A short, position-bearing reason for a decoding or encoding failure."""
    if isinstance(exc, UnicodeEncodeError):
        char = exc.object[exc.start]
        return f"{NOT_UTF8}: lone surrogate U+{ord(char):04X} at character {exc.start}"
    if isinstance(exc, UnicodeDecodeError):
        return f"{NOT_UTF8}: {exc.reason} at byte {exc.start}"
    return f"{NOT_UTF8}: {exc}"


# ----------------------------------------------------------------------------------------- JSON Lines


class _ZstdFrames(io.RawIOBase):
    """A raw reader over a (multi-frame) zstd file that fails on truncation.

    ``zstandard``'s ``stream_reader`` returns a truncated frame's bytes and then a clean EOF (measured
    with zstandard 0.25), which would make a cut-off download look complete. ``decompressobj`` exposes
    ``eof`` per frame, so we decode frame by frame and raise unless the last frame was finished.
    """

    def __init__(self, fh: BinaryIO, path: str) -> None:
        import zstandard

        self._zstd = zstandard
        self._fh, self._path = fh, path
        self._obj = zstandard.ZstdDecompressor().decompressobj()
        self._in_frame = False
        self._out, self._at = b"", 0  # decompressed bytes not yet returned start at self._at

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()

    def readinto(self, buffer: Any) -> int:
        while self._at == len(self._out):
            chunk = self._fh.read(_CHUNK)
            if not chunk:
                if self._in_frame:
                    raise DataError(f"{self._path}: truncated zstd stream (frame ends early)")
                return 0
            self._feed(chunk)
        n = min(len(buffer), len(self._out) - self._at)
        buffer[:n] = memoryview(self._out)[self._at : self._at + n]
        self._at += n
        return n

    def _feed(self, data: bytes) -> None:
        parts = []
        while data:
            try:
                parts.append(self._obj.decompress(data))
            except self._zstd.ZstdError as exc:
                raise DataError(f"{self._path}: corrupt zstd stream: {exc}") from exc
            if self._obj.eof:  # frame finished; what follows starts the next frame
                data = self._obj.unused_data
                self._obj = self._zstd.ZstdDecompressor().decompressobj()
                self._in_frame = False
            else:
                data = b""
                self._in_frame = True
        self._out, self._at = b"".join(parts), 0


def _open_binary(path: str) -> IO[bytes]:
    """Open a possibly compressed file for buffered binary reading; compression by extension."""
    name = path.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith((".zst", ".zstd")):
        # The file is closed by _ZstdFrames.close, which the BufferedReader calls.
        return io.BufferedReader(_ZstdFrames(open(path, "rb"), path), _CHUNK)  # noqa: SIM115
    return open(path, "rb")


def _read_line(f: IO[bytes], path: str, lineno: int, limit: int) -> bytes:
    """One line (at most ``limit`` bytes); decompression failures become a DataError naming the file."""
    try:
        return f.readline(limit)
    except DataError:
        raise
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: truncated or corrupt compressed stream after line {lineno}: {exc}") from exc


class UnsafeNumber(ValueError):
    """A JSON number Python cannot hold or write back: ``NaN``/``Infinity`` or a huge integer."""


def _parse_int(digits: str) -> int:
    # Python refuses to convert integers of more than sys.get_int_max_str_digits() digits (4,300 by
    # default) in either direction, so such a record could be read neither here nor when it is written
    # back: reject it with a reason instead of raising a bare ValueError from deep inside json.
    limit = sys.get_int_max_str_digits()
    n = len(digits.lstrip("-"))
    if limit and n > limit:
        raise UnsafeNumber(f"an integer of {n:,} digits (Python reads at most {limit:,})")
    return int(digits)


def _parse_constant(name: str) -> Any:
    # NaN and +-Infinity are not JSON (RFC 8259); Python's json accepts them by default and would copy
    # them into our outputs, which other JSON readers then refuse.
    raise UnsafeNumber(f"{name} is not a JSON number")


def loads_json(text: str) -> Any:
    """``json.loads`` for untrusted data: raises :class:`UnsafeNumber` for ``NaN``/``Infinity`` and
    integers beyond Python's conversion limit, ``json.JSONDecodeError`` for bad syntax."""
    return json.loads(text, parse_int=_parse_int, parse_constant=_parse_constant)


def json_decoder() -> json.JSONDecoder:
    """A decoder with the same rules as :func:`loads_json` (for incremental ``raw_decode``)."""
    return json.JSONDecoder(parse_int=_parse_int, parse_constant=_parse_constant)


def parse_json_line(line: bytes) -> Payload:
    """Decode and parse one JSON Lines record (no trailing newline handling needed)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Malformed(utf8_error(exc))
    try:
        obj = loads_json(text)
    except json.JSONDecodeError as exc:
        # Some of json's messages end in "at" ("Unterminated string starting at"): say it once.
        return Malformed(f"{BAD_JSON}: {exc.msg.removesuffix(' at')} at column {exc.colno}")
    except UnsafeNumber as exc:
        return Malformed(f"{BAD_JSON}: {exc}")
    except RecursionError:
        return Malformed(f"{BAD_JSON}: nested too deeply")
    if not isinstance(obj, dict):
        return Malformed(f"{BAD_JSON}: expected an object, got {_json_type(obj)}")
    return obj


def iter_jsonl(path: str, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[Item]:
    """Records of a JSON Lines file (optionally ``.gz``/``.zst``), one per line, ids ``path:LINE``.

    A blank (empty or whitespace-only) line is a record too: it is refused as ``"empty: blank line"``
    so that line numbers and counts stay honest (nothing is dropped silently). A line longer than
    ``max_line_bytes`` is refused without being held in memory.
    """
    with _open_binary(path) as f:
        lineno = 0
        while True:
            line = _read_line(f, path, lineno, max_line_bytes + 1)
            if not line:
                return
            lineno += 1
            rid = f"{path}:{lineno}"
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                size = len(line)
                while not line.endswith(b"\n"):
                    line = _read_line(f, path, lineno, _CHUNK)
                    if not line:
                        break
                    size += len(line)
                yield rid, Refused(f"{TOO_LARGE} (line of {size} bytes > {max_line_bytes})")
                continue
            if lineno == 1 and line.startswith(_BOM):
                line = line[len(_BOM) :]
            if not line.strip():
                yield rid, Refused(f"{EMPTY}: blank line")
                continue
            yield rid, parse_json_line(line)


# ----------------------------------------------------------------------------------------- JSON arrays


class _JsonArrayStream:
    """Incremental parser for a top-level JSON array, one element at a time.

    Hand-written over the standard library's ``JSONDecoder.raw_decode`` so that values parse exactly
    as in JSON Lines (same floats, same surrogate handling, same messages) without a new dependency
    (``ijson`` would return ``Decimal`` floats). The buffer holds at most the current element plus one
    read; reads double while an element is incomplete, so a large element costs O(size), not O(size²).
    """

    def __init__(self, fh: BinaryIO, path: str) -> None:
        self._fh, self._path = fh, path
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._json = json_decoder()
        self._buf, self._pos, self._eof = "", 0, False
        self._offset = 0  # bytes read so far, to report where undecodable bytes are

    def _fill(self, size: int) -> bool:
        if self._eof:
            return False
        data = self._fh.read(size)
        self._eof = not data
        pending = len(self._decoder.getstate()[0])
        try:
            text = self._decoder.decode(data, final=self._eof)
        except UnicodeDecodeError as exc:
            where = self._offset - pending + exc.start
            raise DataError(f"{self._path}: {NOT_UTF8}: {exc.reason} at byte {where}") from exc
        self._offset += len(data)
        if self._pos > _CHUNK:
            self._buf, self._pos = self._buf[self._pos :], 0
        self._buf += text
        return True

    def _peek(self) -> str:
        """The next non-whitespace character ('' at end of file), without consuming it."""
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in " \t\r\n":
                self._pos += 1
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill(_CHUNK):
                return ""

    def _expect(self, char: str, row: int, what: str) -> None:
        got = self._peek()
        if got != char:
            found = repr(got) if got else "end of file"
            raise DataError(f"{self._path}:{row}: {BAD_JSON}: expected {what}, found {found}")
        self._pos += 1

    def items(self) -> Iterator[Item]:
        if self._peek() == "\ufeff":
            self._pos += 1
        self._expect("[", 0, "a top-level array '['")
        row = 0
        if self._peek() == "]":
            self._pos += 1
        else:
            while True:
                yield f"{self._path}:{row}", self._decode(row)
                row += 1
                if self._peek() == "]":
                    self._pos += 1
                    break
                self._expect(",", row, "',' or ']'")
        if self._peek():
            raise DataError(f"{self._path}:{row}: {BAD_JSON}: data after the closing ']'")

    def _decode(self, row: int) -> Payload:
        size = _CHUNK
        while True:
            self._peek()
            try:
                obj, end = self._json.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                if self._fill(size):
                    size *= 2
                    continue
                raise DataError(
                    f"{self._path}:{row}: {BAD_JSON}: {exc.msg} "
                    "(a JSON array cannot be resynchronised after a syntax error; use JSON Lines)"
                ) from exc
            except RecursionError as exc:
                raise DataError(f"{self._path}:{row}: {BAD_JSON}: nested too deeply") from exc
            except UnsafeNumber as exc:
                # The element's extent is unknown once a hook raised, so the array cannot go on.
                raise DataError(f"{self._path}:{row}: {BAD_JSON}: {exc}") from exc
            # A number may continue past the buffer's end ("12" of "123"): read on before trusting it.
            if end == len(self._buf) and self._fill(size):
                size *= 2
                continue
            self._pos = end
            if not isinstance(obj, dict):
                return Malformed(f"{BAD_JSON}: expected an object, got {_json_type(obj)}")
            return obj


def _first_byte(path: str) -> bytes:
    """The first non-whitespace byte of a file (after a UTF-8 BOM), b'' if none."""
    with open(path, "rb") as f:
        head = f.read(len(_BOM))
        if head != _BOM:
            f.seek(0)
        while chunk := f.read(_CHUNK):
            stripped = chunk.lstrip(b" \t\r\n")
            if stripped:
                return stripped[:1]
    return b""


def iter_json(path: str, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[Item]:
    """Records of a ``.json`` file: a top-level array of objects (ids ``path:ROW``, 0-based).

    A ``.json`` file whose first value is an object is read as JSON Lines (ids ``path:LINE``): that
    is what ``datasets.Dataset.to_json`` and many exporters write under this extension. An empty
    file holds no records.
    """
    first = _first_byte(path)
    if first == b"{":
        yield from iter_jsonl(path, max_line_bytes=max_line_bytes)
        return
    if not first:
        return
    with open(path, "rb") as fh:
        yield from _JsonArrayStream(fh, path).items()


# ------------------------------------------------------------------------------------ Parquet / Arrow


def iter_parquet(path: str, *, batch_size: int = 1024) -> Iterator[Item]:
    """Rows of a Parquet file as dicts, ids ``path:ROW`` (0-based), read batch by batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        batches = pf.iter_batches(batch_size=batch_size)
        row = 0
        for batch in batches:
            for rec in batch.to_pylist():
                yield f"{path}:{row}", rec
                row += 1
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot read Parquet: {exc}") from exc


def is_hf_dataset(folder: str) -> bool:
    """A folder written by ``datasets.Dataset.save_to_disk`` (or ``DatasetDict.save_to_disk``)."""
    return any(os.path.isfile(os.path.join(folder, name)) for name in _HF_MARKERS)


_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def dataset_dict_splits(folder: str) -> list[str]:
    """The split names of a saved ``DatasetDict`` (its ``dataset_dict.json``), in their order."""
    dict_file = os.path.join(folder, "dataset_dict.json")
    try:
        with open(dict_file, encoding="utf-8") as f:
            splits = json.load(f)["splits"]
        if not isinstance(splits, list) or not all(
            isinstance(s, str) and s not in ("", ".", "..") and "/" not in s for s in splits
        ):
            raise TypeError("'splits' is not a list of names")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{dict_file}: cannot read the list of splits: {exc}") from exc
    return splits


def _arrow_files(folder: str) -> list[str]:
    """The Arrow files of one saved dataset, in the order ``state.json`` lists them."""
    state = os.path.join(folder, "state.json")
    if os.path.isfile(state):
        try:
            with open(state, encoding="utf-8") as f:
                files = [entry["filename"] for entry in json.load(f)["_data_files"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{state}: cannot read the list of data files: {exc}") from exc
        return [os.path.join(folder, name) for name in files]
    return sorted(str(p) for p in Path(folder).glob("*.arrow"))


def _arrow_batches(path: str) -> Iterator[Any]:
    """Record batches of an Arrow IPC stream (what ``datasets`` writes) or IPC file."""
    import pyarrow as pa

    with pa.memory_map(path) as source:
        try:
            reader: Any = pa.ipc.open_stream(source)
            yield from reader
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)


def iter_hf_dataset(folder: str) -> Iterator[Item]:
    """Rows of a saved Hugging Face dataset, read from its Arrow files with pyarrow (no ``datasets``).

    Ids are ``folder:ROW`` (0-based across the dataset's files). A saved ``DatasetDict`` holds
    several splits that must not be mixed (a test split inside training data): it is refused with the
    split folders to pass instead (``folder/train``), as ``datasets.load_from_disk`` users pick
    ``ds["train"]``; a ``DatasetDict`` of one split is that split, ids ``folder/SPLIT:ROW``.
    """
    import pyarrow as pa

    dict_file = os.path.join(folder, "dataset_dict.json")
    if os.path.isfile(dict_file):
        splits = dataset_dict_splits(folder)
        if len(splits) != 1:
            choices = ", ".join(os.path.join(folder, s) for s in splits)
            raise DataError(
                f"{folder}: a saved DatasetDict with {len(splits)} splits ({', '.join(splits)}); "
                f"pass the split to read as its folder: {choices}"
            )
        yield from iter_hf_dataset(os.path.join(folder, splits[0]))
        return
    files = _arrow_files(folder)
    if not files:
        raise DataError(f"{folder}: saved dataset folder without .arrow files")
    row = 0
    for path in files:
        try:
            for batch in _arrow_batches(path):
                for rec in batch.to_pylist():
                    yield f"{folder}:{row}", rec
                    row += 1
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: cannot read Arrow data: {exc}") from exc


# ------------------------------------------------------------------------------------ text documents


def read_text_document(path: str, max_bytes: int | None) -> Payload:
    """A whole file as one document; a file over ``max_bytes`` is refused without being read."""
    size = os.path.getsize(path)
    if max_bytes is not None and size > max_bytes:
        return Refused(f"{TOO_LARGE} ({size} bytes > {max_bytes})")
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Malformed(utf8_error(exc))


def iter_text_file(path: str, *, max_bytes: int | None = None) -> Iterator[Item]:
    """A ``.txt`` file: one document, id = the path."""
    yield path, read_text_document(path, max_bytes)


def text_folder_files(folder: str) -> list[str]:
    """Every regular, non-hidden file under ``folder`` (recursively), sorted by relative path.

    Hidden files and folders (name starting with ``.``) are skipped, and symlinked folders are not
    followed (no cycles); the order is by POSIX relative path, so it does not depend on the OS. A
    subfolder that cannot be listed raises :class:`DataError` (``os.walk`` would skip it silently).
    """

    def refuse(exc: OSError) -> None:
        raise DataError(f"{exc.filename}: cannot list this folder: {exc.strerror}") from exc

    found: list[tuple[str, str]] = []
    for root, dirs, files in os.walk(folder, onerror=refuse):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            full = os.path.join(root, name)
            if not name.startswith(".") and os.path.isfile(full):
                found.append((Path(os.path.relpath(full, folder)).as_posix(), full))
    return [full for _, full in sorted(found)]


def is_record_file(path: str) -> bool:
    """Whether a file holds records (JSON Lines, JSON, Parquet) rather than one text document."""
    return path.lower().endswith((*_JSONL_SUFFIXES, ".json", ".parquet"))


def iter_folder(folder: str, *, max_bytes: int | None = None, max_line_bytes: int) -> Iterator[Item]:
    """Every file under ``folder`` in :func:`text_folder_files` order, read by its own format.

    Record files (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``, ``.ndjson``, ``.json``, ``.parquet``)
    give their records, as a folder of shards does for ``datasets.load_dataset`` or datatrove's
    readers; any other file is one text document, id = its path (a folder of ``.txt``/``.py`` files).
    """
    for path in text_folder_files(folder):
        if is_record_file(path):
            yield from open_path(path, max_bytes=max_bytes, max_line_bytes=max_line_bytes)
        else:
            check_readable(path)
            yield path, read_text_document(path, max_bytes)


# ---------------------------------------------------------------------------------------- dispatcher

_JSONL_SUFFIXES = tuple(
    f"{ext}{comp}" for ext in (".jsonl", ".ndjson") for comp in ("", ".gz", ".zst", ".zstd")
)
FORMATS = (
    ".jsonl, .jsonl.gz, .jsonl.zst, .ndjson, .json, .parquet, .txt, a folder (of shards or text files), "
    "a saved HF dataset"
)


def open_path(path: str, *, max_bytes: int | None, max_line_bytes: int) -> Iterator[Item]:
    """The item iterator for one expanded input path, chosen by extension (or folder layout).

    Only regular files and folders are read: the commands read their inputs more than once (select
    scores, then writes; tokenize trains, then encodes), which a FIFO or a socket cannot give, and
    opening a FIFO without a writer would wait forever.
    """
    check_readable(path)
    if os.path.isdir(path):
        if is_hf_dataset(path):
            return iter_hf_dataset(path)
        return iter_folder(path, max_bytes=max_bytes, max_line_bytes=max_line_bytes)
    name = path.lower()
    if name.endswith(_JSONL_SUFFIXES):
        return iter_jsonl(path, max_line_bytes=max_line_bytes)
    if name.endswith(".json"):
        return iter_json(path, max_line_bytes=max_line_bytes)
    if name.endswith(".parquet"):
        return iter_parquet(path)
    if name.endswith(".txt"):
        return iter_text_file(path, max_bytes=max_bytes)
    raise DataError(f"{path}: unknown input format (expected one of: {FORMATS})")


def check_readable(path: str) -> None:
    """Raise :class:`DataError` unless ``path`` is a folder or a regular file this process can read."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from exc
    if stat.S_ISDIR(mode):
        if not os.access(path, os.R_OK | os.X_OK):
            raise DataError(f"{path}: cannot read this folder: permission denied")
        return
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise DataError(
            f"{path}: is {kind}, not a regular file (inputs are read more than once; save it to a file first)"
        )
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from exc


def _json_type(obj: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(obj), "a number"
    )
