"""File-level neural compression: ``compress`` an input into a .clm, ``decompress`` it byte for byte,
``inspect`` what is inside.

What an input becomes, and how it is rebuilt, is in :mod:`compresslm.coding.layout`.

Documents longer than ``segment_bytes`` are coded as independent segments (a window never crosses
one), so one long file still fills many rows of the batched model; each segment costs at most one
partial window.
"""

from __future__ import annotations

import hashlib
import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from compresslm import __version__
from compresslm.coding.container import Container, DocEntry, encode_docs, read_container, write_container
from compresslm.coding.equal_info import EqualInfoCoder
from compresslm.coding.intervals import CoderParams
from compresslm.coding.layout import (
    FOLDER,
    RAW,
    LayoutFile,
    decode_layout,
    encode_layout,
    read_source,
    rebuild,
    unpack_layout,
)
from compresslm.coding.m1 import M1, ModelCheck, check_row_independence, fingerprint, verify_model
from compresslm.coding.packing import pack_codes, unpack_codes
from compresslm.coding.window_coder import DEFAULT_BATCH_ROWS, Window
from compresslm.data.writers import (
    atomic_folder,
    atomic_output,
    check_folder_free,
    check_not_input,
    check_outputs_free,
    umask,
)
from compresslm.errors import ConfigError, DataError, IntegrityError

# Documents are coded in independent segments of this many bytes, so that even one file of a few
# hundred KiB fills every row of the batched model. A segment end costs ~0.4 windows (measured on the
# standard library with the 3m M1 at b = 16: +0.12% bits/byte at 1 KiB against unsegmented files,
# +0.03% at 4 KiB, +0.26% at 512 B); 1 KiB gives a 256-row batch from 256 KiB of input.
DEFAULT_SEGMENT_BYTES = 1_024


# ---------------------------------------------------------------------------------------- compression


@dataclass
class CompressReport:
    """What :func:`compress` did. ``bits_per_byte`` counts window bits (padding included) per
    document byte; ``file_bits_per_byte`` the whole .clm per input byte."""

    output: str
    source_kind: str
    documents: int
    segments: int
    document_bytes: int
    input_bytes: int
    windows: int
    window_bits: int
    code: str
    exceptions: int
    backed_off: int
    positions: int
    clm_bytes: int
    layout_bytes: int
    seconds: float  # everything: reading, model checks, coding, writing
    encode_seconds: float  # the coding alone
    record_lines: int = 0
    whole_lines: int = 0
    rejected: int = 0
    files: int = 0
    folders: int = 0
    skipped: list[str] = field(default_factory=list)  # "path (symlink)": not archived

    @property
    def bytes_per_window(self) -> float:
        return self.document_bytes / self.windows if self.windows else 0.0

    @property
    def bits_per_byte(self) -> float:
        return self.windows * self.window_bits / self.document_bytes if self.document_bytes else 0.0

    @property
    def file_bits_per_byte(self) -> float:
        return 8 * self.clm_bytes / self.input_bytes if self.input_bytes else 0.0

    @property
    def exception_rate(self) -> float:
        return self.exceptions / self.windows if self.windows else 0.0

    @property
    def bytes_per_second(self) -> float:
        """Encoding speed: document bytes per second of coding."""
        return self.document_bytes / self.encode_seconds if self.encode_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in (
            "bytes_per_window",
            "bits_per_byte",
            "file_bits_per_byte",
            "exception_rate",
            "bytes_per_second",
        ):
            d[name] = getattr(self, name)
        return d


def segment_lengths(n: int, segment_bytes: int | None) -> list[int]:
    """Byte counts of the segments of an ``n``-byte document (see :func:`segment`)."""
    if not segment_bytes or n <= segment_bytes:
        return [n] if n else []
    return [min(segment_bytes, n - i) for i in range(0, n, segment_bytes)]


def segment(data: bytes, segment_bytes: int | None) -> list[bytes]:
    """``data`` cut into independent coding segments (none for an empty document)."""
    if not segment_bytes or len(data) <= segment_bytes:
        return [data] if data else []
    return [data[i : i + segment_bytes] for i in range(0, len(data), segment_bytes)]


