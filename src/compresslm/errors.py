"""Errors that the CLI reports as a one-line message (no traceback) and a non-zero exit code.

Everything a user can cause (malformed input, an existing output, a bad option, a model mismatch)
raises a subclass of :class:`CompressLMError` whose message names the file, line or option at fault.
"""

from __future__ import annotations


class CompressLMError(Exception):
    """Base class of every error a user can cause; the message is what the CLI prints."""


class DataError(CompressLMError):
    """Malformed input: the message starts with ``path:line:`` (or ``path:row:``)."""


class OutputExistsError(CompressLMError):
    """An output file exists and ``--force`` was not given."""


class ConfigError(CompressLMError):
    """An invalid option or parameter combination."""


class IntegrityError(CompressLMError):
    """Compressed data or a model does not match what it claims (CRC, hash, fingerprint, truncation)."""
