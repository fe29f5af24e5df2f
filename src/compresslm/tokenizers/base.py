"""The one tokenizer interface every scheme implements, in the style of minbpe's ``Tokenizer``.

A tokenizer maps text (UTF-8 bytes) to integer ids and back, exactly: ``decode(encode(t)) == t`` for
every string ``t``. Ids ``0 .. data_vocab_size - 1`` carry data; two special ids sit just above them:

* ``eod_id = data_vocab_size``: end of document (written after every document in a token dataset);
* ``pad_id = data_vocab_size + 1``: padding (never predicted, masked out of the loss).

So at v = 2^16 the vocabulary is 65,538 ids: the Equal-Info paper's question of padding versus the real
token 0 (its §7 item 7) does not arise, at the cost of int32 token files instead of uint16.

Compressing schemes (GZip, StaticAC, AC, EqualInfoAC) cut the UTF-8 bytes into chunks of
``chunk_bytes`` (10,240, as in the paper) and code each chunk independently into a self-delimiting run
of whole tokens, so a document's ids are the concatenation of its chunks' ids and ``decode`` needs no
side information. Data ids of those schemes are ``token_bits``-bit groups of the coded bit stream,
packed MSB-first (bits 1111000011110011 -> [240, 243] at 8 bits, [61683] at 16 bits).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from compresslm.coding.packing import TOKEN_BITS
from compresslm.errors import ConfigError, DataError

if TYPE_CHECKING:
    from compresslm.tokenizers.registry import SchemeSpec

#: The paper's example length: documents are cut into 10,240-byte chunks, each compressed alone.
CHUNK_BYTES = 10_240

Ids = Sequence[int] | np.ndarray


class Tokenizer(ABC):
    """Text <-> ids for one scheme. Subclasses implement the byte-level ``encode_bytes`` and
    ``decode_bytes``; ``encode``/``decode`` add the UTF-8 step.

    ``encode`` never adds special ids: a token dataset appends ``eod_id`` after each document.
    ``decode`` rejects special ids (strict) unless ``skip_special`` is set, as in generation.
    """

    #: Registry name (``bytes``, ``spm``, ``gzip``, ``static-ac``, ``ac``, ``equal-info``).
    scheme: ClassVar[str]
    #: Whether the scheme runs M1 (its FLOPs count in FLOPs/byte).
    uses_m1: ClassVar[bool] = False

    # -- construction: the registry finds the class by scheme name and calls these ----------------

    @classmethod
    def build(
        cls,
        spec: SchemeSpec,
        *,
        texts: Callable[[], Iterable[str]] | None = None,
        m1: str | Path | None = None,
        **m1_options: Any,
    ) -> Tokenizer:
        """A new tokenizer for ``spec``. Schemes estimated from the corpus call ``texts()``; M1 schemes
        load the checkpoint ``m1`` with ``m1_options`` (the registry checks both are given)."""
        return cls()

    @classmethod
    def load(cls, directory: str | Path, config: dict[str, Any], **m1_options: Any) -> Tokenizer:
        """The tokenizer saved in ``directory`` whose ``tokenizer.json`` holds ``config``."""
        return cls()

    # -- vocabulary -----------------------------------------------------------------------------

    @property
    @abstractmethod
    def data_vocab_size(self) -> int:
        """Number of data ids (256 for bytes, 2**token_bits for coded schemes, the SentencePiece size)."""

    @property
    def eod_id(self) -> int:
        return self.data_vocab_size

    @property
    def pad_id(self) -> int:
        return self.data_vocab_size + 1

    @property
    def vocab_size(self) -> int:
        """Size of M2's embedding and softmax: data ids plus the two special ids."""
        return self.data_vocab_size + 2

    @property
    def dtype(self) -> np.dtype:
        """Smallest unsigned dtype that holds every id (uint16 up to 65,535; int32 above)."""
        return np.dtype(np.uint16) if self.vocab_size <= 1 << 16 else np.dtype(np.int32)

    @property
    def name(self) -> str:
        """Display name in the paper's notation, e.g. ``EqualInfoAC[b=16, v=65k]``."""
        return self.scheme

    # -- coding ---------------------------------------------------------------------------------

    @abstractmethod
    def encode_bytes(self, data: bytes) -> np.ndarray:
        """Ids of ``data`` (1-D array of ``dtype``), without special ids."""

    @abstractmethod
    def decode_bytes(self, ids: Ids) -> bytes:
        """Inverse of :meth:`encode_bytes`; raises DataError for ids that no input produces."""

    def encode_documents(self, docs: Sequence[bytes]) -> list[tuple[list[np.ndarray], list[int]]]:
        """Each document's ids cut at its chunk boundaries, with each chunk's byte length (the token
        dataset records both). A whole-document scheme has one chunk; an empty document none.
        Schemes that batch a model across documents (M1) override this."""
        out: list[tuple[list[np.ndarray], list[int]]] = []
        for data in docs:
            out.append(([self.encode_bytes(data)], [len(data)]) if data else ([], []))
        return out

    def encode(self, text: str) -> list[int]:
        return self.encode_bytes(text.encode("utf-8")).tolist()

    def decode(self, ids: Ids, *, errors: str = "strict", skip_special: bool = False) -> str:
        """Text of ``ids``. ``errors`` is passed to UTF-8 decoding ("replace" for sampled ids);
        ``skip_special`` drops end-of-document and padding ids instead of rejecting them."""
        arr = self._check_ids(ids, skip_special=skip_special)
        data = self.decode_bytes(arr)
        try:
            return data.decode("utf-8", errors=errors)
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.name}: decoded bytes are not UTF-8: {exc}") from exc

    def _check_ids(self, ids: Ids, *, skip_special: bool) -> np.ndarray:
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise DataError(f"{self.name}: id out of range 0..{self.vocab_size - 1}")
        special = arr >= self.data_vocab_size
        if special.any():
            if not skip_special:
                raise DataError(
                    f"{self.name}: special id {int(arr[special][0])} (end of document or padding) "
                    "inside the ids to decode; pass skip_special to drop them"
                )
            arr = arr[~special]
        return arr

    # -- persistence ----------------------------------------------------------------------------

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable parameters (``scheme`` included) that :func:`load_tokenizer` reads back."""

    def save(self, directory: str | Path) -> None:
        """Write the files this tokenizer needs besides :meth:`config` (model files) into ``directory``.
        Schemes fully described by their config write nothing."""
        return None

    def describe(self) -> dict[str, Any]:
        """Facts for reports: name, vocabulary, special ids."""
        return {
            "scheme": self.scheme,
            "name": self.name,
            "data_vocab_size": self.data_vocab_size,
            "vocab_size": self.vocab_size,
            "eod_id": self.eod_id,
            "pad_id": self.pad_id,
            "uses_m1": self.uses_m1,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class ChunkedTokenizer(Tokenizer):
    """A compressing scheme: chunks of ``chunk_bytes`` coded independently into ``token_bits``-bit ids.

    Subclasses implement ``encode_chunk`` (bytes -> payload whose length in bits is a multiple of
    ``token_bits``) and ``decode_chunk`` (ids starting at a chunk -> (bytes, ids consumed)).
    """

    def __init__(self, token_bits: int = 8, chunk_bytes: int = CHUNK_BYTES) -> None:
        if token_bits not in TOKEN_BITS:
            raise ConfigError(f"token bits must be one of {TOKEN_BITS} (v = 256 or 65,536), got {token_bits}")
        if chunk_bytes < 1:
            raise ConfigError(f"chunk bytes must be positive, got {chunk_bytes}")
        self.token_bits = token_bits
        self.chunk_bytes = chunk_bytes

    @property
    def data_vocab_size(self) -> int:
        return 1 << self.token_bits

    @property
    def v_label(self) -> str:
        return "65k" if self.token_bits == 16 else "256"

    def chunks(self, data: bytes) -> Iterator[bytes]:
        for start in range(0, len(data), self.chunk_bytes):
            yield data[start : start + self.chunk_bytes]

    @abstractmethod
    def encode_chunk(self, chunk: bytes) -> np.ndarray:
        """Ids of one chunk: a self-delimiting run that :meth:`decode_chunk` reads back."""

    @abstractmethod
    def decode_chunk(self, ids: np.ndarray) -> tuple[bytes, int]:
        """Decode the chunk that starts at ``ids[0]``: (its bytes, number of ids it occupies)."""

    def encode_bytes(self, data: bytes) -> np.ndarray:
        parts = [self.encode_chunk(chunk) for chunk in self.chunks(data)]
        return np.concatenate(parts).astype(self.dtype) if parts else np.zeros(0, dtype=self.dtype)

    def encode_documents(self, docs: Sequence[bytes]) -> list[tuple[list[np.ndarray], list[int]]]:
        return [
            (
                [self.encode_chunk(c).astype(self.dtype) for c in self.chunks(d)],
                [len(c) for c in self.chunks(d)],
            )
            for d in docs
        ]

    def decode_bytes(self, ids: Ids) -> bytes:
        arr = self._check_ids(ids, skip_special=False)
        out: list[bytes] = []
        pos = 0
        while pos < len(arr):
            data, used = self.decode_chunk(arr[pos:])
            if used <= 0:
                raise DataError(f"{self.name}: chunk at id {pos} could not be decoded")
            out.append(data)
            pos += used
        return b"".join(out)

    def config(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "token_bits": self.token_bits, "chunk_bytes": self.chunk_bytes}
