"""File-level neural compression: ``compress`` an input into a .clm, ``decompress`` it byte for byte,
``inspect`` what is inside.

What an input becomes, and how it is rebuilt, is in :mod:`compresslm.coding.layout`.

Two modes (recorded in the header):

* ``stream`` (the default): each segment is one range code driven by M1 with its full context
  (:mod:`compresslm.coding.stream`). The format for storing files. Long repeats (of at least
  ``min_match`` bytes, anywhere earlier in the input) are first taken out and stored as matches
  (:mod:`compresslm.coding.long_range`), so M1 codes only the rest.
* ``windows``: Equal-Info windows of ``window_bits`` bits, each decodable alone, the format M2 is
  trained on (:mod:`compresslm.coding.equal_info`); unchanged from earlier releases.

Documents longer than ``segment_bytes`` are coded as independent segments (a window never crosses
one), so one long file still fills many rows of the batched model; in windows mode each segment
costs at most one partial window, in stream mode the end of its code (about 2 bytes).

``-`` as an input or output path is standard input or output.
"""

from __future__ import annotations

import os
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compresslm.coding.container import Container, DocEntry, read_container, write_container
from compresslm.coding.default_model import default_m1_path, has_default_m1, m1_or_default
from compresslm.coding.equal_info import EqualInfoCoder
from compresslm.coding.header import FINGERPRINT_BYTES, MAX_MIN_MATCH, MODEL_ID_BYTES
from compresslm.coding.intervals import CoderParams
from compresslm.coding.layout import (
    FOLDER,
    RAW,
    VERBATIM,
    LayoutFile,
    bytes_source,
    content_digest,
    decode_layout,
    decode_layout_v2,
    encode_layout,
    read_source,
    rebuild,
    unpack_layout,
)
from compresslm.coding.long_range import DEFAULT_MIN_MATCH, Parse, find_matches, restore
from compresslm.coding.m1 import M1, ModelCheck, check_row_independence, fingerprint, verify_model
from compresslm.coding.packing import pack_codes, unpack_codes
from compresslm.coding.stream import StreamCoder, StreamParams
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
from compresslm.progress import progress_bar

# Documents are coded in independent segments of this many bytes, so that even one file of a few
# hundred KiB fills every row of the batched model. A segment end costs ~0.4 windows (measured on the
# standard library with the 3m M1 at b = 16: +0.12% bits/byte at 1 KiB against unsegmented files,
# +0.03% at 4 KiB, +0.26% at 512 B); 1 KiB gives a 256-row batch from 256 KiB of input.
DEFAULT_SEGMENT_BYTES = 1_024

MODES = ("stream", "windows")
DEFAULT_MODE = "stream"
STDIO = "-"  # as a path: standard input (compress's input, decompress's .clm) or output

# Stream mode's segments by default: enough to give every row of the batch a segment, at least
# STREAM_MIN_SEGMENT (a segment's code ends in ~2 bytes and its DOCS entry takes 1-2: ~0.4% of a
# 1 KiB segment at 3 bits/byte) and at most STREAM_MAX_SEGMENT.
STREAM_MIN_SEGMENT = 1_024
STREAM_MAX_SEGMENT = 1 << 20


