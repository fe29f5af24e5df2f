"""Scheme names, building a tokenizer for a scheme, and saving/loading one as a folder.

Scheme specs accepted everywhere (CLI, study, API):

=================  ==========================================
``bytes``          Bytes
``spm``            SentencePiece (``spm-4096``: vocabulary size)
``gzip``           GZip[v=256] (``gzip-65k``: v = 65,536)
``static-ac``      StaticAC[v=256] (``static-ac-65k``)
``ac``             AC[v=256] (``ac-65k``)
``eqinfo16-256``   EqualInfoAC[b=16, v=256] (``eqinfo{b}-{256|65k}``)
``equal-info``     EqualInfoAC with ``window_bits``/``token_bits`` given separately
=================  ==========================================

A tokenizer folder holds ``tokenizer.json`` (format, version, the tokenizer's ``config()``) and the
files the scheme needs (``spm.model``; ``m1/`` for M1-based schemes). ``tokenizer.json`` is written
last, so a folder that has it is complete.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from compresslm.coding.packing import TOKEN_BITS
from compresslm.data.jsonfile import read_versioned_json
from compresslm.errors import ConfigError, IntegrityError, OutputExistsError
from compresslm.tokenizers.base import CHUNK_BYTES, Tokenizer

CONFIG_FILE = "tokenizer.json"
FORMAT = "compresslm.tokenizer"
FORMAT_VERSION = 1

#: Scheme name -> the class that implements it, as "module:Class": imported when first used, so
#: naming a scheme does not load torch (the M1 schemes do).
TOKENIZER_CLASSES: dict[str, str] = {
    "bytes": "compresslm.tokenizers.bytes:ByteTokenizer",
    "spm": "compresslm.tokenizers.spm:SentencePieceTokenizer",
    "gzip": "compresslm.tokenizers.gzip:GZipTokenizer",
    "static-ac": "compresslm.tokenizers.static_ac:StaticACTokenizer",
    "ac": "compresslm.tokenizers.ac:ACTokenizer",
    "equal-info": "compresslm.tokenizers.equal_info:EqualInfoTokenizer",
}
SCHEMES = tuple(TOKENIZER_CLASSES)
WINDOW_BITS = (16, 24, 32, 64, 128)
M1_SCHEMES = ("ac", "equal-info")
TRAINED_SCHEMES = ("spm", "static-ac")  # estimated from the corpus they will tokenize

_SPEC = re.compile(
    r"^(?:(?P<eq>eqinfo|equal-info)(?P<b>\d+)?|(?P<name>bytes|spm|gzip|static-ac|ac))"
    r"(?:-(?P<v>256|65k|65536|\d+))?$"
)


@dataclass(frozen=True)
class SchemeSpec:
    """What to build: a scheme and its parameters (``token_bits`` 8 or 16, ``window_bits`` b)."""

    scheme: str
    token_bits: int = 8
    window_bits: int = 16
    spm_vocab_size: int | None = None
    chunk_bytes: int = CHUNK_BYTES

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(f"unknown scheme {self.scheme!r}; choose one of {', '.join(SCHEMES)}")
        if self.token_bits not in TOKEN_BITS:
            raise ConfigError(f"--token-bits must be 8 or 16, got {self.token_bits}")
        if self.scheme == "equal-info" and self.window_bits % 8:
            raise ConfigError(f"--window-bits must be a multiple of 8, got {self.window_bits}")

    @property
    def label(self) -> str:
        """Short label, parseable by :func:`parse_scheme` (``eqinfo16-65k``)."""
        v = "65k" if self.token_bits == 16 else "256"
        if self.scheme == "equal-info":
            return f"eqinfo{self.window_bits}-{v}"
        if self.scheme == "bytes":
            return "bytes"
        if self.scheme == "spm":
            return "spm" if self.spm_vocab_size is None else f"spm-{self.spm_vocab_size}"
        return self.scheme if self.token_bits == 8 else f"{self.scheme}-65k"

    @property
    def uses_m1(self) -> bool:
        return self.scheme in M1_SCHEMES


def tokenizer_class(scheme: str) -> type[Tokenizer]:
    """The class registered for ``scheme``.

    >>> tokenizer_class("gzip").__name__
    'GZipTokenizer'
    """
    if scheme not in TOKENIZER_CLASSES:
        raise ConfigError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    module, _, name = TOKENIZER_CLASSES[scheme].partition(":")
    cls: type[Tokenizer] = getattr(importlib.import_module(module), name)
    return cls


def parse_scheme(text: str, **overrides: Any) -> SchemeSpec:
    """``"eqinfo16-65k"`` -> SchemeSpec("equal-info", token_bits=16, window_bits=16), etc.

    ``overrides`` (e.g. ``token_bits`` from a CLI option) apply where the text does not say; an
    override that the scheme has no use for, or that contradicts the text, is an error (never
    silently ignored)."""
    m = _SPEC.match(text.strip().lower())
    if not m:
        raise ConfigError(
            f"unknown scheme {text!r}; use bytes, spm[-N], gzip[-65k], static-ac[-65k], ac[-65k], "
            "eqinfo{16,24,32,64,128}-{256,65k} or equal-info"
        )
    given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    scheme = "equal-info" if m.group("eq") else m.group("name")
    from_text: dict[str, Any] = {}
    if m.group("b"):
        from_text["window_bits"] = int(m.group("b"))
    v = m.group("v")
    if v is not None:
        if scheme == "spm":
            from_text["spm_vocab_size"] = int(v.replace("65k", "65536"))
        elif scheme == "bytes":
            raise ConfigError(f"scheme {text!r}: bytes has no vocabulary option")
        else:
            if v not in ("256", "65k", "65536"):
                raise ConfigError(f"scheme {text!r}: v must be 256 or 65k")
            from_text["token_bits"] = 8 if v == "256" else 16
    options = {"window_bits": "--window-bits", "token_bits": "--token-bits", "spm_vocab_size": "--vocab-size"}
    unused = {
        "window_bits": scheme != "equal-info",
        "token_bits": scheme in ("bytes", "spm"),
        "spm_vocab_size": scheme != "spm",
    }
    for key, flag in options.items():
        if key not in given:
            continue
        if unused[key]:
            raise ConfigError(f"{flag} does not apply to scheme {text!r}")
        if key in from_text and from_text[key] != given[key]:
            raise ConfigError(
                f"scheme {text!r} sets {key.replace('_', ' ')} {from_text[key]}, but {flag} {given[key]}"
            )
    return SchemeSpec(scheme, **(given | from_text))


def build_tokenizer(
    spec: SchemeSpec | str,
    *,
    texts: Callable[[], Iterable[str]] | None = None,
    m1: str | Path | None = None,
    **m1_options: Any,
) -> Tokenizer:
    """A tokenizer for ``spec``. ``texts`` (a callable returning the training texts; called only for
    SentencePiece and StaticAC, which are estimated from the corpus) and ``m1`` (an M1 checkpoint
    folder, for AC and EqualInfoAC; None: the M1 shipped with the package) as the scheme needs. ``m1_options`` go to the M1 schemes."""
    if isinstance(spec, str):
        spec = parse_scheme(spec)
    if spec.scheme in TRAINED_SCHEMES and texts is None:
        raise ConfigError(f"scheme {spec.label} is trained on the corpus: give the training texts")
    if spec.scheme in M1_SCHEMES and m1 is None:  # the shipped M1 (a clear error naming --model if absent)
        from compresslm.coding.default_model import default_m1_path

        m1 = default_m1_path()
    return tokenizer_class(spec.scheme).build(spec, texts=texts, m1=m1, **m1_options)


def save_tokenizer(tokenizer: Tokenizer, directory: str | Path, *, force: bool = False) -> Path:
    """Write ``tokenizer`` as a folder (model files first, ``tokenizer.json`` last)."""
    from compresslm.data.jsonfile import write_json

    directory = Path(directory)
    if (directory / CONFIG_FILE).exists() and not force:
        raise OutputExistsError(f"{directory / CONFIG_FILE} exists; pass --force to overwrite it")
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(directory)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **tokenizer.config(),
        "describe": tokenizer.describe(),
    }
    write_json(directory / CONFIG_FILE, meta, force=True, sort_keys=True)
    return directory


def read_tokenizer_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    return read_versioned_json(
        path, FORMAT, FORMAT_VERSION, missing=f"not a tokenizer folder ({CONFIG_FILE} missing)"
    )


def load_tokenizer(directory: str | Path, **m1_options: Any) -> Tokenizer:
    """The tokenizer saved in ``directory`` by :func:`save_tokenizer`."""
    directory = Path(directory)
    meta = {
        k: v
        for k, v in read_tokenizer_config(directory).items()
        if k not in ("format", "format_version", "describe")
    }
    scheme = meta.get("scheme")
    if scheme not in TOKENIZER_CLASSES:
        raise IntegrityError(f"{directory / CONFIG_FILE}: unknown scheme {scheme!r}")
    return tokenizer_class(scheme).load(directory, meta, **m1_options)


def with_chunk_bytes(spec: SchemeSpec, chunk_bytes: int) -> SchemeSpec:
    return replace(spec, chunk_bytes=chunk_bytes)


def tokenizer_identity(directory: str | Path) -> str:
    """The sha256 of a saved tokenizer's parameters: what an M2 trained on its ids depends on.

    Computed over ``tokenizer.json`` without its format fields and report-only ``describe``, in
    canonical JSON. The parameters include the M1's weights sha256 and numerics fingerprint (M1
    schemes) and the SentencePiece model's sha256, so two tokenizers with the same vocabulary but
    other ids for the same text never share an identity.
    """
    meta = read_tokenizer_config(directory)
    params = {k: v for k, v in meta.items() if k not in ("format", "format_version", "describe")}
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode("ascii")).hexdigest()
