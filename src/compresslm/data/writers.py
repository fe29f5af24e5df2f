"""Atomic outputs: a run either leaves a complete output or none, and never overwrites without force.

The rules every command gets from here (:func:`atomic_output` for files, :func:`atomic_folder` for
folders):

* an output is built under a hidden temporary name *beside* its destination (same folder, so the
  final rename cannot cross file systems; never inside the destination), flushed, then renamed into
  place. Any exception, ``KeyboardInterrupt`` included, deletes the temporary, so an interrupted run
  never leaves a truncated output that looks complete;
* an existing output is replaced only with ``force``, and only *after* the new one is complete:
  ``force`` deletes nothing but the one output being replaced. A folder is replaced only when it is
  recognisably an output of the same kind (each command says how it recognises its own), and never
  when it is the current folder or one above it;
* an output is never an input: :func:`check_not_input` refuses an output that is, contains or lies
  inside one of the command's inputs;
* new files and folders get the modes ``open()`` and ``mkdir()`` would give them: the umask decides.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import glob
import gzip
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Literal

from compresslm.errors import ConfigError, DataError, OutputExistsError

PARQUET_ROW_GROUP = 10_000
"""Rows buffered per Parquet row group; the first group fixes the schema of the file."""

_umask_lock = threading.Lock()
_umask: int | None = None


def umask() -> int:
    """The process umask (read once: reading it means setting it, so it is cached under a lock)."""
    global _umask
    with _umask_lock:
        if _umask is None:
            _umask = os.umask(0o022)
            os.umask(_umask)
    return _umask


def _new_file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 minus the umask); mkstemp's is 0o600."""
    return 0o666 & ~umask()


def new_folder_mode() -> int:
    """The mode ``mkdir()`` would give a new folder (0o777 minus the umask); mkdtemp's is 0o700."""
    return 0o777 & ~umask()


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


def _input_paths(specs: Iterable[str | Path]) -> list[str]:
    """Real paths of the inputs that exist on disk (globs expanded; ``builtin:NAME`` ignored)."""
    found: list[str] = []
    for spec in specs:
        text = os.fspath(spec)
        if os.path.lexists(text):
            found.append(os.path.realpath(text))
        elif glob.has_magic(text):
            found += [os.path.realpath(p) for p in glob.glob(text, recursive=True)]
    return found


def check_not_input(outputs: Iterable[str | Path | None], inputs: Iterable[str | Path]) -> None:
    """Refuse an output that is, contains or lies inside an input (:class:`ConfigError`).

    Writing there would destroy the input (``tokenize corpus -o corpus --force``), read the output
    back as input on a rerun, or replace the file being read (``decompress x.clm -o x.clm``).
    Paths are compared after resolving symlinks; inputs that are not paths (``builtin:NAME``) and
    ``None`` outputs are ignored.
    """
    sources = _input_paths(inputs)
    for raw in outputs:
        if raw is None:
            continue
        out = os.path.realpath(raw)
        for src in sources:
            if out == src:
                raise ConfigError(f"{raw} is also an input; choose another output")
            if _is_within(out, src):
                raise ConfigError(f"{raw} lies inside the input {src}; choose an output outside it")
            if _is_within(src, out):
                raise ConfigError(f"{raw} contains the input {src}; choose another output")


def _is_within(path: str, folder: str) -> bool:
    """Whether real path ``path`` lies strictly below real path ``folder``."""
    return path != folder and os.path.commonpath([path, folder]) == folder


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


# ------------------------------------------------------------------------------------------- folders