def encode_documents(
    coder: EqualInfoCoder, documents: Sequence[bytes], segment_bytes: int | None, progress: bool = False
) -> tuple[list[DocEntry], list[Window]]:
    """Code every document (segmented) in one batched run; returns the doc table and all windows
    in container order."""
    units: list[bytes] = []
    owner: list[int] = []
    for i, doc in enumerate(documents):
        segs = segment(doc, segment_bytes)
        units += segs
        owner += [i] * len(segs)
    total = sum(len(u) for u in units)
    with tqdm(
        total=total, unit="B", unit_scale=True, desc="compress", disable=not progress, dynamic_ncols=True
    ) as bar:
        coded = coder.encode_many(units, on_bytes=bar.update)
    entries = [DocEntry(len(d), zlib.crc32(d), []) for d in documents]
    windows: list[Window] = []
    for i, wins in zip(owner, coded, strict=True):
        entry = entries[i]
        base = entry.windows
        entry.exceptions += [(base + j, w.nbytes) for j, w in enumerate(wins) if w.exception]
        entry.segment_windows.append(len(wins))
        windows += wins
    return entries, windows


def compress(
    input_path: str | Path,
    output: str | Path,
    *,
    model: str | Path | M1,
    window_bits: int = 16,
    code: str = "straddle",
    max_window_bytes: int | None = None,
    segment_bytes: int | None = DEFAULT_SEGMENT_BYTES,
    text_field: str = "text",
    on_error: str = "fail",
    batch_size: int = DEFAULT_BATCH_ROWS,
    threads: int | None = None,
    force: bool = False,
    progress: bool = False,
) -> CompressReport:
    """Compress ``input_path`` (file, folder or records) into the .clm ``output`` (atomically)."""
    start = time.perf_counter()
    check_outputs_free([output], force)
    check_not_input([output], [input_path])
    if segment_bytes is not None and segment_bytes < 1:
        raise ConfigError(f"--segment-bytes must be positive, got {segment_bytes}")
    m1 = model if isinstance(model, M1) else M1.load(model, threads=threads)
    coder = EqualInfoCoder(
        m1, window_bits, code=code, max_window_bytes=max_window_bytes, batch_size=batch_size
    )
    params = coder.params
    source = read_source(input_path, text_field=text_field, on_error=on_error)
    check_row_independence(m1, params.max_window_bytes, min(batch_size, 64))
    t_encode = time.perf_counter()
    entries, windows = encode_documents(coder, source.documents, segment_bytes, progress)
    encode_seconds = time.perf_counter() - t_encode
    bits = pack_codes([w.code for w in windows], window_bits)
    layout, table = encode_layout(source.files, len(bits) + len(encode_docs(entries)))
    header = {
        "format": "compresslm.clm",
        "created_by": f"compresslm {__version__}",
        "coder": params.to_dict(),
        "segment_bytes": segment_bytes,
        "model": {
            "sha256": m1.sha256,
            "fingerprint": fingerprint(m1, params.max_window_bytes),
            "numerics": m1.numerics,
            "path": m1.path,
            "n_params": m1.n_params,
            "context": m1.max_context,
        },
        "source": {
            "kind": source.kind,
            "name": source.name,
            "text_field": text_field,
            "files": source.n_files,
            "folders": source.n_folders,
            "skipped": len(source.skipped),
            "input_bytes": source.input_bytes,
            "record_lines": source.record_lines,
            "whole_lines": source.whole_lines,
            "rejected": source.rejected,
        },
        "documents": len(entries),
        "windows": len(windows),
        "document_bytes": sum(e.nbytes for e in entries),
        "layout_bytes": len(table),
        "layout_sha256": hashlib.sha256(table).hexdigest(),
        "stats": {
            "exceptions": coder.stats.exceptions,
            "backed_off": coder.stats.backed_off,
            "positions": coder.stats.positions,
        },
    }
    container = Container(header, entries, layout, bits)
    with atomic_output(output, force=force, mode="wb") as f:
        size = write_container(f, container)
    return CompressReport(
        output=str(output),
        source_kind=source.kind,
        documents=len(entries),
        segments=sum(len(e.segment_windows) for e in entries),
        document_bytes=header["document_bytes"],
        input_bytes=source.input_bytes,
        windows=len(windows),
        window_bits=window_bits,
        code=code,
        exceptions=coder.stats.exceptions,
        backed_off=coder.stats.backed_off,
        positions=coder.stats.positions,
        clm_bytes=size,
        layout_bytes=len(layout),
        seconds=time.perf_counter() - start,
        encode_seconds=encode_seconds,
        record_lines=source.record_lines,
        whole_lines=source.whole_lines,
        rejected=source.rejected,
        files=source.n_files,
        folders=source.n_folders,
        skipped=source.skipped,
    )


