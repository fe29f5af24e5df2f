"""Text <-> token ids for every scheme of the Equal-Info study, behind one interface.

Schemes: bytes, SentencePiece, GZip[v], StaticAC[v], AC[v] and EqualInfoAC[b, v] (v = 256 or 65,536;
b in 16, 24, 32, 64, 128). Every tokenizer round-trips text exactly; special ids for document end
and padding sit above the data ids. Token datasets (memory-mapped arrays + metadata) are written by
:func:`tokenize_corpus` and read by :class:`TokenDataset`.

>>> from compresslm.tokenizers import build_tokenizer
>>> tok = build_tokenizer("gzip-65k")
>>> ids = tok.encode("hello")            # data ids, each < 65,536
>>> tok.decode(ids), max(ids) < 65_536, tok.eod_id, tok.pad_id
('hello', True, 65536, 65537)
"""

from compresslm.tokenizers.base import CHUNK_BYTES, ChunkedTokenizer, Tokenizer
from compresslm.tokenizers.registry import (
    SCHEMES,
    WINDOW_BITS,
    SchemeSpec,
    build_tokenizer,
    load_tokenizer,
    parse_scheme,
    save_tokenizer,
)

__all__ = [
    "CHUNK_BYTES",
    "SCHEMES",
    "WINDOW_BITS",
    "ChunkedTokenizer",
    "SchemeSpec",
    "TokenDataset",
    "TokenizeOptions",
    "Tokenizer",
    "build_tokenizer",
    "load_tokenizer",
    "parse_scheme",
    "save_tokenizer",
    "tokenize_corpus",
]


def __getattr__(name: str) -> object:
    # The dataset module pulls in the data layer; load it only when asked for.
    if name in ("TokenDataset", "TokenizeOptions", "tokenize_corpus"):
        from compresslm.tokenizers import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'compresslm.tokenizers' has no attribute {name!r}")
