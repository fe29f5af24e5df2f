"""The byte-level baseline (the paper's "Bytes", ByT5-style): one id per UTF-8 byte."""

from __future__ import annotations

from typing import Any

import numpy as np

from compresslm.tokenizers.base import Ids, Tokenizer


class ByteTokenizer(Tokenizer):
    """Ids 0..255 are the byte values; compression ratio 1 by construction."""

    scheme = "bytes"

    @property
    def data_vocab_size(self) -> int:
        return 256

    @property
    def name(self) -> str:
        return "Bytes"

    def encode_bytes(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8).astype(self.dtype)

    def decode_bytes(self, ids: Ids) -> bytes:
        return self._check_ids(ids, skip_special=False).astype(np.uint8).tobytes()

    def config(self) -> dict[str, Any]:
        return {"scheme": self.scheme}
