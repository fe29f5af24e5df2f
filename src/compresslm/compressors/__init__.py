"""Byte compressors behind one interface, named by ``name[:level]`` specs.

>>> from compresslm.compressors import get_compressor
>>> c = get_compressor("gzip:9")
>>> c.name, c.size(b"hello hello hello") == len(c.compress(b"hello hello hello"))
('gzip:9', True)
"""

from compresslm.compressors.base import BaseCompressor, Compressor
from compresslm.compressors.registry import (
    CompressorInfo,
    canonical_spec,
    compressor_help,
    get_compressor,
    list_compressors,
    parse_spec,
)

__all__ = [
    "BaseCompressor",
    "Compressor",
    "CompressorInfo",
    "canonical_spec",
    "compressor_help",
    "get_compressor",
    "list_compressors",
    "parse_spec",
]
