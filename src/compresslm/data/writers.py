"""Atomic outputs: a run either leaves a complete file or none, and never overwrites without force.

Every output goes to a hidden temporary file beside its destination (same directory, so the final
rename cannot cross file systems), is flushed and fsynced, then renamed into place. Any exception —
including ``KeyboardInterrupt`` — deletes the temporary file, so an interrupted run never leaves a
truncated file that looks complete (DESIGN §2).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import gzip
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Literal

from compresslm.errors import ConfigError, DataError, OutputExistsError

PARQUET_ROW_GROUP = 10_000
"""Rows buffered per Parquet row group; the first group fixes the schema of the file."""

_umask_lock = threading.Lock()
_file_mode: int | None = None


def _new_file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 minus the umask); mkstemp's is 0o600."""
    global _file_mode
    with _umask_lock:
        if _file_mode is None:
            mask = os.umask(0o022)
            os.umask(mask)
            _file_mode = 0o666 & ~mask
    return _file_mode


def _exists_message(path: Path) -> str:
    return f"{path} exists; pass --force to overwrite it"


def check_outputs_free(paths: Iterable[str | Path | None], force: bool = False) -> None:
    """Fail *before* a long run if an output exists (without force), is a folder, or repeats.

    ``None`` entries (outputs not requested) are ignored.
    """
    seen: set[str] = set()
    for raw in paths:
        if raw is None:
            continue
        path = Path(raw)
        key = os.path.realpath(path)
        if key in seen:
            raise ConfigError(f"{path} is given as two different outputs")
        seen.add(key)
        if path.is_dir():
            raise ConfigError(f"{path} is a folder, not an output file")
        if path.exists() and not force:
            raise OutputExistsError(_exists_message(path))
        parent = next((p for p in path.absolute().parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise ConfigError(f"{path}: {parent} is a file, not a folder")


@contextmanager
def atomic_output(
    path: str | Path, *, force: bool = False, mode: Literal["w", "wb"] = "w", encoding: str = "utf-8"
) -> Iterator[IO[Any]]:
    """Open ``path`` for writing through a temporary file that replaces it only on success.

    Refuses an existing ``path`` unless ``force`` (:class:`OutputExistsError`). Without force the
    final step is ``os.link``, which fails if the path appeared meanwhile, so a concurrent writer is
    never clobbered either (falls back to a checked ``os.replace`` where links are unsupported).
    Parent folders are created.
    """
    if mode not in ("w", "wb"):
        raise ConfigError(f"atomic_output mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    check_outputs_free([path], force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _new_file_mode())
        kwargs: dict[str, Any] = {"encoding": encoding, "newline": ""} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path, force)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _publish(tmp: str, path: Path, force: bool) -> None:
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExistsError(_exists_message(path)) from None
    except OSError:  # file systems without hard links
        if path.exists():
            raise OutputExistsError(_exists_message(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (best effort: not every platform can open a folder)."""
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ------------------------------------------------------------------------------------------- records


def _json_default(value: Any) -> Any:
    """JSON for values Parquet/Arrow rows can hold but JSON cannot (documented, lossy for bytes)."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot write a {type(value).__name__} value as JSON")


def json_line(row: dict[str, Any]) -> bytes:
    """One JSON Lines line (UTF-8, with newline). Non-ASCII stays readable (``ensure_ascii=False``);
    a row whose strings hold lone surrogates is written with ``\\u`` escapes instead, which reads back
    to the same Python strings (the only lossless choice: such strings have no UTF-8 form)."""
    text = json.dumps(row, ensure_ascii=False, default=_json_default)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = json.dumps(row, ensure_ascii=True, default=_json_default).encode("ascii")
    return data + b"\n"


def _jsonl_kind(path: Path) -> str | None:
    name = path.name.lower()
    for ext in (".jsonl", ".ndjson"):
        for comp in ("", ".gz", ".zst", ".zstd"):
            if name.endswith(ext + comp):
                return comp or "plain"
    return None


def write_records(path: str | Path, rows: Iterable[dict[str, Any]], *, force: bool = False) -> int:
    """Write ``rows`` to ``path`` atomically, format by extension; returns the number of rows.

    ``.jsonl`` / ``.jsonl.gz`` / ``.jsonl.zst`` stream row by row (gzip with ``mtime=0`` so equal
    rows give equal bytes). ``.parquet`` is written with pyarrow in row groups of
    :data:`PARQUET_ROW_GROUP` rows; columns are the union of the keys of the first group (a key
    missing from a row reads back as null), and later groups must fit that schema.
    """
    path = Path(path)
    kind = _jsonl_kind(path)
    if kind is not None:
        return _write_jsonl(path, rows, kind, force)
    if path.name.lower().endswith(".parquet"):
        return _write_parquet(path, rows, force)
    raise ConfigError(f"{path}: unknown output format (expected .jsonl, .jsonl.gz, .jsonl.zst or .parquet)")


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]], kind: str, force: bool) -> int:
    n = 0
    with atomic_output(path, force=force, mode="wb") as f:
        sink: Any
        if kind == ".gz":
            sink = gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0)
        elif kind in (".zst", ".zstd"):
            import zstandard

            sink = zstandard.ZstdCompressor(level=3).stream_writer(f, closefd=False)
        else:
            sink = None
        out = sink if sink is not None else f
        try:
            for row in rows:
                out.write(json_line(row))
                n += 1
        except TypeError as exc:
            raise DataError(f"{path}: row {n}: {exc}") from exc
        finally:
            if sink is not None:
                sink.close()  # writes the gzip trailer / zstd frame end into f
    return n


def _write_parquet(path: Path, rows: Iterable[dict[str, Any]], force: bool) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 0
    writer: Any = None
    schema: Any = None
    with atomic_output(path, force=force, mode="wb") as f:
        try:
            for chunk in _chunks(rows, PARQUET_ROW_GROUP):
                try:
                    if schema is None:
                        array = pa.array(chunk)  # struct of the union of keys (from_pylist uses row 0's)
                        if not isinstance(array.type, pa.StructType) or array.type.num_fields == 0:
                            raise DataError(f"{path}: rows have no fields to write as Parquet columns")
                        table = pa.Table.from_struct_array(array)
                        schema = table.schema
                        writer = pq.ParquetWriter(f, schema)
                    else:
                        table = pa.Table.from_pylist(chunk, schema=schema)
                except (pa.ArrowException, UnicodeEncodeError) as exc:
                    raise DataError(
                        f"{path}: rows {n}..{n + len(chunk) - 1} do not fit Parquet: {exc}"
                    ) from exc
                writer.write_table(table)
                n += len(chunk)
            if writer is None:  # no rows: still a valid (empty) Parquet file
                writer = pq.ParquetWriter(f, pa.schema([]))
        finally:
            if writer is not None:
                writer.close()
    return n


def _chunks(rows: Iterable[dict[str, Any]], size: int) -> Iterator[Sequence[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