def check_folder_free(
    path: str | Path, force: bool, owned: Callable[[Path], bool], what: str = "an output of this command"
) -> None:
    """Fail *before* a long run unless ``path`` can become the output folder.

    Free: ``path`` does not exist or is an empty folder. With ``force``, also a folder that
    ``owned`` recognises as ``what`` (the kind of output being written), which will be replaced
    only once the new one is complete. Never a file, the current folder or a folder above it.
    """
    path = Path(path)
    if not os.path.lexists(path):
        parent = next((p for p in path.absolute().parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise ConfigError(f"{path}: {parent} is a file, not a folder")
        return
    if path.is_symlink() or not path.is_dir():
        raise ConfigError(f"{path} exists and is not a folder; choose another output")
    real, cwd = os.path.realpath(path), os.path.realpath(os.getcwd())
    if real == cwd or _is_within(cwd, real):
        raise ConfigError(
            f"{path} is the current folder or holds it; an output folder is replaced whole, so "
            "choose a new folder (e.g. -o restored)"
        )
    if not any(path.iterdir()):
        return
    if not force:
        raise OutputExistsError(_exists_message(path))
    if not owned(path):
        raise ConfigError(
            f"{path} exists and is not {what}; --force only replaces such a folder, so move it "
            "away or choose another output"
        )


@contextmanager
def atomic_folder(
    path: str | Path,
    *,
    force: bool = False,
    owned: Callable[[Path], bool] = lambda _: False,
    what: str = "an output of this command",
) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it becomes ``path``.

    ``path`` must pass :func:`check_folder_free` (checked again at the end, so an output that
    appeared meanwhile is not clobbered). A replaced folder is moved aside first and deleted only
    after the new one is in place; if the final rename fails, it is moved back. On any exception
    the temporary folder is deleted and ``path`` is left as it was. The temporary folder gets the
    mode ``mkdir`` would give (the umask decides), not mkdtemp's 0o700.
    """
    path = Path(path)
    check_folder_free(path, force, owned, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, new_folder_mode())
        yield tmp
        check_folder_free(path, force, owned, what)
        _replace_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)


def _replace_folder(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``; an existing non-empty ``path`` is moved aside first and deleted
    after (``tmp`` and the aside folder are siblings of ``path``, never inside it)."""
    if not os.path.lexists(path) or not any(path.iterdir()):
        try:
            os.rename(tmp, path)  # replaces an empty folder atomically; fails on a non-empty one
        except OSError as exc:
            raise OutputExistsError(f"{path} appeared while writing; nothing was replaced ({exc})") from exc
        return
    aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
    old = aside / path.name
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)
        aside.rmdir()
        raise
    if not _is_within(os.path.realpath(os.getcwd()), os.path.realpath(aside)):  # checked before; kept
        shutil.rmtree(aside, ignore_errors=True)


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


def check_record_output(path: str | Path) -> None:
    """Fail now if :func:`write_records` could not write ``path``: unknown extension or a parent
    folder that cannot be created or written (checked before a long run, not after it)."""
    path = Path(path)
    if _jsonl_kind(path) is None and not path.name.lower().endswith(".parquet"):
        raise ConfigError(
            f"{path}: unknown output format (expected .jsonl, .jsonl.gz, .jsonl.zst or .parquet)"
        )
    check_writable_parent(path)


def check_writable_parent(path: str | Path) -> None:
    """Fail now if ``path``'s nearest existing parent is not a folder this process can write."""
    parent = next((p for p in Path(path).absolute().parents if p.exists()), None)
    if parent is not None and (not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK)):
        raise ConfigError(f"{path}: cannot write in {parent}")


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


# ------------------------------------------------------------------------------- outputs committed together

PENDING_PREFIX = ".pending-"


class OutputGroup:
    """Several outputs of one run, published together at the end (or none of them).

    ``reserve(dest)`` returns a hidden temporary path beside ``dest`` that ends with ``dest``'s own
    name (so format-by-extension writers and ``with_suffix`` siblings still work); the caller writes
    there. ``commit()`` renames every reserved path onto its destination, checking each destination
    again (no overwrite without ``force``), and ``discard()`` deletes the temporaries -- used as a
    context manager, an exception or Ctrl-C discards them. A run that dies on a late error (an
    output it cannot write, a record that already has a ``score`` field) thus leaves no output
    that looks complete. A folder destination (sharded outputs) is replaced only when ``force`` is
    given and it is empty or holds ``marker`` (our own earlier output).
    """

    def __init__(self, *, force: bool = False, marker: str | None = None) -> None:
        self.force = force
        self.marker = marker
        self._token = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._items: list[tuple[Path, Path]] = []

    def reserve(self, dest: str | Path) -> Path:
        dest = Path(dest)
        tmp = dest.parent / f"{PENDING_PREFIX}{self._token}-{dest.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._items.append((tmp, dest))
        return tmp

    def _owned(self, folder: Path) -> bool:
        return bool(self.marker) and (folder / str(self.marker)).is_file()

    def commit(self) -> None:
        for tmp, dest in self._items:  # check every destination before publishing any
            if tmp.is_dir():
                check_folder_free(dest, self.force, self._owned)
            elif dest.exists() and not self.force:
                raise OutputExistsError(_exists_message(dest))
        for tmp, dest in self._items:
            if not tmp.exists():
                continue  # an optional sibling (e.g. a histogram) that was not written
            if tmp.is_dir():
                os.chmod(tmp, new_folder_mode())
                _replace_folder(tmp, dest)
            else:
                _publish(str(tmp), dest, self.force)
            _fsync_dir(dest.parent)
        self._items = []

    def discard(self) -> None:
        for tmp, _ in self._items:
            with suppress(OSError):
                if tmp.is_dir():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
        self._items = []

    def __enter__(self) -> OutputGroup:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.discard()
            return
        try:
            self.commit()
        except BaseException:
            self.discard()
            raise
