"""The built-in compressors: gzip, LZ4 (block and frame), zstd, brotli, lzma (xz) and bz2.

Each class wraps one library call and states exactly which container it measures, because the
container is part of the score (see :mod:`compresslm.compressors.base`). Levels are validated by
the registry (:mod:`compresslm.compressors.registry`), not here.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import sys
import zlib
from collections.abc import Sequence
from itertools import repeat

import numpy as np

from compresslm.compressors.base import BaseCompressor

#: gzip's fixed container around a raw DEFLATE stream: a 10-byte header (magic, method, flags,
#: mtime, xfl, os; no file name) and an 8-byte trailer (CRC32, ISIZE). ``gzip.compress`` writes
#: exactly this, so ``len(gzip.compress(d, l)) == len(raw_deflate(d, l)) + 18``.
GZIP_OVERHEAD = 18

if sys.version_info >= (3, 11):

    def _raw_deflate(data: bytes, level: int) -> bytes:
        # One C call; the same stream as compressobj(level, DEFLATED, -15) (memLevel 8, default strategy).
        return zlib.compress(data, level, -15)

else:  # Python 3.10's zlib.compress has no wbits argument

    def _raw_deflate(data: bytes, level: int) -> bytes:
        c = zlib.compressobj(level, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()


class Gzip(BaseCompressor):
    """gzip (DEFLATE, full 32 KiB window) at ``level`` 1-9; the size is ``gzip.compress``'s length.

    Sizes come from a raw DEFLATE stream plus :data:`GZIP_OVERHEAD` instead of building the gzip
    container: same number, less work. Exactness is relative to the zlib build (recorded as
    ``zlib_runtime_version``): zlib-ng or libdeflate produce other streams.

    Not used: a 4 KiB window (``wbits=-12``), which gives identical streams while the input is at
    most 4096 - 262 bytes; measured here it was no faster (66 vs 69 us per 2.8 KB pair, level 9),
    so the exactness guard would buy nothing.
    """

    library = "zlib"

    def __init__(self, level: int = 9) -> None:
        self.level = level
        self.name = f"gzip:{level}"
        self.library_version = zlib.ZLIB_RUNTIME_VERSION

    def compress(self, data: bytes) -> bytes:
        return gzip.compress(data, compresslevel=self.level, mtime=0)

    def size(self, data: bytes) -> int:
        return len(_raw_deflate(data, self.level)) + GZIP_OVERHEAD

    def concat_sizes(self, prefix: bytes, suffixes: Sequence[bytes]) -> np.ndarray:
        n = len(suffixes)
        if sys.version_info >= (3, 11):
            deflate = zlib.compress
            lengths = map(
                len, map(deflate, map(prefix.__add__, suffixes), repeat(self.level, n), repeat(-15, n))
            )
        else:
            level = self.level
            lengths = (len(_raw_deflate(prefix + s, level)) for s in suffixes)
        return np.fromiter(lengths, np.int64, n) + GZIP_OVERHEAD


def _lz4_block_positional_ok() -> bool:
    """Whether ``lz4.block.compress(src, mode, store_size)`` means what the keywords mean.

    The positional order is undocumented; calling positionally saves ~0.3 us of keyword handling
    per pair (5-10 % of an LZ4 pair), so it is used only after this check passes on real data.
    """
    import lz4.block

    sample = b"def f(x):\n    return x + 1\n" * 20
    try:
        return lz4.block.compress(sample, "default", False) == lz4.block.compress(sample, store_size=False)
    except TypeError:
        return False


class Lz4Block(BaseCompressor):
    """LZ4 block format without the stored size (``lz4.block.compress(..., store_size=False)``).

    Levels: 0, 1 and 2 are LZ4's fast default mode (acceleration 1), as in ``lz4.frame``; 3-12 are
    LZ4-HC at that compression level. The block has no header, so short texts are not dominated by
    container bytes (the frame adds 11-19).
    """

    library = "lz4"

    def __init__(self, level: int = 0) -> None:
        import lz4
        import lz4.block

        self.level = level
        self.name = f"lz4:{level}"
        self.library_version = lz4.__version__
        self._compress = lz4.block.compress
        if level >= 3:
            self._args: tuple[object, ...] = ("high_compression", False, 1, level)
            self._kwargs: dict[str, object] = {
                "mode": "high_compression",
                "compression": level,
                "store_size": False,
            }
        else:
            self._args = ("default", False)
            self._kwargs = {"mode": "default", "store_size": False}
        self._positional = _lz4_block_positional_ok()

    def compress(self, data: bytes) -> bytes:
        return self._compress(data, **self._kwargs)

    def concat_sizes(self, prefix: bytes, suffixes: Sequence[bytes]) -> np.ndarray:
        n = len(suffixes)
        compress = self._compress
        if self._positional:
            extra = [repeat(a, n) for a in self._args]
            lengths = map(len, map(compress, map(prefix.__add__, suffixes), *extra))
        else:
            kwargs = self._kwargs
            lengths = (len(compress(prefix + s, **kwargs)) for s in suffixes)
        return np.fromiter(lengths, np.int64, n)


class Lz4Frame(BaseCompressor):
    """LZ4 frame format with the library defaults (``lz4.frame.compress(d, compression_level=l)``).

    This is the reference ``zip-fit`` package's LZ4 choice (its default is level 0); the frame
    header and end mark add a constant 11+ bytes per call. Levels 0-2 fast, 3-16 HC.
    """

    library = "lz4"

    def __init__(self, level: int = 0) -> None:
        import lz4
        import lz4.frame

        self.level = level
        self.name = f"lz4frame:{level}"
        self.library_version = lz4.__version__
        self._frame = lz4.frame

    def compress(self, data: bytes) -> bytes:
        return self._frame.compress(data, compression_level=self.level)


class Zstd(BaseCompressor):
    """Zstandard frames from python-zstandard's ``ZstdCompressor(level=l).compress`` (defaults:
    content size written, no checksum, no dictionary).

    One ``ZstdCompressor`` is reused (a fresh one per call gives the same bytes, only slower).
    python-zstandard treats level 0 as its default, 3; the registry maps ``zstd:0`` to ``zstd:3``.
    Negative levels are zstd's fast modes.
    """

    library = "zstandard"

    def __init__(self, level: int = 3) -> None:
        import zstandard

        self.level = level
        self.name = f"zstd:{level}"
        libzstd = ".".join(map(str, zstandard.ZSTD_VERSION))
        self.library_version = f"{zstandard.__version__} (libzstd {libzstd})"
        self._compressor = zstandard.ZstdCompressor(level=level)

    def compress(self, data: bytes) -> bytes:
        return self._compressor.compress(data)


class Brotli(BaseCompressor):
    """brotli at ``quality`` 0-11 (generic mode, default window); 11 is the library default and
    what the reference package always uses (it ignores its level argument for brotli)."""

    library = "brotli"

    def __init__(self, quality: int = 11) -> None:
        import brotli

        self.level = quality
        self.name = f"brotli:{quality}"
        self.library_version = getattr(brotli, "__version__", "unknown")
        self._compress = brotli.compress

    def compress(self, data: bytes) -> bytes:
        return self._compress(data, quality=self.level)


class Lzma(BaseCompressor):
    """xz container (``lzma.compress(d, preset=p)``, CRC64 check); preset 6 is the library default
    and what the reference package uses. The xz header/index add ~60 bytes per call."""

    library = "lzma"

    def __init__(self, preset: int = 6) -> None:
        self.level = preset
        self.name = f"lzma:{preset}"
        self.library_version = "liblzma (stdlib)"

    def compress(self, data: bytes) -> bytes:
        return lzma.compress(data, preset=self.level)


class Bz2(BaseCompressor):
    """bzip2 at ``level`` 1-9 (block size level x 100 kB); 9 is the library default."""

    library = "bz2"

    def __init__(self, level: int = 9) -> None:
        self.level = level
        self.name = f"bz2:{level}"
        self.library_version = "libbz2 (stdlib)"

    def compress(self, data: bytes) -> bytes:
        return bz2.compress(data, self.level)