def stream_segment_bytes(total_bytes: int, batch_size: int) -> int:
    """Stream mode's default segment size for ``total_bytes`` of input and ``batch_size`` rows."""
    per_row = -(-total_bytes // max(1, batch_size))
    return min(STREAM_MAX_SEGMENT, max(STREAM_MIN_SEGMENT, -(-per_row // 1024) * 1024))


# ---------------------------------------------------------------------------------------- compression


@dataclass
class CompressReport:
    """What :func:`compress` did. ``bits_per_byte`` counts window bits (padding included) or code
    bits per document byte (matched bytes included); ``file_bits_per_byte`` the whole .clm per
    input byte."""

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
    mode: str = "windows"
    code_bytes: int = 0  # stream mode: the segments' codes
    segment_bytes: int | None = None
    m1_bits_per_byte: float = 0.0  # stream mode: M1's cross-entropy on the bytes it coded
    min_match: int = 0  # stream mode: the match stage's shortest match (0: off)
    matches: int = 0  # stream mode: long-range matches found
    matched_bytes: int = 0  # document bytes they copy (M1 codes the other document bytes)

    @property
    def bytes_per_window(self) -> float:
        return self.document_bytes / self.windows if self.windows else 0.0

    @property
    def bits_per_byte(self) -> float:
        """Code bits per document byte: the windows' (padding included) or the range codes'."""
        if not self.document_bytes:
            return 0.0
        if self.mode == "stream":
            return 8 * self.code_bytes / self.document_bytes
        return self.windows * self.window_bits / self.document_bytes

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


def _segments(documents: Sequence[bytes], segment_bytes: int | None) -> tuple[list[bytes], list[int]]:
    """All documents' segments, in order, and the document each belongs to."""
    units: list[bytes] = []
    owner: list[int] = []
    for i, doc in enumerate(documents):
        segs = segment(doc, segment_bytes)
        units += segs
        owner += [i] * len(segs)
    return units, owner


def encode_documents(
    coder: EqualInfoCoder, documents: Sequence[bytes], segment_bytes: int | None, progress: bool = False
) -> tuple[list[DocEntry], list[Window]]:
    """Code every document (segmented) in one batched run; returns the doc table and all windows
    in container order."""
    units, owner = _segments(documents, segment_bytes)
    with progress_bar(
        total=sum(len(u) for u in units), unit="B", unit_scale=True, desc="compress", disable=not progress
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


def encode_stream(
    coder: StreamCoder, documents: Sequence[bytes], segment_bytes: int | None, progress: bool = False
) -> tuple[list[DocEntry], bytes]:
    """Stream mode: the doc table (code bytes per segment) and all codes back to back."""
    units, owner = _segments(documents, segment_bytes)
    with progress_bar(
        total=sum(len(u) for u in units), unit="B", unit_scale=True, desc="compress", disable=not progress
    ) as bar:
        codes = coder.encode_many(units, on_bytes=bar.update)
    entries = [DocEntry(len(d), zlib.crc32(d), []) for d in documents]
    for i, code in zip(owner, codes, strict=True):
        entries[i].segment_windows.append(len(code))
    return entries, b"".join(codes)


def compress(
    input_path: str | Path,
    output: str | Path,
    *,
    model: str | Path | M1 | None = None,
    mode: str = DEFAULT_MODE,
    window_bits: int = 16,
    code: str = "straddle",
    max_window_bytes: int | None = None,
    segment_bytes: int | None | str = "auto",
    long_range: bool = True,
    min_match: int = DEFAULT_MIN_MATCH,
    text_field: str = "text",
    on_error: str = "fail",
    batch_size: int = DEFAULT_BATCH_ROWS,
    threads: int | None = None,
    force: bool = False,
    progress: bool = False,
) -> CompressReport:
    """Compress ``input_path`` (file, folder, records, or ``-`` for standard input) into the .clm
    ``output`` (atomically; ``-``: standard output).

    ``mode``: ``"stream"`` or ``"windows"`` (see the module doc; ``window_bits``, ``code`` and
    ``max_window_bytes`` are windows-mode settings). ``segment_bytes``: ``"auto"`` (1 KiB in
    windows mode; in stream mode enough segments for every row, see :func:`stream_segment_bytes`),
    a size, or None to never split a document. ``model``: an M1 folder or loaded :class:`M1`; None
    uses the M1 shipped with the package. ``long_range`` (stream mode): copy repeats of at least
    ``min_match`` bytes instead of coding them with M1 (:mod:`compresslm.coding.long_range`); a
    ``min_match`` of 0 turns it off too."""
    start = time.perf_counter()
    if mode not in MODES:
        raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    to_stdout = os.fspath(output) == STDIO
    if not to_stdout:
        check_outputs_free([output], force)
        if os.fspath(input_path) != STDIO:
            check_not_input([output], [input_path])
    if isinstance(segment_bytes, str) and segment_bytes != "auto":
        raise ConfigError(f"--segment-bytes must be a size or 'auto', got {segment_bytes!r}")
    if isinstance(segment_bytes, int) and segment_bytes < 1:
        raise ConfigError(f"--segment-bytes must be positive, got {segment_bytes}")
    if isinstance(min_match, bool) or not isinstance(min_match, int) or not 0 <= min_match <= MAX_MIN_MATCH:
        raise ConfigError(f"--min-match must be in 0..{MAX_MIN_MATCH}, got {min_match!r}")
    m1 = model if isinstance(model, M1) else M1.load(m1_or_default(model), threads=threads)
    if os.fspath(input_path) == STDIO:
        source = bytes_source(sys.stdin.buffer.read())
    else:
        source = read_source(input_path, text_field=text_field, on_error=on_error)
    t_encode = time.perf_counter()
    stream: StreamCoder | None = None
    windows: list[Window] = []
    parse = Parse(list(source.documents), [])
    if mode == "stream":
        stream = StreamCoder(m1, batch_size=batch_size)
        check_row_independence(m1, stream.params.context, min(batch_size, 64))
        t_encode = time.perf_counter()
        if long_range and min_match:
            parse = find_matches(source.documents, min_match)
        if segment_bytes == "auto":
            segment_bytes = stream_segment_bytes(sum(map(len, parse.literals)), batch_size)
        entries, payload = encode_stream(stream, parse.literals, segment_bytes, progress)  # type: ignore[arg-type]
        for entry, doc in zip(entries, source.documents, strict=True):
            entry.matched = len(doc) - entry.nbytes
        coder_dict: dict[str, Any] = stream.params.to_dict()
        if parse.matches:  # version 4; a file without matches stays version 3, byte for byte
            coder_dict["min_match"] = min_match
        positions, backed_off = stream.stats.positions, 0
        fingerprint_len = stream.params.context
    else:
        coder = EqualInfoCoder(
            m1, window_bits, code=code, max_window_bytes=max_window_bytes, batch_size=batch_size
        )
        if segment_bytes == "auto":
            segment_bytes = DEFAULT_SEGMENT_BYTES
        params = coder.params
        check_row_independence(m1, params.max_window_bytes, min(batch_size, 64))
        t_encode = time.perf_counter()
        entries, windows = encode_documents(coder, source.documents, segment_bytes, progress)  # type: ignore[arg-type]
        payload = pack_codes([w.code for w in windows], window_bits)
        coder_dict = params.to_dict()
        positions, backed_off = coder.stats.positions, coder.stats.backed_off
        fingerprint_len = params.max_window_bytes
    encode_seconds = time.perf_counter() - t_encode
    layout, table = encode_layout(source.files, len(payload))
    lengths = [e.nbytes for e in entries]
    header = {
        "mode": mode,
        "coder": coder_dict,
        # None (one segment per document) when no document is longer: the same coding, 2 bytes less
        "segment_bytes": segment_bytes if segment_bytes and max(lengths, default=0) > segment_bytes else None,
        "model": {
            "sha256": m1.sha256[: 2 * MODEL_ID_BYTES],
            "fingerprint": fingerprint(m1, fingerprint_len)[: 2 * FINGERPRINT_BYTES],
            "numerics": m1.numerics,
            "path": None if _is_shipped(m1) else m1.path,  # decompress finds the shipped M1 itself
        },
        "source": {
            "kind": source.kind,
            "text_field": text_field,
            "skipped": len(source.skipped),
            "record_lines": source.record_lines,
            "whole_lines": source.whole_lines,
            "rejected": source.rejected,
        },
        "stats": {"backed_off": backed_off},
    }
    digest = content_digest(table, [f.sha256 for f in source.files if f.kind != FOLDER])
    container = Container(header, entries, layout, payload, digest=digest, matches=parse.matches)
    if to_stdout:
        size = write_container(sys.stdout.buffer, container)
        sys.stdout.buffer.flush()
    else:
        with atomic_output(output, force=force, mode="wb") as f:
            size = write_container(f, container)
    n_bytes = sum(e.restored for e in entries)
    return CompressReport(
        output=str(output),
        source_kind=source.kind,
        documents=len(entries),
        segments=sum(len(e.segment_windows) for e in entries),
        document_bytes=n_bytes,
        input_bytes=source.input_bytes,
        windows=len(windows),
        window_bits=window_bits,
        code=code,
        exceptions=sum(w.exception for w in windows),
        backed_off=backed_off,
        positions=positions,
        clm_bytes=size,
        layout_bytes=len(table),
        seconds=time.perf_counter() - start,
        encode_seconds=encode_seconds,
        record_lines=source.record_lines,
        whole_lines=source.whole_lines,
        rejected=source.rejected,
        files=source.n_files,
        folders=source.n_folders,
        skipped=source.skipped,
        mode=mode,
        code_bytes=len(payload) if stream is not None else 0,
        segment_bytes=segment_bytes,  # type: ignore[arg-type]
        m1_bits_per_byte=stream.stats.ideal_bits / max(1, sum(lengths)) if stream is not None else 0.0,
        min_match=min_match if long_range and stream is not None else 0,
        matches=len(parse.matches),
        matched_bytes=parse.matched_bytes,
    )


def _is_shipped(m1: M1) -> bool:
    """Whether ``m1`` is the M1 shipped with the package (its path is then not worth recording)."""
    return m1.path is not None and has_default_m1() and Path(m1.path).resolve() == default_m1_path().resolve()


# -------------------------------------------------------------------------------------- decompression


def load(path: str | Path) -> Container:
    """Read and verify a .clm file's structure (no decoding); ``-`` reads standard input."""
    if os.fspath(path) == STDIO:
        return read_container(sys.stdin.buffer.read(), "<stdin>")
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file" if not p.exists() else f"{p}: not a regular file")
    return read_container(p.read_bytes(), str(p))


def layout_table(container: Container, where: str) -> bytes:
    """The container's layout table, decompressed within the bounds its file size allows."""
    if container.version == 2:
        head = container.header
        return unpack_layout(
            container.layout, container.size, where, head["layout_bytes"], head["layout_sha256"]
        )
    return unpack_layout(container.layout, container.size, where)


def layout_of(container: Container, where: str, table: bytes | None = None) -> list[LayoutFile]:
    """The container's layout (from ``table`` when already unpacked), checked against its header
    and document table."""
    if table is None:
        table = layout_table(container, where)
    source = container.header["source"]
    if container.version == 2:
        files = decode_layout_v2(table, where)
        n_files = sum(f.kind != FOLDER for f in files)
        if (n_files, len(files) - n_files) != (source["files"], source["folders"]):
            raise IntegrityError(
                f"{where}: LAYO holds {n_files} files and {len(files) - n_files} folders, HEAD says "
                f"{source['files']} and {source['folders']}"
            )
    else:
        files = decode_layout(table, where)
    n_docs = sum(kind != RAW for f in files for kind, _ in f.parts)
    if n_docs != len(container.docs):
        raise IntegrityError(f"{where}: LAYO uses {n_docs} documents, DOCS holds {len(container.docs)}")
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


def is_stream(container: Container) -> bool:
    return container.stream


def stream_params(container: Container, where: str) -> StreamParams:
    coder = {k: v for k, v in container.header["coder"].items() if k != "min_match"}
    try:
        return StreamParams(**coder)
    except (TypeError, ConfigError) as exc:
        raise IntegrityError(f"{where}: invalid stream parameters in HEAD: {exc}") from exc


def _model_for(container: Container, where: str, model: str | Path | M1 | None, threads: int | None) -> M1:
    info = container.header.get("model", {})
    if model is None:
        path = info.get("path")
        if path and Path(path).is_dir():
            model = path
        elif has_default_m1():  # written elsewhere with the shipped M1? its sha256 is checked below
            model = default_m1_path()
        else:
            raise ConfigError(f"{where}: the M1 it was written with ({path}) is not here; pass --model")
    m1 = model if isinstance(model, M1) else M1.load(model, threads=threads)
    if is_stream(container):
        sp = stream_params(container, where)
        max_len, precision = sp.context, sp.precision
        if max_len > m1.max_context:
            raise IntegrityError(
                f"{where}: coded with a context of {max_len}, the model has {m1.max_context}"
            )
    else:
        params = coder_params(container, where)
        max_len, precision = params.max_window_bytes, params.precision
    verify_model(m1, ModelCheck(info.get("sha256", ""), info.get("fingerprint", "")), max_len, where)
    if m1.precision != precision:
        raise IntegrityError(f"{where}: coded with precision {precision}, the model has {m1.precision}")
    check_row_independence(m1, max_len, 64)  # a clear error before any decoding
    return m1


def decode_documents(
    container: Container,
    m1: M1,
    where: str,
    *,
    batch_size: int = DEFAULT_BATCH_ROWS,
    progress: bool = False,
) -> list[bytes]:
    """Every document, decoded and checked against its length and CRC32 (version 2), with its
    long-range matches copied in (version 4)."""
    seg_bytes = container.header.get("segment_bytes")
    pieces: list[list[int] | bytes] = []  # per segment: window codes, or a stream code
    exc_tables: list[dict[int, int]] = []
    lengths: list[int] = []
    stream = is_stream(container)
    if stream:
        payload: list[int] | bytes = container.payload
    else:
        params = coder_params(container, where)
        payload = unpack_codes(container.payload, params.window_bits)
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
            pieces.append(payload[pos : pos + n_windows])
            exc_tables.append({w - first: n for w, n in exceptions.items() if first <= w < first + n_windows})
            lengths.append(n_bytes)
            pos += n_windows
            first += n_windows
    with progress_bar(
        total=sum(lengths), unit="B", unit_scale=True, desc="decompress", disable=not progress
    ) as bar:
        try:
            if stream:
                coder = StreamCoder(
                    m1, context=stream_params(container, where).context, batch_size=batch_size
                )
                decoded = coder.decode_many(pieces, lengths, on_bytes=bar.update)  # type: ignore[arg-type]
            else:
                decoded = _decoder(m1, params, batch_size).decode_many(
                    pieces,  # type: ignore[arg-type]
                    exc_tables,
                    lengths,
                    on_bytes=bar.update,
                )
        except IntegrityError as exc:
            raise IntegrityError(f"{where}: {exc}") from exc
    out: list[bytes] = []
    k = 0
    for i, entry in enumerate(container.docs):
        doc = b"".join(decoded[k : k + len(entry.segment_windows)])
        k += len(entry.segment_windows)
        if len(doc) != entry.nbytes or entry.crc32 is not None and zlib.crc32(doc) != entry.crc32:
            raise IntegrityError(
                f"{where}: document {i} fails its CRC32 check after decoding (model or data damaged)"
            )
        out.append(doc)
    if container.matches:
        out = restore(out, container.matches, [e.restored for e in container.docs])
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
    where = "<stdin>" if os.fspath(clm) == STDIO else str(clm)
    container = load(clm)
    table = layout_table(container, where)
    files = layout_of(container, where, table)
    folder = container.header["source"]["kind"] == "folder"
    to_stdout = os.fspath(output) == STDIO
    out = Path(output)
    if to_stdout and folder:
        raise ConfigError(f"{where} holds a folder, which cannot go to standard output; pass -o FOLDER")
    owned = _restores_only(files)
    if to_stdout:
        pass
    elif folder:
        check_not_input([out], [clm])
        check_folder_free(out, force, owned, "an earlier restore of this archive")
    else:
        check_not_input([out], [clm])
        check_outputs_free([out], force)
    m1 = _model_for(container, where, model, threads)
    docs = decode_documents(container, m1, where, batch_size=batch_size, progress=progress)
    restored = rebuild(files, docs, where, (table, container.digest) if container.version > 2 else None)
    if to_stdout:
        sys.stdout.buffer.write(restored[0][1])
        sys.stdout.buffer.flush()
    elif folder:
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
    windows: int  # windows mode; 0 in stream mode
    document_bytes: int
    exceptions: int
    clm_bytes: int
    first_windows: list[tuple[int, str, bool]]  # (code, text, exception) of the first windows
    model_found: bool
    mode: str = "windows"
    code_bytes: int = 0  # stream mode
    version: int = 3  # the .clm format version
    sizes: dict[str, int] = field(default_factory=dict)  # bytes of each part of the file
    matches: int = 0  # stream mode, version 4: long-range matches
    matched_bytes: int = 0  # the document bytes they copy (M1 coded the rest)
    segments: int = 0  # coded segments (the parallel rows' units)
    files: int = 0  # file entries the layout restores
    folders: int = 0  # folder entries (the input folder included)
    input_bytes: int | None = None  # the restored files' bytes (None: JSON parts need decoding)

    @property
    def overhead(self) -> int:
        """Bytes of the file beyond its codes: what the container costs."""
        return self.clm_bytes - self.sizes.get("codes", 0)

    @property
    def bits_per_byte(self) -> float:
        if not self.document_bytes:
            return 0.0
        if self.mode == "stream":
            return 8 * self.code_bytes / self.document_bytes
        return self.windows * self.header["coder"]["window_bits"] / self.document_bytes

    @property
    def exception_rate(self) -> float:
        return self.exceptions / self.windows if self.windows else 0.0


def inspect(
    clm: str | Path, *, model: str | Path | M1 | None = None, n_windows: int = 12, threads: int | None = None
) -> InspectReport:
    """Summary of a .clm; with its model at hand, the first windows decoded one by one (each
    window is independent, so each decodes alone; a stream-mode file has no windows)."""
    where = str(clm)
    container = load(clm)
    files = layout_of(container, where)
    n_files = sum(f.kind != FOLDER for f in files)
    common: dict[str, Any] = {
        "segments": sum(len(e.segment_windows) for e in container.docs),
        "files": n_files,
        "folders": len(files) - n_files,
        "input_bytes": _restored_bytes(container, files),
    }
    if is_stream(container):
        return InspectReport(
            **common,
            header=container.header,
            documents=len(container.docs),
            windows=0,
            document_bytes=sum(e.restored for e in container.docs),
            exceptions=0,
            clm_bytes=container.size,
            first_windows=[],
            model_found=False,
            mode="stream",
            code_bytes=len(container.payload),
            version=container.version,
            sizes=container.sizes,
            matches=len(container.matches),
            matched_bytes=sum(m.length for m in container.matches),
        )
    params = coder_params(container, where)
    codes = unpack_codes(container.payload, params.window_bits)
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
        **common,
        header=container.header,
        documents=len(container.docs),
        windows=len(codes),
        document_bytes=sum(e.nbytes for e in container.docs),
        exceptions=sum(len(e.exceptions) for e in container.docs),
        clm_bytes=container.size,
        first_windows=first,
        model_found=found,
        version=container.version,
        sizes=container.sizes,
    )


def _restored_bytes(container: Container, files: Sequence[LayoutFile]) -> int | None:
    """The bytes a restore writes, known without decoding unless a JSON part re-escapes a
    document (version 2 records them in its header)."""
    if container.version == 2:
        return container.header["source"]["input_bytes"]
    total = 0
    for f in files:
        for kind, value in f.parts:
            if kind == RAW:
                total += len(value)  # type: ignore[arg-type]
            elif kind == VERBATIM:
                total += container.docs[value].restored  # type: ignore[index]
            else:
                return None
    return total
