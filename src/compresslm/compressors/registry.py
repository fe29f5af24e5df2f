"""Compressor specs (``name[:level]``) -> compressor objects, with the valid levels of each.

The spec is what users type (``--compressor gzip:9``) and what results record; the canonical form
always carries the level, so ``gzip`` and ``gzip:9`` name the same compressor and describe the
same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from compresslm.compressors import codecs
from compresslm.compressors.base import Compressor
from compresslm.errors import ConfigError


@dataclass(frozen=True)
class CompressorInfo:
    """One registry entry: its name, level range and default, and a one-line description."""

    name: str
    min_level: int
    max_level: int
    default_level: int
    description: str
    factory: Callable[[int], Compressor]

    @property
    def usage(self) -> str:
        return f"{self.name}[:{self.min_level}..{self.max_level}, default {self.default_level}]"


_REGISTRY: dict[str, CompressorInfo] = {
    info.name: info
    for info in (
        CompressorInfo(
            "gzip",
            1,
            9,
            9,
            "gzip/DEFLATE, the ZIP-FIT paper's compressor (exact sizes of gzip.compress)",
            codecs.Gzip,
        ),
        CompressorInfo(
            "lz4", 0, 12, 0, "LZ4 block, no size prefix; 0-2 fast mode, 3-12 LZ4-HC", codecs.Lz4Block
        ),
        CompressorInfo(
            "lz4frame",
            0,
            16,
            0,
            "LZ4 frame (the reference zip-fit package's lz4); 0-2 fast, 3-16 HC",
            codecs.Lz4Frame,
        ),
        CompressorInfo(
            "zstd", -7, 22, 3, "Zstandard frame; 0 means 3 as in python-zstandard; <0 fast modes", codecs.Zstd
        ),
        CompressorInfo(
            "brotli", 0, 11, 11, "brotli, quality 0-11 (11 = library default, slow)", codecs.Brotli
        ),
        CompressorInfo("lzma", 0, 9, 6, "xz container, preset 0-9 (6 = library default)", codecs.Lzma),
        CompressorInfo("bz2", 1, 9, 9, "bzip2, block size level x 100 kB", codecs.Bz2),
    )
}


def list_compressors() -> list[CompressorInfo]:
    """Every registered compressor, in the order ``--help`` shows them."""
    return list(_REGISTRY.values())


def compressor_help() -> str:
    """One line naming every spec form, for command-line help and error messages."""
    return ", ".join(info.usage for info in _REGISTRY.values())


def parse_spec(spec: str) -> tuple[str, int]:
    """``"gzip:9"`` -> ``("gzip", 9)``; a missing level means the compressor's default.

    Raises :class:`ConfigError` naming the valid choices for an unknown name, a level that is not an
    integer or out of range, and for ``gzip:0`` (stored blocks: no compression at all, so every
    score becomes a function of the two lengths -- the reference package's silent default).
    """
    text = spec.strip().lower()
    name, sep, level_text = text.partition(":")
    info = _REGISTRY.get(name)
    if info is None:
        raise ConfigError(f"unknown compressor '{spec}' (choose from: {compressor_help()})")
    if not sep:
        return name, info.default_level
    try:
        level = int(level_text)
    except ValueError:
        raise ConfigError(
            f"compressor '{spec}': level '{level_text}' is not an integer ({info.usage})"
        ) from None
    if name == "gzip" and level == 0:
        raise ConfigError(
            "compressor 'gzip:0' stores the data without compressing it, so every ZIP-FIT score becomes a "
            "function of document lengths only (23 / (max length + 23)); use gzip:1..9 (the paper: gzip:9)"
        )
    if name == "zstd" and level == 0:
        level = 3  # python-zstandard's 0 is "the default", 3; canonicalise so equal compressors share a name
    if not info.min_level <= level <= info.max_level:
        raise ConfigError(f"compressor '{spec}': level {level} out of range ({info.usage})")
    return name, level


def canonical_spec(spec: str) -> str:
    """The canonical ``name:level`` form of ``spec`` (validated)."""
    name, level = parse_spec(spec)
    return f"{name}:{level}"


def get_compressor(spec: str) -> Compressor:
    """Build the compressor named by ``spec`` (``name[:level]``); see :func:`parse_spec`."""
    name, level = parse_spec(spec)
    return _REGISTRY[name].factory(level)
