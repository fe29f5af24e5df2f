"""The byte-compressor interface that ZIP-FIT (and anything else measuring compressed length) uses.

A compressor is identified by its canonical *spec* (``"gzip:9"``, ``"lz4:0"``): the spec alone
rebuilds an equal compressor in another process, which is how scoring workers get theirs (specs
pickle under every start method; compressor objects hold library handles that may not).

Invariants every implementation keeps:

* ``size(data) == len(compress(data))`` -- the length of the *whole container* the library writes
  (gzip header and trailer, the LZ4 frame header, the zstd frame header, ...), because the
  reference ZIP-FIT package measures that and score parity depends on it;
* ``size`` is a pure function of ``data`` (no state carried between calls), so scores do not depend
  on the order in which documents are processed;
* ``concat_sizes(prefix, suffixes)[j] == size(prefix + suffixes[j])`` -- the hot loop of ZIP-FIT,
  which implementations may specialise (local bindings, C-level ``map``) but never approximate.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Compressor(Protocol):
    """What ZIP-FIT needs from a compressor; see the module docstring for the invariants."""

    #: canonical spec, e.g. ``"gzip:9"``; ``get_compressor(name)`` rebuilds an equal compressor
    name: str

    def compress(self, data: bytes) -> bytes:
        """The compressed container, exactly as the underlying library writes it."""
        ...

    def size(self, data: bytes) -> int:
        """``len(compress(data))``, possibly computed without building the container."""
        ...

    def concat_sizes(self, prefix: bytes, suffixes: Sequence[bytes]) -> np.ndarray:
        """``[size(prefix + s) for s in suffixes]`` as an int64 array."""
        ...

    def describe(self) -> dict[str, object]:
        """Everything that determines the sizes: spec, library and its version."""
        ...


class BaseCompressor:
    """Shared behaviour: ``size`` from ``compress`` and a generic ``concat_sizes``.

    Subclasses set ``name``, ``library`` and ``library_version`` and implement ``compress``; they
    override ``size``/``concat_sizes`` only when they can do it faster with identical results.
    """

    name: str = ""
    library: str = ""
    library_version: str = ""

    def compress(self, data: bytes) -> bytes:
        raise NotImplementedError

    def size(self, data: bytes) -> int:
        return len(self.compress(data))

    def concat_sizes(self, prefix: bytes, suffixes: Sequence[bytes]) -> np.ndarray:
        compress = self.compress  # local binding: this loop runs N x n times
        return np.fromiter(map(len, map(compress, map(prefix.__add__, suffixes))), np.int64, len(suffixes))

    def describe(self) -> dict[str, object]:
        # zlib's runtime version is recorded for every compressor, not only gzip: results tables mix
        # compressors, and gzip sizes (hence exact parity) depend on the zlib build.
        return {
            "compressor": self.name,
            "library": self.library,
            "library_version": self.library_version,
            "zlib_runtime_version": zlib.ZLIB_RUNTIME_VERSION,
        }

    def __reduce__(self) -> tuple[object, tuple[str]]:
        # Pickle by spec: library handles (a ZstdCompressor, a module) do not pickle, and the spec
        # rebuilds an equal compressor by definition.
        from compresslm.compressors.registry import get_compressor

        return get_compressor, (self.name,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BaseCompressor) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)
