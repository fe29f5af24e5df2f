"""GZip[v]: each 10,240-byte chunk compressed by zlib at its default level, header and Adler-32
footer kept (the paper's default, its §3.3), the compressed bytes read as 8- or 16-bit ids MSB-first.

A zlib stream is self-delimiting, so a chunk's ids end where ``zlib.decompressobj`` stops; at 16 bits
an odd-length stream gets one zero byte of padding so the next chunk starts on a whole id.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compresslm.coding.packing import bytes_to_ids, ids_per_bytes, ids_to_bytes
from compresslm.errors import ConfigError, DataError
from compresslm.tokenizers.base import CHUNK_BYTES, ChunkedTokenizer

if TYPE_CHECKING:
    from compresslm.tokenizers.registry import SchemeSpec


class GZipTokenizer(ChunkedTokenizer):
    scheme = "gzip"

    def __init__(self, token_bits: int = 8, chunk_bytes: int = CHUNK_BYTES, level: int = -1) -> None:
        super().__init__(token_bits, chunk_bytes)
        if level not in range(-1, 10):
            raise ConfigError(f"zlib level must be -1 (default) or 0..9, got {level}")
        self.level = level

    @classmethod
    def build(cls, spec: SchemeSpec, **_: Any) -> GZipTokenizer:
        return cls(spec.token_bits, spec.chunk_bytes)

    @classmethod
    def load(cls, directory: str | Path, config: dict[str, Any], **_: Any) -> GZipTokenizer:
        return cls(config["token_bits"], config["chunk_bytes"], config.get("level", -1))

    @property
    def name(self) -> str:
        return f"GZip[v={self.v_label}]"

    def encode_chunk(self, chunk: bytes) -> np.ndarray:
        return bytes_to_ids(zlib.compress(chunk, self.level), self.token_bits)

    def decode_chunk(self, ids: np.ndarray) -> tuple[bytes, int]:
        payload = ids_to_bytes(ids, self.token_bits)
        d = zlib.decompressobj()
        try:
            data = d.decompress(payload)
        except zlib.error as exc:
            raise DataError(f"{self.name}: ids are not a zlib stream: {exc}") from exc
        if not d.eof:
            raise DataError(f"{self.name}: zlib stream truncated")
        used = len(payload) - len(d.unused_data)
        return data, ids_per_bytes(used, self.token_bits)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "level": self.level}