# -------------------------------------------------------------------------------------- decompression


def load(path: str | Path) -> Container:
    """Read and verify a .clm file's structure (no decoding)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file" if not p.exists() else f"{p}: not a regular file")
    return read_container(p.read_bytes(), str(p))


def layout_of(container: Container, where: str) -> list[LayoutFile]:
    """The container's layout, checked against its header and document table."""
    head = container.header
    table = unpack_layout(
        container.layout, head["layout_bytes"], head["layout_sha256"], container.size, where
    )
    files = decode_layout(table, where)
    source = container.header["source"]
    n_docs = sum(kind != RAW for f in files for kind, _ in f.parts)
    n_files = sum(f.kind != FOLDER for f in files)
    if n_docs != len(container.docs):
        raise IntegrityError(f"{where}: LAYO uses {n_docs} documents, DOCS holds {len(container.docs)}")
    if (n_files, len(files) - n_files) != (source["files"], source["folders"]):
        raise IntegrityError(
            f"{where}: LAYO holds {n_files} files and {len(files) - n_files} folders, HEAD says "
            f"{source['files']} and {source['folders']}"
        )
    single = len(files) == 1 and files[0].path == "" and files[0].kind != FOLDER
    if not files or (source["kind"] == "folder") == single or files[0].path != "":
        raise IntegrityError(f"{where}: LAYO does not match a {source['kind']} input")
    return files


def _decoder(m1: M1, params: CoderParams, batch_size: int = DEFAULT_BATCH_ROWS) -> EqualInfoCoder:
    """The coder a container's header describes (decompression and ``inspect`` share it)."""
    return EqualInfoCoder(
        m1,
        params.window_bits,
        code=params.code,
        max_window_bytes=params.max_window_bytes,
        guard_bits=params.guard_bits,
        batch_size=batch_size,
    )


def coder_params(container: Container, where: str) -> CoderParams:
    try:
        return CoderParams(**container.header["coder"])
    except (TypeError, ConfigError) as exc:
        raise IntegrityError(f"{where}: invalid coder parameters in HEAD: {exc}") from exc


def _model_for(container: Container, where: str, model: str | Path | M1 | None, threads: int | None) -> M1:
    info = container.header.get("model", {})
    if model is None:
        path = info.get("path")
        if not path or not Path(path).is_dir():
            raise ConfigError(f"{where}: the M1 it was written with ({path}) is not here; pass --model")
        model = path
    m1 = model if isinstance(model, M1) else M1.load(model, threads=threads)
    params = coder_params(container, where)
    verify_model(
        m1, ModelCheck(info.get("sha256", ""), info.get("fingerprint", "")), params.max_window_bytes, where
    )
    if m1.precision != params.precision:
        raise IntegrityError(
            f"{where}: coded with precision {params.precision}, the model has {m1.precision}"
        )
    check_row_independence(m1, params.max_window_bytes, 64)  # a clear error before any decoding
    return m1


def decode_documents(
    container: Container,
    m1: M1,
    where: str,
    *,
    batch_size: int = DEFAULT_BATCH_ROWS,
    progress: bool = False,
) -> list[bytes]:
    """Every document, decoded and checked against its length and CRC32."""
    params = coder_params(container, where)
    codes = unpack_codes(container.window_bits, params.window_bits)
    seg_bytes = container.header.get("segment_bytes")
    coder = _decoder(m1, params, batch_size)
    units: list[list[int]] = []
    exc_tables: list[dict[int, int]] = []
    lengths: list[int] = []
    pos = 0
    for i, entry in enumerate(container.docs):
        seg_lengths = segment_lengths(entry.nbytes, seg_bytes)
        if len(seg_lengths) != len(entry.segment_windows):
            raise IntegrityError(
                f"{where}: document {i} has {len(entry.segment_windows)} segments, its length "
                f"{entry.nbytes} needs {len(seg_lengths)}"
            )
        exceptions = dict(entry.exceptions)
        first = 0
        for n_windows, n_bytes in zip(entry.segment_windows, seg_lengths, strict=True):
            units.append(codes[pos : pos + n_windows])
            exc_tables.append({w - first: n for w, n in exceptions.items() if first <= w < first + n_windows})
            lengths.append(n_bytes)
            pos += n_windows
            first += n_windows
    total = sum(lengths)
    with tqdm(
        total=total, unit="B", unit_scale=True, desc="decompress", disable=not progress, dynamic_ncols=True
    ) as bar:
        try:
            decoded = coder.decode_many(units, exc_tables, lengths, on_bytes=bar.update)
        except IntegrityError as exc:
            raise IntegrityError(f"{where}: {exc}") from exc
    out: list[bytes] = []
    k = 0
    for i, entry in enumerate(container.docs):
        doc = b"".join(decoded[k : k + len(entry.segment_windows)])
        k += len(entry.segment_windows)
        if len(doc) != entry.nbytes or zlib.crc32(doc) != entry.crc32:
            raise IntegrityError(
                f"{where}: document {i} fails its CRC32 check after decoding (model or data damaged)"
            )
        out.append(doc)
    return out


@dataclass
class DecompressReport:
    output: str
    files: int
    documents: int
    bytes: int
    seconds: float
    folders: int = 0

    @property
    def bytes_per_second(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else 0.0


def decompress(
    clm: str | Path,
    output: str | Path,
    *,
    model: str | Path | M1 | None = None,
    batch_size: int = DEFAULT_BATCH_ROWS,
    threads: int | None = None,
    force: bool = False,
    progress: bool = False,
) -> DecompressReport:
    """Restore the input of ``clm`` into ``output`` (a file, or a folder for a folder input),
    verifying model, sections, every document's CRC32 and every file's sha256 before writing.

    With ``force`` an existing output is replaced once the restore is complete; an existing folder
    only if everything in it is a path the archive restores (an earlier restore of it), so
    ``--force`` never deletes anything the archive cannot put back."""
    start = time.perf_counter()
    where = str(clm)
    container = load(clm)
    files = layout_of(container, where)
    folder = container.header["source"]["kind"] == "folder"
    out = Path(output)
    check_not_input([out], [clm])
    owned = _restores_only(files)
    if folder:
        check_folder_free(out, force, owned, "an earlier restore of this archive")
    else:
        check_outputs_free([out], force)
    m1 = _model_for(container, where, model, threads)
    docs = decode_documents(container, m1, where, batch_size=batch_size, progress=progress)
    restored = list(rebuild(files, docs, where))
    if folder:
        with atomic_folder(out, force=force, owned=owned, what="an earlier restore of this archive") as tmp:
            _fill_folder(tmp, files, restored)
    else:
        entry, data = restored[0]
        with atomic_output(out, force=force, mode="wb") as f:
            f.write(data)
            f.flush()
            _apply_stat(f.fileno(), entry)
    return DecompressReport(
        str(out),
        len(restored),
        len(docs),
        sum(len(d) for _, d in restored),
        time.perf_counter() - start,
        folders=len(files) - len(restored),
    )


def _restores_only(files: Sequence[LayoutFile]) -> Callable[[Path], bool]:
    """Whether an existing folder holds only paths (files as files, folders as folders) that
    restoring ``files`` writes: then replacing it loses nothing the archive does not hold."""
    kinds = {os.fsencode(f.path): f.kind for f in files if f.path}

    def owned(folder: Path) -> bool:
        root = os.fsencode(folder)
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            prefix = b"" if rel == b"." else rel + b"/"
            for name in dirnames + filenames:
                full = os.path.join(dirpath, name)
                want = kinds.get(prefix + name)
                if os.path.islink(full) or want is None or (want == FOLDER) != os.path.isdir(full):
                    return False
        return True

    return owned


def _apply_stat(target: int | bytes, entry: LayoutFile) -> None:
    """Give a restored file or folder its recorded mode (minus the umask, as ``tar`` does for users
    other than root) and modification time; entries without them keep the defaults."""
    if entry.mode is None:
        return
    os.chmod(target, entry.mode & 0o777 & ~umask())
    mtime = entry.mtime_ns or 0
    os.utime(target, ns=(mtime, mtime))


def _fill_folder(
    tmp: Path, files: Sequence[LayoutFile], restored: Sequence[tuple[LayoutFile, bytes]]
) -> None:
    """Write a folder archive's files into the fresh folder ``tmp``, then its folders' modes and
    mtimes, deepest first (writing into a folder changes its mtime, and a read-only folder must
    be filled before it is made read-only)."""
    base = os.fsencode(tmp)
    for entry in files:
        if entry.kind == FOLDER and entry.path:
            os.makedirs(os.path.join(base, os.fsencode(entry.path)), exist_ok=True)
    for entry, data in restored:
        target = os.path.join(base, os.fsencode(entry.path))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            with open(target, "xb") as f:  # x: never through something already there
                f.write(data)
                f.flush()
                _apply_stat(f.fileno(), entry)
        except OSError as exc:  # e.g. "a" and "A" on a case-insensitive file system
            raise DataError(f"cannot restore {entry.path!r}: {exc.strerror or exc}") from exc
    folders = sorted((f for f in files if f.kind == FOLDER), key=lambda f: -f.path.count("/") - bool(f.path))
    for entry in folders:
        _apply_stat(os.path.join(base, os.fsencode(entry.path)) if entry.path else base, entry)


# -------------------------------------------------------------------------------------------- inspect


@dataclass
class InspectReport:
    header: dict[str, Any]
    documents: int
    windows: int
    document_bytes: int
    exceptions: int
    clm_bytes: int
    first_windows: list[tuple[int, str, bool]]  # (code, text, exception) of the first windows
    model_found: bool

    @property
    def bits_per_byte(self) -> float:
        bits = self.header["coder"]["window_bits"]
        return self.windows * bits / self.document_bytes if self.document_bytes else 0.0

    @property
    def exception_rate(self) -> float:
        return self.exceptions / self.windows if self.windows else 0.0


def inspect(
    clm: str | Path, *, model: str | Path | M1 | None = None, n_windows: int = 12, threads: int | None = None
) -> InspectReport:
    """Summary of a .clm; with its model at hand, the first windows decoded one by one (each
    window is independent, so each decodes alone)."""
    where = str(clm)
    container = load(clm)
    params = coder_params(container, where)
    codes = unpack_codes(container.window_bits, params.window_bits)
    exceptions = {}
    base = 0
    for entry in container.docs:
        exceptions.update({base + w: n for w, n in entry.exceptions})
        base += entry.windows
    first: list[tuple[int, str, bool]] = []
    found = False
    try:
        m1 = _model_for(container, where, model, threads)
        found = True
    except ConfigError:
        m1 = None
    if m1 is not None and n_windows > 0:
        coder = _decoder(m1, params)
        shown = codes[:n_windows]
        tables = [{0: exceptions[i]} if i in exceptions else {} for i in range(len(shown))]
        texts = coder.decode_many([[c] for c in shown], tables)
        first = [
            (c, t.decode("utf-8", errors="backslashreplace"), i in exceptions)
            for i, (c, t) in enumerate(zip(shown, texts, strict=True))
        ]
    return InspectReport(
        header=container.header,
        documents=len(container.docs),
        windows=len(codes),
        document_bytes=sum(e.nbytes for e in container.docs),
        exceptions=sum(len(e.exceptions) for e in container.docs),
        clm_bytes=Path(clm).stat().st_size,
        first_windows=first,
        model_found=found,
    )
